"""The run directory's files, free of torch: ``summary.json`` and ``metrics.jsonl`` written atomically or
appended line by line, and read back by the trainer (to skip a finished run), the study runner and the
report. The run directory is the truth; wandb only mirrors it.

The schema of both records is here: :data:`METRICS` (the keys of an epoch's record, a line of
``metrics.jsonl`` and ``final`` / ``best.metrics`` of the summary) and :class:`RunSummary`
(``summary.json``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import subprocess
import warnings
from contextlib import contextmanager
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ilif import records
from ilif.errors import RunBusy


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@contextmanager
def atomic_write(path: Path, mode: str = "w"):
    """A file object on ``.NAME.tmp-PID`` beside ``path``; when the block ends well it is fsynced and
    renamed over ``path`` (the old file or the new, never half), otherwise removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        full = no_space(path, tmp)
        if full is None:
            raise
        raise full from err
    finally:
        if tmp.exists():
            tmp.unlink()


#: free bytes below which a failed write is put down to a full file system
FULL_BELOW = 16 * 2**20


def no_space(path: Path, tmp: Path) -> Optional[OSError]:
    """The error of a write to ``path`` (through ``tmp``) that failed because its file system is full
    (torch.save says only "unexpected pos" when a write comes up short): ENOSPC naming the file, the bytes
    written and free; None when there is space (the write failed for another reason)."""
    try:
        stat = os.statvfs(tmp.parent)
        written = tmp.stat().st_size if tmp.exists() else 0
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    if free >= FULL_BELOW:
        return None
    return OSError(errno.ENOSPC, f"no space left on the device ({written / 2**20:.1f} MB of it written, "
                                 f"{free / 2**20:.1f} MB free): free some, or set runs_root to another disk", str(path))


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(obj: dict, path: Path) -> None:
    write_text_atomic(json.dumps(_plain(obj), indent=2, sort_keys=True), path)


#: the keys of one epoch's record and what each holds (per test sample unless said); ``val/*`` only with
#: ``dataset.val_fraction``, ``grad/*`` only with ``trainer.grad_diagnostics``, ``remedy/*`` only with
#: a remedy that sets γ (and ``remedy/gamma*`` also without one: each layer's γ)
METRICS = {
    "epoch": "the epoch (0-based)",
    "lr": "the learning rate of the epoch",
    "train/loss": "mean training loss", "train/acc1": "training top-1 accuracy (0-1)",
    "train/firing_rate": "mean spikes per neuron and time step in training",
    "val/loss": "validation loss", "val/acc1": "validation top-1", "val/acc5": "validation top-5",
    "test/loss": "test loss", "test/acc1": "test top-1 accuracy (0-1)", "test/acc5": "test top-5 accuracy",
    "test/firing_rate": "mean spikes per neuron and time step", "test/layer_rates": "{layer: firing rate}",
    "test/rate_per_step": "[firing rate at each time step]", "test/silent": "share of neurons that never fire",
    "test/saturated": "share of neurons that fire at every step",
    "test/occupancy": "share of pre-spike potentials inside the surrogate's support",
    "test/energy_uj": "synaptic energy per sample (µJ)", "test/ann_energy_uj": "the same network as an ANN (µJ)",
    "test/snn_ann_ratio": "test/energy_uj / test/ann_energy_uj", "test/state_energy_uj": "neuron-state energy (µJ)",
    "grad/temporal_ratio": "mean |dL/dx_1| / mean |dL/dx_T| over neuron layers",
    "grad/temporal_ratio_layers": "{layer: that ratio}", "grad/weight_norms": "{parameter: gradient norm}",
    "remedy/gamma": "{layer: γ}", "remedy/gamma_mean": "mean γ over layers", "remedy/gamma_min": "smallest γ",
    "remedy/gamma_max": "largest γ",
}

#: the version of summary.json this code writes (1: the records before the field ``schema``, same keys)
SUMMARY_SCHEMA = 2


