"""``ilif-train`` / ``python -m ilif.train``: the Hydra 1.3 app.

Before Hydra starts (and creates any run directory), every job the command line describes is
composed and validated as a whole, as ``ilif-study`` validates its jobs (the same
:func:`ilif.grid.job_configs` and :func:`ilif.train.config.validate`): first every job without torch
(:mod:`ilif.checks`), then with the components' own checks. A bad value ends with one line naming the
key, the value and what is allowed, and exit code 2. Hydra's own
flags (``--help``, ``--cfg``, ``--info``, ``-sc``, ...) go to Hydra unchanged, search-path additions
(``hydra.searchpath=[...]``, ``--config-dir``) are honoured, and ``-m experiment=a,b`` expands each
experiment file's own grid.

A sweep learns how each job ended from the job's run directory alone, whatever the launcher: the
trainer records a failure in the run's ``summary.json`` (:func:`ilif.rundir.record_failure`), and the
sweep lists, at its end, every job without a record of finishing that it wrote (:func:`sweep_failures`),
in the lines ``ilif-study`` ends with, and exit code 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import ilif

from ilif.checks import check_torch_free
from ilif.conf import (CONFIG_DIR, EXTRA_CONFIG_DIRS, check_config_dir, config_hash, distributed_env,
                       group_options, is_group, name_components, register, searchpath_override, sweep_axes)
from ilif.grid import grid_items, job_configs, run_dir_of
from ilif.errors import (SIGNAL_EXIT, ConfigError, DatasetError, IlifError, TrainingDiverged, bad_input, debugging,
                         describe, entry_point, exit_code, one_line)
from ilif.rundir import NO_RECORD, discard_untrained, failure_lines, ownership_problem, record_stamp, run_outcome

log = logging.getLogger("ilif.train")
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
               "--resolve", "-p", "--package")
VALUE_FLAGS = ("-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path", "--experimental-rerun")


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_cli(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """(overrides, config folders of the search path, multirun) of a command line: ``--config-dir DIR``
    (an existing folder, else ConfigError) and ``hydra.searchpath=[...]`` add folders."""
    overrides, folders, multirun, skip = [], [], False, False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in ("-cd", "--config-dir"):
            directory = value if eq else (argv[index + 1] if index + 1 < len(argv) else "")
            try:
                check_config_dir(flag, directory)
            except ValueError as err:
                raise ConfigError.from_message(str(err)) from None
            folders.append(f"file://{Path(directory).resolve()}")
            skip = not eq
        elif flag in VALUE_FLAGS:
            skip = not eq
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif (eq or arg.startswith("~")) and not arg.startswith("-"):  # key=value, or ~key (remove it)
            if arg.startswith("hydra.searchpath="):
                folders += [str(entry) for entry in override_value(arg)]
            elif not arg.lstrip("+~").startswith(("hydra.", "hydra/")):
                overrides.append(arg)
    return overrides, folders, multirun


def override_value(arg: str):
    """The value of one ``key=value`` override as Hydra reads it (quotes removed, a list a list)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with bad_input():
        return OverridesParser.create().parse_override(arg).value()


def _check_group_options(items: list[tuple[str, str]]) -> None:
    for key, value in items:
        group = key.lstrip("+~")
        if is_group(group):
            options = group_options(group)
            for option in value.split(","):
                if option not in options and option != "null":
                    raise ConfigError(group, option, f"choose one of {options}")


def help_text(searchpath: list[str]) -> str:
    """``ilif-train --help`` as Hydra writes it (train.yaml's ``hydra.help``, its config groups and their
    options), read from the config folders without composing a config (Hydra's own takes seconds).
    ``searchpath``: the config folders of :func:`parse_cli`."""
    folders = [CONFIG_DIR, *EXTRA_CONFIG_DIRS, *(Path(p.removeprefix("file://")) for p in searchpath)]
    groups: dict[str, set] = {}
    for folder in folders:
        for path in folder.rglob("*.yaml"):
            group = path.parent.relative_to(folder).as_posix()
            if group != "." and not group.startswith("hydra"):
                groups.setdefault(group, set()).add(path.stem)
    listing = "\n".join(f"{group}: {', '.join(sorted(groups[group]))}" for group in sorted(groups))
    spec = OmegaConf.load(CONFIG_DIR / "train.yaml").hydra.help
    return (spec.template.replace("${hydra.help.header}", spec.header).replace("${hydra.help.footer}", spec.footer)
            .replace("$APP_CONFIG_GROUPS", listing))


