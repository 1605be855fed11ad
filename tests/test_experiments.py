import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ilif.conf import compose_config, group_options
from ilif.grid import FIGURES, SCALES, plan, table_experiments, table_jobs, table_numbers
from ilif.grid import tables as grid_tables
from ilif.neurons import Surrogate
from ilif.report import tables
from ilif.report.__main__ import build_demo, demo_summary
from ilif.report.runs import load_runs


def test_every_table_composes_with_the_expected_grid():
    jobs = {(n, scale): table_jobs([n], scale) for n in (1, 2, 3, 5) for scale in SCALES}
    sizes = {key: len(value) for key, value in jobs.items()}
    assert sizes[(1, "full")] == 5 * 2 * 3 and sizes[(1, "mini")] == 3 * 4 * 3 and sizes[(1, "smoke")] == 5 * 2
    assert sizes[(2, "full")] == 5 * 2 * 2 * 3 and sizes[(2, "mini")] == 2 * 5 * 2 * 2 * 3 and sizes[(2, "smoke")] == 20
    assert sizes[(3, "full")] == 2 * (4 + 2) * 3 and sizes[(3, "mini")] == 2 * (4 + 2) * 3 and sizes[(3, "smoke")] == 12
    assert sizes[(5, "full")] == 2 * 5 * 2 * 3 and sizes[(5, "mini")] == 2 * 2 * 5 * 2 * 3 and sizes[(5, "smoke")] == 20
    demo = plan(["demo"], [])
    assert len(demo) == 2 * 3 * 3
    assert {(cfg.dataset.name, cfg.trainer.T, cfg.surrogate.normalize) for _, cfg, _ in demo} == {
        ("seqdigits", 8, "peak")}
    planned = {str(run_dir) for grid in [*jobs.values(), demo] for _, _, run_dir in grid}
    golden = (Path(__file__).parent / "golden" / "run_dirs.txt").read_text().splitlines()
    assert sorted(planned) == [line for line in golden if not line.startswith("#")]  # the hashes are stable
    smoke = jobs[(2, "smoke")]
    assert all(cfg.dataset.stand_in and cfg.trainer.epochs == 1 for _, cfg, _ in smoke)
    assert {cfg.surrogate.normalize for _, cfg, _ in smoke} == {"area", "peak"}
    assert len({run_dir for _, _, run_dir in smoke}) == 20  # collision-free
    full = jobs[(1, "full")]
    assert {cfg.dataset.name for _, cfg, _ in full} == {"cifar10", "cifar100", "cifar10_dvs", "dvs_gesture", "imagenet"}
    assert {cfg.seed for _, cfg, _ in full} == {1234, 1235, 1236}
    assert {run_dir.parts[1] for _, _, run_dir in full} == {"table1_full"}
    mini = jobs[(1, "mini")] + jobs[(3, "mini")]
    assert {(cfg.dataset.name, cfg.model.name, cfg.trainer.T, cfg.neuron.tau) for _, cfg, _ in mini} == {
        ("digits", "convnet_small", 6, 1.1), ("seqdigits", "convnet_small", 8, 1.1),
        ("ndigits", "convnet_small", 6, 1.1)}
    assert {cfg.dataset.name for _, cfg, _ in jobs[(3, "mini")] + jobs[(2, "mini")]} == {"digits", "seqdigits"}


def test_tables_on_the_command_line_and_their_experiments(cli):
    from ilif.report.__main__ import main as report_main
    from ilif.study import main as study_main

    known = sorted(grid_tables())  # the shipped tables, and any a user added (an experiment file and a builder)
    assert sorted(tables.BUILDERS) == known == table_numbers(["all"]) and {1, 2, 3, 4, 5} <= set(known)
    assert {n: grid_tables()[n] for n in (1, 2, 3, 4, 5)} == {
        1: ("table1",), 2: ("table2",), 3: ("table3", "table3_kappa"), 4: ("table1",), 5: ("table5",)}
    assert table_numbers(["3", "1"]) == [3, 1] and table_numbers(["2", "all"]) == known
    for bad in (["all", "demo"], ["99"], ["²"]):
        with pytest.raises(ValueError) as err:
            table_numbers(bad)
        assert str(err.value) == f"table={bad[-1]!r} is not allowed: choose from {known} or all"
    assert table_experiments(table_numbers(["all"]), figures=True) == sorted(
        {name for names in grid_tables().values() for name in names} | set(FIGURES.values()))
    assert set(table_experiments(table_numbers(["all"]))) == set(group_options("experiment")) - {"demo"}
    assert table_experiments([], figures=True) == sorted(FIGURES.values()) == ["table1", "table2"]
    for command in (study_main, report_main):
        flag = "--table" if command is study_main else "--tables"
        proc = cli(command, flag, "99")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"error: table='99' is not allowed: choose from {known} or all"]
    assert not list(Path.cwd().iterdir())  # nothing written


