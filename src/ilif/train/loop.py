"""The trainer: one entry point, :func:`train` (skip a finished run, hold the run directory's lock, set
the threads and the signal flag, claim the directory), and one room, :class:`Trainer`, which holds the
run's parts (:func:`build_parts`) and trains them: ``fit``, ``train_epoch``, ``evaluate``, ``save``,
``resume``. The run directory is the truth: ``config.yaml`` (resolved), ``metrics.jsonl``,
``summary.json``, ``last.pt``, ``best.pt``.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import ilif
from ilif import records
from ilif.conf import config_hash, distributed_env, identity, run_name
from ilif.errors import ConfigError, IlifError, Interrupted, RunConflict, describe, exit_code
from ilif.metrics import OpsMeter, SpikeMeter, TemporalGradientMeter, weight_grad_norms
from ilif.metrics.base import neuron_layers
from ilif.rundir import (MAX_EPOCH_SECONDS, OWNER, SET_ASIDE, MetricsFile, RunLock, RunSummary, finished_summary,
                         git_state, mark_owner, owner, ownership_problem, record_failure, remove_stale_temporaries,
                         write_json_atomic, write_text_atomic)
from ilif.wandb_mirror import WandbLogger

from . import checkpoint
from .build import build_datasets, build_model, build_optimizer, build_scheduler, set_memory, surrogate_of
from .remedies import Remedy, build_remedy
from .engine import check_finite_state, evaluate_loader, loader_factory, per_process_batch, optimize_over
from .runtime import Process, StopFlag, deterministic_ops_only, seed_everything, torch_threads

log = logging.getLogger("ilif.train")

__all__ = ["train"]


@dataclass
class Parts:
    """What one run trains and measures."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped by DDP and/or torch.compile, for training (evaluation runs the model)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: tuple  # train, val (or None), test, info
    eval_spikes: SpikeMeter
    eval_ops: OpsMeter
    train_spikes: SpikeMeter
    grad_meter: TemporalGradientMeter
    remedy: Remedy
    start_epoch: int = 0
    best: Optional[dict] = None
    changed_on_resume: list = field(default_factory=list)  # settings a resume ran under that differ from the start
    epoch_seconds: list = field(default_factory=list)  # wall time of each epoch (training and evaluation)
    resume_inside: Optional[tuple] = None  # (batches done, their sums) of an epoch resumed from a mid-epoch last.pt
    snapshot: tuple = field(default=(None, None))  # (layer table, energy report) of the last evaluation


def check_data(cfg: DictConfig, data: tuple) -> None:
    """Refuse data a run cannot learn from or be measured on: an empty training or evaluation set, or
    a training set that gives no complete batch when incomplete ones are dropped (no step would train)."""
    train_set, val_set, test_set, info = data
    for part, dataset in (("training", train_set), ("validation", val_set), ("test", test_set)):
        if dataset is not None and len(dataset) == 0:
            raise ConfigError("dataset", info.name, f"a dataset whose {part} set has samples (it has none)")
    tcfg = cfg.trainer
    if (tcfg.drop_last or tcfg.compile) and len(train_set) < tcfg.batch_size:  # global batch vs the whole set
        raise ConfigError("trainer.batch_size", tcfg.batch_size,
                          f"at most the {len(train_set)} training samples when incomplete batches are dropped "
                          "(trainer.drop_last or trainer.compile): no step would train")


def probe_model(model: torch.nn.Module, info, cfg: DictConfig, device) -> None:
    """One forward of a zero sample (eval mode, no gradient, state reset after): a backbone that cannot
    take the dataset's input size is a ConfigError naming model and dataset, not a traceback mid-epoch."""
    from spikingjelly.activation_based import functional as sj_functional

    shape = (1, cfg.trainer.T, info.in_channels, info.input_size, info.input_size) if info.events else \
        (1, info.in_channels, info.input_size, info.input_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(shape, device=device))
    except RuntimeError as err:
        raise ConfigError("model", cfg.model.name, f"a backbone for the {shape[-3]}×{shape[-2]}×{shape[-1]} input of "
                          f"{info.name} ({str(err).splitlines()[0][:160]})") from None
    finally:
        sj_functional.reset_net(model)
        model.train(was_training)