def check_writable(runs_root: Path) -> None:
    """Raise ConfigError unless run directories can be made under ``runs_root``."""
    existing = runs_root.absolute()
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError("runs_root", str(runs_root), f"a folder that can be made ({existing} is a symlink that "
                              "leads nowhere or to itself)")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("runs_root", str(runs_root), f"{existing} is a file, not a folder")
    try:  # the only sure test: make (and remove) a folder there
        os.rmdir(tempfile.mkdtemp(prefix=".ilif-write-test-", dir=existing))
    except OSError as err:
        raise ConfigError("runs_root", str(runs_root),
                          f"no folder can be made in {existing} ({err.strerror})") from None


def precheck(argv: list[str], writes: bool = True) -> list[DictConfig]:
    """Compose and validate every job of ``argv`` (see the module docstring) and the launcher's
    variables; the jobs' configs. Raises ConfigError (exit 2) on the first error. Every job passes the
    torch-free checks (:mod:`ilif.checks`) before torch is imported for a component the source could
    not tell about; not ``writes`` (a config printed), where the runs would write and whether a
    sweep's data is there are not checked."""
    rerun = next((arg for arg in argv if arg.partition("=")[0] == "--experimental-rerun"), None)
    if rerun is not None:
        raise ConfigError.from_message("--experimental-rerun is not allowed: it unpickles the file it is given (code "
                                       "could run); run a job again with its command (provenance.command in its "
                                       "run directory's summary.json)")
    for arg in argv:
        key = arg.lstrip("+~").partition("=")[0]
        if key in ("hydra.sweep.dir", "hydra.sweep.subdir"):
            raise ConfigError.from_message(f"{key} is not allowed: a run's directory is runs_root/experiment_name/"
                                           "<run name>, where ilif-study and the report find it (set runs_root or "
                                           "experiment_name)")
        if key.startswith("hydra.sweeper.params"):
            raise ConfigError.from_message(f"{key} is not allowed: give a grid's axis on the command line as key=a,b")
        if key in ("-cn", "--config-name", "-cp", "--config-path"):
            raise ConfigError.from_message(f"{key} is not allowed: ilif-train composes its train.yaml; add config "
                                           "folders with --config-dir and choose their options by group")
    overrides, searchpath, multirun = parse_cli(argv)
    items = [tuple(item.partition("=")[::2]) for item in overrides]
    with bad_input():
        distributed_env()
        if not searchpath:  # options from other config directories are Hydra's to check
            _check_group_options([(k, v) for k, v in items if "(" not in v])
        experiments = next((axis for axis in sweep_axes(items) if axis[0][0] == "experiment"), [None])
        run_dir = next((Path(override_value(arg)) for arg in argv if arg.startswith("hydra.run.dir=")), None)
        checked = [job for experiment in experiments
                   for job in _check_jobs(items, experiment, searchpath_override(searchpath), multirun, run_dir,
                                          writes)]
        if not all(told for _, told in checked):
            from .config import check_imported

            for cfg in (cfg for cfg, told in checked if not told):
                check_imported(cfg)
    composed = [cfg for cfg, _ in checked]
    if multirun and writes:  # every dataset of the sweep, before a job is launched (as ilif-study does)
        from ilif.data import missing_datasets

        missing = missing_datasets(composed)
        for message in missing.values():
            print(f"error: {message}", file=sys.stderr)
        if missing:
            raise ConfigError.from_message(f"{len(missing)} dataset(s) of the sweep missing; get them "
                                           "(docs/full_scale.md), or leave them out of the sweep")
    return composed


