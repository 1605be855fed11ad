"""``ilif-study``: run the grids of experiment configs in one process, with a progress bar for the study.

Each experiment file in ``configs/experiment/`` lists its grid under ``hydra.sweeper.params``, so
``ilif-train -m experiment=NAME`` runs the same grid with Hydra's launcher. The study runner composes
the same configs with Hydra's compose API, runs every job with the one trainer
(:func:`ilif.train.loop.train`) into the same run directories, skips finished runs, resumes unfinished
ones, and shows runs done / total with the elapsed and remaining time.

    ilif-study demo
    ilif-study --table 1 --scale mini            # Table 1's grid at mini scale (what make reproduce-table1 runs)
    ilif-study --table 1 2 3 --scale full --dry-run   # the plan and a rough time estimate
    ilif-study --table all --figures --scale mini    # every table and figure (what make reproduce-all runs)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

import ilif
from ilif.conf import use_config_dirs
from ilif.errors import ConfigError, Interrupted, bad_input, describe, entry_point, exit_code
from ilif.grid import SCALES, experiment_names, plan, table_jobs, table_numbers, tables
from ilif.rundir import failure_lines, finished_summary

log = logging.getLogger("ilif.train")

# Rough seconds per training epoch on one current datacenter GPU: the estimate's fallback where no
# finished run of the same dataset, model and T has measured it.
ROUGH_GPU_SECONDS_PER_EPOCH = {"cifar10": 40, "cifar100": 40, "cifar10_dvs": 30, "dvs_gesture": 25,
                               "imagenet": 2400, "digits": 1, "seqdigits": 1, "ndigits": 2}


def _setting(dataset, model, T) -> tuple:
    return str(dataset), str(model), int(T) if isinstance(T, int) else T


def measured_epoch_seconds(runs_root: Path) -> dict[tuple, tuple[float, set]]:
    """(dataset, model, T) -> (median seconds per epoch, devices) over the finished runs under
    ``runs_root`` that recorded their epoch times."""
    import statistics

    seen: dict[tuple, list] = {}
    for path in Path(runs_root).glob("*/*/summary.json"):
        summary = finished_summary(path.parent)
        if summary is None:
            continue
        seconds, config = summary.provenance.get("epoch_seconds"), summary.config
        if not seconds or not isinstance(config.get("trainer"), dict) or not isinstance(config.get("model"), dict):
            continue
        key = _setting(summary.dataset, config["model"].get("name"), config["trainer"].get("T"))
        device = str(summary.provenance.get("device", "unknown")).split(" (")[0]
        seen.setdefault(key, []).append((statistics.median(seconds), device))
    return {key: (statistics.median(s for s, _ in runs), {d for _, d in runs}) for key, runs in seen.items()}


def validate_jobs(jobs) -> None:
    """Check every job's config (:func:`ilif.train.config.validate`); ConfigError on the first bad one."""
    from ilif.train.config import validate

    for _, cfg, _ in jobs:
        validate(cfg)


def describe_plan(jobs) -> str:
    """The plan, an experiment a line, and the time its unfinished runs will take: measured per epoch by
    finished runs of the same dataset, model and T where there are any, else an assumed GPU figure."""
    lines, seconds, assumed, measured_on = [], 0.0, set(), set()
    measured = measured_epoch_seconds(Path(jobs[0][1].runs_root)) if jobs else {}
    for (name, _), group in itertools.groupby(jobs, key=lambda job: (job[0], job[1].dataset.name)):
        group = list(group)
        todo = [job for job in group if finished_summary(job[2]) is None]
        cfg = group[0][1]
        for _, job_cfg, _ in todo:
            key = _setting(job_cfg.dataset.name, job_cfg.model.name, job_cfg.trainer.T)
            if key in measured:
                epoch_seconds, devices = measured[key]
                measured_on |= devices
            else:
                epoch_seconds = ROUGH_GPU_SECONDS_PER_EPOCH.get(job_cfg.dataset.name, 60)
                assumed.add(job_cfg.dataset.name)
            seconds += job_cfg.trainer.epochs * epoch_seconds
        lines.append(f"  {name}: {len(group)} runs ({len(group) - len(todo)} finished) of {cfg.dataset.name} / "
                     f"{cfg.model.name}, T={cfg.trainer.T}, {cfg.trainer.epochs} epochs -> "
                     f"{Path(cfg.runs_root) / cfg.experiment_name}")
    basis = []
    if measured_on:
        basis.append(f"measured by finished runs on {', '.join(sorted(measured_on))}")
    if assumed:
        basis.append("assumed for " + ", ".join(f"{d} ({ROUGH_GPU_SECONDS_PER_EPOCH.get(d, 60)} s per epoch on one GPU)"
                                                 for d in sorted(assumed)))
    total = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    lines.append(f"  estimate: {total} ({'; '.join(basis) or 'nothing left to train'})")
    return "\n".join(lines)


