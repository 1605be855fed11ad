"""Figures 1–5 of docs/tables.md (PNG, matplotlib), from run directories only."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .runs import group, mean_std, neurons_of, values  # noqa: E402

COLORS = {"lif": "tab:blue", "ilif": "tab:red", "ilif_current": "tab:orange", "ilif_membrane": "tab:purple"}
OTHER_COLORS = ("tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def color(neuron: str, neurons: list[str]) -> str:
    """A neuron's colour: fixed for LIF and the ILIF variants, the next free one for any other."""
    others = [n for n in neurons if n not in COLORS]
    return COLORS.get(neuron) or OTHER_COLORS[others.index(neuron) % len(OTHER_COLORS)]
STYLES = {"area": "-", "peak": "--"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metric_vs_gamma(records, getter, ylabel: str, title: str, path: Path, scale: float = 1.0) -> Path:
    """One panel per dataset, one line per (neuron, normalisation): mean ± std over seeds against γ (log scale)."""
    datasets = group(records, ["dataset.name"]) or {("no runs",): []}
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, ((dataset,), dataset_runs) in zip(axes[0], datasets.items()):
        for (neuron, normalize), runs in group(dataset_runs, ["neuron.name", "surrogate.normalize"]).items():
            points = []
            for (gamma,), cell_runs in sorted(group(runs, ["surrogate.gamma"]).items()):
                mean, std = mean_std(values(cell_runs, getter))
                if mean is not None:
                    points.append((gamma, mean * scale, std * scale))
            if points:
                xs, ys, es = zip(*points)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=COLORS.get(neuron),
                            linestyle=STYLES.get(normalize, "-"), label=f"{neuron.upper()} ({normalize} norm.)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("surrogate width γ")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} ({dataset})")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def layer_rates(records, path: Path) -> Path:
    """Per-layer firing rate of each neuron the runs compare, one panel per dataset (mean over seeds)."""
    datasets = group(records, ["dataset.name"])
    neurons = neurons_of(records)
    width = 0.8 / max(len(neurons), 1)
    fig, axes = plt.subplots(len(datasets), 1, figsize=(8, 2.6 * max(len(datasets), 1)), squeeze=False)
    for ax, ((dataset,), runs) in zip(axes[:, 0], datasets.items()):
        for k, neuron in enumerate(neurons):
            done = [r for r in runs if r.done and r.get("neuron.name") == neuron]
            if not done:
                continue
            names = [row["layer"] for row in done[0].summary.layers]
            rates = [statistics.fmean(r.summary.layers[i]["firing_rate"] for r in done) for i in range(len(names))]
            offset = (k - (len(neurons) - 1) / 2) * width
            ax.bar([i + offset for i in range(len(names))], rates, width=width, color=color(neuron, neurons),
                   label=neuron.upper())
            ax.set_xticks(range(len(names)), names, rotation=60, fontsize=6)
        ax.set_title(dataset, fontsize=9)
        ax.set_ylabel("firing rate")
        ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves(records, path: Path) -> Path:
    """Train loss and test firing rate per epoch, mean ± std over seeds, of each neuron the runs
    compare, per dataset."""
    datasets = group(records, ["dataset.name"])
    neurons = neurons_of(records)
    fig, axes = plt.subplots(2, max(len(datasets), 1), figsize=(4 * max(len(datasets), 1), 5.5), squeeze=False)
    for col, ((dataset,), runs) in enumerate(datasets.items()):
        for row, (key, label) in enumerate((("train/loss", "train loss"), ("test/firing_rate", "test firing rate"))):
            ax = axes[row, col]
            for neuron in neurons:
                histories = [r.history for r in runs if r.done and r.get("neuron.name") == neuron and r.history]
                if not histories:
                    continue
                length = min(len(h) for h in histories)
                means, stds = zip(*(mean_std([h[e][key] for h in histories]) for e in range(length)))
                epochs = range(length)
                ax.plot(epochs, means, color=color(neuron, neurons), label=neuron.upper())
                ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=color(neuron, neurons), alpha=0.2)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(dataset, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, path)