def _check_jobs(items, experiment, searchpath: list[str], multirun: bool, run_dir: Optional[Path] = None,
                writes: bool = True) -> list[tuple[DictConfig, bool]]:
    """Compose every job of one experiment's sweep (its grid included when ``multirun``) and run the
    torch-free checks on each (:func:`ilif.checks.check_torch_free`), and, with ``writes``, check where
    each would write (``run_dir``: a single run's ``hydra.run.dir``, when the command line sets one).
    Returns (config, whether its source told everything) of each job, for :func:`precheck` to check
    the rest with the components imported."""
    items = [(k, v) for k, v in items if k != "experiment"]
    head = searchpath + ([f"{experiment[0]}={experiment[1]}"] if experiment else [])
    if multirun and experiment:
        items = grid_items(head, items)
    jobs, roots = [], set()
    for cfg in job_configs(head, items):  # one job at a time: a bad one ends the check at once
        jobs.append((cfg, check_torch_free(cfg)))
        if not writes:
            continue
        if cfg.runs_root not in roots:
            roots.add(cfg.runs_root)
            check_writable(Path(cfg.runs_root))
        target = run_dir if run_dir is not None and not multirun else run_dir_of(cfg)
        if target.exists() and not target.is_dir() and not target.is_symlink():
            raise ConfigError("hydra.run.dir" if run_dir is not None else "runs_root", str(target),
                              "a folder (it is a file)")
        problem = ownership_problem(target, config_hash(cfg))
        if problem is not None:  # before Hydra makes or opens anything
            raise ConfigError.from_message(problem)
    return jobs


