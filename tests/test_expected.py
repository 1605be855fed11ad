"""Expected values of the table cells: written from runs, shown beside the measured cells, checked."""

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from ilif.grid import table_jobs
from ilif.report import expected
from ilif.report.__main__ import main as report_main
from test_experiments import _write_summary

ROOT = Path(__file__).resolve().parents[1]


def _mini_table1_runs(tmp_path: Path) -> list:
    jobs = table_jobs([1], "mini", [f"runs_root={tmp_path / 'runs'}"])
    for _, cfg, run_dir in jobs:
        bump = {"lif": 0.0, "ilif": 0.01, "plif": 0.02, "clif": 0.005}[cfg.neuron.name] + {
            "digits": 0.0, "seqdigits": -0.05, "ndigits": -0.02}[cfg.dataset.name]
        _write_summary(run_dir, acc=0.9 + bump + 0.001 * cfg.seed, rate=0.2 - bump + 0.001 * cfg.seed)
    return jobs


def test_the_tolerance_rule():
    assert expected.t_quantile(4) == pytest.approx(6.4348, abs=1e-4)  # Student's t, 99.7 % two-sided, 4 dof
    assert expected.t_quantile(10_000) == pytest.approx(2.968, abs=1e-3)  # about 3 sigma for many seeds
    assert expected.tolerance("top-1 final (%)", 90.0, 1.0, 3) == expected.t_quantile(4) * math.sqrt(2 / 3)
    assert expected.tolerance("top-1 final (%)", 90.0, 0.1, 3) == 1.0  # the floor
    assert expected.tolerance("firing rate", 0.2, 0.0, 3) == 0.2 * 0.10
    assert expected.tolerance("firing rate", 0.2, None, 1) == 0.2 * 0.10


def test_write_then_check_passes_and_a_perturbed_summary_fails(tmp_path, cli):
    jobs = _mini_table1_runs(tmp_path)
    path, runs = tmp_path / "expected.yaml", str(tmp_path / "runs")
    assert cli(report_main, "--scale", "mini", "--tables", "1", "--write-expected", "--expected", str(path),
               "--runs-root", runs).returncode == 0
    data = yaml.safe_load(path.read_text())
    rows = {(e["key"]["dataset"], e["key"]["neuron"]): e["cells"] for e in data["mini"]["table1"]}
    assert sorted(rows) == sorted((d, n) for d in ("digits", "seqdigits", "ndigits")
                                  for n in ("lif", "ilif", "plif", "clif"))
    assert rows[("seqdigits", "ilif")]["top-1 final (%)"] == {"expected": 86.1, "tolerance": 1.0, "seeds": 3}
    assert rows[("digits", "lif")]["firing rate"]["expected"] == 0.201
    assert data["full"]["table1"][0]["cells"]["top-1 final (%)"]["expected"] == 94.51
    assert path.read_text().startswith("# Expected values of the table cells")
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--check", "--expected", str(path), "--runs-root", runs)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "24 of 24 checked cells within their expected range"
    assert "table1 [dataset=digits, neuron=lif, model=convnet_small, T=6] top-1 final (%): 90.1; " \
        "expected 89.1 … 91.1: within" in lines
    _, cfg, run_dir = next(j for j in jobs if j[1].dataset.name == "ndigits" and j[1].neuron.name == "lif")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final"]["test/acc1"] -= 0.2  # one seed 20 points off: the cell's mean moves 6.7 points
    (run_dir / "summary.json").write_text(json.dumps(summary))
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--check", "--expected", str(path), "--runs-root", runs)
    assert proc.returncode == 1
    outside = [line for line in proc.stdout.splitlines() if line.endswith(": outside")]
    assert outside == ["table1 [dataset=ndigits, neuron=lif, model=convnet_small, T=6] top-1 final (%): 81.43; "
                       "expected 87.1 … 89.1: outside"]
    assert proc.stdout.strip().splitlines()[-1] == "23 of 24 checked cells within their expected range; 1 not"
    (run_dir / "summary.json").unlink()
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--check", "--expected", str(path), "--runs-root", runs)
    assert proc.returncode == 1  # a run of the cell is missing: the cell is not reproduced, whatever its mean
    assert "T=6] top-1 final (%): 88.15; expected 87.1 … 89.1: incomplete (2 of 3 seeds)" in proc.stdout


