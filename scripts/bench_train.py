"""Benchmark one training step (forward, loss, backward, SGD step) of a spiking backbone.

Compares LIF and ILIF, eager and torch.compile'd, with our multi-step execution (layers over T·B,
neurons scanning T), against the release's way: the whole network called once per time step, the
neurons keeping their state between calls and computing op by op with autograd
(``backend="reference"``). Prints a markdown table of median step times (after warm-up, timed
round-robin across the configurations) with ratios measured in the same run. ``--amp`` adds rows
under autocast (bfloat16 or float16, with a gradient scaler for float16), as the trainer runs them.

    python scripts/bench_train.py                              # preact_resnet18, T = 4, batch 32, 3×32×32
    python scripts/bench_train.py --repeats 3 --no-compile
    python scripts/bench_train.py --device cuda --amp off bf16 fp16
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from spikingjelly.activation_based import functional

from ilif.models import create_model, model_names
from ilif.neurons import ILIF, LIF
from ilif.train.engine import compute_loss

LOSS = type("Loss", (), {"name": "ce", "label_smoothing": 0.0})()


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_step(neuron_cls, args, mode: str, amp: str = "off"):
    """A closure running one training step; ``mode`` is eager, compiled or release; ``amp`` off, bf16 or fp16."""
    torch.manual_seed(0)
    T = 1 if mode == "release" else args.T
    backend = "reference" if mode == "release" else "auto"  # the release's neurons: autograd on every op
    model = create_model(args.model, functools.partial(neuron_cls, tau=1.1, backend=backend), num_classes=10,
                         in_channels=3, T=T)
    model = model.to(args.device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = torch.compile(model, dynamic=False) if mode == "compiled" else model
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(args.device, enabled=dtype == torch.float16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            if mode == "release":  # the whole network once per time step, state carried between calls
                logits = torch.cat([net(x) for _ in range(args.T)])
            else:
                logits = net(x)
            loss = compute_loss(logits.float(), y, LOSS)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        functional.reset_net(model)

    return step


def interleaved_medians(steps: dict, repeats: int, device: str) -> dict:
    """Median seconds per step of every closure, timed round-robin (one step of each per round) after
    two warm-up steps each, so drift on a noisy machine hits every configuration alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in steps.values():
        step()
        step()
    times = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="preact_resnet18", choices=model_names())
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=list(AMP_DTYPES),
                        help="autocast settings to time (the release-style rows run without)")
    parser.add_argument("--no-release", action="store_true", help="skip the release-style rows")
    args = parser.parse_args()

    modes = ["eager"] + ([] if args.no_release else ["release"]) + ([] if args.no_compile else ["compiled"])
    steps = {}
    for mode in modes:
        for amp in ["off"] if mode == "release" else args.amp:
            for name, cls in (("LIF", LIF), ("ILIF", ILIF)):
                try:
                    step = make_step(cls, args, mode, amp)
                    step()  # compiles now, so a failing compile is a row, not a crash
                    steps[(name, mode, amp)] = step
                except Exception as err:  # noqa: BLE001
                    print(f"{name} {mode} amp={amp}: failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    times = interleaved_medians(steps, args.repeats, args.device)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{args.model}, T={args.T}, batch {args.batch}, {args.size}×{args.size}, device={args.device} ({device}), "
          f"threads={torch.get_num_threads()}, repeats={args.repeats}, torch={torch.__version__}\n")
    print("| neuron | execution | amp | step ms (median) | × LIF same execution | × eager ILIF same amp |")
    print("|---|---|---|---|---|---|")
    for (name, mode, amp), seconds in times.items():
        lif = times.get(("LIF", mode, amp))
        ours = times.get(("ILIF", "eager", amp))
        ratio = lambda ref: f"{seconds / ref:.2f}" if ref else "–"  # noqa: E731
        print(f"| {name} | {mode} | {amp} | {seconds * 1e3:.0f} | {ratio(lif)} | {ratio(ours)} |")


if __name__ == "__main__":
    main()
