"""The wandb mirror of a run directory, free of torch: live logging during training and upload of
finished runs afterwards. The run directory stays the truth: any wandb failure becomes a warning and
turns the mirror off, and wandb never holds training up for more than a few seconds (an online
start that does not answer within ``INIT_TIMEOUT_S`` falls back to an offline run).

Every run has a wandb id derived from its identity (experiment and config hash), so a resumed run
continues its wandb run and uploading a directory twice never creates a second one. Per-epoch
records are flattened to scalars (``test/layer_rates/neuron1``, ``test/rate_per_step/0``, ...), and
runs carry tags (neuron, dataset, γ, normalisation, scale) and the job type ``train``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Optional

from . import records
from .rundir import UPLOADED, RunSummary, finished_summary, read_history, write_json_atomic

log = logging.getLogger("ilif.train")

INIT_TIMEOUT_S = 10


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


def resolve_mode(mode: str) -> str:
    """The wandb mode a run uses: ``WANDB_MODE=disabled`` always wins; then an explicit
    ``logger.wandb.mode``; for ``auto``, ``WANDB_MODE`` when set, else online with an API key and
    offline without one."""
    env = os.environ.get("WANDB_MODE", "")
    if env == "disabled" or mode == "disabled":
        return "disabled"
    return _wanted_mode(mode)


def _wanted_mode(mode: str) -> str:
    """``mode`` with ``auto`` resolved (WANDB_MODE online/offline when set, else by the API key)."""
    env = os.environ.get("WANDB_MODE", "")
    if mode != "auto":
        return mode
    if env in ("online", "offline"):
        return env
    return "online" if _has_wandb_key() else "offline"


def config_group(config: dict) -> str:
    """The wandb group of a run: its experiment and the hash of its config without the seed, shared by
    the seeds of one configuration (group by it to see mean and spread over seeds)."""
    import json

    rest = {k: v for k, v in config.items() if k not in ("seed", "logger", "runs_root", "hydra")}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.get('experiment_name', 'default')}-{digest}"


def wandb_id(experiment_name: str, config_hash: str, run_name: str, generation: int = 0) -> str:
    """A stable wandb run id for one run directory (letters, digits and dashes, 32 characters); a run
    started over (``trainer.resume=false``: ``generation`` earlier runs set aside in the directory) is
    a new wandb run."""
    again = f"/{generation}" if generation else ""
    return hashlib.sha256(f"{experiment_name}/{run_name}-{config_hash}{again}".encode()).hexdigest()[:32]


def generation(run_dir: Path) -> int:
    """How many earlier runs were set aside in ``run_dir`` (``replaced-*`` folders)."""
    return sum(1 for entry in Path(run_dir).glob("replaced-*") if entry.is_dir())


def describe_run(config: dict, config_hash: str) -> tuple[str, list[str]]:
    """The wandb run name (every commonly swept key, then the hash) and tags, from a resolved config."""
    neuron, surrogate = config["neuron"], config["surrogate"]
    parts = [config["dataset"]["name"], neuron["name"], f"{surrogate['family']}{surrogate['gamma']:g}",
             surrogate["normalize"]]
    if "kappa_current" in neuron:
        parts.append(f"kI{neuron['kappa_current']:g}")
    parts += [f"s{config['seed']}", config_hash]
    tags = [f"neuron:{neuron['name']}", f"dataset:{config['dataset']['name']}", f"gamma:{surrogate['gamma']:g}",
            f"normalize:{surrogate['normalize']}", f"scale:{config.get('scale_name', 'none')}"]
    return "-".join(parts), tags


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    """Nested dicts and lists of numbers as flat ``a/b/c`` scalars (non-finite and non-numeric left out)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            flat.update(flatten(dict(enumerate(value)), f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = value
    return flat


class WandbLogger:
    """Mirror of one run directory in wandb (see the module docstring)."""

    def __init__(self, cfg, run_dir: Path, config: dict, config_hash: str, run_name: str, job_type: str = "train"):
        self.run, self.run_dir, self.mode = None, Path(run_dir), None
        mode = resolve_mode(cfg.mode)
        if mode == "disabled":
            return
        name, tags = describe_run(config, config_hash)
        options = dict(project=cfg.project, entity=cfg.entity, group=config_group(config), name=name,
                       tags=tags + list(cfg.tags), config=config, dir=str(run_dir), job_type=job_type,
                       id=wandb_id(config.get("experiment_name", ""), config_hash, run_name, generation(run_dir)),
                       resume="allow",
                       reinit="finish_previous")
        try:
            self.run = self._init(options, mode)
        except Exception as err:  # noqa: BLE001 - wandb must never stop training
            if mode != "online":
                self._disable(err)
                return
            warnings.warn(f"wandb could not start online ({type(err).__name__}); logging offline instead")
            try:
                import wandb

                wandb.teardown()  # the failed online start still holds the run's id in wandb's service
                self.run = self._init(options, "offline")
            except Exception as offline_err:  # noqa: BLE001
                self._disable(offline_err)

    def _init(self, options: dict, mode: str):
        import wandb

        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S), **options)
        self.mode = mode
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        for key in ("test/acc1", "val/acc1", "test/acc5"):
            run.define_metric(key, summary="max")
        if mode == "offline":
            log.info("wandb is offline; send this run to your dashboard with: wandb sync %s",
                     run.dir.rsplit("/files", 1)[0])
        return run

    def _disable(self, err: Exception) -> None:
        warnings.warn(f"wandb disabled after an error ({type(err).__name__}: {err}); local files are complete")
        self.run = None

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(flatten(record))
        except Exception as err:  # noqa: BLE001
            self._disable(err)

    def finish(self, summary: RunSummary) -> None:
        if self.run is None:
            return
        try:
            import wandb

            for key, rows in (("layers", summary.layers), ("energy_layers", summary.energy_layers)):
                if rows:
                    columns = list(rows[0])
                    self.run.log({f"tables/{key}": wandb.Table(columns=columns,
                                                               data=[[r.get(c) for c in columns] for r in rows])})
            for key, value in flatten(summary.final).items():
                self.run.summary[f"final/{key}"] = value
            for key, value in flatten((summary.best or {}).get("metrics", {})).items():
                self.run.summary[f"best/{key}"] = value
            marker = {"id": self.run.id, "mode": self.mode, "project": self.run.project}
            self.run.finish()
            write_json_atomic(marker, self.run_dir / UPLOADED)
        except Exception as err:  # noqa: BLE001
            self._disable(err)