def build_parts(cfg: DictConfig, run: Process) -> Parts:
    """Seed, then data, model, optimiser, schedule and meters, in an order that fixes every random draw."""
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    check_data(cfg, data)
    per_process_batch(cfg.trainer.batch_size, run.world)
    model = build_model(cfg, data[3]).to(run.device)
    standard = set_memory(model, cfg.trainer.memory)
    if standard and run.is_main:
        log.info("trainer.memory=%s: %s layers keep what standard keeps (only LIF and ILIF recompute)",
                 cfg.trainer.memory, ", ".join(standard))
    probe_model(model, data[3], cfg, run.device)
    optimizer = build_optimizer(cfg, model)
    return Parts(model=model, net=model, optimizer=optimizer, scheduler=build_scheduler(cfg, optimizer), data=data,
                 eval_spikes=SpikeMeter(model, enabled=False),
                 eval_ops=OpsMeter(model, events_input=data[3].events, enabled=False),
                 train_spikes=SpikeMeter(model, occupancy=False, enabled=cfg.trainer.train_meter),
                 grad_meter=TemporalGradientMeter(model, enabled=cfg.trainer.grad_diagnostics),
                 remedy=build_remedy(cfg, model, data[0]))


START_OVER = "run again with trainer.resume=false to start this run over (the old files are moved aside, not deleted)"


def claim(run_dir: Path, identity_hash: str) -> bool:
    """Take ``run_dir`` for the run of ``identity_hash`` (the caller holds its lock): refuse it when the
    run may not write there (:func:`ilif.rundir.ownership_problem`: a symlink or special file, another
    config's run, files no run wrote), else clean the temporaries a killed writer left and mark it as
    this run's (:func:`ilif.rundir.mark_owner`) when no marker says so yet: whether it did. Nothing else
    is written into the folder before."""
    problem = ownership_problem(run_dir, identity_hash)
    if problem is not None:
        raise RunConflict(problem)
    fresh = owner(run_dir) is None  # else it is this run's own marker
    last = run_dir / "last.pt"
    if fresh and last.is_file():  # a run's from before the marker: its checkpoint says whose
        try:
            other = checkpoint.load(last).get("config_hash")
        except Exception:  # noqa: BLE001 - any unreadable checkpoint
            other = "unreadable"
        if other != identity_hash:
            raise RunConflict(f"{last} was written by another config ({other}, this is {identity_hash}): "
                              f"{START_OVER}, or choose another experiment_name or runs_root")
    remove_stale_temporaries(run_dir)
    if fresh:
        mark_owner(run_dir, identity_hash)
    return fresh


