import json
from pathlib import Path

import pytest

from ilif.report import tables
from ilif.report.__main__ import build_demo, demo_summary
from ilif.report.runs import load_runs
from ilif.study import experiment_names, plan

# ILIF_REFERENCE §4, the release's recipe: dataset -> (model, T, batch, lr, weight decay, dropout, MSE target)
RECIPES = {
    "cifar10": ("preact_resnet18", 6, 128, 0.1, 5e-5, 0.0, "constant"),
    "cifar100": ("preact_resnet18", 6, 128, 0.1, 5e-4, 0.0, "constant"),
    "cifar10_dvs": ("vgg11_bn", 10, 128, 0.05, 5e-4, 0.3, "onehot"),
    "dvs_gesture": ("vgg11_bn", 20, 16, 0.1, 5e-4, 0.4, "constant"),
}


@pytest.mark.parametrize("dataset", sorted(RECIPES))
def test_full_configs_follow_the_release_recipe(dataset):
    jobs = plan([f"table1_full_{dataset}"], [])
    assert sorted((cfg.neuron.name, cfg.seed) for _, cfg, _ in jobs) == [
        ("ilif", 1234), ("ilif", 1235), ("ilif", 1236), ("lif", 1234), ("lif", 1235), ("lif", 1236)]
    model, T, batch, lr, wd, dropout, target = RECIPES[dataset]
    for _, cfg, run_dir in jobs:
        assert (cfg.dataset.name, cfg.model.name, cfg.trainer.T, cfg.trainer.batch_size) == (dataset, model, T, batch)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", lr, 0.9, wd)
        assert (cfg.model.dropout, cfg.trainer.epochs, cfg.schedule.name) == (dropout, 200, "cosine")
        assert (cfg.loss.name, cfg.loss.lam, cfg.loss.mse_target) == ("tet", 0.05, target)
        assert (cfg.neuron.tau, cfg.neuron.v_threshold, cfg.neuron.reset) == (1.1, 1.0, "soft")
        assert cfg.surrogate.family == "sigmoid" and abs(3.5255 / cfg.surrogate.gamma - 4.0) < 1e-3  # Sigmoid(alpha=4)
        assert run_dir.parts[:2] == ("runs", "table1_full")
    assert {cfg.neuron.name: (cfg.neuron.current_inhibition, cfg.neuron.membrane_inhibition) for _, cfg, _ in jobs} == {
        "lif": (False, False), "ilif": (True, True)}


def test_every_experiment_composes_with_the_expected_grid():
    sizes = {name: len(plan([name], [])) for name in experiment_names(["*"])}
    assert sizes["demo"] == 30
    assert sizes["table2_mini"] == sizes["table2_full"] == 60 and sizes["table2_smoke"] == 20
    assert sizes["table3_mini"] + sizes["table3_mini_kappa"] == 12 + 6
    assert sizes["table1_full_imagenet"] == 2 and sizes["table1_mini"] == 6
    assert sum(v for k, v in sizes.items() if k.startswith("table1_smoke")) == 10
    smoke = plan(["table2_smoke"], [])
    assert all(cfg.dataset.stand_in and cfg.trainer.epochs == 1 for _, cfg, _ in smoke)
    assert {cfg.surrogate.normalize for _, cfg, _ in smoke} == {"area", "peak"}
    assert len({run_dir for _, _, run_dir in smoke}) == 20  # collision-free


def _write_summary(run_dir: Path, acc: float, rate: float, layers=(0.1, 0.2)):
    run_dir.mkdir(parents=True)
    final = {"test/acc1": acc, "test/firing_rate": rate, "test/energy_uj": 2 * rate, "test/snn_ann_ratio": rate / 10,
             "epoch": 0, "train/loss": 1.0}
    summary = {"status": "finished", "final": final, "best": {"epoch": 0, "metrics": final},
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
        if gamma == 2 and neuron == "ilif" and seed == 2:
            continue  # one missing seed
        lif_rate = 0.1 * gamma
        rate = lif_rate if neuron == "lif" else lif_rate / 2
        _write_summary(run_dir, acc=0.9 + 0.01 * seed, rate=rate)
    records = load_runs(["demo"])
    table = tables.demo_table(records)
    rows = {(row[0], row[1]): row for row in table.rows}
    assert rows[("1", "lif")][2:] == ["91.00 ± 1.00", "0.1000 ± 0.0000", "1.000"]
    assert rows[("1", "ilif")][4] == "0.500"
    assert rows[("2", "ilif")][2] == "90.50 ± 0.71 (2/3)"
    assert rows[("4", "ilif")][2:] == ["missing (0/3)", "missing (0/3)", "—"]
    text = demo_summary(records)
    assert "γ = 0.25: ILIF fires at 0.50× LIF's rate (0.013 vs 0.025); accuracy LIF 91.0 %, ILIF 91.0 %" in text
    assert "γ = 4: runs missing" in text
    assert "LIF's firing rate rises with γ at every step (0.025 at γ = 0.25 -> 0.400 at γ = 4)." in text
    build_demo(tmp_path / "results" / "demo")
    written = sorted(p.name for p in (tmp_path / "results" / "demo").iterdir())
    assert written == ["accuracy_vs_gamma.png", "firing_rate_vs_gamma.png", "table.csv", "table.md"]
    md = (tmp_path / "results" / "demo" / "table.md").read_text()
    assert "Produced by `make demo` at commit" in md and "| 0.25 | lif |" in md


def test_table1_deltas_and_published_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _, cfg, run_dir in plan(["table1_full_cifar10"], []):
        neuron = cfg.neuron.name
        _write_summary(run_dir, acc=0.94 if neuron == "lif" else 0.95, rate=0.2 if neuron == "lif" else 0.15)
    table = tables.table1(load_runs(["table1_full_cifar10"]), "full")
    rows = {row[1]: row for row in table.rows}
    assert rows["lif"][-1] == "94.51" and rows["ilif"][-1] == "—"
    assert rows["ilif"][-3:-1] == ["+1.00", "25.0 %"]
    assert rows["lif"][4] == "94.00 ± 0.00"


def test_fast_plan_equals_composing_each_job():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ilif.study import _config_dir

    jobs = plan(["table2_mini", "table3_mini_kappa"], [])
    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        for name, cfg, _ in jobs[:5] + jobs[-3:]:
            overrides = [f"experiment={name}", f"neuron={cfg.neuron.name}", f"seed={cfg.seed}",
                         f"surrogate.gamma={cfg.surrogate.gamma}", f"surrogate.normalize={cfg.surrogate.normalize}",
                         f"neuron.kappa_current={cfg.neuron.kappa_current}"]
            assert OmegaConf.to_container(compose(config_name="train", overrides=overrides)) == OmegaConf.to_container(cfg)