def test_an_override_of_a_grid_key_replaces_its_axis():
    jobs = table_jobs([1], "full", ["neuron=lif,ilif,plif", "recipe=cifar10"])
    assert sorted({cfg.neuron.name for _, cfg, _ in jobs}) == ["ilif", "lif", "plif"] and len(jobs) == 9


def _write_summary(run_dir: Path, acc: float, rate: float, layers=(0.1, 0.2)):
    run_dir.mkdir(parents=True)
    final = {"test/acc1": acc, "test/firing_rate": rate, "test/energy_uj": 2 * rate, "test/snn_ann_ratio": rate / 10,
             "epoch": 0, "train/loss": 1.0}
    summary = {"status": "finished", "config_hash": run_dir.name.rsplit("-", 1)[1], "final": final,
               "best": {"epoch": 0, "metrics": final},
               "layers": [{"layer": f"n{i}", "firing_rate": r} for i, r in enumerate(layers)],
               "energy_layers": [], "energy_totals": {}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "metrics.jsonl").write_text(json.dumps(final) + "\n")


def test_demo_report_from_run_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = plan(["demo"], [])
    for _, cfg, run_dir in jobs:
        gamma, neuron, seed = cfg.surrogate.gamma, cfg.neuron.name, cfg.seed
        if gamma == 4 and neuron == "ilif":
            continue  # a missing cell
        if gamma == 1 and neuron == "ilif" and seed == 2:
            continue  # one missing seed
        lif_rate = 0.1 * gamma
        rate = lif_rate if neuron == "lif" else lif_rate / 2
        _write_summary(run_dir, acc=0.9 + 0.01 * seed, rate=rate)
    records = load_runs(plan(["demo"], []))
    table = tables.demo_table(records)
    assert table.title == "The γ dilemma on seqdigits (make demo)"
    rows = {(row[0], row[1]): row for row in table.rows}
    assert rows[("1", "lif")][2:] == ["91.00 ± 1.00", "0.1000 ± 0.0000", "1.000"]
    assert rows[("0.25", "ilif")][4] == "0.500"
    assert rows[("1", "ilif")][2] == "90.50 ± 0.71 (2/3)"
    assert rows[("4", "ilif")][2:] == ["missing (0/3)", "missing (0/3)", "—"]
    text = demo_summary(records)
    assert "γ = 0.25: ILIF fires at 0.50× LIF's rate (0.013 vs 0.025); accuracy LIF 91.0 %, ILIF 91.0 %" in text
    assert "γ = 4: runs missing" in text
    assert "LIF's firing rate rises with γ at every step (0.025 at γ = 0.25 -> 0.400 at γ = 4)." in text
    build_demo(tmp_path / "results" / "demo", "runs")
    written = sorted(p.name for p in (tmp_path / "results" / "demo").iterdir())
    assert written == ["accuracy_vs_gamma.png", "firing_rate_vs_gamma.png", "table.csv", "table.md"]
    md = (tmp_path / "results" / "demo" / "table.md").read_text()
    assert "Produced by `make demo` at commit" in md and "| 0.25 | lif |" in md


def test_table1_deltas_and_the_published_values_expected_at_full_scale(tmp_path, monkeypatch):
    from ilif.report.expected import published_entries

    monkeypatch.chdir(tmp_path)
    jobs = table_jobs([1], "full", ["recipe=cifar10"])
    for _, cfg, run_dir in jobs:
        neuron = cfg.neuron.name
        _write_summary(run_dir, acc=0.94 if neuron == "lif" else 0.95, rate=0.2 if neuron == "lif" else 0.15)
    table = tables.with_expected(tables.table1(load_runs(jobs), "full"), 1, "full",
                                 {"full": {"table1": published_entries()}})
    rows = {row[1]: row for row in table.rows}
    assert rows["lif"][-2:] == ["94.51 ± 1.00", "—"] and rows["ilif"][-2:] == ["unknown", "—"]
    assert rows["ilif"][-4:-2] == ["+1.00", "25.0 %"]
    assert rows["lif"][4] == "94.00 ± 0.00"
    assert any(note.startswith("expected at full scale: CLIF repository README") for note in table.notes)


