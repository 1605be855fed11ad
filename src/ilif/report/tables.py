"""Tables 1–5 of docs/tables.md (and the demo table) built from run directories only (no torch)."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ilif import records
from ilif.units import E_MAC_PJ
from ilif.rundir import git_state, write_text_atomic

from .runs import RunRecord, cell, compared, group, mean_std, neurons_of, values


@dataclass
class Column:
    name: str
    getter: Callable[[RunRecord], Optional[float]]
    scale: float = 1.0
    digits: int = 2


def _final(key):
    return lambda run: run.final(key)


def _best(key):
    return lambda run: run.summary.best_metrics.get(key)


def _layer_spread(run):
    rates = [row["firing_rate"] for row in run.summary.layers]
    return statistics.pstdev(rates) if len(rates) > 1 else None


def _first_layer_grad(run):
    norms = run.final("grad/weight_norms") or {}
    return next(iter(norms.values()), None)


ACC = Column("top-1 final (%)", _final("test/acc1"), 100)
ACC_BEST = Column("top-1 best (%)", _best("test/acc1"), 100)
RATE = Column("firing rate", _final("test/firing_rate"), 1, 4)
ENERGY = Column("energy (µJ/sample)", _final("test/energy_uj"), 1, 3)
RATIO = Column("SNN/ANN energy", _final("test/snn_ann_ratio"), 1, 3)
TABLE2_COLUMNS = [ACC, RATE, Column("layer-rate spread (std)", _layer_spread, 1, 4),
                  Column("support occupancy", _final("test/occupancy"), 1, 3),
                  Column("first-layer grad norm", _first_layer_grad, 1, 4),
                  Column("temporal grad ratio (t=1 / t=T)", _final("grad/temporal_ratio"), 1, 3)]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list]
    notes: list[str]
    keys: int = 0  # the leading csv columns that name a row (dataset, neuron, ...)


def _metric_cells(runs, columns) -> tuple[list[str], list]:
    shown, numbers = [], []
    for col in columns:
        shown.append(cell(runs, col.getter, col.scale, col.digits))
        xs = values(runs, col.getter)
        mean, std = mean_std(xs)
        numbers += [None if mean is None else mean * col.scale, None if std is None else std * col.scale, len(xs)]
    return shown, numbers


def _csv_metric_header(columns) -> list[str]:
    return [f"{c.name} {part}" for c in columns for part in ("mean", "std", "n")]


def _delta(runs, base_runs, getter, relative: bool) -> tuple[str, Optional[float]]:
    """ILIF − LIF on the means (accuracy, in points) or the firing-rate reduction in % of LIF's."""
    ours, base = mean_std(values(runs, getter))[0], mean_std(values(base_runs, getter))[0]
    if ours is None or base is None:
        return "—", None
    value = 100 * (base - ours) / base if relative else 100 * (ours - base)
    return (f"{value:.1f} %" if relative else f"{value:+.2f}"), value


def comparison_table(title, records, keys, key_names, columns, notes) -> Table:
    """Rows = groups of ``keys``; each row of another neuron than the experiment's baseline also gets
    Δ accuracy and firing-rate reduction against the row that differs only in its neuron being the
    baseline."""
    groups = group(records, keys)
    baseline_key = compared(records).baseline
    header = key_names + [c.name for c in columns] + [f"Δ top-1 vs {baseline_key.upper()} (points)",
                                                      f"firing-rate reduction vs {baseline_key.upper()}"]
    csv_header = key_names + _csv_metric_header(columns) + ["delta_acc_points", "rate_reduction_percent"]
    rows, csv_rows = [], []
    neuron_index = keys.index("neuron.name")
    for key, runs in groups.items():
        base_key = key[:neuron_index] + (baseline_key,) + key[neuron_index + 1:]
        base = groups.get(base_key) if key[neuron_index] != baseline_key else None
        if base is None and key[neuron_index] != baseline_key:  # e.g. a κ variant: the baseline at its default κ
            base = next((r for k, r in groups.items() if k[neuron_index] == baseline_key and k[0] == key[0]), None)
        shown, numbers = _metric_cells(runs, columns)
        if base is not None:
            d_acc, d_acc_v = _delta(runs, base, ACC.getter, relative=False)
            d_rate, d_rate_v = _delta(runs, base, RATE.getter, relative=True)
        else:
            d_acc, d_acc_v, d_rate, d_rate_v = "—", None, "—", None
        row = ["—" if k is None else str(k) for k in key] + shown + [d_acc, d_rate]
        csv_row = list(key) + numbers + [d_acc_v, d_rate_v]
        rows.append(row)
        csv_rows.append(csv_row)
    return Table(title, header, rows, csv_header, csv_rows, notes, keys=len(key_names))