#: wandb_uploaded.json: the wandb run a directory was sent to, and how
MARKER = records.record({"id": records.text, "mode": records.one_of("online", "offline"), "project": records.text},
                        required=("id", "mode"))
#: what :func:`describe_run` reads of a run's config
NAMED = records.record({"dataset": records.record({"name": records.text}, required=("name",)),
                        "neuron": records.record({"name": records.text, "kappa_current": records.number()},
                                                 required=("name",)),
                        "surrogate": records.record({"family": records.text, "gamma": records.number(),
                                                     "normalize": records.text},
                                                    required=("family", "gamma", "normalize")),
                        "seed": records.number(integer=True)}, required=("dataset", "neuron", "surrogate", "seed"))


def _already_sent(run_dir: Path, mode: str) -> bool:
    """Whether the run was sent online, or in the mode ``mode`` resolves to (a marker that is not one
    counts as not sent)."""
    try:
        sent_mode = records.read_json(run_dir / UPLOADED, MARKER)["mode"]
    except (OSError, records.RecordError):
        return False
    return sent_mode in ("online", _wanted_mode(mode))


def _left_out(run_dir: Path, summary: Optional[RunSummary], mode: str) -> Optional[str]:
    """Why a directory (``summary``: its finished record, or None) is not uploaded (None when it is):
    missing, not finished, no config to name the run by, or sent before."""
    if not run_dir.is_dir():
        return "it is not a folder" if run_dir.exists() else "it does not exist"
    if summary is None:
        return "not a finished run"
    try:
        records.validated(run_dir / "summary.json", summary.config, NAMED)
    except records.RecordError as err:
        return f"its config cannot name a wandb run ({err.problem})"
    return "sent before" if _already_sent(run_dir, mode) else None


def upload_runs(run_dirs: list[Path], mode: str = "auto", project: str = "ilif") -> dict[str, list]:
    """Send finished run directories to wandb after the fact: config, every epoch of metrics.jsonl and
    the summary tables, as if the run had logged them live, under the run's stable id and job type
    ``train``. A directory that does not exist or is not finished, or one already sent online or in the
    same mode (``wandb_uploaded.json``), is left out; one sent only offline before can still go online.
    Returns what happened to each: {"online": [...], "offline": [...], "left out": [(dir, why), ...]}."""
    from types import SimpleNamespace

    outcome: dict[str, list] = {"online": [], "offline": [], "left out": []}
    for run_dir in map(Path, run_dirs):
        summary = finished_summary(run_dir) if run_dir.is_dir() else None
        why = _left_out(run_dir, summary, mode)
        if why is not None:
            outcome["left out"].append((run_dir, why))
            continue
        cfg = SimpleNamespace(mode=mode, project=project, entity=None, tags=[])
        logger = WandbLogger(cfg, run_dir, summary.config, summary.config_hash, summary.run_name)
        if logger.run is None:
            outcome["left out"].append((run_dir, "wandb could not start (see the warning)"))
            continue
        for record in read_history(run_dir):
            logger.log(record)
        logger.finish(summary)
        outcome[logger.mode].append(run_dir)
    return outcome
