"""One training epoch and one evaluation pass, and the loaders that feed them (the process they run in:
:mod:`ilif.train.runtime`; the losses: :mod:`ilif.train.losses`)."""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from contextlib import ExitStack, nullcontext
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from spikingjelly.activation_based import functional as sj_functional
from tqdm import tqdm

from ilif.data import make_loader
from ilif.errors import ConfigError, Interrupted, TrainingDiverged

from .losses import loss_function
from .runtime import Process, StopFlag, all_reduce_sum

log = logging.getLogger("ilif.train")


def first_non_finite(named_tensors) -> Optional[str]:
    """The name of the first floating-point tensor of (name, tensor or None) pairs with a NaN or an inf."""
    return next((name for name, t in named_tensors
                 if t is not None and t.is_floating_point() and not torch.isfinite(t).all()), None)


def check_finite_state(model: torch.nn.Module, where: str) -> None:
    """Raise TrainingDiverged naming the first parameter or buffer (BatchNorm statistics included) that
    holds a NaN or an infinity."""
    bad = first_non_finite([*model.named_parameters(), *model.named_buffers()])
    if bad is not None:
        raise TrainingDiverged(f"non-finite model state ({bad}) {where}")


def first_non_finite_grad(named_parameters) -> Optional[str]:
    """The name of the first parameter whose gradient holds a NaN or an infinity, or None. One fused
    reduction (the largest |g| of every gradient, by ``torch._foreach_norm``) and one host sync for the
    whole model; the names are searched only when something is not finite."""
    named = [(name, p.grad) for name, p in named_parameters if p.grad is not None]
    if not named:
        return None
    peaks = torch._foreach_norm([g for _, g in named], float("inf"))
    if len({p.dtype for p in peaks}) > 1:  # parameters of several dtypes: compare their peaks in float32
        peaks = [p.float() for p in peaks]
    if bool(torch.stack(peaks).isfinite().all()):
        return None
    return first_non_finite(named)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffle and of the loader workers' random draws in it."""
    return seed * 100_003 + epoch


class EpochSampler(torch.utils.data.Sampler):
    """The training order of one epoch (:meth:`set_epoch`), a pure function of (seed, epoch): a resumed
    run sees the orders of an uninterrupted one, and one DataLoader (with persistent workers) serves
    every epoch. Under DDP, rank ``rank`` of ``world`` takes every world-th index of the order, padded
    by its first indices so every rank has as many batches. Yields (index, epoch seed) pairs for
    :class:`EpochSeeded`."""

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1):
        self.length, self.seed, self.rank, self.world = length, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Serve epoch ``epoch``'s order from its ``skip``-th index on (a run resumed inside the epoch)."""
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        """This epoch's indices for this rank."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.world == 1:
            # The draw a new DataLoader makes from its generator before it shuffles: single-process orders
            # equal those of a loader built for each epoch with this seed (runs of earlier versions).
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            return torch.randperm(self.length, generator=generator).tolist()
        order = torch.randperm(self.length, generator=generator).tolist()
        total = -(-self.length // self.world) * self.world
        order += (order * (total // max(self.length, 1) + 1))[: total - self.length]
        return order[self.rank:total:self.world]

    def __iter__(self):
        seed = epoch_seed(self.seed, self.epoch)
        return iter([(index, seed) for index in self.order()[self.skip:]])

    def __len__(self) -> int:
        return (-(-self.length // self.world) if self.world > 1 else self.length) - self.skip


class EpochSeeded(torch.utils.data.Dataset):
    """``dataset`` indexed by (index, epoch seed): in a loader worker, torch, numpy and random are
    reseeded from (epoch seed, index) before each sample, so a sample's augmentation draws depend on
    neither the worker that makes it nor how long the workers have lived (persistent workers, a resume
    inside an epoch, another worker count). In the main process (``num_workers=0``) nothing is
    reseeded: the draws come from the run's own generators, which checkpoints carry."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        if torch.utils.data.get_worker_info() is not None:
            sample_seed = (seed * 1_000_003 + index) % 2**63
            torch.manual_seed(sample_seed)
            np.random.seed(sample_seed % 2**32)
            random.seed(sample_seed)
        return self.dataset[index]


class ShardSampler(torch.utils.data.Sampler):
    """Every world_size-th index from ``rank``, without padding, so evaluation counts add up exactly."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def per_process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the global ``trainer.batch_size``; ConfigError unless it divides evenly."""
    if batch_size % world:
        raise ConfigError("trainer.batch_size", batch_size, f"a multiple of the {world} processes (it is the global "
                          "batch, split evenly over them)")
    return batch_size // world


def loader_factory(cfg: DictConfig, run: Process):
    """``loader(dataset, train, epoch)``: the DataLoader of ``dataset`` set to epoch ``epoch`` (None for no
    dataset). Each dataset's loader is built once and serves every epoch (its workers persist);
    training batches are all full under ``trainer.compile`` (static shapes: one compiled graph)."""
    tcfg = cfg.trainer
    pin = tcfg.pin_memory and run.device.type == "cuda"
    built: dict = {}

    def build(dataset, train: bool):
        if train:
            sampler = EpochSampler(len(dataset), cfg.seed, run.rank, run.world)
            dataset = EpochSeeded(dataset)
        else:
            sampler = ShardSampler(len(dataset), run.rank, run.world)
        return make_loader(dataset, per_process_batch(tcfg.batch_size, run.world) if train else tcfg.eval_batch_size,
                           train=train,
                           num_workers=tcfg.num_workers, pin_memory=pin, seed=epoch_seed(cfg.seed, 0),
                           sampler=sampler, drop_last=train and (tcfg.drop_last or tcfg.compile),
                           timeout_s=tcfg.timeout_s)

    def loader(dataset, train: bool, epoch: int, skip_batches: int = 0):
        if dataset is None:
            return None
        key = (id(dataset), train)
        if key not in built:
            built[key] = build(dataset, train)
        if train:
            built[key].sampler.set_epoch(epoch, skip_batches * built[key].batch_size)
        return built[key]

    return loader


