"""Benchmark the training data pipelines: samples per second that the trainer's loader (its epoch
sampler, persistent workers, the dataset's training transform) delivers, per worker count, for
CIFAR-10 (the release's crop, Cutout and flip on PIL images) and CIFAR10-DVS (integrated event frames),
on data generated in each dataset's real on-disk format (the writers of the test suite). Prints a
markdown table, one row as it is measured, with each rate as a ratio to the single-process loader and
the images a GPU consumes per second at a given step time for comparison.

    python scripts/bench_data.py                         # workers 0 1 2, 5,000 CIFAR images
    python scripts/bench_data.py --workers 0 2 4 8 --images 20000 --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the on-disk format writers

from data_fixtures import write_cifar, write_cifar10_dvs  # noqa: E402

from ilif.data import build, make_loader  # noqa: E402
from ilif.train.engine import EpochSampler, EpochSeeded  # noqa: E402


def rate(dataset, batch: int, workers: int, epochs: int) -> float:
    """Median samples/s over ``epochs`` epochs (after one warm-up epoch that starts the workers)."""
    sampler = EpochSampler(len(dataset), seed=0)
    loader = make_loader(EpochSeeded(dataset), batch, train=False, num_workers=workers, sampler=sampler)
    rates = []
    for epoch in range(epochs + 1):
        sampler.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
        if epoch:
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=5000, help="CIFAR-10 training images to generate")
    parser.add_argument("--dvs-per-class", type=int, default=20, help="CIFAR10-DVS recordings per class")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar(root, "cifar10", per_class_train=max(args.images // 50, 1), per_class_test=1)
        write_cifar10_dvs(root, per_class=args.dvs_per_class, n_events=20_000)
        sets = {"CIFAR-10 (crop, Cutout, flip)": build({"name": "cifar10", "root": str(root), "download": False})[0],
                "CIFAR10-DVS (T = 10 frames)": build({"name": "cifar10_dvs", "root": str(root), "T": 10})[0]}
        print(f"batch {args.batch}, {args.epochs} timed epochs after one warm-up, one torch thread per process, "
              f"torch={torch.__version__}\n")
        print("| pipeline | samples | workers | samples/s (median) | × 0 workers |")
        print("|---|---|---|---|---|", flush=True)
        for name, dataset in sets.items():
            base = None
            for workers in args.workers:
                r = rate(dataset, args.batch, workers, args.epochs)
                base = base or r
                print(f"| {name} | {len(dataset)} | {workers} | {r:,.0f} | {r / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
