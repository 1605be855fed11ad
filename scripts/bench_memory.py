"""What one training step keeps for its backward pass, per sample, for each table's recipe: our LIF and
ILIF in each ``trainer.memory`` mode against spikingjelly's LIFNode (multi-step, its torch path: the
one it runs on a CPU), alone and with its own memory optimiser (``memopt.optimize_memory`` level 1:
each residual block checkpointed, binary inputs compressed; backbones with blocks only), which our
neurons pass through with the same gradients (the trainer does not offer it: a checkpointed block runs
its forward hooks again in the backward, so the spike meters and the rate regulariser would count
twice).

The bytes are counted exactly (``ilif.metrics.memory.saved_for_backward``: every storage autograd saves
for the backward, once, the model's own tensors left out), so they are the same on any device; from
them, the largest batch whose saved activations alone fit a 24, 40 and 80 GB GPU (an upper bound:
weights, optimiser state, gradients and workspace come on top). Each row runs in a fresh process with
one torch thread: the rise of its peak resident memory over one step at the benchmark's batch, and the
median time of ``--repeats`` steps (forward, loss, backward) on this machine. Prints markdown tables
with ratios (and writes them to ``--out``).

    python scripts/bench_memory.py                          # CIFAR-10's recipe: preact_resnet18, T = 6, 32×32
    python scripts/bench_memory.py --recipe all --batch 1 --repeats 1 --out results/memory.md  # results/memory.md
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: each recipe's input size: CIFAR's 32×32 images, CIFAR10-DVS frames as the release resizes them
#: (48×48), the DVS128 Gesture sensor (128×128), ImageNet's training crops (224×224)
INPUT_SIZE = {"cifar10": 32, "cifar10_dvs": 48, "dvs_gesture": 128, "imagenet": 224}
GPUS_GB = (24, 40, 80)
ROWS = ("LIF (ours)", "ILIF (ours)", "LIF (ours), lean", "ILIF (ours), lean", "ILIF (ours), lean + memopt",
        "spikingjelly LIFNode", "spikingjelly LIFNode + memopt")


def recipe_shape(recipe: str) -> dict:
    """The recipe's backbone, T, channels, classes and whether its input is events (from its config)."""
    from ilif.conf import compose_config
    from ilif.train.build import build_datasets

    cfg = compose_config([f"recipe={recipe}", "dataset.stand_in=true", "dataset.stand_in_samples=1"])
    info = build_datasets(cfg)[3]
    return {"model": cfg.model.name, "T": cfg.trainer.T, "channels": info.in_channels, "classes": info.num_classes,
            "events": info.events, "size": INPUT_SIZE[recipe], "batch": cfg.trainer.batch_size}


def _model(row: str, shape: dict):
    import torch
    from spikingjelly.activation_based import neuron as sj_neuron

    from ilif.models import create_model
    from ilif.neurons import ILIF, LIF
    from ilif.train.build import set_memory

    factory = {"LIF": functools.partial(LIF, tau=2.0), "ILIF": functools.partial(ILIF, tau=2.0),
               "spikingjelly": functools.partial(sj_neuron.LIFNode, tau=2.0, step_mode="m")}[row.split()[0]]
    torch.manual_seed(0)
    model = create_model(shape["model"], factory, num_classes=shape["classes"], in_channels=shape["channels"],
                         T=shape["T"], input_size=shape["size"]).train()
    set_memory(model, "lean" if "lean" in row else "standard")
    return model


