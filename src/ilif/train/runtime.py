"""The process a run trains in: device, mixed precision, DDP rank and world (:class:`Process`), torch
threads, seeding, determinism, and signals (SIGTERM and SIGINT become a flag the epoch checks)."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from contextlib import contextmanager, nullcontext
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig

from ilif.conf import distributed_env
from ilif.errors import SIGNAL_EXIT, ConfigError, Interrupted

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

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@contextmanager
def exit_on_signal(what: str, stop: Optional[StopFlag] = None):
    """Run a block that waits inside C++ (a DDP rendezvous), where Python's signal handlers never run:
    meanwhile a SIGTERM or SIGINT, whichever thread the kernel hands it to, reaches a helper thread
    through the interpreter's wakeup fd, and the process ends at once with one line and exit 75 or 130
    (nothing was trained yet); so does one that ``stop`` caught just before the block. Main thread
    only; elsewhere the block runs as it is."""
    import sys

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
        os._exit(SIGNAL_EXIT[signum])

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


class Process:
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
