"""Benchmark one training step (forward, loss, backward, SGD step) of a spiking backbone.

Compares LIF and ILIF, eager and torch.compile'd, with our multi-step execution (layers over T·B,
neurons scanning T), against the release's way: the whole network called once per time step, the
neurons keeping their state between calls and computing op by op with autograd
(``backend="reference"``). Prints a markdown table of median step times (after warm-up, timed
round-robin across the configurations) with ratios measured in the same run. ``--amp`` adds rows
under autocast (bfloat16 or float16, with a gradient scaler for float16), as the trainer runs them.
The eager (and release) rows are timed and printed first; the compiled rows (``--compiled``, one
compile each) follow, so a time limit that cuts the run short still leaves the eager table.
``--remedies`` adds eager rows with the two remedies that cost something at every step: the activity
regulariser (``remedy=rate_reg``: forward hooks and a loss term) and the learnable width
(``remedy=learnable_gamma``: each layer's dL/dγ and an Adam step on it); the others change γ between
epochs.

    python scripts/bench_train.py                              # preact_resnet18, T = 4, batch 32, 3×32×32
    python scripts/bench_train.py --repeats 3 --compiled       # no compiled rows
    python scripts/bench_train.py --device cuda --amp off bf16 fp16 --compiled ILIF:bf16
    python scripts/bench_train.py --model convnet_small --size 8 --remedies --compiled --no-release
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
from ilif.train.losses import loss_function
from ilif.train.remedies import REMEDIES

LOSS = loss_function({"name": "ce", "label_smoothing": 0.0})


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: the remedies with a per-step cost, at their configs' defaults (configs/remedy/)
REMEDY_SPECS = {"rate_reg": {"target": 0.1, "weight": 1.0, "form": "l2"},
                "learnable_gamma": {"init": 1.0, "lr": 0.01, "min": 0.05, "max": 16.0}}


def make_step(neuron_cls, args, mode: str, amp: str = "off"):
    """A closure running one training step; ``mode`` is eager, compiled, release or eager+REMEDY (a key
    of :data:`REMEDY_SPECS`); ``amp`` off, bf16 or fp16."""
    torch.manual_seed(0)
    T = 1 if mode == "release" else args.T
    backend = "reference" if mode == "release" else "auto"  # the release's neurons: autograd on every op
    model = create_model(args.model, functools.partial(neuron_cls, tau=1.1, backend=backend), num_classes=10,
                         in_channels=3, T=T, input_size=args.size)
    model = model.to(args.device).train()
    name = mode.partition("+")[2]
    remedy = REMEDIES[name](**REMEDY_SPECS[name]).attach(model, None) if name else None
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
            loss = LOSS(logits, y)
            penalty = remedy.penalty() if remedy is not None else None
            if penalty is not None:
                loss = loss + penalty
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if remedy is not None and remedy.steps and scaler.is_enabled() else 1.0
        scaler.step(optimizer)
        scaler.update()
        if remedy is not None and remedy.steps:
            remedy.after_step(scale, skipped=scaler.is_enabled() and scaler.get_scale() < scale)
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


def _print_rows(times: dict, all_times: dict) -> None:
    for (name, mode, amp), seconds in times.items():
        lif = all_times.get(("LIF", mode, amp))
        ours = all_times.get(("ILIF", "eager", amp))
        same = all_times.get((name, "eager", amp))
        ratio = lambda ref: f"{seconds / ref:.2f}" if ref else "–"  # noqa: E731
        print(f"| {name} | {mode} | {amp} | {seconds * 1e3:.1f} | {ratio(lif)} | {ratio(ours)} | {ratio(same)} |",
              flush=True)


def _timed_group(keys, args) -> dict:
    """Build every step of ``keys`` ((neuron, mode, amp)), run it once (a failing build or compile is a
    printed line, not a crash), then time them round-robin."""
    steps = {}
    for name, mode, amp in keys:
        try:
            step = make_step({"LIF": LIF, "ILIF": ILIF}[name], args, mode, amp)
            step()  # compiles now
            steps[(name, mode, amp)] = step
        except Exception as err:  # noqa: BLE001
            print(f"{name} {mode} amp={amp}: failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    return interleaved_medians(steps, args.repeats, args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="preact_resnet18", choices=model_names())
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compiled", nargs="*", default=["LIF:off", "ILIF:off"], metavar="NEURON:AMP",
                        help="compiled rows to time (none: no compile)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=list(AMP_DTYPES),
                        help="autocast settings to time (the release-style rows run without)")
    parser.add_argument("--no-release", action="store_true", help="skip the release-style rows")
    parser.add_argument("--remedies", action="store_true", help="add eager rows with the per-step remedies")
    args = parser.parse_args()
    compiled = [tuple(item.split(":")) for item in args.compiled]
    bad = [item for item, pair in zip(args.compiled, compiled)
           if len(pair) != 2 or pair[0] not in ("LIF", "ILIF") or pair[1] not in AMP_DTYPES]
    if bad:
        parser.error(f"--compiled {bad[0]!r} is not allowed: NEURON:AMP with NEURON LIF or ILIF, AMP one of "
                     f"{list(AMP_DTYPES)}")

    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{args.model}, T={args.T}, batch {args.batch}, {args.size}×{args.size}, device={args.device} ({device}), "
          f"threads={torch.get_num_threads()}, repeats={args.repeats}, torch={torch.__version__}\n")
    print("| neuron | execution | amp | step ms (median) | × LIF same execution | × eager ILIF same amp | "
          "× eager same neuron |")
    print("|---|---|---|---|---|---|---|", flush=True)
    eager = [(name, "eager", amp) for amp in args.amp for name in ("LIF", "ILIF")]
    eager += [(name, f"eager+{remedy}", amp) for remedy in REMEDY_SPECS for amp in args.amp
              for name in ("LIF", "ILIF")] if args.remedies else []
    eager += [] if args.no_release else [(name, "release", "off") for name in ("LIF", "ILIF")]
    times = _timed_group(eager, args)
    _print_rows(times, times)
    if compiled:
        later = _timed_group([(name, "compiled", amp) for name, amp in compiled], args)
        _print_rows(later, {**times, **later})


if __name__ == "__main__":
    main()