@dataclass
class RunSummary:
    """``summary.json``: the record of a finished run. The trainer writes it (:meth:`to_json`); the
    report, the wandb mirror and the study read it (:meth:`from_json`), and take older records: a key a
    record lacks takes its default here, a key it has and this code does not know is left aside."""

    final: dict  # the last epoch's record (METRICS)
    best: Optional[dict] = None  # {"epoch": e, "metrics": the record of the epoch selected}
    config_hash: Optional[str] = None
    run_name: str = ""
    status: str = "finished"
    experiment_name: str = ""
    neuron: str = ""
    dataset: str = ""
    gamma: Optional[float] = None
    seed: Optional[int] = None
    layers: list = field(default_factory=list)  # per neuron layer: layer, firing_rate, ... (ilif.metrics)
    energy_layers: list = field(default_factory=list)  # per synaptic layer: layer, kind, macs, input_rate, sops, ...
    neuron_state_ops: list = field(default_factory=list)
    energy_totals: dict = field(default_factory=dict)  # snn_energy_pj, ann_energy_pj, state_energy_pj, ...
    surrogate: dict = field(default_factory=dict)
    dataset_info: dict = field(default_factory=dict)
    world_size: int = 1
    provenance: dict = field(default_factory=dict)  # git_commit, versions, device, epoch_seconds, ...
    config: dict = field(default_factory=dict)  # the run's identity (ilif.conf.identity)
    schema: int = SUMMARY_SCHEMA

    @property
    def best_metrics(self) -> dict:
        """The record of the selected epoch (the final one for a record without ``best``)."""
        return (self.best or {}).get("metrics") or self.final

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunSummary":
        """The summary in ``data`` (a finished record, checked by :func:`check_summary`); a key a record
        lacks takes its default, a key this code does not know is left aside, a null table its default."""
        known = {f.name: f for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known and key != "schema"
                  and not (value is None and known[key].default_factory is not MISSING_FIELD)}
        return cls(**values, schema=data.get("schema", 1))


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the ``.NAME.tmp-PID`` files of a run's own files that a killed writer left (call while
    holding the run's lock); a file of any other name is left alone."""
    for tmp in Path(run_dir).glob(".*.tmp-*"):
        if _temporary(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def _temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of one of a run's own files (:func:`atomic_write`)."""
    match = re.fullmatch(r"\.(.+)\.tmp-\d+", name)
    return match is not None and match.group(1) in RUN_FILES


#: the longest an epoch may have taken (115 days): a record beyond it is not a measurement
MAX_EPOCH_SECONDS = 1e7
#: a metric of an epoch's record: a number (null where it was not finite), or a table of them by layer,
#: parameter or time step
METRIC = records.either(records.optional(records.number()), records.mapping_of(records.optional(records.number())),
                        records.list_of(records.optional(records.number())),
                        what="a finite number, null, or a mapping or list of them")
EPOCH_RECORD_FIELDS = {**{key: METRIC for key in METRICS}, "epoch": records.number(-1, integer=True)}
EPOCH_RECORD = records.record(EPOCH_RECORD_FIELDS, required=("epoch",))
#: a line of ``metrics.jsonl``
HISTORY_RECORD = records.record({**EPOCH_RECORD_FIELDS, "epoch": records.number(0, integer=True)}, required=("epoch",))
ROWS = records.optional(records.list_of(records.mapping_of(records.anything)))
TABLE = records.optional(records.mapping_of(records.anything))
FINISHED_RECORD = records.record({
    "final": EPOCH_RECORD,
    "best": records.optional(records.record({"epoch": records.number(-1, integer=True),
                                             "metrics": records.mapping_of(records.optional(records.number()))},
                                            required=("epoch", "metrics"))),
    "config_hash": records.optional(records.text), "status": records.one_of("finished"),
    "run_name": records.text, "experiment_name": records.text, "neuron": records.text, "dataset": records.text,
    "gamma": records.optional(records.number()), "seed": records.optional(records.number(integer=True)),
    "layers": ROWS, "energy_layers": ROWS, "neuron_state_ops": ROWS,
    "energy_totals": records.optional(records.mapping_of(records.optional(records.number()))),
    "surrogate": TABLE, "dataset_info": TABLE,
    "world_size": records.number(1, integer=True),
    "provenance": records.optional(records.record({
        "epoch_seconds": records.list_of(records.number(0, MAX_EPOCH_SECONDS)),
        "changed_on_resume": records.list_of(records.text)})),
    "config": TABLE, "schema": records.number(1, integer=True),
}, required=("final",))
FAILED_RECORD = records.record({"status": records.one_of("failed"), "config_hash": records.optional(records.text),
                                "error": records.text, "exit_code": records.number(integer=True),
                                "schema": records.number(1, integer=True)}, required=("status", "error"))


def check_summary(value, where: str) -> dict:
    """The check of a ``summary.json`` (:mod:`ilif.records`): the record of a finished run (every field
    of :class:`RunSummary` of its type, finite numbers, epoch times ≥ 0) or of a failed one."""
    status = value.get("status", "finished") if isinstance(value, dict) else None
    return (FAILED_RECORD if status == "failed" else FINISHED_RECORD)(value, where)


def _summary(run_dir: Path, warn: bool) -> Optional[dict]:
    """The record in the run's summary.json (:func:`check_summary`); None when there is none, or it is
    not such a record (with a warning naming the file and the key when ``warn``)."""
    try:
        return records.read_json(Path(run_dir) / "summary.json", check_summary)
    except FileNotFoundError:
        return None
    except records.RecordError as err:
        if warn:
            warnings.warn(f"{err}; the run counts as not finished")
        return None


def finished_summary(run_dir: Path, config_hash: Optional[str] = None) -> Optional[RunSummary]:
    """The run's summary.json if the run finished (and, given ``config_hash``, belongs to that config),
    else None: no summary, a failed or unreadable one (with a warning), or another config's."""
    summary = _summary(run_dir, warn=True)
    if summary is None or summary.get("status") != "finished":
        return None
    if config_hash is not None and summary.get("config_hash") != config_hash:
        warnings.warn(f"{Path(run_dir) / 'summary.json'} belongs to config {summary.get('config_hash')}, "
                      f"not {config_hash}; left out")
        return None
    return RunSummary.from_json(summary)


def record_failure(run_dir: Path, config_hash: str, detail: str, code: int) -> None:
    """Write the run's ``summary.json`` as the record of its failure: ``status: failed``, the one line
    that ended it and its exit code. The trainer writes it (after it has claimed the directory, see
    ``ilif.train.loop.keep_failure``); a sweep reads it back (:func:`run_outcome`); the next start of
    the run resumes or starts over."""
    write_json_atomic({"status": "failed", "config_hash": config_hash, "error": detail, "exit_code": code,
                       "schema": SUMMARY_SCHEMA}, Path(run_dir) / "summary.json")


NO_RECORD = "left no record (killed, or failed before it trained anything: its error line is above or in its job's log)"


def record_stamp(run_dir: Path) -> Optional[int]:
    """When the run's ``summary.json`` was last written (ns), None without one: a sweep compares the
    stamps from before and after it to tell its own records from older ones."""
    try:
        return (Path(run_dir) / "summary.json").stat().st_mtime_ns
    except OSError:
        return None


def run_outcome(run_dir: Path) -> tuple[str, str]:
    """How a run of a sweep or a study ended, from its directory alone: ``("finished", "")``,
    ``("failed", "<its one line> (exit <code>)")`` from the record of its failure, or
    ``("failed", NO_RECORD)`` when it left none (it was killed, or it failed before the trainer could
    record it: its error line was printed where it ran)."""
    summary = _summary(run_dir, warn=False)
    status = None if summary is None else summary.get("status")
    if status == "finished":
        return "finished", ""
    if status == "failed" and isinstance(summary.get("error"), str):
        return "failed", f"{summary['error']} (exit {summary.get('exit_code')})"
    return "failed", NO_RECORD


def failure_lines(failures: list[tuple[Path, str]], what: str) -> list[str]:
    """The lines that end a sweep or a study with failed runs: a count of ``what`` (``sweep``,
    ``study``), then ``  <run directory>: <why>`` for each."""
    return [f"error: {len(failures)} run(s) of the {what} failed:", *(f"  {d}: {why}" for d, why in failures)]


LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a run directory (``.lock``, flock): one process trains a run at a time. The
    lock file names the holder; the lock goes with the process, even when it is killed."""

    def __init__(self, run_dir: Path):
        import fcntl

        self.path = Path(run_dir) / LOCK_NAME
        self.created = not self.path.exists()
        try:  # never through a symlink: a lock that points elsewhere would overwrite its target
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if not self.path.is_symlink():
                raise
            raise RunBusy(f"{self.path} is a symlink ({err.strerror}): a run directory's lock must be a plain "
                          "file; remove the link and run again") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise RunBusy(f"run directory {run_dir} is in use by {holder}: the same run is already training; "
                          "wait for it to finish or stop it") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"process {os.getpid()} on {os.uname().nodename}".encode(), 0)
        HELD_LOCKS.add(self.fd)

    def release(self, discard: bool = False) -> None:
        """Let the lock go; with ``discard`` (the run was refused the folder), remove the lock file too
        when this lock made it, so a refused run leaves the folder as it found it."""
        if discard and self.created:
            self.path.unlink(missing_ok=True)
        HELD_LOCKS.discard(self.fd)
        os.close(self.fd)


#: the descriptors of the run locks this process holds. A forked child (a DataLoader worker) shares
#: them, and an flock lasts while any process has it open: :func:`close_inherited_locks` lets the
#: child drop them, so a killed trainer's workers never keep its run locked.
HELD_LOCKS: set[int] = set()


def close_inherited_locks(*_) -> None:
    """In a forked child: close the run locks inherited from the parent (a DataLoader ``worker_init_fn``)."""
    for fd in list(HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    HELD_LOCKS.clear()


class MetricsFile:
    """``metrics.jsonl``: one JSON object per epoch, appended. On resume, lines after the checkpoint's
    epoch (written by the killed run), and any line from the first that is not an epoch's record (one
    cut by a kill), are dropped so the file matches the restored state; that rewrite is atomic, so a
    failure keeps the old file whole."""

    def __init__(self, path: Path, keep_epochs_below: int):
        self.path = path
        if not path.exists():
            return
        lines = records.read_text(path).splitlines()
        history, _ = records.json_lines(path, lines, HISTORY_RECORD)
        kept = [line for line, record in zip(lines, history) if record["epoch"] < keep_epochs_below]
        if kept != lines:
            write_text_atomic("".join(line + "\n" for line in kept), path)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(_plain(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


#: the marker of a run directory's owner: the config hash of the run that claimed it
OWNER = ".ilif-run"
#: the marker of a run sent to wandb (:mod:`ilif.wandb_mirror`)
UPLOADED = "wandb_uploaded.json"
#: the files and folders a run writes into its directory (and ``.hydra``, Hydra's record, which runs made
#: before ilif-train stopped writing it hold): never through a symlink, never into a special file
RUN_FILES = (".hydra", "config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "train.log", "wandb",
             UPLOADED, OWNER)
RUN_FOLDERS = (".hydra", "wandb")


def symlink_in(run_dir: Path) -> Optional[Path]:
    """The run directory itself, or the first of its :data:`RUN_FILES`, when it is a symlink (writing
    it would change a file elsewhere); None when all are plain or absent."""
    run_dir = Path(run_dir)
    return next((p for p in (run_dir, *(run_dir / name for name in RUN_FILES)) if p.is_symlink()), None)


def symlink_message(link: Path) -> str:
    return (f"{link} is a symlink: a run directory and its files must be plain, or a run would write through "
            "them; copy the files in, or choose another experiment_name or runs_root")


def owner(run_dir: Path) -> Optional[str]:
    """The text of ``run_dir``'s :data:`OWNER` marker (the config hash of the run that claimed it); None
    without one."""
    try:
        return records.read_text(Path(run_dir) / OWNER, limit=64).strip()
    except FileNotFoundError:
        return None
    except (OSError, records.RecordError):
        return ""


#: what ``trainer.resume=false`` moves into a ``replaced-<time>`` folder (``ilif.train.loop.set_aside``)
SET_ASIDE = ("summary.json", "metrics.jsonl", "last.pt", "best.pt", UPLOADED, "wandb")


def _written_here(entry: Path) -> bool:
    """Whether ``entry`` of a run directory is a name a run writes: one of :data:`RUN_FILES`, a run's
    lock (its holder's line), a temporary of a run file, or a ``replaced-*`` folder of what a restart
    sets aside."""
    name = entry.name
    if entry.is_symlink():
        return False
    if name in RUN_FILES or _temporary(name):
        return True
    if name == LOCK_NAME:
        try:
            return re.fullmatch(r"(process \d+ on \S+)?", records.read_text(entry, limit=256)) is not None
        except (OSError, records.RecordError):
            return False
    return name.startswith("replaced-") and entry.is_dir() and \
        all(e.name in SET_ASIDE and not e.is_symlink() for e in entry.iterdir())


def ownership_problem(run_dir: Path, identity_hash: str) -> Optional[str]:
    """Why the run of config ``identity_hash`` may not write into ``run_dir`` (None when it may): the
    folder or one of its :data:`RUN_FILES` is a symlink or a special file; another config's run owns
    it (its marker or its finished summary); or no run claimed it and it holds a file no run writes, or
    only such names without a run's trace (a folder of one's own given as ``hydra.run.dir``, even with
    a ``config.yaml`` of its own). A folder without a marker that holds only what a run writes and a
    run's trace (a record, a checkpoint, a set-aside run) is a run's from before the marker; its
    checkpoint's config is checked when it is claimed (``ilif.train.loop.claim``)."""
    run_dir = Path(run_dir)
    link = symlink_in(run_dir)
    if link is not None:
        return symlink_message(link)
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        return f"{run_dir} is not a folder"
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists() and not (path.is_dir() if name in RUN_FOLDERS else path.is_file()):
            kind = "folder" if name in RUN_FOLDERS else "file"
            return f"{path} is not a regular {kind}: a run writes only plain files and folders"
    summary = _summary(run_dir, warn=False)  # a run's record, finished or failed (a failure protects nothing)
    other = summary.get("config_hash") if summary is not None and summary.get("status") == "finished" else None
    if other not in (None, identity_hash):
        return (f"{run_dir} holds a finished run of another config ({other}, this is {identity_hash}); "
                "choose another experiment_name or runs_root")
    mark = owner(run_dir)
    if mark is not None and not re.fullmatch(r"[0-9a-f]{8}", mark):
        return f"{run_dir / OWNER} is not a run's marker (a config hash): remove it if the folder is a run's"
    if mark is not None:
        return None if mark == identity_hash else (f"{run_dir} belongs to a run of another config ({mark}, this is "
                                                   f"{identity_hash}); choose another experiment_name or runs_root")
    entries = list(run_dir.iterdir())
    foreign = sorted(e.name for e in entries if not _written_here(e))
    traces = [e for e in entries if e.name != LOCK_NAME and not _temporary(e.name)]
    trace = summary is not None or (run_dir / "last.pt").is_file() or \
        any(e.name.startswith("replaced-") for e in entries)
    if not foreign and (not traces or trace):
        return None
    listed = foreign or sorted(e.name for e in traces)
    shown = ", ".join(listed[:3]) + (", ..." if len(listed) > 3 else "")
    return (f"{run_dir} holds files that no run wrote there ({shown}): a run writes only into an empty folder or "
            "its own; choose another folder, experiment_name or runs_root")