def default_jobs() -> int:
    """Parallel runs by default: the usable cores, capped by memory (about 2 GiB per CPU run)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/meminfo") as f:
            available_kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return max(1, min(cores, available_kib // (2 * 2**20)))
    except (OSError, StopIteration, ValueError):
        return cores


def _train_one(container: dict, run_dir: str) -> tuple[str, str]:
    """Train one job in this (worker) process, its output in the run's train.log once the trainer has
    claimed the directory: (``finished``, ""), (``failed``, its line as the run's record of its failure
    gives it) or (``interrupted``, the exit code of the signal that stopped it)."""
    from ilif.train.loop import train

    path = Path(run_dir)
    log.setLevel(logging.INFO)
    try:
        train(OmegaConf.create(container), path, capture=True)
        return "finished", ""
    except Interrupted as err:
        return "interrupted", str(err.exit_code)
    except Exception as err:  # noqa: BLE001 - one failed run must not stop the study
        return "failed", f"{describe(err, path)} (exit {exit_code(err)})"


def _stop_with_parent() -> None:
    """Linux: this process gets SIGTERM when the process that started it dies (the trainer then stops
    the run resumably), so a killed study leaves no worker behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_loop(conn) -> None:
    """A study worker: train each (config, run directory) it is sent, answer (status, detail); stop at None."""
    _stop_with_parent()
    while (job := conn.recv()) is not None:
        conn.send(_train_one(*job))