def table1(records, scale) -> Table:
    return comparison_table(
        "Table 1 — ILIF vs LIF across datasets", records,
        ["dataset.name", "neuron.name", "model.name", "trainer.T"], ["dataset", "neuron", "model", "T"],
        [ACC, ACC_BEST, RATE, ENERGY, RATIO],
        notes=["energy: synaptic energy per sample (E_MAC 4.6 pJ, E_AC 0.9 pJ); "
               "neuron-state operations are in Table 4"])


def table2(records, scale) -> Table:
    groups = group(records, ["dataset.name", "surrogate.normalize", "surrogate.gamma", "neuron.name"])
    header = ["dataset", "normalisation", "γ", "neuron"] + [c.name for c in TABLE2_COLUMNS]
    rows, csv_rows = [], []
    for key, runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        shown, numbers = _metric_cells(runs, TABLE2_COLUMNS)
        rows.append([str(k) for k in key] + shown)
        csv_rows.append(list(key) + numbers)
    return Table("Table 2 — the γ dilemma", header, rows, ["dataset", "normalize", "gamma", "neuron"] +
                 _csv_metric_header(TABLE2_COLUMNS), csv_rows,
                 ["support occupancy: share of pre-spike potentials within γ/2 of the threshold",
                  "temporal grad ratio: mean |∂L/∂x_1| / mean |∂L/∂x_T| over neuron layers, last epoch"], keys=4)


def table3(records, scale) -> Table:
    return comparison_table(
        "Table 3 — ablation of the inhibitory units", records,
        ["dataset.name", "neuron.name", "neuron.kappa_current"], ["dataset", "neuron", "κ_I"],
        [ACC, ACC_BEST, RATE, ENERGY, RATIO],
        notes=["ilif_current: LIF + current inhibition only; ilif_membrane: LIF + membrane inhibition only",
               "κ_I matters only for neurons with the current unit"])


def _remedy(run) -> str:
    return run.get("remedy.name") or "none"  # runs without a remedy do not record one (not in their hash)


TABLE5_COLUMNS = TABLE2_COLUMNS + [Column("final γ (mean over layers)", _final("remedy/gamma_mean"), 1, 3),
                                   Column("final γ min", _final("remedy/gamma_min"), 1, 3),
                                   Column("final γ max", _final("remedy/gamma_max"), 1, 3)]


def _difference(ours, theirs, getter, scale: float) -> tuple[str, Optional[float], Optional[float]]:
    """mean(ours) − mean(theirs) and its spread sqrt(s₁²/n₁ + s₂²/n₂) over seeds, shown as ``d ± spread``."""
    a, b = values(ours, getter), values(theirs, getter)
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if ma is None or mb is None:
        return "—", None, None
    spread = math.sqrt((sa or 0.0) ** 2 / len(a) + (sb or 0.0) ** 2 / len(b))
    return f"{scale * (ma - mb):+.{2 if scale == 100 else 4}f} ± {scale * spread:.{2 if scale == 100 else 4}f}", \
        scale * (ma - mb), scale * spread


def table5(records, scale) -> Table:
    """Rows (dataset, γ, neuron, remedy); each row but the experiment's subject (ILIF) without a remedy
    is compared with that row at the same dataset and γ: subject − row in accuracy (points) and firing
    rate. The baseline's rows come first."""
    reference, baseline = compared(records).subject, compared(records).baseline
    ours = reference.upper()
    groups: dict[tuple, list] = {}
    for record in records:
        key = (record.get("dataset.name"), record.get("surrogate.gamma"), record.get("neuron.name"), _remedy(record))
        groups.setdefault(key, []).append(record)
    order = {name: i for i, name in enumerate(("none", "rate_reg", "learnable_gamma", "anneal_gamma",
                                               "adaptive_gamma"))}
    header = ["dataset", "γ", "neuron", "remedy"] + [c.name for c in TABLE5_COLUMNS] + \
        [f"{ours} − this: top-1 (points)", f"{ours} − this: firing rate"]
    csv_header = ["dataset", "gamma", "neuron", "remedy"] + _csv_metric_header(TABLE5_COLUMNS) + \
        [f"{reference}_minus_{part}" for part in ("acc_points", "acc_spread", "rate", "rate_spread")]
    rows, csv_rows = [], []
    for key, runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != baseline,
                                                             order.get(kv[0][3], 99), kv[0][3])):
        shown, numbers = _metric_cells(runs, TABLE5_COLUMNS)
        subject = groups.get((key[0], key[1], reference, "none"))
        if subject is None or (key[2], key[3]) == (reference, "none"):
            d_acc, acc_v, acc_s, d_rate, rate_v, rate_s = "—", None, None, "—", None, None
        else:
            d_acc, acc_v, acc_s = _difference(subject, runs, ACC.getter, 100)
            d_rate, rate_v, rate_s = _difference(subject, runs, RATE.getter, 1)
        rows.append([key[0], f"{key[1]:g}", key[2], key[3]] + shown + [d_acc, d_rate])
        csv_rows.append(list(key) + numbers + [acc_v, acc_s, rate_v, rate_s])
    return Table("Table 5 — remedies for the γ dilemma", header, rows, csv_header, csv_rows,
                 ["remedies: rate_reg (activity regularisation), learnable_gamma (each layer's γ trained from the "
                  "row's γ), anneal_gamma (γ from the row's γ to 1 over training), adaptive_gamma (γ refitted each "
                  "epoch so that 30 % of pre-spike potentials lie in the support); docs/tables.md",
                  "final γ: the γ each neuron layer trained its last epoch with (learnable_gamma: where its last "
                  "step left it), mean over layers, and the range",
                  f"{ours} − this: {ours} without a remedy minus this row, means over seeds ± the spread of that "
                  "difference, sqrt(s₁²/n₁ + s₂²/n₂)"], keys=4)