def mark_owner(run_dir: Path, identity_hash: str) -> None:
    """Write the :data:`OWNER` marker (after :func:`ownership_problem` said yes, under the run's lock)."""
    write_text_atomic(identity_hash + "\n", Path(run_dir) / OWNER)


#: what a run that trained nothing can have written into its directory (its job log, the resolved
#: config, an empty history, the lock, the record of its failure; Hydra's record in older runs): the
#: only names :func:`discard_untrained` removes (``summary.json`` only when it records a failure)
RUN_WRITES = (".hydra", "config.yaml", "metrics.jsonl", LOCK_NAME, OWNER)
HYDRA_WRITES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _written_by_a_run(entry: Path) -> bool:
    if entry.is_symlink():
        return False
    if entry.name == ".hydra":
        return entry.is_dir() and all(e.name in HYDRA_WRITES and e.is_file() and not e.is_symlink()
                                      for e in entry.iterdir())
    if entry.name == "summary.json":
        return entry.is_file() and (_summary(entry.parent, warn=False) or {}).get("status") == "failed"
    return entry.is_file() and (entry.name in RUN_WRITES or entry.suffix == ".log")


def discard_untrained(run_dir: Path, runs_root: Path) -> None:
    """Remove a run directory that holds no checkpoint (nothing was trained), then every parent left
    empty up to ``runs_root``: a failed command leaves no empty directories behind. Only a real
    directory strictly inside ``runs_root`` that holds nothing but what a run writes (``RUN_WRITES``,
    the record of a failure, Hydra's ``.hydra`` and a job log) is removed: a symlink, a folder outside
    ``runs_root`` (a user's ``hydra.run.dir``, the current directory) or one with any other file is
    left exactly as it is."""
    import shutil

    run_dir = Path(run_dir)
    root = Path(runs_root).resolve()
    if run_dir.is_symlink() or not run_dir.is_dir() or (run_dir / "last.pt").exists():
        return
    resolved = run_dir.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        return
    entries = list(run_dir.iterdir())
    if not all(_written_by_a_run(entry) for entry in entries):
        return
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    run_dir.rmdir()
    for parent in resolved.parents:
        if parent == root.parent or not parent.is_relative_to(root) or any(parent.iterdir()):
            break
        parent.rmdir()


def read_history(run_dir: Path) -> list[dict]:
    """The epochs of ``metrics.jsonl`` (empty if there is none); the first line that is not an epoch's
    record ends the history (with a warning naming it), and so does a file that cannot be read."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        history, problem = records.read_json_lines(path, HISTORY_RECORD)
    except FileNotFoundError:
        return []
    except records.RecordError as err:
        warnings.warn(f"{err}; the run's history is left out")
        return []
    if problem is not None:
        warnings.warn(f"{path}: {problem}; the history stops before it")
    return history


def git_state() -> tuple[str, "bool | None"]:
    """The commit of the checkout the package runs from and whether tracked files differ from it:
    ("unknown", None) where it is not a git checkout or git is missing."""
    repo = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return commit, dirty