class _Worker:
    """One worker process and the run it is training (None when idle)."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.run_dir = None

    def give(self, cfg, run_dir) -> None:
        self.run_dir = run_dir
        self.conn.send((OmegaConf.to_container(cfg), str(run_dir)))

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _death(process) -> str:
    """How a worker process ended, in words."""
    import signal

    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"the worker process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"the worker process exited with code {code}"


def _run_in_workers(todo, workers: int, record) -> None:
    """Train ``todo`` in ``workers`` processes; a worker that dies is its run's failure (with its signal)
    and a fresh worker takes the next run. Stops handing out runs once one is interrupted."""
    from multiprocessing import get_context
    from multiprocessing.connection import wait

    ctx = get_context("spawn")
    queue = list(todo)
    pool = [_Worker(ctx) for _ in range(min(workers, len(queue)))]
    stopping = False
    try:
        for worker in pool:
            worker.give(*queue.pop(0))
        while any(w.run_dir is not None for w in pool):
            busy = [w for w in pool if w.run_dir is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                run_dir, worker.run_dir = worker.run_dir, None
                try:
                    status, detail = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join()
                    status, detail = "failed", _death(worker.process)
                    pool[pool.index(worker)] = worker = _Worker(ctx) if queue and not stopping else worker
                record(run_dir, status, detail)
                stopping = stopping or status == "interrupted"
                if queue and not stopping and worker.process.is_alive():
                    worker.give(*queue.pop(0))
    except BaseException:  # Ctrl-C or SIGTERM to the study: its runs stop where they are, resumably
        for worker in pool:
            if worker.run_dir is not None and worker.process.is_alive():
                worker.process.terminate()
        raise
    finally:
        for worker in pool:
            if worker.process.is_alive():
                worker.stop()


def run_jobs(jobs, progress: bool = True, workers: int = 1) -> dict:
    """Train every unfinished job, ``workers`` at a time in separate processes (each with its
    ``trainer.threads`` torch threads, 1 by default), with one progress bar. A failed run, or a worker
    that dies (killed by the out-of-memory killer, say), is recorded and the study goes on; SIGINT or
    SIGTERM stops it (its runs resumably). Returns counts of outcomes (runs finished counted from their
    directories, the truth whatever messages were lost), the failures (run directory, reason), the
    exit code of the signal that stopped the study (``stopped``, None) and the seconds taken."""
    import signal

    outcome = {"finished": 0, "skipped": 0, "failed": 0, "interrupted": 0, "failures": [], "stopped": None}
    start = time.time()
    todo = [(cfg, run_dir) for _, cfg, run_dir in jobs if finished_summary(run_dir) is None]
    outcome["skipped"] = len(jobs) - len(todo)
    bar = tqdm(total=len(jobs), initial=outcome["skipped"], desc="study", unit="run", disable=not progress,
               dynamic_ncols=True)

    def record(run_dir: Path, status: str, detail: str) -> None:
        outcome[status] += 1
        if status == "failed":
            outcome["failures"].append((run_dir, detail))
            tqdm.write(f"failed: {run_dir}: {detail}")
        if status == "interrupted":
            outcome["stopped"] = outcome["stopped"] or int(detail)
        bar.update(1)

    def terminated(signum, frame):
        raise Interrupted("the study", signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        if workers <= 1:  # one at a time, in this process
            for cfg, run_dir in todo:
                record(run_dir, *_train_one(OmegaConf.to_container(cfg), str(run_dir)))
                if outcome["interrupted"]:
                    break
        elif todo:
            _run_in_workers(todo, workers, record)
    except (KeyboardInterrupt, Interrupted) as err:
        outcome["interrupted"] += 1
        outcome["stopped"] = outcome["stopped"] or exit_code(err)
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    outcome["finished"] = sum(finished_summary(run_dir) is not None for _, run_dir in todo)
    outcome["seconds"] = time.time() - start
    return outcome


@entry_point
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ilif-study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {ilif.__version__}")
    parser.add_argument("--config-dir", "-cd", action="append", default=[], type=Path, metavar="DIR",
                        help="a folder of your own config files (experiment/, model/, ...), "
                             "searched after the package's")
    parser.add_argument("experiments", nargs="*", help="experiment config names or globs (configs/experiment/)")
    parser.add_argument("--table", nargs="+", default=[], metavar="N",
                        help=f"the experiments behind these tables (with --scale): {sorted(tables())} or all")
    parser.add_argument("--figures", action="store_true", help="the experiments behind the figures (with --scale)")
    parser.add_argument("--scale", choices=SCALES, default="full", help="the scale of --table (default full)")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override applied to every run")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
    parser.add_argument("--skip-missing", action="store_true",
                        help="train the runs whose data is on disk and leave out the others (listed)")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="runs trained at once, each in its own process (default: the cores, capped by memory)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    with bad_input():
        use_config_dirs(args.config_dir)
    if not (args.experiments or args.table or args.figures):
        parser.error("name experiments, --table or --figures")
    os.environ.setdefault("WANDB_SILENT", "true")
    with bad_input():  # an --override that does not compose, a value out of range, a missing dataset
        numbers = table_numbers(args.table)
        jobs = table_jobs(numbers, args.scale, args.override, args.figures) if numbers or args.figures else []
        if args.experiments:
            jobs += plan(experiment_names(args.experiments), args.override)
        validate_jobs(jobs)
        print(f"{len(jobs)} runs:\n{describe_plan(jobs)}", flush=True)
        if args.dry_run:
            return 0
        from ilif.data import missing_datasets, setting_of  # torch: only once the plan is checked

        missing = missing_datasets([cfg for _, cfg, _ in jobs])
    if missing and not args.skip_missing:
        for message in missing.values():
            print(f"error: {message}", file=sys.stderr)
        raise ConfigError.from_message(f"{len(missing)} dataset(s) missing; get them (docs/full_scale.md), or run "
                                       "the rest with --skip-missing")
    for message in missing.values():
        print(f"skipped (--skip-missing): {message}", file=sys.stderr)
    jobs = [job for job in jobs if setting_of(job[1]) not in missing]
    workers = args.jobs if args.jobs is not None else default_jobs()
    if workers < 1:
        raise ConfigError("--jobs", workers, "use 1 or more")
    outcome = run_jobs(jobs, progress=not args.no_progress, workers=workers)
    print(f"study done in {outcome['seconds']:.0f} s with {workers} parallel runs: {outcome['finished']} trained, "
          f"{outcome['skipped']} already finished, {outcome['failed']} failed")
    if outcome["failures"]:
        print("\n".join(failure_lines(outcome["failures"], "study")), file=sys.stderr)
    if outcome["stopped"]:
        print("error: the study was interrupted; run the same command again to go on (finished runs are kept, "
              "unfinished ones resume)", file=sys.stderr)
        return outcome["stopped"]
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