def measure_row(row: str, shape: dict, batch: int, repeats: int) -> dict:
    """Saved bytes per sample, peak RSS rise (bytes) and median step seconds of one row, in this process."""
    import torch
    from spikingjelly.activation_based import functional

    from ilif.metrics.memory import resident, saved_for_backward
    from ilif.models.resnet import PreActBlock
    from ilif.train.losses import loss_function

    torch.set_num_threads(1)
    loss_of = loss_function({"name": "ce", "label_smoothing": 0.0})
    model = _model(row, shape)
    size = (shape["T"],) if shape["events"] else ()
    x = torch.randn((batch, *size, shape["channels"], shape["size"], shape["size"]))
    y = torch.randint(0, shape["classes"], (batch,))
    if row.endswith("memopt"):
        if not any(isinstance(m, PreActBlock) for m in model.modules()):
            return {}
        from spikingjelly.activation_based.memopt import optimize_memory

        optimize_memory(model, PreActBlock, lambda m: (m(x), functional.reset_net(m)), level=1)

    def step():
        loss = loss_of(model(x), y)
        loss.backward()
        functional.reset_net(model)

    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss, saved = saved_for_backward(lambda: loss_of(model(x), y), exclude=resident(model))
    loss.backward()
    functional.reset_net(model)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"saved": saved["bytes"] / batch, "peak_rise": max(peak - before, 0), "seconds": statistics.median(seconds)}


def table(recipe: str, shape: dict, results: dict, batch: int) -> str:
    """One recipe's markdown table; ratios against our LIF (standard) and spikingjelly's LIFNode."""
    lif, sj, lif_s = results["LIF (ours)"]["saved"], results["spikingjelly LIFNode"]["saved"], \
        results["LIF (ours)"]["seconds"]
    fits = " | ".join(f"batch ≤ {gb} GB" for gb in GPUS_GB)
    lines = [f"### {recipe}: {shape['model']}, T = {shape['T']}, {shape['channels']}×{shape['size']}×{shape['size']}"
             f"{' events' if shape['events'] else ''} (the recipe's batch: {shape['batch']})", "",
             f"| neuron, memory | saved MB per sample | × our LIF | × spikingjelly | peak RSS rise MB (batch {batch}) "
             f"| step s (median) | × our LIF | {fits} |", "|---|---|---|---|---|---|---|" + "---|" * len(GPUS_GB)]
    for row in ROWS:
        r = results[row]
        if not r:
            lines.append(f"| {row} | – (no residual blocks to checkpoint) |" + " |" * (5 + len(GPUS_GB)))
            continue
        batches = " | ".join(str(int(gb * 1e9 // r["saved"])) for gb in GPUS_GB)
        lines.append(f"| {row} | {r['saved'] / 1e6:.1f} | {r['saved'] / lif:.2f} | {r['saved'] / sj:.2f} | "
                     f"{r['peak_rise'] / 1e6:.0f} | {r['seconds']:.2f} | {r['seconds'] / lif_s:.2f} | {batches} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cifar10", choices=[*INPUT_SIZE, "all"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # a child process: measure this row, print JSON
    args = parser.parse_args()
    recipes = list(INPUT_SIZE) if args.recipe == "all" else [args.recipe]
    if args.row:
        print(json.dumps(measure_row(args.row, recipe_shape(args.recipe), args.batch, args.repeats)))
        return
    import torch

    parts = [f"Per sample, float32, training mode, forward + loss + backward; torch {torch.__version__}, one thread, "
             f"batch {args.batch}, median of {args.repeats} steps. Made by `python scripts/bench_memory.py "
             f"--recipe {args.recipe} --batch {args.batch} --repeats {args.repeats}"
             f"{f' --out {args.out}' if args.out else ''}`."]
    for recipe in recipes:
        shape = recipe_shape(recipe)
        results = {}
        for row in ROWS:
            proc = subprocess.run([sys.executable, __file__, "--recipe", recipe, "--batch", str(args.batch),
                                   "--repeats", str(args.repeats), "--row", row], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"error: {recipe} / {row}: {proc.stderr.strip().splitlines()[-1]}")
            results[row] = json.loads(proc.stdout.strip().splitlines()[-1])
        parts.append(table(recipe, shape, results, args.batch))
        print(parts[-1] + "\n", flush=True)
    if args.out:
        args.out.write_text("# What a training step keeps for its backward\n\n" + "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
