"""Expected values of the tables' cells, and the check of a reproduction against them (no torch).

``results/expected.yaml`` holds, per scale, table and row, the expected value and tolerance of each
checked column (top-1 accuracy and firing rate):

- mini scale: the mean over seeds of the committed runs, tolerance ``max(t · std · sqrt(2 / n), floor)``
  — the 99.7 % two-sided range of the difference between two means of n seeds each, with t the
  Student quantile for the 2(n − 1) degrees of freedom of two sample deviations (6.4 for 3 seeds) —
  with a floor of 1 point of accuracy and 10 % of the expected firing rate;
- full scale: published values of the same code lineage with their source, ± 1 point of accuracy (the
  source reports no spread); ``unknown`` where the paper's own numbers could not be read (not checked).

``ilif-report --write-expected`` writes the mini section from the runs; ``ilif-report --check`` prints
one line per cell (value, expected range, within/outside) and fails when a cell is outside or missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ilif import records
from ilif.errors import ConfigError
from ilif.grid import SCALES
from ilif.rundir import write_text_atomic

#: the columns that carry expectations, with their floor (absolute, or relative to the expected value)
CHECKED = {"top-1 final (%)": ("absolute", 1.0), "firing rate": ("relative", 0.10)}
PUBLISHED_TOLERANCE = 1.0  # points of top-1 accuracy around a published value
#: published top-1 (%) of the same code lineage: the CLIF repository's README (Huang et al., ICML 2024),
#: ResNet-18, T = 6, trained with the script ILIF's descends from. CLIF rows count once a CLIF neuron runs.
PUBLISHED = [
    ({"dataset": "cifar10", "neuron": "lif"}, 94.51), ({"dataset": "cifar100", "neuron": "lif"}, 76.23),
    ({"dataset": "cifar10", "neuron": "clif"}, 95.41), ({"dataset": "cifar100", "neuron": "clif"}, 78.36),
]
PUBLISHED_SOURCE = "CLIF repository README (Huang et al., ICML 2024), ResNet-18, T=6"
PUBLISHED_SEEDS = 1  # the source gives one number per cell, no spread: one run is what it is compared with
#: full-scale ILIF rows: the ILIF paper's own table could not be read, so nothing is expected of them
UNKNOWN = [{"dataset": name, "neuron": "ilif"} for name in ("cifar10", "cifar100", "cifar10_dvs", "dvs_gesture",
                                                             "imagenet")]
OPTIONAL_NEURONS = ("clif", "plif")  # rows of optional neurons are checked only where they were run
HEADER = """\
# Expected values of the table cells, checked by `ilif-report --scale SCALE --tables N --check`.
# mini: written by `ilif-report --scale mini --tables 1 2 3 --write-expected` from the runs behind
#   results/mini: the mean over seeds; tolerance max(t * std * sqrt(2 / n), floor), t the two-sided
#   99.7 % Student quantile with 2 (n - 1) degrees of freedom (6.4 for 3 seeds), floor 1 point of
#   top-1 accuracy or 10 % of the firing rate.
# full: published values of the same code lineage with their source, +- 1 point; `unknown` where the
#   ILIF paper's own numbers could not be read (not checked).
"""


COVERAGE = 0.997  # two-sided: the share of reproductions (of the same spread) inside the range


def t_quantile(degrees: int) -> float:
    """The two-sided :data:`COVERAGE` quantile of Student's t with ``degrees`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + COVERAGE / 2, degrees))


def tolerance(column: str, mean: float, std: Optional[float], n: int) -> float:
    """The half-width of the expected range of ``column`` from a cell of ``n`` seeds (see the module)."""
    kind, floor = CHECKED[column]
    floor = floor if kind == "absolute" else floor * abs(mean)
    spread = t_quantile(2 * (n - 1)) * (std or 0.0) * math.sqrt(2 / n) if n > 1 else 0.0
    return max(spread, floor)