@contextmanager
def run_log(run_dir: Path, capture: bool):
    """Inside, every log record goes to the run's ``train.log`` too (opened after the claim), and, with
    ``capture`` (a study's worker), stdout and stderr as well."""
    handler = logging.FileHandler(run_dir / "train.log", delay=True)  # made at the first record
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        if not capture:
            yield
            return
        with open(run_dir / "train.log", "a") as out, redirect_stdout(out), redirect_stderr(out):
            yield
    finally:
        root.removeHandler(handler)
        handler.close()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The commit this process runs (12 characters, ``+dirty`` for a changed checkout; ``unknown``)."""
    commit, dirty = git_state()
    return commit[:12] + ("+dirty" if dirty else "")


def numeric_setting(device) -> dict:
    """What the numbers depend on besides the config: the code's commit (``+dirty`` for a changed
    checkout), torch threads, torch version, device type."""
    return {"code": code_version(), "threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "device": torch.device(device).type}


def provenance(device: torch.device) -> dict:
    """Git commit (and whether the tree was dirty), package versions, device, the vector instructions
    torch's CPU kernels use (their rounding, so the last digits, depend on it) and command."""
    commit, dirty = git_state()
    from importlib.metadata import version

    return {
        "git_commit": commit, "git_dirty": dirty, "command": " ".join(sys.argv),
        "versions": {"ilif": ilif.__version__, "torch": torch.__version__, "spikingjelly": version("spikingjelly"),
                     "hydra": version("hydra-core"), "numpy": np.__version__, "python": platform.python_version()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def report_finish(summary: RunSummary, run_dir: Path) -> None:
    final, best, energy = summary.final, summary.best, summary.energy_totals
    print(f"{summary.run_name}: test acc {final['test/acc1']:.4f} (best {best['metrics']['test/acc1']:.4f} at "
          f"epoch {best['epoch']}), firing rate {final['test/firing_rate']:.4f}, energy "
          f"{energy['snn_energy_pj'] / 1e6:.4f} µJ/sample -> {run_dir}")


def set_aside(run_dir: Path) -> Optional[Path]:
    """``trainer.resume=false`` over an earlier run: move its summary, history, checkpoints and wandb
    record into ``replaced-<UTC time>/`` inside the run directory (nothing is deleted; the next start
    neither skips nor resumes the old run, and its wandb run is a new one). The folder, or None when
    there was nothing to move."""
    present = [name for name in SET_ASIDE if (run_dir / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = run_dir / f"replaced-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir / f"replaced-{stamp}-{n}"
    aside.mkdir()
    for name in present:
        os.replace(run_dir / name, aside / name)
    return aside


def batches_per_epoch(tcfg, samples: int) -> int:
    """The training batches of one epoch of a single-process run over ``samples`` samples."""
    whole, rest = divmod(samples, tcfg.batch_size)
    batches = whole if (tcfg.drop_last or tcfg.compile) or not rest else whole + 1
    return min(batches, tcfg.limit_train_batches) if tcfg.limit_train_batches else batches


def _tensor(value, where):
    if not isinstance(value, torch.Tensor) or not bool(torch.isfinite(value).all()):
        raise records.Invalid(where, "is not a tensor of finite numbers")
    return value


def _running_sums(value, where):
    """A mid-epoch checkpoint's (loss sum, hits, samples): three finite numbers ≥ 0, hits ≤ samples."""
    sums = records.list_of(records.number(0))(value, where)
    if len(sums) != 3 or sums[1] > sums[2]:
        raise records.Invalid(where, f"{sums!r:.60} is not [loss sum, hits, samples] with hits ≤ samples")
    return sums


def progress_check(cfg: DictConfig, samples: int, model: torch.nn.Module) -> records.Check:
    """The check of the progress a ``last.pt`` records (:mod:`ilif.records`), for a run of ``cfg`` on
    ``samples`` training samples: the last finished epoch in [-1, epochs - 1], a mid-epoch step in
    [1, batches of an epoch] with its three running sums (loss, hits, samples ≥ 0) and its meters' counts
    by neuron layer (at least one sample a batch), the best epoch's record, the epoch times."""
    tcfg, layers = cfg.trainer, records.one_of(*neuron_layers(model))
    steps = batches_per_epoch(tcfg, samples)
    fields = records.record({
        "epoch": records.number(-1, tcfg.epochs - 1, integer=True),
        "step": records.number(1, steps, integer=True),
        "sums": _running_sums,
        "best": records.optional(records.record({"epoch": records.number(0, tcfg.epochs - 1, integer=True),
                                                 "metrics": records.mapping_of(records.number(finite=False))},
                                                required=("epoch", "metrics"))),
        "meters": records.record({"spikes": records.mapping_of(records.mapping_of(_tensor), layers),
                                  "grad_sums": records.mapping_of(_tensor, layers),
                                  "grad_counts": records.mapping_of(records.number(0, integer=True), layers)},
                                 required=("spikes", "grad_sums", "grad_counts"), others=None),
        "epoch_seconds": records.list_of(records.number(0, MAX_EPOCH_SECONDS)),
        "changed_on_resume": records.list_of(records.text),
    }, required=("epoch", "best"))

    def check(value, where):
        state = fields(value, where)
        if state.get("step") and (not state.get("sums") or state["sums"][2] < state["step"]):
            raise records.Invalid("sums", f"{state.get('sums')!r:.60} counts fewer samples than the "
                                  f"{state['step']} batches done")
        return state

    return check


class Trainer:
    """One run: its config, process (:class:`Process`), parts, directory and config hash, and the steps
    that train it. :meth:`fit` runs the epochs (each :meth:`train_epoch`, which ends with
    :meth:`evaluate`), :meth:`save` writes ``last.pt`` and ``best.pt`` after each, :meth:`resume` reads
    ``last.pt`` back; the summary is :meth:`summary`."""

    def __init__(self, cfg: DictConfig, run: Process, parts: Parts, run_dir: Path, identity_hash: str):
        self.cfg, self.run, self.parts, self.run_dir, self.identity_hash = cfg, run, parts, Path(run_dir), identity_hash
        self.loader = None  # loader(dataset, train, epoch, skip_batches): set by fit

    def resume(self, last_path: Optional[Path] = None) -> None:
        """Restore model, optimiser, schedule, scaler, RNG states and progress from ``last.pt``; refuse an
        unreadable file or another config's (one line naming the way out)."""
        parts, run = self.parts, self.run
        last_path = self.run_dir / "last.pt" if last_path is None else last_path
        try:
            state = checkpoint.load(last_path)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint
            raise RunConflict(f"{last_path} is unreadable ({type(err).__name__}): {START_OVER}") from None
        if not isinstance(state, dict) or state.get("config_hash") != self.identity_hash:
            other = state.get("config_hash") if isinstance(state, dict) else None
            raise RunConflict(f"{last_path} was written by another config ({other}, this is {self.identity_hash}): "
                              f"{START_OVER}, or choose another experiment_name or runs_root")
        try:
            state = records.validated(last_path, state, progress_check(self.cfg, len(parts.data[0]), parts.model))
        except records.RecordError as err:
            raise RunConflict(f"{err}: {START_OVER}") from None
        try:
            parts.model.load_state_dict(state["model"])
            parts.optimizer.load_state_dict(state["optimizer"])
            parts.scheduler.load_state_dict(state["scheduler"])
            run.scaler.load_state_dict(state["scaler"])
            checkpoint.set_rng_state(state["rng"])
            parts.start_epoch, parts.best = int(state["epoch"]) + 1, state["best"]
            if state.get("step"):  # written inside epoch state["epoch"]: go on from its next batch
                parts.start_epoch -= 1
                parts.resume_inside = (int(state["step"]), [float(v) for v in state["sums"]])
                parts.train_spikes.counts = state["meters"]["spikes"]
                parts.grad_meter.sums, parts.grad_meter.counts = (state["meters"]["grad_sums"],
                                                                  state["meters"]["grad_counts"])
            parts.changed_on_resume = list(state.get("changed_on_resume", []))
            parts.epoch_seconds = list(state.get("epoch_seconds", []))
            parts.remedy.load(state.get("remedy"))
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
            raise RunConflict(f"{last_path} does not fit this run ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else ''}): {START_OVER}") from None
        log.info("resumed from %s at epoch %d%s", last_path, parts.start_epoch,
                 f", step {parts.resume_inside[0]}" if parts.resume_inside else "")
        for key, before in (state.get("runtime") or {}).items():
            now = numeric_setting(run.device).get(key)
            if before != now:
                change = f"{key} {before} -> {now} at epoch {parts.start_epoch}"
                parts.changed_on_resume.append(change)
                log.warning("resumed with %s: from here the run is not bit-reproducible (recorded in summary.json)",
                            change)

    def wrap(self) -> None:
        """DDP across processes, then torch.compile when asked."""
        parts = self.parts
        if self.run.world > 1:
            device_ids = [self.run.device.index] if self.run.device.type == "cuda" else None
            parts.net = torch.nn.parallel.DistributedDataParallel(parts.model, device_ids=device_ids)
        if self.cfg.trainer.compile:
            try:
                parts.net = torch.compile(parts.net, dynamic=False)  # shapes are fixed per run
            except Exception as err:  # noqa: BLE001 - compile is an optional speed-up
                log.warning("torch.compile unavailable (%s); training eagerly", err)

    def evaluate(self, epoch: int) -> dict:
        """Evaluate on the test set with the meters: the record's test/* fields; keeps the layer table
        and the energy report in ``parts.snapshot``."""
        parts, cfg = self.parts, self.cfg
        test = evaluate_loader(parts.model, self.loader(parts.data[2], False, epoch), self.run, cfg.loss,
                        cfg.trainer.limit_eval_batches, (parts.eval_spikes, parts.eval_ops))
        spikes, energy, layers = parts.eval_spikes.summary(), parts.eval_ops.report(), parts.eval_spikes.layer_table()
        parts.snapshot = (layers, energy)
        fields = {f"test/{k}": v for k, v in test.items() if k != "samples"}
        fields.update({"test/firing_rate": spikes["firing_rate"], "test/occupancy": spikes.get("occupancy"),
                       "test/silent": spikes["silent"], "test/saturated": spikes["saturated"],
                       "test/rate_per_step": spikes["rate_per_step"],
                       "test/layer_rates": {r["layer"]: r["firing_rate"] for r in layers},
                       "test/energy_uj": energy["totals"]["snn_energy_pj"] / 1e6,
                       "test/ann_energy_uj": energy["totals"]["ann_energy_pj"] / 1e6,
                       "test/snn_ann_ratio": energy["totals"]["snn_ann_ratio"],
                       "test/state_energy_uj": energy["totals"]["state_energy_pj"] / 1e6})
        return fields

    def train_epoch(self, epoch: int, stop: StopFlag) -> dict:
        """Train one epoch (from where a mid-epoch checkpoint left it), step the schedule, check that the
        model state is finite, evaluate (validation, then test): the epoch's record. A single-process
        run also writes a mid-epoch checkpoint every ``trainer.checkpoint_every_min``."""
        parts, cfg, run, tcfg = self.parts, self.cfg, self.run, self.cfg.trainer
        train_set, val_set, _, _ = parts.data
        inside, parts.resume_inside = parts.resume_inside, None
        if inside is None:
            parts.train_spikes.reset()
            parts.grad_meter.reset()
            parts.remedy.start_epoch(epoch, tcfg.epochs)
        parts.train_spikes.set_enabled(tcfg.train_meter)
        record = {"epoch": epoch, "lr": parts.optimizer.param_groups[0]["lr"]}
        train_loader = self.loader(train_set, True, epoch, inside[0] if inside else 0)
        save_mid = functools.partial(self.save_inside_epoch, epoch) if self.saves_inside_epochs() else None
        record.update(optimize_over(parts.net, parts.model, train_loader, parts.optimizer, run=run, cfg=cfg,
                                    epoch=epoch, train_spikes=parts.train_spikes, stop=stop, start=inside,
                                    save_mid=save_mid, remedy=parts.remedy))
        record.update(parts.remedy.record())
        parts.train_spikes.set_enabled(False)
        parts.scheduler.step()
        check_finite_state(parts.model, f"after epoch {epoch}")
        if tcfg.train_meter:
            if run.world > 1:
                parts.train_spikes.all_reduce()
            record["train/firing_rate"] = parts.train_spikes.summary().get("firing_rate")
        if tcfg.grad_diagnostics:
            record["grad/weight_norms"] = weight_grad_norms(parts.model)
            record["grad/temporal_ratio"] = parts.grad_meter.network_ratio()
            record["grad/temporal_ratio_layers"] = parts.grad_meter.ratios()
        if val_set is not None:
            val = evaluate_loader(parts.model, self.loader(val_set, False, epoch), run, cfg.loss,
                                  tcfg.limit_eval_batches)
            record.update({f"val/{k}": v for k, v in val.items() if k != "samples"})
        record.update(self.evaluate(epoch))
        return record

    def saves_inside_epochs(self) -> bool:
        """Whether this run writes mid-epoch checkpoints (``trainer.checkpoint_every_min``, one process)."""
        return self.cfg.trainer.checkpoint_every_min > 0 and self.run.is_main and self.run.world == 1

    def update_best(self, record: dict, selector: str) -> bool:
        """Keep the epoch with the highest ``selector`` (val/acc1 or test/acc1); True if ``record`` is it."""
        best = self.parts.best
        if best is not None and record[selector] <= best["metrics"][selector]:
            return False
        self.parts.best = {"epoch": record["epoch"],
                           "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))}}
        return True

    def state(self, epoch: int) -> dict:
        """What ``last.pt`` holds after epoch ``epoch``: everything a resume restores."""
        parts, run = self.parts, self.run
        return {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                "rng": checkpoint.rng_state(), "epoch": epoch, "best": parts.best, "config_hash": self.identity_hash,
                "runtime": numeric_setting(run.device), "changed_on_resume": parts.changed_on_resume,
                "epoch_seconds": parts.epoch_seconds, "remedy": parts.remedy.state()}

    def save_inside_epoch(self, epoch: int, step: int, sums: list) -> None:
        """A mid-epoch ``last.pt``: the state after ``step`` batches of epoch ``epoch``, with the epoch's
        running sums and meter counts, from which a resume trains the rest of the epoch exactly."""
        parts = self.parts
        state = self.state(epoch - 1)
        state.update(epoch=epoch, step=step, sums=list(sums),
                     meters={"spikes": parts.train_spikes.counts, "grad_sums": parts.grad_meter.sums,
                             "grad_counts": parts.grad_meter.counts})
        checkpoint.save_atomic(state, self.run_dir / "last.pt")

    def save(self, epoch: int, is_best: bool) -> None:
        """``last.pt`` (everything needed to resume) and, for a new best epoch, ``best.pt`` (the weights)."""
        state = self.state(epoch)
        if is_best:  # best.pt first: a kill between the two leaves last.pt at the previous epoch, which redoes this one
            checkpoint.save_atomic({"model": self.parts.model.state_dict(), "epoch": epoch,
                                    "config_hash": self.identity_hash}, self.run_dir / "best.pt")
        checkpoint.save_atomic(state, self.run_dir / "last.pt")

    def summary(self, record: dict) -> RunSummary:
        """summary.json's content: final and best metrics, layer and energy tables, data, provenance, config."""
        parts, cfg, run = self.parts, self.cfg, self.run
        layers, energy = parts.snapshot
        train_set, val_set, test_set, info = parts.data
        return RunSummary(
            config_hash=self.identity_hash, run_name=run_name(cfg), final=dict(record), best=parts.best,
            experiment_name=cfg.experiment_name, neuron=cfg.neuron.name, dataset=cfg.dataset.name,
            gamma=cfg.surrogate.gamma, seed=cfg.seed,
            layers=layers, energy_layers=energy["layers"], neuron_state_ops=energy["neurons"],
            energy_totals=energy["totals"], surrogate=surrogate_of(cfg).describe(),
            dataset_info={"name": info.name, "split": info.split, "train_size": len(train_set),
                          "val_size": len(val_set) if val_set is not None else 0, "test_size": len(test_set),
                          **info.details},
            world_size=run.world, provenance={**provenance(run.device), "changed_on_resume": parts.changed_on_resume,
                                              "epoch_seconds": parts.epoch_seconds},
            config=identity(cfg))

    def fit(self, stop: StopFlag) -> RunSummary:
        """Resume when ``last.pt`` is there, train the remaining epochs (a record, a checkpoint and a
        wandb step after each), and write the summary."""
        cfg, run, parts, run_dir = self.cfg, self.run, self.parts, self.run_dir
        if cfg.trainer.resume and (run_dir / "last.pt").exists():
            self.resume()
        self.wrap()
        self.loader = loader_factory(cfg, run)
        metrics = None
        if run.is_main:
            try:
                metrics = MetricsFile(run_dir / "metrics.jsonl", keep_epochs_below=parts.start_epoch)
            except records.RecordError as err:
                raise RunConflict(f"{err}: {START_OVER}") from None
            write_text_atomic(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
            wandb = WandbLogger(cfg.logger.wandb, run_dir, OmegaConf.to_container(cfg, resolve=True),
                                self.identity_hash, run_name(cfg))
        selector = "val/acc1" if parts.data[1] is not None else "test/acc1"
        record = None
        bar = tqdm(range(parts.start_epoch, cfg.trainer.epochs), desc=run_name(cfg), dynamic_ncols=True,
                   disable=not (cfg.trainer.progress and run.is_main))
        if cfg.trainer.checkpoint_every_min > 0 and run.is_main and run.world > 1:
            log.warning("trainer.checkpoint_every_min: mid-epoch checkpoints are written by single-process runs only; "
                        "this DDP run checkpoints at the end of each epoch")
        for epoch in bar:
            started = time.perf_counter()
            with deterministic_ops_only(cfg.trainer.deterministic, run.device):
                record = self.train_epoch(epoch, stop)
            parts.epoch_seconds.append(round(time.perf_counter() - started, 3))
            is_best = self.update_best(record, selector)
            log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | firing rate %.4f | energy %.4f µJ",
                     epoch, record["train/loss"], record["train/acc1"], record["test/loss"], record["test/acc1"],
                     record["test/firing_rate"], record["test/energy_uj"])
            if run.is_main:
                metrics.append(record)
                wandb.log(record)
                self.save(epoch, is_best)
                bar.set_postfix(test_acc=f"{record['test/acc1']:.3f}", rate=f"{record['test/firing_rate']:.3f}")
        if record is None:  # resumed a run whose epochs were all done, or epochs = 0
            record = {"epoch": cfg.trainer.epochs - 1, **self.evaluate(cfg.trainer.epochs)}
            if parts.best is None:
                self.update_best(record, "test/acc1")
        summary = self.summary(record)
        if run.is_main:
            write_json_atomic(summary.to_json(), run_dir / "summary.json")
            drop_checkpoints(run_dir, cfg.trainer.keep_checkpoints)
            wandb.finish(summary)
            report_finish(summary, run_dir)
        return summary


#: the checkpoints a finished run removes for each ``trainer.keep_checkpoints``
DROPPED = {"all": (), "best": ("last.pt",), "none": ("last.pt", "best.pt")}


def drop_checkpoints(run_dir: Path, keep: str) -> None:
    """Remove what a finished run does not keep (:data:`DROPPED`; after its summary is written, so a
    run killed before has its checkpoint to resume from)."""
    for name in DROPPED[keep]:
        (run_dir / name).unlink(missing_ok=True)


def keep_failure(run_dir: Path, identity_hash: str, err: Exception) -> None:
    """Record why this run failed in its ``summary.json`` (:func:`ilif.rundir.record_failure`), unless
    the run finished before the error (its summary is kept); a record that cannot be written is a
    warning, and the run's own error stays the one reported. Not for an interrupted run (it resumes)
    nor for a directory that holds another config's run (it is not this run's)."""
    if finished_summary(run_dir, identity_hash) is not None:
        return
    try:
        record_failure(run_dir, identity_hash, describe(err, run_dir), exit_code(err))
    except OSError as failure:
        log.warning("the record of this run's failure could not be written to %s: %s", run_dir, failure)


def train(cfg: DictConfig, run_dir: Path, capture: bool = False) -> RunSummary:
    """Train (or resume, or skip when finished) the run ``cfg`` describes into ``run_dir``, with
    ``trainer.threads`` torch threads; its summary. A finished run is skipped without a write; from
    the claim on, the run's log (and with ``capture`` its output) goes to its ``train.log``."""
    run_dir, identity_hash = Path(run_dir), config_hash(cfg)
    previous = finished_summary(run_dir) if cfg.trainer.resume else None
    if previous is not None and previous.config_hash == identity_hash:
        log.info("already finished, skipped: %s", run_dir)
        return previous
    rank, _, _ = distributed_env()
    if rank == 0:  # rank 0 owns the directory; before its lock file, a folder that is not the run's is left as is
        problem = ownership_problem(run_dir, identity_hash)
        if problem is not None:
            raise RunConflict(problem)
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir) if rank == 0 else None
    marked = False
    try:
        with torch_threads(cfg.trainer.threads), StopFlag() as stop:
            run = Process(cfg, stop)
            if run.is_main:
                marked = claim(run_dir, identity_hash)
            with run_log(run_dir, capture) if run.is_main else nullcontext():
                if run.is_main and not cfg.trainer.resume:
                    aside = set_aside(run_dir)
                    if aside is not None:
                        log.warning("trainer.resume=false: the earlier run's files were moved to %s", aside)
                try:
                    return Trainer(cfg, run, build_parts(cfg, run), run_dir, identity_hash).fit(stop)
                except Exception as err:
                    if run.is_main and not isinstance(err, (Interrupted, RunConflict)):
                        keep_failure(run_dir, identity_hash, err)
                    if run.is_main and capture:  # the study's worker: its run's log says how it ended
                        log.error("run %s: %s", "stopped" if isinstance(err, Interrupted) else "failed",
                                  describe(err, run_dir), exc_info=not isinstance(err, IlifError))
                    raise
    except RunConflict:  # the folder is not this run's after all (an earlier run's checkpoint of another config)
        if marked:
            (run_dir / OWNER).unlink(missing_ok=True)
        if lock is not None:
            lock.release(discard=True)
            lock = None
        raise
    finally:
        if lock is not None:
            lock.release()