def test_missing_cells_and_unknown_published_values(tmp_path, cli):
    path = tmp_path / "expected.yaml"
    expected.write(path, "mini", {})
    proc = cli(report_main, "--scale", "full", "--tables", "1", "--check", "--expected", str(path),
               "--runs-root", str(tmp_path / "runs"))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert "table1 [dataset=cifar10, neuron=lif] top-1 final (%): —; expected 93.51 … 95.51: missing" in lines
    assert "table1 [dataset=imagenet, neuron=ilif] top-1 final (%): —; expected unknown: not checked" in lines
    assert not any("clif" in line for line in lines)  # an optional neuron's row counts once it is run
    assert "table1 [dataset=dvs_gesture, neuron=lif, model=vgg11_bn, T=20] top-1 final (%): —; not checked (no " \
        "expected value: none is published)" in lines  # a row no entry names is listed, never passed in silence
    assert lines[-1] == "0 of 2 checked cells within their expected range; 2 not; 18 not checked (listed)"
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--check", "--expected", str(tmp_path / "none.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: no expected values for table 1 at scale mini (tables with them: [])"
    proc = cli(report_main, "--scale", "full", "--tables", "1", "2", "--check", "--expected", str(path))
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: no expected values for table 2 at scale full (tables with them: [1])")
    bad = {  # each a file --check refuses (exit 2) with one line naming the file and the key
        "cut": ("mini:\n  table1:\n  - key: {dataset: digits}\n", "mini.table1.0: has no 'cells'"),
        "list": ("[1, 2]\n", "[1, 2] is not a mapping"),
        "column": ("mini:\n  table1:\n  - key: {dataset: digits}\n    cells: {top-5: {expected: 1, tolerance: 1, "
                   "seeds: 3}}\n", "mini.table1.0.cells: 'top-5' is not one of ['top-1 final (%)', 'firing rate']"),
        "seeds": ("mini:\n  table1:\n  - key: {dataset: digits}\n    cells: {firing rate: {expected: 1, tolerance: 1, "
                  "seeds: '3'}}\n", "mini.table1.0.cells.firing rate.seeds: '3' is not an integer ≥ 1"),
        "inf": ("mini:\n  table1:\n  - key: {dataset: digits}\n    cells: {firing rate: {expected: 1, tolerance: .inf, "
                "seeds: 3}}\n", "mini.table1.0.cells.firing rate.tolerance: inf is not a finite number ≥ 0"),
        "noseeds": ("mini:\n  table1:\n  - key: {dataset: digits}\n    cells: {firing rate: {expected: 1, "
                    "tolerance: 1}}\n", "mini.table1.0.cells.firing rate: has no 'seeds'"),
        "scale": ("huge: {}\n", "'huge' is not one of ['full', 'mini', 'smoke']"),
        "deep": ("a: " + "[" * 200 + "]" * 200 + "\n", "nested more than 32 levels deep"),
        "bomb": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)),
            "uses YAML aliases (*name), which a record never needs"),
        "code": ("mini: !!python/object/apply:os.system ['echo run']\n", "is not readable YAML (could not determine "
                 "a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system', line 1)"),
        "twice": ("mini: {}\nmini: {}\n", "is not readable YAML (the key 'mini' is given twice, line 2)"),
        "huge": ("mini:\n  table1:\n  - key: {dataset: digits}\n    cells: {firing rate: {expected: 1"
                 + "0" * 400 + ", tolerance: 1, seeds: 3}}\n",
                 "mini.table1.0.cells.firing rate.expected: 1" + "0" * 59 + " is not a finite number"),
    }
    for name, (text, problem) in bad.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        proc = cli(report_main, "--scale", "mini", "--tables", "1", "--check", "--expected",
                   str(tmp_path / f"{name}.yaml"))
        assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {tmp_path / name}.yaml: {problem}"), name


def test_expected_values_are_written_from_complete_grids_only(tmp_path, cli):
    jobs = _mini_table1_runs(tmp_path)
    (jobs[4][2] / "summary.json").unlink()
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--write-expected", "--expected",
               str(tmp_path / "e.yaml"), "--runs-root", str(tmp_path / "runs"))
    assert proc.returncode == 1 and not (tmp_path / "e.yaml").exists()
    assert proc.stderr.strip() == (f"error: table 1 at scale mini: 35 of 36 planned runs finished under "
                                   f"{tmp_path / 'runs'}; expected values come from a complete grid")