def join_submitit_tasks() -> None:
    """In a submitit job of several tasks (``tasks_per_node`` or ``nodes`` > 1), export the variables
    torch.distributed reads, from submitit's own ``TorchDistributedEnvironment``, so the tasks form one
    process group (each task keeps every GPU visible and takes the one of its LOCAL_RANK)."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or "RANK" in os.environ:
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def job_has_own_process() -> bool:
    """True when the launcher runs each job in a process of its own (submitit, locally or on SLURM):
    then a failed job must end that process with its exit code, so the scheduler marks it failed."""
    return not HydraConfig.get().launcher._target_.endswith("BasicLauncher")


def job(cfg: DictConfig) -> float:
    """One job: validate and train it; its test accuracy. A single run ends the process with one line
    and an exit code on failure. A job of a sweep prints its line and the sweep goes on: the trainer
    records a failure in the run's ``summary.json`` once it owns the directory, and the sweep reads
    the records at its end (:func:`sweep_failures`); in a process of its own (submitit) the job then
    ends that process with its exit code, so SLURM marks it failed."""
    from .config import validate
    from .loop import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        join_submitit_tasks()
        validate(name_components(cfg, HydraConfig.get().runtime.choices))
        return train(cfg, run_dir).final["test/acc1"]
    except Exception as err:  # noqa: BLE001 - every failure: one line and its code (ilif.errors), a traceback if asked
        if debugging() and not isinstance(err, (IlifError, OSError)):
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                raise
            traceback.print_exc()  # the traceback asked for; the sweep goes on with its other jobs
        if isinstance(err, (ConfigError, DatasetError)):  # sweep syntax the precheck could not expand; missing data
            discard_untrained(run_dir, Path(cfg.runs_root))
        if isinstance(err, TrainingDiverged):
            log.error("%s", err)
        code, message = exit_code(err), describe(err, run_dir)
    if HydraConfig.get().mode != RunMode.MULTIRUN or code == SIGNAL_EXIT[signal.SIGINT] or job_has_own_process():
        _fail(message, code)  # a single run, Ctrl-C (it stops the whole sweep), or a submitit job
    print(f"error: {message}", file=sys.stderr)
    return float("nan")


hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(job)


def sweep(overrides: list[str]) -> Optional[str]:
    """Hydra's sweep of ``overrides`` (its sweeper and launcher, as ``ilif-train -m`` starts them),
    with every exception let through to the caller: None, or the one line of what the launcher
    raised (submitit's when a job ended with an error code or was killed)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    app = Hydra.create_main_hydra2("train", create_config_search_path(f"file://{CONFIG_DIR}"))
    try:
        app.multirun(config_name="train", task_function=job, overrides=[*overrides, "hydra.mode=MULTIRUN"])
    except (ConfigError, HydraException, OmegaConfBaseException):
        raise
    except Exception as err:  # noqa: BLE001 - the launcher's report of a failed job
        return one_line(err)
    finally:
        GlobalHydra.instance().clear()
    return None


def sweep_failures(planned: dict[Path, DictConfig], before: dict[Path, Optional[int]]) -> list[tuple[Path, str]]:
    """(run directory, why) of every job of a sweep (``planned``: run directory -> its config) that
    did not finish in it, read from the run directories (``before``: their records' stamps when the
    sweep started). A finished record counts when the sweep wrote it, or when the job was to skip a
    finished run (``trainer.resume``); a failed one only when the sweep wrote it (an older one says
    nothing of this sweep)."""
    failures = []
    for run_dir, cfg in planned.items():
        status, why = run_outcome(run_dir)
        fresh = record_stamp(run_dir) != before[run_dir]
        if status == "finished" and (fresh or cfg.trainer.resume):
            continue
        failures.append((run_dir, why if status == "failed" and fresh else NO_RECORD))
    return failures


def sweep_overrides(argv: list[str]) -> list[str]:
    """The overrides Hydra's sweep of ``argv`` gets: every ``key=value`` and ``~key`` (``hydra.*`` ones
    too), with the search path of ``--config-dir`` and ``hydra.searchpath`` as one override."""
    _, searchpath, _ = parse_cli(argv)
    values = [arg for arg in argv if ("=" in arg or arg.startswith("~")) and not arg.startswith("-")
              and arg not in _flag_values(argv)]
    return [*searchpath_override(searchpath), *(arg for arg in values if not arg.startswith("hydra.searchpath="))]


def _flag_values(argv: list[str]) -> set[str]:
    """The arguments that are the values of flags such as ``--config-dir DIR``."""
    return {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in VALUE_FLAGS}


@entry_point
def main() -> None:
    register()
    argv = sys.argv[1:]
    if "--version" in argv:
        from importlib.metadata import version

        print(f"ilif-train {ilif.__version__} (Hydra {version('hydra-core')})")
        return 0
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text(parse_cli(argv)[1]))
        return 0
    if any(arg.partition("=")[0] in HYDRA_FLAGS for arg in argv):
        if any(arg.partition("=")[0] in ("--cfg", "-c") for arg in argv):  # a config printed is one that trains
            precheck(argv, writes=False)
        hydra_main()  # help, config printing, completion: Hydra's, unchanged
        return
    jobs = precheck(argv)
    if not parse_cli(argv)[2]:
        hydra_main()
        return
    os.environ.setdefault("WANDB_SILENT", "true")  # a sweep's jobs: wandb's own lines only on errors
    overrides = sweep_overrides(argv)
    experiments = [v for k, v in (o.partition("=")[::2] for o in overrides) if k == "experiment"]
    names = [name for _, name in sweep_axes([("experiment", experiments[0])])[0]] if experiments else [None]
    rest = [o for o in overrides if not o.startswith("experiment=")]
    planned = {run_dir_of(cfg): cfg for cfg in jobs}
    before = {run_dir: record_stamp(run_dir) for run_dir in planned}
    launcher = [sweep([*rest, f"experiment={name}"] if name else rest) for name in names]  # each file's own grid
    failures = sweep_failures(planned, before)
    failures += [(Path("the launcher"), line) for line in launcher if line and not failures]
    if failures:
        print("\n".join(failure_lines(failures, "sweep")), file=sys.stderr)
        sys.exit(1)
    from .runtime import close_distributed

    close_distributed()


if __name__ == "__main__":
    sys.exit(main())