def table4(records, scale) -> Table:
    """Per-layer firing rates, SOPs, MACs and energy of the Table 1 models, the experiment's baseline
    (LIF) vs its subject (ILIF) vs an ANN (means over seeds)."""
    pair = compared(records)
    base, ours = pair.baseline.upper(), pair.subject.upper()
    header = ["dataset", "layer", "kind", "MACs/step", f"{base} input rate", f"{ours} input rate", f"{base} SOPs",
              f"{ours} SOPs", f"{base} pJ", f"{ours} pJ", "ANN pJ"]
    rows, csv_rows = [], []
    for dataset, runs in group(records, ["dataset.name"]).items():
        by_neuron = {n: [r for r in rs if r.done] for (n,), rs in group(runs, ["neuron.name"]).items()}
        lif, ilif = by_neuron.get(pair.baseline, []), by_neuron.get(pair.subject, [])
        reference = (lif or ilif)
        if not reference:
            rows.append([dataset[0], f"missing (0/{len(runs)})"] + [""] * (len(header) - 2))
            csv_rows.append([dataset[0], "missing"] + [None] * (len(header) - 2))
            continue
        layers = reference[0].summary.energy_layers
        for index, layer in enumerate(layers):
            def avg(rs, key, i=index):
                xs = [r.summary.energy_layers[i][key] for r in rs if r.summary.energy_layers[i][key] is not None]
                return mean_std(xs)[0]
            numbers = [layer["macs"], avg(lif, "input_rate"), avg(ilif, "input_rate"), avg(lif, "sops"),
                       avg(ilif, "sops"), avg(lif, "energy_pj"), avg(ilif, "energy_pj"), E_MAC_PJ * layer["macs"]]
            fmt = [f"{numbers[0]:,}"] + [("—" if v is None else f"{v:.4f}") for v in numbers[1:3]] + \
                  [("—" if v is None else f"{v:,.0f}") for v in numbers[3:]]
            rows.append([dataset[0], layer["layer"], layer["kind"]] + fmt)
            csv_rows.append([dataset[0], layer["layer"], layer["kind"]] + numbers)
        for label, key in (("total synaptic", "snn_energy_pj"), ("neuron-state ops (apart)", "state_energy_pj")):
            lif_v = mean_std([r.summary.energy_totals[key] for r in lif])[0]
            ilif_v = mean_std([r.summary.energy_totals[key] for r in ilif])[0]
            ann = reference[0].summary.energy_totals["ann_energy_pj"] if key == "snn_energy_pj" else None
            fmt = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
            rows.append([dataset[0], label, "", "", "", "", "", "", fmt(lif_v), fmt(ilif_v), fmt(ann)])
            csv_rows.append([dataset[0], label, "", None, None, None, None, None, lif_v, ilif_v, ann])
    return Table("Table 4 — energy breakdown (per sample, mean over seeds)", header, rows, header, csv_rows,
                 ["kind: MAC for the encoder of static images (run once), AC for layers reading spikes",
                  "ANN pJ: E_MAC × dense MACs of the same layer, one pass"])


