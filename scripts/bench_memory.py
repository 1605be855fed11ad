"""What one training step keeps for its backward pass, per sample: our LIF and ILIF against
spikingjelly's LIFNode (multi-step, its torch path: the one it runs on a CPU), in the same backbone.

The bytes are counted exactly (``ilif.metrics.memory.saved_for_backward``: every storage autograd saves
for the backward, once, parameters left out), so they are the same on any device; from them, the
largest batch whose saved activations alone fit a 24, 40 and 80 GB GPU (an upper bound: weights,
optimiser state, gradients and workspace come on top). Step time is the median of ``--repeats`` steps
(forward, loss, backward), timed round-robin on this machine. Prints a markdown table with ratios.

    python scripts/bench_memory.py                                  # preact_resnet18, T = 6, 3×32×32 (CIFAR)
    python scripts/bench_memory.py --model vgg11_bn --T 10 --channels 2 --size 48 --events   # CIFAR10-DVS
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based import neuron as sj_neuron

from ilif.metrics.memory import saved_for_backward
from ilif.models import create_model, model_names
from ilif.neurons import ILIF, LIF
from ilif.train.losses import loss_function

LOSS = loss_function({"name": "ce", "label_smoothing": 0.0})
GPUS_GB = (24, 40, 80)
#: the neurons compared: a factory of fresh multi-step neurons each
NEURONS = {"LIF (ours)": functools.partial(LIF, tau=2.0), "ILIF (ours)": functools.partial(ILIF, tau=2.0),
           "spikingjelly LIFNode": functools.partial(sj_neuron.LIFNode, tau=2.0, step_mode="m")}


def measure(factory, args) -> tuple[dict, float]:
    """(what the step saves for its backward, its median seconds) for one neuron."""
    torch.manual_seed(0)
    model = create_model(args.model, factory, num_classes=10, in_channels=args.channels, T=args.T,
                         input_size=args.size).train()
    shape = (args.batch, args.T, args.channels, args.size, args.size) if args.events else \
        (args.batch, args.channels, args.size, args.size)
    x, y = torch.randn(shape), torch.randint(0, 10, (args.batch,))

    def forward():
        return LOSS(model(x), y)

    loss, saved = saved_for_backward(forward, exclude=[*model.parameters(), *model.buffers()])
    loss.backward()
    functional.reset_net(model)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward().backward()
        functional.reset_net(model)
        seconds.append(time.perf_counter() - start)
    return saved, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="preact_resnet18", choices=model_names())
    parser.add_argument("--T", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--events", action="store_true", help="inputs [B, T, C, H, W] (event data)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {name: measure(factory, args) for name, factory in NEURONS.items()}
    per_sample = {name: saved["bytes"] / args.batch for name, (saved, _) in results.items()}
    lif, sj, lif_s = per_sample["LIF (ours)"], per_sample["spikingjelly LIFNode"], results["LIF (ours)"][1]
    print(f"{args.model}, T={args.T}, {args.channels}×{args.size}×{args.size}, batch {args.batch}, float32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    fits = " | ".join(f"batch ≤ (saved alone) {gb} GB" for gb in GPUS_GB)
    print(f"| neuron | saved MB (10⁶ B) per sample | × our LIF | × spikingjelly | step ms (median) | × our LIF "
          f"| {fits} |")
    print("|---|---|---|---|---|---|" + "---|" * len(GPUS_GB))
    for name, (saved, seconds) in results.items():
        mb = per_sample[name] / 1e6
        batches = " | ".join(str(int(gb * 1e9 // per_sample[name])) for gb in GPUS_GB)
        print(f"| {name} | {mb:.1f} | {per_sample[name] / lif:.2f} | {per_sample[name] / sj:.2f} | "
              f"{seconds * 1e3:.0f} | {seconds / lif_s:.2f} | {batches} |")


if __name__ == "__main__":
    main()