def _row_key(table, row: list) -> dict:
    return {name: value for name, value in zip(table.csv_header[:table.keys], row[:table.keys])}


def _cell(table, row: list, column: str) -> tuple[Optional[float], Optional[float], int]:
    """(mean, std, n) of ``column`` in a csv ``row`` of ``table``."""
    index = table.csv_header.index(f"{column} mean")
    return row[index], row[index + 1], row[index + 2]


def entries_from(table) -> list[dict]:
    """The expected entries a table's own rows give (mini scale): one per row with a measured cell."""
    entries = []
    for row in table.csv_rows:
        cells = {}
        for column in CHECKED:
            mean, std, n = _cell(table, row, column)
            if mean is not None:
                cells[column] = {"expected": round(mean, 6), "tolerance": round(tolerance(column, mean, std, n), 6),
                                 "seeds": n}
        if cells:
            entries.append({"key": _row_key(table, row), "cells": cells})
    return entries


def published_entries() -> list[dict]:
    entries = [{"key": key, "cells": {"top-1 final (%)": {"expected": value, "tolerance": PUBLISHED_TOLERANCE,
                                                           "seeds": PUBLISHED_SEEDS, "source": PUBLISHED_SOURCE}}}
               for key, value in PUBLISHED]
    return entries + [{"key": key, "cells": {"top-1 final (%)": {"expected": "unknown"}}} for key in UNKNOWN]


def _expectation(value, where):
    """A cell's expectation: a finite ``expected`` with a finite ``tolerance`` ≥ 0 and the ``seeds`` a
    reproduction needs (and the ``source`` of a published value), or ``expected: unknown``."""
    if isinstance(value, dict) and value.get("expected") == "unknown":
        unknown = records.record({"expected": records.one_of("unknown"), "source": records.text}, others=None)
        return unknown(value, where)
    return records.record({"expected": records.number(), "tolerance": records.number(0),
                           "seeds": records.number(1, integer=True), "source": records.text},
                          required=("expected", "tolerance", "seeds"), others=None)(value, where)


def _table_name(value, where):
    if not (isinstance(value, str) and value.startswith("table") and value[5:].isdigit()):
        raise records.Invalid(where, f"{value!r:.60} is not a table (table1, table2, ...)")
    return value


#: the check of results/expected.yaml (:mod:`ilif.records`): {scale: {tableN: [{key, cells}]}}, cells of
#: the checked columns only
EXPECTED = records.mapping_of(records.mapping_of(records.list_of(records.record(
    {"key": records.mapping_of(records.either(records.number(), records.text, records.one_of(None),
                                              what="a number, a string or null")),
     "cells": records.mapping_of(_expectation, records.one_of(*CHECKED))},
    required=("key", "cells"), others=None)), _table_name), records.one_of(*SCALES))


def load(path: Path) -> dict:
    """The expected values (``{scale: {table: [entry]}}``, checked: :data:`EXPECTED`); empty when the
    file does not exist. Raises RecordError (a ValueError) naming the file and the key otherwise."""
    try:
        return records.read_yaml(path, records.optional(EXPECTED)) or {}
    except FileNotFoundError:
        return {}


def render(data: dict) -> str:
    """The text of an expected-values file holding ``data`` (sections in order, the header first)."""
    return HEADER + yaml.safe_dump({k: data[k] for k in sorted(data)}, sort_keys=False, allow_unicode=True, width=110)


