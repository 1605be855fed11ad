"""Reading run directories: the planned grid of an experiment and what each run left behind (no torch)."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ilif.conf import CompareConfig, hash_of_run_dir, identity
from ilif.errors import ConfigError
from ilif.grid import Job
from ilif.rundir import RunSummary, finished_summary, read_history


@dataclass
class RunRecord:
    """One planned run: its resolved config (identity), what its experiment compares, and, when
    finished, its summary and history."""

    config: dict
    run_dir: Path
    summary: Optional[RunSummary] = None
    history: list = field(default_factory=list)
    compare: CompareConfig = field(default_factory=CompareConfig)

    @property
    def done(self) -> bool:
        return self.summary is not None

    def get(self, dotted: str):
        """The config value at ``dotted`` (None where the run's config has no such key, e.g. κ_I of LIF)."""
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def final(self, key: str):
        return None if self.summary is None else self.summary.final.get(key)


def load_runs(jobs: list[Job]) -> list[RunRecord]:
    """The planned runs (see :mod:`ilif.grid`) with whatever their directories hold."""
    records = []
    for _, cfg, run_dir in jobs:
        record = RunRecord(identity(cfg), run_dir, finished_summary(run_dir, hash_of_run_dir(run_dir)),
                           compare=CompareConfig(**cfg.compare))
        if record.done:
            record.history = read_history(run_dir)
        records.append(record)
    return records


def compared(records: list[RunRecord]) -> CompareConfig:
    """What the experiment behind ``records`` compares (its ``compare`` keys; the defaults for no runs).
    Raises ConfigError when the records come from experiments that compare different neurons."""
    declared = {(r.compare.baseline, r.compare.subject) for r in records}
    if len(declared) > 1:
        raise ConfigError("compare", sorted(declared), "one table compares one baseline with one subject (its "
                          "experiments must declare the same)")
    return records[0].compare if records else CompareConfig()


def neurons_of(records: list[RunRecord]) -> list[str]:
    """The neurons of the runs, the baseline first, the others in the order the grid lists them."""
    names = list(dict.fromkeys(r.get("neuron.name") for r in records))
    base = compared(records).baseline
    return [base] + [n for n in names if n != base] if base in names else names


def group(records: list[RunRecord], keys: list[str]) -> dict[tuple, list[RunRecord]]:
    """Runs by the values of ``keys`` (dotted config paths), in first-seen order."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    return groups


#: the largest magnitude a reported metric may have (accuracies, rates, losses, energies, ratios):
#: beyond it a value is taken for a corrupt or diverged record, not a measurement
SENSIBLE = 1e9


def values(runs: list[RunRecord], getter) -> list[float]:
    """The numbers ``getter`` reads from the finished runs; NaN (a metric the run has no value for) is
    skipped, and so, with a warning naming the run, is a value that is not a number, infinite, or
    beyond :data:`SENSIBLE`."""
    out = []
    for run in runs:
        if run.done:
            value = getter(run)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= SENSIBLE:
                warnings.warn(f"{run.run_dir}/summary.json: {value!r} is not a finite number of sensible size; "
                              "left out")
                continue
            out.append(float(value))
    return out


def provenance_note(records: list[RunRecord]) -> Optional[str]:
    """A warning for a table built from runs of several commits, torch versions, devices or CPU
    instruction sets (None when they agree; a record from before the instruction set was kept is
    left out of that count)."""
    seen = {"commits": set(), "torch versions": set(), "devices": set(), "CPU instruction sets": set()}
    for record in records:
        if record.done and isinstance(record.summary.provenance, dict):
            prov = record.summary.provenance
            seen["commits"].add(str(prov.get("git_commit"))[:7])
            seen["torch versions"].add(str((prov.get("versions") or {}).get("torch")))
            seen["devices"].add(str(prov.get("device")).split(" ")[0])
            if prov.get("cpu_capability") is not None:
                seen["CPU instruction sets"].add(str(prov["cpu_capability"]))
    mixed = [f"{len(v)} {k} ({', '.join(sorted(v))})" for k, v in seen.items() if len(v) > 1]
    if not mixed:
        return None
    return ("These runs come from " + "; ".join(mixed) + ": numbers from different code, packages or devices may "
            "not be comparable.")


def mean_std(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def cell(runs: list[RunRecord], getter, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' over the finished runs, with 'n/N' when some are missing; 'missing (0/N)' if none."""
    xs = values(runs, getter)
    if not xs:
        return f"missing (0/{len(runs)})"
    mean, std = mean_std(xs)
    text = f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    return text if len(xs) == len(runs) else f"{text} ({len(xs)}/{len(runs)})"