def demo_table(records) -> Table:
    rows, csv_rows = [], []
    """Per γ, each neuron's accuracy, firing rate and rate over the baseline's (the baseline first)."""
    rows, csv_rows = [], []
    groups = group(records, ["surrogate.gamma", "neuron.name"])
    pair = compared(records)
    header = ["γ", "neuron", "top-1 final (%)", "firing rate",
              f"{pair.subject.upper()} rate / {pair.baseline.upper()} rate"]
    for gamma in sorted({k[0] for k in groups}):
        base_rate = mean_std(values(groups.get((gamma, pair.baseline), []), RATE.getter))[0]
        for name in neurons_of(records):
            runs = groups.get((gamma, name), [])
            shown, numbers = _metric_cells(runs, [ACC, RATE])
            rate = mean_std(values(runs, RATE.getter))[0]
            ratio = rate / base_rate if rate is not None and base_rate else None
            rows.append([f"{gamma:g}", name] + shown + ["—" if ratio is None else f"{ratio:.3f}"])
            csv_rows.append([gamma, name] + numbers + [ratio])
    datasets = sorted({str(r.get("dataset.name")) for r in records}) or ["no runs"]
    return Table(f"The γ dilemma on {', '.join(datasets)} (make demo)", header, rows,
                 ["gamma", "neuron"] + _csv_metric_header([ACC, RATE]) + [f"{pair.subject}_over_{pair.baseline}_rate"],
                 csv_rows, [])


def with_expected(table: Table, number: int, scale: str, expected: dict) -> Table:
    """``table`` with the expected top-1 accuracy and firing rate of each row beside the measured ones
    (from results/expected.yaml; ``—`` where nothing is expected)."""
    from .expected import CHECKED, PUBLISHED_SOURCE, expected_cell

    for row, csv_row in zip(table.rows, table.csv_rows):
        key = dict(zip(table.csv_header[:table.keys], csv_row[:table.keys]))
        cells = [expected_cell(expected, scale, number, key, column) for column in CHECKED]
        row += cells
        csv_row += cells
    table.header += [f"expected {column}" for column in CHECKED]
    table.csv_header += [f"expected {column}" for column in CHECKED]
    if scale == "full":
        table.notes.append(f"expected at full scale: {PUBLISHED_SOURCE} (± 1 point); unknown: the ILIF paper's own "
                           "numbers could not be read")
    else:
        table.notes.append("expected: the committed runs' mean ± max(t · std · √(2/n), floor), t the 99.7 % Student "
                           "quantile (results/expected.yaml, docs/tables.md)")
    return table


def git_commit() -> str:
    """The short commit the report is built at (``unknown`` outside a git checkout)."""
    commit, _ = git_state()
    return commit if commit == "unknown" else commit[:7]


#: table number -> its builder (which runs each table reads: ilif.grid.tables)
BUILDERS = {1: table1, 2: table2, 3: table3, 4: table4, 5: table5}


FINISHED = re.compile(r"\((\d+) of (\d+) planned runs finished\)")


def finished_in(path_md: Path) -> Optional[int]:
    """How many finished runs an existing table file was built from: 0 when there is no file, None when
    there is one that does not say (or cannot be read): it is then kept unless forced."""
    try:
        match = FINISHED.search(records.read_text(path_md))
    except FileNotFoundError:
        return 0
    except records.RecordError:
        return None
    return int(match.group(1)) if match else None


def replaces(before: Optional[int], finished: int) -> bool:
    """The keep rule of every output the report writes: whether an output drawn from ``finished``
    finished runs may replace one drawn from ``before`` (None: an output that does not say)."""
    return before is not None and before <= finished and (finished > 0 or before == 0)


def write_table(table: Table, path_stem: Path, command: str, sources: str, scale: str, finished: int, planned: int,
                force: bool = False) -> bool:
    """``<stem>.md`` (with the producing command, the commit, the sources and how many runs finished)
    and ``<stem>.csv``, written atomically. An existing table built from more finished runs is kept
    unless ``force``: returns whether it was written."""
    md, csv_path = path_stem.with_suffix(".md"), path_stem.with_suffix(".csv")
    before = finished_in(md)
    if not md.exists() and (csv_path.exists() or csv_path.is_symlink()):
        before = None  # a CSV without its table says nothing of the runs behind it: it is kept too
    if not force and not replaces(before, finished):
        return False
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {table.title}", "", f"Produced by `{command}` at commit {git_commit()} from the run directories "
             f"in {sources} ({finished} of {planned} planned runs finished). Cells are mean ± std over seeds; "
             "(n/N) marks cells with missing runs.", ""]
    if scale == "smoke":
        lines += ["**Smoke scale: tiny random stand-in data; these numbers only prove the pipeline.**", ""]
    lines += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    lines += [""] + [f"- {note}" for note in table.notes]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.csv_header)
    writer.writerows(table.csv_rows)
    write_text_atomic(buffer.getvalue(), path_stem.with_suffix(".csv"))
    write_text_atomic("\n".join(lines).rstrip() + "\n", path_stem.with_suffix(".md"))
    return True
