"""Benchmark the neurons: forward+backward time and peak memory over an input [T, B, C, H, W].

Compares our LIF and ILIF on the device's fused backend (the C kernel on the CPU, Triton on CUDA),
ILIF through our torch loop (``backend="torch"``, the fallback), ILIF run the way the authors' release
runs it (a per-step Python loop, autograd on every op: ``backend="reference"``), spikingjelly 2.0.0
``LIFNode(step_mode="m")`` and a copy floor (one elementwise pass and its backward). Both sides use the
same surrogate at the same α: ``--surrogate sigmoid`` (the default) is one spikingjelly's own CUDA
kernels implement, so on a GPU its LIF runs its Triton kernel (with the rectangle it would fall back to
its torch path). ``--dtype`` adds rows in bfloat16 or float16. Times are medians over --repeats runs
after one warm-up; peak memory is measured in a fresh subprocess per cell (CPU, Linux: the rise of the
peak RSS over the RSS before the step; CUDA: torch.cuda.max_memory_allocated), or skipped with
--no-memory. Prints a markdown table, one row as soon as it is measured, with every time as a ratio to
spikingjelly's LIF and to the floor.

    python scripts/bench_neurons.py                    # T = 4, 8, 16 on [T, 32, 64, 32, 32]
    python scripts/bench_neurons.py --T 4 --shape 8 16 16 16 --repeats 3
    python scripts/bench_neurons.py --device cuda --T 4 16 32 --shape 64 65536 --dtype fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

IMPLS = ("copy floor", "spikingjelly LIF", "ilif LIF", "ilif ILIF (fused)", "ILIF torch loop",
         "ILIF release-style loop")


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_step(impl: str, gamma: float, family: str = "sigmoid"):
    """A closure running one forward+backward of ``impl`` on an input tensor [T, ...], every neuron
    with the ``family`` surrogate of width ``gamma`` (spikingjelly's at the same α)."""
    from spikingjelly.activation_based import functional, neuron, surrogate

    from ilif.neurons import ILIF, LIF, Surrogate

    sg = Surrogate(family, gamma)
    if impl == "copy floor":
        return lambda x: (x * 1.0).backward(torch.ones_like(x))
    sj_surrogate = surrogate.Sigmoid(alpha=sg.alpha) if family == "sigmoid" else surrogate.Rect(alpha=sg.alpha)
    module = {
        "spikingjelly LIF": lambda: neuron.LIFNode(
            tau=2.0, decay_input=False, v_reset=None, surrogate_function=sj_surrogate, step_mode="m"
        ),
        "ilif LIF": lambda: LIF(tau=2.0, surrogate=sg, step_mode="m"),
        "ilif ILIF (fused)": lambda: ILIF(tau=2.0, surrogate=sg, step_mode="m"),
        "ILIF torch loop": lambda: ILIF(tau=2.0, surrogate=sg, step_mode="m", backend="torch"),
        "ILIF release-style loop": lambda: ILIF(tau=2.0, surrogate=sg, step_mode="m", backend="reference"),
    }[impl]()

    def run(x):
        functional.reset_net(module)
        module(x).backward(torch.ones_like(x))

    return run


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_memory(impl: str, shape: list[int], device: str, gamma: float, family: str, dtype: torch.dtype) -> float:
    """Peak extra memory (MiB) of one forward+backward, measured in this (fresh) process after a
    warm-up step on a tiny input (so loading code and building kernels are not counted)."""
    torch.manual_seed(0)
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    run = make_step(impl, gamma, family)
    run(torch.randn([2] * len(shape), device=device, dtype=dtype, requires_grad=True))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    reset_peak_rss()
    before = _status_kib("VmRSS")
    run(x)
    return (_status_kib("VmHWM") - before) / 1024


def measure_time(impl: str, x: torch.Tensor, repeats: int, gamma: float, family: str) -> float:
    """Median seconds of one forward+backward after a warm-up run."""
    run = make_step(impl, gamma, family)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    run(x)
    x.grad = None
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run(x)
        sync()
        times.append(time.perf_counter() - start)
        x.grad = None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=[4, 8, 16], help="time steps to test")
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 64, 32, 32], help="per-step shape B C H W")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--gamma", type=float, default=1.0, help="surrogate width")
    parser.add_argument("--surrogate", default="sigmoid", choices=["sigmoid", "rectangle"])
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=list(DTYPES))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-cell", nargs=3, metavar=("IMPL", "T", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_cell:
        impl, T, dtype = args.memory_cell
        print(json.dumps(measure_memory(impl, [int(T), *args.shape], args.device, args.gamma, args.surrogate,
                                        DTYPES[dtype])))
        return

    from ilif.neurons import _cpu_kernel

    if args.device == "cpu":
        _cpu_kernel.load(strict=False)  # build before timing
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device={args.device} ({name}) threads={torch.get_num_threads()} "
          f"shape=[T, {', '.join(map(str, args.shape))}] "
          f"surrogate={args.surrogate} γ={args.gamma} repeats={args.repeats} torch={torch.__version__}\n")
    print("| T | dtype | implementation | fwd+bwd ms (median) | × spikingjelly LIF | × copy floor | peak MiB | "
          "× ilif LIF mem |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for T in args.T:
        for dname in args.dtype:
            torch.manual_seed(0)
            x = torch.randn([T, *args.shape], device=args.device, dtype=DTYPES[dname], requires_grad=True)
            times, memory = {}, {}
            for impl in IMPLS:  # the floor, spikingjelly and our LIF come first: every later row has its ratios
                times[impl] = measure_time(impl, x, args.repeats, args.gamma, args.surrogate)
                if not args.no_memory:
                    cmd = [sys.executable, __file__, "--memory-cell", impl, str(T), dname, "--shape",
                           *map(str, args.shape), "--device", args.device, "--gamma", str(args.gamma),
                           "--surrogate", args.surrogate]
                    memory[impl] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                mem = f"{memory[impl]:.0f} | {memory[impl] / memory['ilif LIF']:.2f}" if memory.get("ilif LIF") else \
                    (f"{memory[impl]:.0f} | –" if impl in memory else "– | –")
                print(f"| {T} | {dname} | {impl} | {times[impl] * 1e3:.2f} | "
                      f"{times[impl] / times['spikingjelly LIF']:.2f} | " if "spikingjelly LIF" in times else
                      f"| {T} | {dname} | {impl} | {times[impl] * 1e3:.2f} | – | ", end="")
                print(f"{times[impl] / times['copy floor']:.2f} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