def correct_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    """Top-1 and top-5 hits of the prediction argmax Σ_t o_t."""
    scores = logits.sum(0)
    k = min(5, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    hits = top == target.unsqueeze(1)
    return int(hits[:, 0].sum()), int(hits.any(1).sum())


def limited(loader, limit: int, start: int = 0):
    """The batches of ``loader`` up to the ``limit``-th of its epoch (all when 0), the loader having
    skipped the epoch's first ``start``."""
    for index, batch in enumerate(loader, start):
        if limit and index >= limit:
            return
        yield batch


def optimize_over(net, model, loader, optimizer, *, run: Process, cfg: DictConfig, epoch: int, train_spikes,
                  stop: Optional[StopFlag] = None, start: Optional[tuple] = None, save_mid=None, remedy=None) -> dict:
    """One pass over ``loader`` with ``net`` (``model`` possibly wrapped by DDP or compile). Returns the
    epoch's mean train loss and accuracy summed over ranks. Raises TrainingDiverged on a non-finite loss
    or gradient (a float16 gradient scaler's skipped steps excepted), Interrupted when ``stop`` was set.
    ``start``: (batches done, their sums) of a run resumed inside this epoch (the loader already skips
    them); ``save_mid(step, sums)`` is called after every ``trainer.checkpoint_every_min`` minutes;
    ``remedy`` (:mod:`ilif.train.remedies`) may add a term to each step's loss and act after each step."""
    tcfg = cfg.trainer
    net.train()
    first, sums = (start[0], list(start[1])) if start else (0, [0.0, 0.0, 0.0])  # loss sum, hits, samples
    show = tcfg.progress and run.is_main
    batches = tqdm(limited(loader, tcfg.limit_train_batches, first), leave=False, disable=not show,
                   desc=f"epoch {epoch}")
    stream = iter(batches)
    compute_loss = loss_function(cfg.loss)
    every_s, last_save = tcfg.checkpoint_every_min * 60, time.monotonic()
    for step in itertools.count(first):
        with stop.waiting(f"at epoch {epoch}, step {step}") if stop is not None else nullcontext():
            batch = next(stream, None)
        if batch is None:
            break
        x, y = batch
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with run.autocast():
            logits = net(x)
        loss = compute_loss(logits, y)
        penalty = remedy.penalty() if remedy is not None else None
        if penalty is not None:
            loss = loss + penalty
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"non-finite loss ({loss_value}) at epoch {epoch}, step {step}")
        run.scaler.scale(loss).backward()
        if not run.scaler.is_enabled():
            bad = first_non_finite_grad(model.named_parameters())
            if bad is not None:
                raise TrainingDiverged(f"non-finite gradient of {bad} at epoch {epoch}, step {step}")
        if tcfg.grad_clip > 0:
            run.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        stepping = remedy is not None and remedy.steps
        scale = run.scaler.get_scale() if stepping and run.scaler.is_enabled() else 1.0
        run.scaler.step(optimizer)
        run.scaler.update()
        if stepping:  # the scaler lowers its scale exactly when it skipped the step
            remedy.after_step(scale, skipped=run.scaler.is_enabled() and run.scaler.get_scale() < scale)
        sj_functional.reset_net(model)
        hits, _ = correct_counts(logits.detach(), y)
        sums[0] += loss_value * len(y)
        sums[1] += hits
        sums[2] += len(y)
        if stop is not None and stop.signum is not None:
            raise Interrupted(f"at epoch {epoch}, step {step}", stop.signum)
        if save_mid is not None and time.monotonic() - last_save >= every_s:
            save_mid(step + 1, sums)
            last_save = time.monotonic()
        if show and step % 25 == 0:  # the postfix reads the meter's counts: a host sync
            rate = train_spikes.summary().get("firing_rate", float("nan")) if tcfg.train_meter else float("nan")
            batches.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}", rate=f"{rate:.3f}")
    loss_sum, hits, n = all_reduce_sum(sums, run.device)
    return {"train/loss": loss_sum / max(n, 1), "train/acc1": hits / max(n, 1)}


def evaluate_loader(model, loader, run: Process, loss_cfg, limit: int = 0, meters=()) -> dict:
    """Loss, top-1/top-5 accuracy of ``model`` (unwrapped: no DDP, no compile) over ``loader`` (all ranks
    summed); ``meters`` are reset and record while it runs (their counts are summed over ranks too).
    Always in float32, without autocast, as the release evaluates."""
    model.eval()
    if run.world > 1:  # BatchNorm statistics as rank 0 has them, as DDP's forward would broadcast them
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    compute_loss = loss_function(loss_cfg)
    totals = [0.0, 0.0, 0.0, 0.0]  # loss sum, top-1 hits, top-5 hits, samples
    with torch.no_grad(), ExitStack() as stack:
        for meter in meters:
            meter.reset()
            stack.enter_context(meter.recording())
        for x, y in limited(loader, limit):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            logits = model(x)
            sj_functional.reset_net(model)
            totals[0] += compute_loss(logits, y).item() * len(y)
            top1, top5 = correct_counts(logits, y)
            totals[1] += top1
            totals[2] += top5
            totals[3] += len(y)
    loss_sum, hit1, hit5, n = all_reduce_sum(totals, run.device)
    if run.world > 1:
        for meter in meters:
            meter.all_reduce()
    return {"loss": loss_sum / max(n, 1), "acc1": hit1 / max(n, 1), "acc5": hit5 / max(n, 1), "samples": int(n)}
