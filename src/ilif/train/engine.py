"""The parts of a run that touch tensors: the process (device, AMP, DDP, threads), the loaders, the loss,
one training epoch and one evaluation pass."""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import time
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig
from spikingjelly.activation_based import functional as sj_functional
from tqdm import tqdm

from ilif.conf import distributed_env
from ilif.errors import ConfigError, Interrupted, TrainingDiverged
from ilif.data import make_loader

log = logging.getLogger("ilif.train")


class StopFlag:
    """Turns SIGTERM and SIGINT into a flag that the training loop checks after every step (main thread
    only; the previous handlers come back on exit). While the loop waits for a batch (:meth:`waiting`),
    a signal raises Interrupted at once: a loader worker that hangs does not hold the run."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}
        self._waiting = False

    @contextmanager
    def waiting(self, where: str):
        """A block that may wait long (for the next batch): a signal inside it interrupts it."""
        if self.signum is not None:
            raise Interrupted(where, self.signum)
        self._waiting, self._where = True, where
        try:
            yield
        finally:
            self._waiting = False

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._set)
        return self

    def _set(self, signum, frame) -> None:
        self.signum = signum
        if self._waiting:
            self._waiting = False
            raise Interrupted(self._where, signum)

    def __exit__(self, *exc) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@contextmanager
def exit_on_signal(what: str, stop: Optional[StopFlag] = None):
    """Run a block that waits inside C++ (a DDP rendezvous), where Python's signal handlers never run:
    meanwhile a SIGTERM or SIGINT, whichever thread the kernel hands it to, reaches a helper thread
    through the interpreter's wakeup fd, and the process ends at once with one line and exit 75 or 130
    (nothing was trained yet); so does one that ``stop`` caught just before the block. Main thread
    only; elsewhere the block runs as it is."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    handlers = {signum: signal.signal(signum, lambda *_: None) for signum in signals}  # C handlers that write the fd
    previous_fd = signal.set_wakeup_fd(write_end)

    def end(signum: int):
        print(f"error: interrupted by {signal.Signals(signum).name} while {what}; nothing was trained: run the "
              "same command again", file=sys.stderr, flush=True)
        os._exit(75 if signum == signal.SIGTERM else 130)

    def watch():
        while (got := os.read(read_end, 1)) and got[0] != 0:  # 0: the block ended
            if got[0] in signals:
                end(got[0])

    if stop is not None and stop.signum is not None:  # arrived before the block, after the flag's handlers
        end(stop.signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.write(write_end, b"\0")
        thread.join()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        os.close(read_end)
        os.close(write_end)


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


def configure_determinism(deterministic: bool) -> None:
    """Deterministic algorithms only (an op without one is an error, see :func:`deterministic_ops_only`),
    cuDNN without autotuning and cuBLAS with a fixed workspace; otherwise cuDNN picks the fastest
    convolution for each shape (``cudnn.benchmark``). Called before CUDA is first used: cuBLAS reads
    ``CUBLAS_WORKSPACE_CONFIG`` when it starts."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


@contextmanager
def deterministic_ops_only(deterministic: bool, device: torch.device):
    """Turn torch's error for an op that has no deterministic implementation into a ConfigError naming
    ``trainer.deterministic`` (one line, exit 2) instead of a traceback."""
    try:
        yield
    except RuntimeError as err:
        if not (deterministic and "does not have a deterministic implementation" in str(err)):
            raise
        op = str(err).splitlines()[0].split(" does not have")[0]
        raise ConfigError("trainer.deterministic", True, f"{op} has no deterministic implementation on "
                          f"{device.type}; set trainer.deterministic=false") from None


class Run:
    """The process of one training run: device, AMP, DDP rank and world, threads (rank 0 writes files)."""

    def __init__(self, cfg: DictConfig, stop: Optional[StopFlag] = None):
        from datetime import timedelta

        configure_determinism(cfg.trainer.deterministic)
        self.rank, self.world, local_rank = distributed_env()
        self.is_main = self.rank == 0
        if not self.is_main:
            log.setLevel(logging.WARNING)
        want = cfg.trainer.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("trainer.device", "cuda", "a machine where torch sees a CUDA GPU (it sees none: "
                              f"torch {torch.__version__}, CUDA {torch.version.cuda}); use auto or cpu")
        if want == "cuda" and local_rank >= torch.cuda.device_count():
            raise ConfigError("LOCAL_RANK", local_rank, f"below the {torch.cuda.device_count()} visible GPU(s)")
        if self.world > 1 and not dist.is_initialized():
            timeout_s = cfg.trainer.timeout_s
            try:
                with exit_on_signal(f"waiting for the {self.world} DDP processes", stop):
                    dist.init_process_group("nccl" if want == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
            except (RuntimeError, ValueError) as err:  # torch's DistStoreError and friends
                raise ConfigError("trainer.timeout_s", timeout_s, f"enough for all {self.world} DDP processes to "
                                  f"join at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                                  f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
        if want == "cuda":
            self.device = torch.device("cuda", local_rank)
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


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` torch intra-op threads (0: leave torch's setting), then restore."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def close_distributed() -> None:
    """After the last job of a process that did not fail: wait for every rank, then release the process
    group (a process that exits with the group alive can abort in gloo's teardown). A rank that failed
    exits without it; its peers then find it gone at the barrier and release the group all the same."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError as err:  # a peer rank has exited (torch's distributed errors are RuntimeErrors)
            log.warning("a peer process ended before the final barrier (%s)", str(err).splitlines()[0])
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def per_process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the global ``trainer.batch_size``; ConfigError unless it divides evenly."""
    if batch_size % world:
        raise ConfigError("trainer.batch_size", batch_size, f"a multiple of the {world} processes (it is the global "
                          "batch, split evenly over them)")
    return batch_size // world


def loader_factory(cfg: DictConfig, run: Run):
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


def ce_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """CE(mean_t o_t, y); logits [T, B, C] (float32), target [B]."""
    return F.cross_entropy(logits.mean(0), target, label_smoothing=loss_cfg.label_smoothing)


def tet_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """(1 − λ)·mean_t CE(o_t, y) + λ·MSE(o_t, φ), φ a constant or the one-hot label (docs/recipes.md);
    logits [T, B, C] (float32), target [B]."""
    T = logits.shape[0]
    ce = F.cross_entropy(logits.flatten(0, 1), target.repeat(T), label_smoothing=loss_cfg.label_smoothing)
    if loss_cfg.mse_target == "onehot":
        goal = F.one_hot(target, logits.shape[-1]).to(logits.dtype).expand_as(logits)
    else:
        goal = torch.full_like(logits, loss_cfg.phi)
    return (1.0 - loss_cfg.lam) * ce + loss_cfg.lam * F.mse_loss(logits, goal)


#: loss.name -> loss function (the config check reads its names)
LOSSES = {"ce": ce_loss, "tet": tet_loss}


def compute_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """The configured loss of logits [T, B, C] (computed in float32) and target [B]."""
    return LOSSES[loss_cfg.name](logits.float(), target, loss_cfg)


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


def train_one_epoch(net, model, loader, optimizer, run: Run, cfg: DictConfig, epoch: int, train_spikes,
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
        loss = compute_loss(logits, y, cfg.loss)
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


def evaluate(model, loader, run: Run, loss_cfg, limit: int = 0, meters=()) -> dict:
    """Loss, top-1/top-5 accuracy of ``model`` (unwrapped: no DDP, no compile) over ``loader`` (all ranks
    summed); ``meters`` are reset and record while it runs (their counts are summed over ranks too).
    Always in float32, without autocast, as the release evaluates."""
    model.eval()
    if run.world > 1:  # BatchNorm statistics as rank 0 has them, as DDP's forward would broadcast them
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    totals = [0.0, 0.0, 0.0, 0.0]  # loss sum, top-1 hits, top-5 hits, samples
    with torch.no_grad(), ExitStack() as stack:
        for meter in meters:
            meter.reset()
            stack.enter_context(meter.recording())
        for x, y in limited(loader, limit):
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
