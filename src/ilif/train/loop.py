"""The trainer: data, model, loss, optimiser, epochs, evaluation with meters, checkpoints and logs.

One entry point, :func:`train` (called by the Hydra app), with the run directory as the truth:
``config.yaml`` (resolved), ``metrics.jsonl``, ``summary.json``, ``last.pt``, ``best.pt``.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import subprocess
import sys
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from spikingjelly.activation_based import functional as sj_functional
from tqdm import tqdm

import ilif
from ilif.data import make_loader
from ilif.metrics import OpsMeter, SpikeMeter, TemporalGradientMeter, weight_grad_norms

from . import checkpoint
from .build import build_datasets, build_model, build_optimizer, build_scheduler, surrogate_of
from .config import config_hash, identity, run_name
from .logging_utils import MetricsFile, WandbLogger, finished_summary, write_json_atomic

log = logging.getLogger("ilif.train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------- building blocks


def compute_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """logits [T, B, C], target [B].

    ce:  CE(mean_t o_t, y).
    tet: (1 − λ)·mean_t CE(o_t, y) + λ·MSE(o_t, φ), φ a constant or the one-hot label (docs/recipes.md).
    """
    logits = logits.float()
    if loss_cfg.name == "ce":
        return F.cross_entropy(logits.mean(0), target, label_smoothing=loss_cfg.label_smoothing)
    T = logits.shape[0]
    ce = F.cross_entropy(logits.flatten(0, 1), target.repeat(T), label_smoothing=loss_cfg.label_smoothing)
    if loss_cfg.mse_target == "onehot":
        goal = F.one_hot(target, logits.shape[-1]).to(logits.dtype).expand_as(logits)
    else:
        goal = torch.full_like(logits, loss_cfg.phi)
    return (1.0 - loss_cfg.lam) * ce + loss_cfg.lam * F.mse_loss(logits, goal)


def correct_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    """Top-1 and top-5 hits of the prediction argmax Σ_t o_t."""
    scores = logits.sum(0)
    k = min(5, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    hits = top == target.unsqueeze(1)
    return int(hits[:, 0].sum()), int(hits.any(1).sum())


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class ShardSampler(torch.utils.data.Sampler):
    """Every world_size-th index from ``rank``, without padding, so evaluation counts add up exactly."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def provenance(device: torch.device) -> dict:
    repo = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    from importlib.metadata import version

    return {
        "git_commit": commit, "git_dirty": dirty, "command": " ".join(sys.argv),
        "versions": {"ilif": ilif.__version__, "torch": torch.__version__, "spikingjelly": version("spikingjelly"),
                     "hydra": version("hydra-core"), "numpy": np.__version__, "python": platform.python_version()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
    }


# ---------------------------------------------------------------------------- the run


class Run:
    """State of one training run (one process; rank 0 writes the run directory)."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        if not self.is_main:
            log.setLevel(logging.WARNING)
        want = cfg.trainer.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want == "cuda" else "gloo")
        if want == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        amp = cfg.trainer.amp
        if self.device.type != "cuda":
            if amp in ("fp16", "bf16"):
                log.warning("trainer.amp=%s is ignored on the CPU", amp)
            amp = "off"
        elif amp == "auto":
            amp = "fp16"
        self.amp_dtype = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def _limit(loader, limit: int):
    for index, batch in enumerate(loader):
        if limit and index >= limit:
            return
        yield batch


def evaluate(model, loader, run: Run, loss_cfg, limit: int = 0, meters=()) -> dict:
    """Loss, top-1/top-5 accuracy over ``loader`` (all ranks summed); ``meters`` are reset and record
    while it runs (their counts are summed over ranks too). Always in float32, without autocast, as the
    release evaluates."""
    model.eval()
    totals = [0.0, 0.0, 0.0, 0.0]  # loss sum, top-1 hits, top-5 hits, samples
    with torch.no_grad(), ExitStack() as stack:
        for meter in meters:
            meter.reset()
            stack.enter_context(meter.recording())
        for x, y in _limit(loader, limit):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            logits = model(x)
            sj_functional.reset_net(model)
            totals[0] += compute_loss(logits, y, loss_cfg).item() * len(y)
            top1, top5 = correct_counts(logits, y)
            totals[1] += top1
            totals[2] += top5
            totals[3] += len(y)
    loss_sum, hit1, hit5, n = all_reduce_sum(totals, run.device)
    if run.world > 1:
        for meter in meters:
            meter.all_reduce()
    return {"loss": loss_sum / max(n, 1), "acc1": hit1 / max(n, 1), "acc5": hit5 / max(n, 1), "samples": int(n)}


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train (or resume, or skip when finished) the run described by ``cfg`` in ``run_dir``; returns the summary."""
    run = Run(cfg, run_dir)
    run_dir = run.run_dir
    identity_hash = config_hash(cfg)
    summary_path, last_path, best_path = run_dir / "summary.json", run_dir / "last.pt", run_dir / "best.pt"
    previous = finished_summary(run_dir) if cfg.trainer.resume else None
    if previous is not None and previous.get("config_hash") == identity_hash:
        log.info("already finished, skipped: %s", run_dir)
        return previous

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    train_set, val_set, test_set, info = build_datasets(cfg)
    model = build_model(cfg, info).to(run.device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    eval_spikes, eval_ops = SpikeMeter(model, enabled=False), OpsMeter(model, events_input=info.events, enabled=False)
    train_spikes = SpikeMeter(model, occupancy=False, enabled=cfg.trainer.train_meter)
    grad_meter = TemporalGradientMeter(model, enabled=cfg.trainer.grad_diagnostics)

    start_epoch, best, wandb_id = 0, None, None
    if cfg.trainer.resume and last_path.exists():
        state = checkpoint.load(last_path, run.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, best, wandb_id = state["epoch"] + 1, state["best"], state.get("wandb_id") or None
        log.info("resumed from %s at epoch %d", last_path, start_epoch)

    net = model
    if run.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if cfg.trainer.compile:
        try:
            net = torch.compile(net, dynamic=False)  # shapes are fixed per run; dynamic shapes trip inductor here
        except Exception as err:  # noqa: BLE001 - compile is an optional speed-up
            log.warning("torch.compile unavailable (%s); training eagerly", err)

    tcfg = cfg.trainer
    pin = tcfg.pin_memory and run.device.type == "cuda"

    def loader(dataset, train: bool, epoch: int):
        if dataset is None:
            return None
        if run.world > 1:
            sampler = (torch.utils.data.distributed.DistributedSampler(dataset, run.world, run.rank, shuffle=True,
                                                                       seed=cfg.seed) if train
                       else ShardSampler(len(dataset), run.rank, run.world))
            if train:
                sampler.set_epoch(epoch)
        else:
            sampler = None
        return make_loader(dataset, tcfg.batch_size if train else tcfg.eval_batch_size, train=train,
                           num_workers=tcfg.num_workers, pin_memory=pin, seed=cfg.seed * 100_003 + epoch, sampler=sampler,
                           drop_last=train and tcfg.drop_last)

    metrics = MetricsFile(run_dir / "metrics.jsonl", keep_epochs_below=start_epoch) if run.is_main else None
    name = run_name(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if run.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    wandb = WandbLogger(cfg.logger.wandb, run_dir, name, resolved, wandb_id) if run.is_main else None

    def test_record(test_loader) -> tuple[dict, tuple]:
        """Evaluate on the test set with the meters: the record's test/* fields and (layer table, energy report)."""
        test = evaluate(net, test_loader, run, cfg.loss, tcfg.limit_eval_batches, (eval_spikes, eval_ops))
        spikes, energy, layers = eval_spikes.summary(), eval_ops.report(), eval_spikes.layer_table()
        fields = {f"test/{k}": v for k, v in test.items() if k != "samples"}
        fields.update({"test/firing_rate": spikes["firing_rate"], "test/occupancy": spikes.get("occupancy"),
                       "test/silent": spikes["silent"], "test/saturated": spikes["saturated"],
                       "test/rate_per_step": spikes["rate_per_step"],
                       "test/layer_rates": {r["layer"]: r["firing_rate"] for r in layers},
                       "test/energy_uj": energy["totals"]["snn_energy_pj"] / 1e6,
                       "test/ann_energy_uj": energy["totals"]["ann_energy_pj"] / 1e6,
                       "test/snn_ann_ratio": energy["totals"]["snn_ann_ratio"],
                       "test/state_energy_uj": energy["totals"]["state_energy_pj"] / 1e6})
        return fields, (layers, energy)

    epochs = range(start_epoch, tcfg.epochs)
    bar = tqdm(epochs, desc=name, disable=not (tcfg.progress and run.is_main), dynamic_ncols=True)
    record, eval_snapshot = None, None
    for epoch in bar:
        net.train()
        train_spikes.reset()
        train_spikes.set_enabled(tcfg.train_meter)
        grad_meter.reset()
        sums = [0.0, 0.0, 0.0]  # loss sum, hits, samples
        batches = tqdm(_limit(loader(train_set, True, epoch), tcfg.limit_train_batches), leave=False,
                       disable=not (tcfg.progress and run.is_main), desc=f"epoch {epoch}")
        for step, (x, y) in enumerate(batches):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with run.autocast():
                logits = net(x)
            loss = compute_loss(logits, y, cfg.loss)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}; the last good "
                                       f"checkpoint is {last_path if last_path.exists() else 'none (first epoch)'}")
            run.scaler.scale(loss).backward()
            if tcfg.grad_clip > 0:
                run.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            run.scaler.step(optimizer)
            run.scaler.update()
            sj_functional.reset_net(model)
            hits, _ = correct_counts(logits.detach(), y)
            sums[0] += loss.item() * len(y)
            sums[1] += hits
            sums[2] += len(y)
            if run.is_main and tcfg.progress:
                rate = train_spikes.summary().get("firing_rate", float("nan")) if tcfg.train_meter else float("nan")
                batches.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}", rate=f"{rate:.3f}")
        train_spikes.set_enabled(False)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        loss_sum, hits, n = all_reduce_sum(sums, run.device)
        if run.world > 1 and tcfg.train_meter:
            train_spikes.all_reduce()
        record = {"epoch": epoch, "lr": lr, "train/loss": loss_sum / max(n, 1), "train/acc1": hits / max(n, 1)}
        if tcfg.train_meter:
            record["train/firing_rate"] = train_spikes.summary().get("firing_rate")
        if tcfg.grad_diagnostics:
            record["grad/weight_norms"] = weight_grad_norms(model)
            record["grad/temporal_ratio"] = grad_meter.network_ratio()
            record["grad/temporal_ratio_layers"] = grad_meter.ratios()
        if val_set is not None:
            val = evaluate(net, loader(val_set, False, epoch), run, cfg.loss, tcfg.limit_eval_batches)
            record.update({f"val/{k}": v for k, v in val.items() if k != "samples"})
        test_fields, eval_snapshot = test_record(loader(test_set, False, epoch))
        record.update(test_fields)
        select = "val/acc1" if val_set is not None else "test/acc1"
        if best is None or record[select] > best["metrics"][select]:
            best = {"epoch": epoch, "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))}}
            is_best = True
        else:
            is_best = False
        log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | firing rate %.4f | energy %.4f µJ",
                 epoch, record["train/loss"], record["train/acc1"], record["test/loss"], record["test/acc1"],
                 record["test/firing_rate"], record["test/energy_uj"])
        if run.is_main:
            metrics.append(record)
            wandb.log(record)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": run.scaler.state_dict(), "rng": checkpoint.rng_state(), "epoch": epoch, "best": best,
                     "config_hash": identity_hash, "wandb_id": wandb.run_id or ""}
            checkpoint.save_atomic(state, last_path)
            if is_best:
                checkpoint.save_atomic({"model": model.state_dict(), "epoch": epoch, "config_hash": identity_hash}, best_path)
            bar.set_postfix(test_acc=f"{record['test/acc1']:.3f}", rate=f"{record['test/firing_rate']:.3f}")

    if record is None:  # resumed a run whose epochs were all done, or epochs = 0
        test_fields, eval_snapshot = test_record(loader(test_set, False, tcfg.epochs))
        record = {"epoch": tcfg.epochs - 1, **test_fields}
        best = best or {"epoch": record["epoch"], "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))}}
    layers, energy = eval_snapshot
    summary = {
        "status": "finished", "run_name": name, "config_hash": identity_hash,
        "experiment_name": cfg.experiment_name, "neuron": cfg.neuron.name, "dataset": cfg.dataset.name,
        "gamma": cfg.surrogate.gamma, "seed": cfg.seed,
        "final": {k: v for k, v in record.items()}, "best": best,
        "layers": layers, "energy_layers": energy["layers"], "neuron_state_ops": energy["neurons"],
        "energy_totals": energy["totals"], "surrogate": surrogate_of(cfg).describe(),
        "dataset_info": {"name": info.name, "split": info.split, "train_size": len(train_set),
                         "val_size": len(val_set) if val_set is not None else 0, "test_size": len(test_set),
                         **info.details},
        "world_size": run.world, "provenance": provenance(run.device), "config": identity(cfg),
    }
    if run.is_main:
        write_json_atomic(summary, summary_path)
        wandb.finish(summary)
        print(f"{name}: test acc {summary['final']['test/acc1']:.4f} (best {best['metrics']['test/acc1']:.4f} at epoch "
              f"{best['epoch']}), firing rate {summary['final']['test/firing_rate']:.4f}, energy "
              f"{energy['totals']['snn_energy_pj'] / 1e6:.4f} µJ/sample -> {run_dir}")
    return summary