def test_tables_show_the_expected_value_beside_the_measured_one(tmp_path, cli):
    _mini_table1_runs(tmp_path)
    runs, out = str(tmp_path / "runs"), tmp_path / "results"
    assert cli(report_main, "--scale", "mini", "--tables", "1", "--write-expected", "--out", str(out),
               "--runs-root", runs).returncode == 0
    assert cli(report_main, "--scale", "mini", "--tables", "1", "--out", str(out), "--runs-root", runs).returncode == 0
    with open(out / "mini" / "table1.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["dataset"] == "seqdigits" and r["neuron"] == "ilif")
    assert math.isclose(float(row["top-1 final (%) mean"]), 86.1) and row["expected top-1 final (%)"] == "86.10 ± 1.00"
    assert row["expected firing rate"] == "0.2410 ± 0.0241"


def test_the_committed_expectations_are_the_committed_mini_tables():
    """results/expected.yaml's mini cells are the means of results/mini's tables, with the stated rule."""
    data = yaml.safe_load((ROOT / "results" / "expected.yaml").read_text())
    for number, keys in ((1, ("dataset", "neuron", "model", "T")), (2, ("dataset", "normalize", "gamma", "neuron")),
                         (3, ("dataset", "neuron", "κ_I"))):
        with open(ROOT / "results" / "mini" / f"table{number}.csv") as f:
            rows = list(csv.DictReader(f))
        entries = data["mini"][f"table{number}"]
        assert len(entries) == len(rows)
        for entry, row in zip(entries, rows):
            assert [str(entry["key"][k]) if entry["key"][k] is not None else "" for k in keys] == [row[k] for k in keys]
            for column, want in entry["cells"].items():
                mean, std, n = (row[f"{column} {part}"] for part in ("mean", "std", "n"))
                assert math.isclose(want["expected"], float(mean), abs_tol=1e-6)
                assert math.isclose(want["tolerance"], expected.tolerance(column, float(mean), float(std or 0), int(n)),
                                    abs_tol=1e-6)


def test_a_row_without_an_expectation_fails_and_hand_edits_are_never_overwritten(tmp_path, cli):
    _mini_table1_runs(tmp_path)
    path, runs = tmp_path / "expected.yaml", str(tmp_path / "runs")
    args = ("--scale", "mini", "--tables", "1", "--expected", str(path), "--runs-root", runs)
    assert cli(report_main, *args, "--write-expected").returncode == 0
    data = yaml.safe_load(path.read_text())
    dropped = data["mini"]["table1"].pop(0)
    path.write_text(expected.render(data))
    proc = cli(report_main, *args, "--check")
    assert proc.returncode == 1
    where = ", ".join(f"{k}={v}" for k, v in dropped["key"].items())
    assert f"table1 [{where}] firing rate: {dropped['cells']['firing rate']['expected']:.4g}; no expected value" \
        in proc.stdout.splitlines()
    assert proc.stdout.strip().splitlines()[-1] == "22 of 24 checked cells within their expected range; 2 not"
    edited = path.read_text() + "# a note of my own\n"
    path.write_text(edited)
    proc = cli(report_main, *args, "--write-expected")
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {path} was edited by hand (its text is not what "
                                                         "--write-expected writes); those edits would be lost: move "
                                                         "them into the code or use --force")
    assert path.read_text() == edited
    assert cli(report_main, *args, "--write-expected", "--force").returncode == 0
    assert len(yaml.safe_load(path.read_text())["mini"]["table1"]) == 12
    notes = tmp_path / "notes.yaml"
    notes.write_text("# my hand-written notes\n# keep this\n")  # comments only: no data, still a file of one's own
    proc = cli(report_main, "--scale", "mini", "--tables", "1", "--expected", str(notes), "--runs-root", runs,
               "--write-expected")
    assert proc.returncode == 2 and notes.read_text() == "# my hand-written notes\n# keep this\n"
    proc = cli(report_main, "--scale", "mini", "--tables", "4", "--expected", str(path), "--write-expected")
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --tables=[4] is not allowed: tables with expected "
                                                         "values: some of [1, 2, 3]")