def write(path: Path, scale: str, tables: dict[int, object], force: bool = False) -> None:
    """Replace the ``scale`` section's entries of ``tables`` ({number: Table}) by what their rows give,
    keep every other section, and (re)write the published full-scale section. A file that is not
    exactly what this function writes (edited by hand: comments, order, another form) is refused
    unless ``force``: its edits would be lost. Raises ConfigError."""
    data = load(path)
    if path.exists() and not force and records.read_text(path) != render(data):
        raise ConfigError.from_message(f"{path} was edited by hand (its text is not what --write-expected writes); "
                                       "those edits would be lost: move them into the code or use --force")
    section = data.setdefault(scale, {})
    for number, table in sorted(tables.items()):
        section[f"table{number}"] = entries_from(table)
    data["full"] = {**data.get("full", {}), "table1": published_entries()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(render(data), path)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def matches(entry_key: dict, row_key: dict) -> bool:
    """Whether a table row is the one an entry names (every key the entry gives, equal)."""
    return all(name in row_key and _same(value, row_key[name]) for name, value in entry_key.items())


@dataclass
class Verdict:
    table: str
    key: dict
    column: str
    value: Optional[float]
    expected: object
    tolerance: Optional[float]
    status: str  # within | outside | missing | incomplete (fewer seeds than expected) | ambiguous | not checked
    # | no expected value

    @property
    def checked(self) -> bool:
        return not self.status.startswith("not checked")

    def line(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.key.items())
        shown = "—" if self.value is None else f"{self.value:.4g}"
        if self.expected is None:
            return f"{self.table} [{where}] {self.column}: {shown}; {self.status}"
        if self.status == "not checked":
            return f"{self.table} [{where}] {self.column}: {shown}; expected {self.expected}: not checked"
        low, high = self.expected - self.tolerance, self.expected + self.tolerance
        return f"{self.table} [{where}] {self.column}: {shown}; expected {low:.4g} … {high:.4g}: {self.status}"


FAILING = ("outside", "missing", "incomplete", "ambiguous", "no expected value")
UNEXPECTED_AT_FULL = "not checked (no expected value: none is published)"


def check(expected: dict, scale: str, tables: dict[int, object]) -> list[Verdict]:
    """One verdict per expected cell of ``tables`` ({number: Table built from the runs}) at ``scale``,
    and one per checked column of a row that no entry names: a failure where expected values come from
    complete grids (mini, smoke), named as not checked at full scale (no published value)."""
    verdicts = []
    for number, table in sorted(tables.items()):
        name = f"table{number}"
        entries = expected.get(scale, {}).get(name, [])
        for entry in entries:
            rows = [row for row in table.csv_rows if matches(entry["key"], _row_key(table, row))]
            if not rows and entry["key"].get("neuron") in OPTIONAL_NEURONS:
                continue
            for column, want in entry["cells"].items():
                value, _, seeds = _cell(table, rows[0], column) if rows else (None, None, 0)
                if want["expected"] == "unknown":
                    verdicts.append(Verdict(name, entry["key"], column, value, "unknown", None, "not checked"))
                    continue
                if len(rows) > 1:
                    status = f"ambiguous ({len(rows)} rows match)"
                elif value is None:
                    status = "missing"
                elif seeds < want["seeds"]:
                    status = f"incomplete ({seeds} of {want['seeds']} seeds)"
                else:
                    status = "within" if abs(value - want["expected"]) <= want["tolerance"] else "outside"
                verdicts.append(Verdict(name, entry["key"], column, value, want["expected"], want["tolerance"], status))
        for row in table.csv_rows:
            key = _row_key(table, row)
            for column in CHECKED:
                if not any(matches(entry["key"], key) and column in entry["cells"] for entry in entries):
                    status = UNEXPECTED_AT_FULL if scale == "full" else "no expected value"
                    verdicts.append(Verdict(name, key, column, _cell(table, row, column)[0], None, None, status))
    return verdicts


def expected_cell(expected: dict, scale: str, number: int, row_key: dict, column: str) -> str:
    """``value ± tolerance`` expected of a table cell, ``unknown``, or ``—`` when nothing is expected."""
    for entry in expected.get(scale, {}).get(f"table{number}", []):
        if matches(entry["key"], row_key) and column in entry["cells"]:
            want = entry["cells"][column]
            if want["expected"] == "unknown":
                return "unknown"
            digits = 2 if column.startswith("top-1") else 4
            return f"{want['expected']:.{digits}f} ± {want['tolerance']:.{digits}f}"
    return "—"