def test_fast_plan_equals_composing_each_job():
    jobs = table_jobs([2, 3], "mini")
    for name, cfg, _ in jobs[:5] + jobs[-3:]:
        recipe = {"digits": "mini", "seqdigits": "mini_seqdigits"}[cfg.dataset.name]
        overrides = [f"experiment={name}", "scale=mini", f"recipe={recipe}", f"neuron={cfg.neuron.name}",
                     f"seed={cfg.seed}", f"surrogate.gamma={cfg.surrogate.gamma}",
                     f"surrogate.normalize={cfg.surrogate.normalize}"]
        if "kappa_current" in cfg.neuron:
            overrides.append(f"neuron.kappa_current={cfg.neuron.kappa_current}")
        assert OmegaConf.to_container(compose_config(overrides)) == OmegaConf.to_container(cfg)


PARITY_DATASETS = ("cifar10", "cifar100", "cifar10_dvs", "dvs_gesture")


def parity_rows() -> list[tuple[str, list]]:
    """(key, release value per dataset) from the parity table of docs/recipes.md."""
    text = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text()
    table = text.split("<!-- parity-table -->")[1].split("<!-- /parity-table -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        key, release = (cell.strip() for cell in line.strip("|").split("|")[:2])
        values = [yaml.safe_load(v) for v in release.split(" / ")]
        rows.append((key.strip("`"), values * 4 if len(values) == 1 else values))
    return rows


def test_full_recipes_match_the_parity_table():
    rows = parity_rows()
    assert len(rows) >= 30 and all(len(values) == 4 for _, values in rows)
    for index, dataset in enumerate(PARITY_DATASETS):
        cfg = compose_config(["experiment=table1", f"recipe={dataset}"])
        for key, values in rows:
            assert OmegaConf.select(cfg, key) == values[index], (dataset, key)
        assert cfg.dataset.preprocess == ("reference" if dataset == "cifar10_dvs" else "clean")
        assert Surrogate(cfg.surrogate.family, cfg.surrogate.gamma).alpha == 4.0


def test_the_report_and_the_run_readers_load_no_torch():
    import subprocess
    import sys

    code = "import sys, ilif.report.__main__, ilif.rundir, ilif.grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_run_identity_is_the_science_not_the_machine():
    from ilif.conf import config_hash

    base = compose_config(["experiment=table1", "recipe=cifar10"])
    same = ["dataset.root=/elsewhere", "dataset.download=false", "trainer.device=cpu", "trainer.eval_batch_size=7",
            "trainer.num_workers=0", "trainer.threads=3", "runs_root=/scratch", "logger.wandb.mode=offline"]
    for override in same:
        assert (config_hash(compose_config(["experiment=table1", "recipe=cifar10", override]))
                == config_hash(base)), override
    for override in ["seed=1", "trainer.T=4", "neuron.clamp_grad_at_zero=0.0", "model.bn_per_step=false"]:
        assert (config_hash(compose_config(["experiment=table1", "recipe=cifar10", override]))
                != config_hash(base)), override


def test_figures_draw_every_neuron_the_runs_compare():
    from ilif.conf import CompareConfig
    from ilif.report import plots
    from ilif.report.runs import RunRecord

    runs = [RunRecord({"neuron": {"name": n}}, Path(n)) for n in ("ilif", "lif", "plif", "clif", "lif")]
    neurons = plots.neurons_of(runs)
    assert neurons == ["lif", "ilif", "plif", "clif"]  # the baseline first, then the grid's order, each once
    assert plots.neurons_of([RunRecord(r.config, r.run_dir, compare=CompareConfig("plif")) for r in runs]) == [
        "plif", "ilif", "lif", "clif"]
    colors = [plots.color(n, neurons) for n in neurons]
    assert colors[:2] == [plots.COLORS["lif"], plots.COLORS["ilif"]] and len(set(colors)) == 4

