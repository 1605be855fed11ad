"""Benchmark how fast ``ilif-train`` answers: each command line run as a new process several times,
the median and range of its wall time printed in a markdown table, with each median as a ratio to a
bare ``python -c pass`` and to ``python -c "import torch"`` measured in the same run (this machine is
noisy: read the ratios). Whether a command imports torch is the device-independent figure; the suite
checks it (tests/test_cli.py).

    python scripts/bench_cli.py              # 7 runs of each
    python scripts/bench_cli.py --repeat 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = [sys.executable, "-m", "ilif.train"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "ilif-train --version": [*TRAIN, "--version"],
    "ilif-train --help": [*TRAIN, "--help"],
    "ilif-train --cfg job": [*TRAIN, "--cfg", "job"],
    "ilif-train experiment=table1 recipe=cifar10 --cfg job": [*TRAIN, "experiment=table1", "recipe=cifar10", "--cfg",
                                                             "job"],
    "completion (ilif-train -sc query=bash)": [*TRAIN, "-sc", "query=bash"],
    "error: +trainer.epoch=1": [*TRAIN, "+trainer.epoch=1"],
    "error: surrogate.gamma=-1": [*TRAIN, "surrogate.gamma=-1"],
    "error: neuron.tau=-1 (the neuron's own check)": [*TRAIN, "neuron.tau=-1"],
    "error: +neuron.tauu=2 (the neuron's signature)": [*TRAIN, "+neuron.tauu=2"],
    "error: +model.widht=2 (the backbone's signature)": [*TRAIN, "+model.widht=2"],
    "error: remedy.weight=-1 (the remedy's own check)": [*TRAIN, "remedy=rate_reg", "remedy.weight=-1"],
    "error: trainer.T=5 with seqdigits (a rule between keys)": [*TRAIN, "dataset=seqdigits", "trainer.T=5"],
}


def seconds(argv: list[str], repeat: int, cwd: str) -> list[float]:
    """Wall seconds of ``repeat`` runs of ``argv`` (after one untimed run that warms the file cache)."""
    times = []
    for index in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, env={"COMP_LINE": "ilif-train neu", "PATH": ""})
        if index:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| command | median s | min–max s | × python | × import torch |")
    print("|---|---|---|---|---|")
    medians = {}
    with tempfile.TemporaryDirectory() as cwd:
        for name, argv in COMMANDS.items():
            times = seconds(argv, args.repeat, cwd)
            medians[name] = statistics.median(times)
            bare, torch = medians["python -c pass"], medians.get('python -c "import torch"', medians[name])
            print(f"| {name} | {medians[name]:.2f} | {min(times):.2f}–{max(times):.2f} | {medians[name] / bare:.1f} | "
                  f"{medians[name] / torch:.2f} |", flush=True)
    print(f"\n{args.repeat} runs each, {Path(sys.executable).name} {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
