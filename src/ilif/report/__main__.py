"""``ilif-report``: tables and figures from run directories (it never runs a model).

    ilif-report --scale mini --tables 2 3          # results/mini/table2.md, .csv, ...
    ilif-report --scale smoke --tables all --figures
    ilif-report --scale full --tables 1 --runs-root /scratch/me/runs   # runs trained elsewhere
    ilif-report --scale mini --tables 1 --check     # each cell against results/expected.yaml; exit 1 if one is off
    ilif-report --scale mini --tables 1 2 3 --write-expected   # the mini expectations, from the runs
    ilif-report --demo                              # results/demo/: table, figures, plain-language summary
    ilif-report --upload-wandb runs/demo/*          # send finished runs to a wandb dashboard
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import ilif
from ilif import records
from ilif.conf import quoted, use_config_dirs
from ilif.errors import ConfigError, bad_input, entry_point
from ilif.grid import FIGURES, SCALES, plan, table_jobs, table_numbers
from ilif.rundir import write_json_atomic

from . import expected, plots, tables
from .runs import compared, group, load_runs, mean_std, provenance_note, values

EXPECTED_TABLES = (1, 2, 3)  # the tables whose cells have expected values (results/expected.yaml)


def runs_behind(before: Optional[int]) -> str:
    """How many finished runs an output was made from, in words (None: it does not say)."""
    return "an unrecorded number of" if before is None else str(before)


def kept(path: Path, finished: int) -> str:
    return (f"kept {path}: it was built from {runs_behind(tables.finished_in(path))} finished runs, these runs give "
            f"{finished} (use --force to replace it)")


def table_from_runs(number: int, scale: str, runs_root: str):
    """(Table ``number`` at ``scale`` built from the run directories under ``runs_root``, its records)."""
    records = load_runs(table_jobs([number], scale, [f"runs_root={quoted(runs_root)}"]))
    return with_provenance(tables.BUILDERS[number](records, scale), records), records


def build_tables(numbers: list[int], scale: str, out: Path, runs_root: str, force: bool = False,
                 expected_values: Optional[dict] = None) -> list[Path]:
    written = []
    for number in numbers:
        table, records = table_from_runs(number, scale, runs_root)
        if number in EXPECTED_TABLES:
            table = tables.with_expected(table, number, scale, expected_values or {})
        stem = out / f"table{number}"
        sources = ", ".join(sorted({str(record.run_dir.parent) for record in records}))
        finished = sum(r.done for r in records)
        if tables.write_table(table, stem, f"make reproduce-table{number} SCALE={scale}", sources, scale, finished,
                              len(records), force):
            written += [stem.with_suffix(".md"), stem.with_suffix(".csv")]
        else:
            print(kept(stem.with_suffix(".md"), finished))
    return written


def check_tables(numbers: list[int], scale: str, runs_root: str, expected_values: dict) -> int:
    """Print one verdict per expected cell of ``numbers``; 1 when a cell is outside its range or missing."""
    unexpected = [n for n in numbers if not expected_values.get(scale, {}).get(f"table{n}")]
    if unexpected:
        print(f"error: no expected values for table {unexpected[0]} at scale {scale} (tables with them: "
              f"{sorted(int(t[5:]) for t in expected_values.get(scale, {}))})", file=sys.stderr)
        return 1
    built = {n: table_from_runs(n, scale, runs_root)[0] for n in numbers}
    verdicts = expected.check(expected_values, scale, built)
    for verdict in verdicts:
        print(verdict.line())
    failed = [v for v in verdicts if v.status.startswith(expected.FAILING)]
    checked = [v for v in verdicts if v.checked]
    unchecked = len(verdicts) - len(checked)
    print(f"{len(checked) - len(failed)} of {len(checked)} checked cells within their expected range"
          + (f"; {len(failed)} not" if failed else "") + (f"; {unchecked} not checked (listed)" if unchecked else ""))
    return 1 if failed or not checked else 0


def with_provenance(table, records):
    """``table`` with a note when its runs come from several commits, torch versions or devices."""
    note = provenance_note(records)
    if note is not None:
        table.notes.append(note)
    return table


FIGURE_COUNTS = "figures.json"  # beside the figures: how many finished runs each set was drawn from
COUNT = records.record({"finished": records.number(0, integer=True), "planned": records.number(0, integer=True)},
                       required=("finished", "planned"), others=None)
#: figures.json: {set: {finished, planned}} for each set of figures (the experiment they are drawn from);
#: a file of one {finished, planned} for all sets is that of an earlier version
FIGURE_RECORD = records.either(records.mapping_of(COUNT, records.one_of(*FIGURES)), COUNT,
                               what=f"a count of finished and planned runs for each of {sorted(FIGURES)}")


#: the figures of each set (the experiment of ilif.grid.FIGURES they are drawn from)
FIGURE_FILES = {"gamma": ("fig1_firing_rate_vs_gamma.png", "fig2_accuracy_vs_gamma.png",
                          "fig4_temporal_gradient_ratio.png"),
                "neurons": ("fig3_layer_firing_rates.png", "fig5_training_curves.png")}


def figures_finished_in(out: Path, name: str, planned: int) -> Optional[int]:
    """How many finished runs the set ``name`` of figures in ``out`` (``planned`` runs) was drawn from:
    0 when none of its figures is there, None when some are but no readable record says (kept unless
    forced). A record of an earlier version counts all sets together: at most its count, or the set's
    plan, is taken (never more than the set could have had)."""
    if not any((out / figure).exists() or (out / figure).is_symlink() for figure in FIGURE_FILES[name]):
        return 0
    try:
        counts = records.read_json(out / FIGURE_COUNTS, FIGURE_RECORD)
    except (OSError, records.RecordError):
        return None
    if "finished" in counts:
        return min(counts["finished"], planned)
    return counts[name]["finished"] if name in counts else None


def build_figures(scale: str, out: Path, runs_root: str, force: bool = False) -> list[Path]:
    """The five figures: each set (the γ sweep's, figures 1, 2, 4; the neurons', figures 3 and 5:
    :data:`FIGURE_FILES`) redrawn only from at least as many finished runs as the figures it replaces
    (or with ``force``), like the tables (:func:`ilif.report.tables.replaces`)."""
    overrides = [f"scale={scale}", f"runs_root={quoted(runs_root)}"]
    runs = {name: load_runs(plan([FIGURES[name]], overrides)) for name in ("gamma", "neurons")}
    rate, accuracy, ratio = (out / figure for figure in FIGURE_FILES["gamma"])
    layers, curves = (out / figure for figure in FIGURE_FILES["neurons"])
    draw = {
        "gamma": lambda gamma_runs: [
            plots.metric_vs_gamma(gamma_runs, tables.RATE.getter, "network firing rate", "Fig. 1 — firing rate vs γ",
                                  rate),
            plots.metric_vs_gamma(gamma_runs, tables.ACC.getter, "top-1 accuracy (%)", "Fig. 2 — accuracy vs γ",
                                  accuracy, scale=100),
            plots.metric_vs_gamma(gamma_runs, lambda r: r.final("grad/temporal_ratio"), "|∂L/∂x_1| / |∂L/∂x_T|",
                                  "Fig. 4 — temporal gradient ratio vs γ", ratio)],
        "neurons": lambda main_runs: [plots.layer_rates(main_runs, layers), plots.training_curves(main_runs, curves)],
    }
    written, counts = [], {}
    for name, records_of_set in runs.items():
        finished, planned = sum(r.done for r in records_of_set), len(records_of_set)
        before = figures_finished_in(out, name, planned)
        if force or tables.replaces(before, finished):
            written += draw[name](records_of_set)
            counts[name] = {"finished": finished, "planned": planned}
        else:
            print(f"kept the figures of {FIGURES[name]} in {out}: they were drawn from {runs_behind(before)} finished "
                  f"runs, these runs give {finished} (use --force to replace them)")
            counts[name] = {"finished": before, "planned": planned} if before is not None else None
    if written:
        write_json_atomic({name: count for name, count in counts.items() if count is not None}, out / FIGURE_COUNTS)
    return written


def demo_summary(records) -> str:
    """Plain-language reading of the demo runs (the experiment's subject against its baseline): whatever
    they show."""
    groups = group(records, ["surrogate.gamma", "neuron.name"])
    gammas = sorted({k[0] for k in groups})
    pair = compared(records)
    base, ours = pair.baseline.upper(), pair.subject.upper()
    lines = ["What the runs show (mean over seeds, test set):"]
    lif_rates = []  # (γ, the baseline's firing rate) wherever its runs exist
    for gamma in gammas:
        lif, ilif = groups.get((gamma, pair.baseline), []), groups.get((gamma, pair.subject), [])
        lr, ir = (mean_std(values(r, tables.RATE.getter))[0] for r in (lif, ilif))
        la, ia = (mean_std(values(r, tables.ACC.getter))[0] for r in (lif, ilif))
        if lr is not None:
            lif_rates.append((gamma, lr))
        if None in (lr, ir, la, ia):
            lines.append(f"  γ = {gamma:g}: runs missing")
            continue
        relation = f"{ir / lr:.2f}× {base}'s" if lr > 0 else f"n/a ({base} silent)"
        lines.append(f"  γ = {gamma:g}: {ours} fires at {relation} rate ({ir:.3f} vs {lr:.3f}); "
                     f"accuracy {base} {100 * la:.1f} %, {ours} {100 * ia:.1f} %")
    if len(lif_rates) >= 2:
        rates = [rate for _, rate in lif_rates]
        if all(b > a for a, b in zip(rates, rates[1:])):
            verdict = "rises with γ at every step"
        elif rates[-1] > rates[0]:
            verdict = "is higher at the largest γ than at the smallest, but not at every step"
        else:
            verdict = "does not rise with γ"
        (g0, r0), (g1, r1) = lif_rates[0], lif_rates[-1]
        lines.append(f"  {base}'s firing rate {verdict} ({r0:.3f} at γ = {g0:g} -> {r1:.3f} at γ = {g1:g}).")
    return "\n".join(lines)


def build_demo(out: Path, runs_root: str, force: bool = False) -> str:
    """results/demo: the table and both figures (kept when they hold more finished runs), and the
    plain-language summary."""
    records = load_runs(plan(["demo"], [f"runs_root={quoted(runs_root)}"]))
    finished = sum(r.done for r in records)
    if not tables.write_table(with_provenance(tables.demo_table(records), records), out / "table", "make demo",
                              f"{runs_root}/demo", "mini",
                              finished, len(records), force):
        return kept(out / "table.md", finished)
    plots.metric_vs_gamma(records, tables.RATE.getter, "network firing rate", "Firing rate vs γ",
                          out / "firing_rate_vs_gamma.png")
    plots.metric_vs_gamma(records, tables.ACC.getter, "top-1 accuracy (%)", "Accuracy vs γ",
                          out / "accuracy_vs_gamma.png", scale=100)
    return (f"{demo_summary(records)}\nwrote {out}/table.md, table.csv, firing_rate_vs_gamma.png, "
            "accuracy_vs_gamma.png")


@entry_point
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ilif-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {ilif.__version__}")
    parser.add_argument("--config-dir", "-cd", action="append", default=[], type=Path, metavar="DIR",
                        help="a folder of your own config files (experiment/, model/, ...), "
                             "searched after the package's")
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--tables", nargs="*", default=[], metavar="N",
                        help=f"these tables: {sorted(tables.BUILDERS)} or all")
    parser.add_argument("--figures", action="store_true")
    parser.add_argument("--demo", action="store_true", help="the make demo report in results/demo/")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--runs-root", default="runs", help="where the run directories are (default runs/)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing results even when they were built from more finished runs")
    parser.add_argument("--check", action="store_true",
                        help="compare each cell of --tables with its expected value; exit 1 when one is outside")
    parser.add_argument("--write-expected", action="store_true",
                        help="write the expected values of --tables at --scale from the runs (mini scale)")
    parser.add_argument("--expected", type=Path, default=None,
                        help="the expected values (default: OUT/expected.yaml, i.e. results/expected.yaml)")
    parser.add_argument("--upload-wandb", metavar="RUN_DIR", nargs="+", type=Path,
                        help="send finished run directories to wandb (online with an API key, else offline)")
    args = parser.parse_args(argv)
    with bad_input():
        use_config_dirs(args.config_dir)
    if args.upload_wandb:
        from ilif.wandb_mirror import upload_runs

        outcome = upload_runs(args.upload_wandb)
        print(f"sent {len(outcome['online'])} run(s) to wandb online; wrote {len(outcome['offline'])} offline "
              "(send them with: wandb sync DIR/wandb/offline-run-*)")
        for run_dir, why in outcome["left out"]:
            print(f"  left out {run_dir}: {why}")
        return 0
    if args.demo:
        print(build_demo(args.out / "demo", args.runs_root, args.force))
        return 0
    with bad_input():
        numbers = table_numbers(args.tables)
    unbuilt = [n for n in numbers if n not in tables.BUILDERS]
    if unbuilt:
        raise ConfigError.from_message(f"table {unbuilt[0]} has no builder: add it to BUILDERS in "
                                       "ilif/report/tables.py")
    expected_path = args.expected or args.out / "expected.yaml"
    with bad_input():
        expected_values = expected.load(expected_path)
    if args.write_expected:
        if args.scale == "full":
            raise ConfigError.from_message("--scale full is not allowed with --write-expected: full-scale expectations "
                                           "are the published values (choose mini or smoke)")
        if not set(numbers) & set(EXPECTED_TABLES):
            raise ConfigError("--tables", numbers, f"tables with expected values: some of {list(EXPECTED_TABLES)}")
        built = {}
        for number in [n for n in numbers if n in EXPECTED_TABLES]:
            table, records = table_from_runs(number, args.scale, args.runs_root)
            finished = sum(r.done for r in records)
            if finished < len(records):
                print(f"error: table {number} at scale {args.scale}: {finished} of {len(records)} planned runs "
                      f"finished under {args.runs_root}; expected values come from a complete grid", file=sys.stderr)
                return 1
            built[number] = table
        expected.write(expected_path, args.scale, built, args.force)
        print(f"wrote {expected_path} ({args.scale}: tables {sorted(built)})")
        return 0
    if args.check:
        return check_tables(numbers, args.scale, args.runs_root, expected_values)
    written = build_tables(numbers, args.scale, args.out / args.scale, args.runs_root, args.force, expected_values)
    if args.figures:
        written += build_figures(args.scale, args.out / args.scale, args.runs_root, args.force)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
