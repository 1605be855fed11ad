"""ilif-train as a Hydra-native CLI: Hydra's flags, search-path additions, multi-experiment sweeps,
launcher presets, and the pre-check of every job of a sweep."""

import pytest

from ilif.conf import group_options
from ilif.errors import ConfigError, exit_code
from ilif.train.app import main, precheck
from test_train import run_dirs

TINY = ["trainer.progress=false", "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"]


def test_help_completion_and_cfg_go_to_hydra(tmp_path, cli):
    help_text = cli(main, "--help")
    assert help_text.returncode == 0 and f"neuron: {', '.join(group_options('neuron'))}" in help_text.stdout
    assert "ilif-train -m experiment=table2 scale=mini" in help_text.stdout
    completion = cli(main, "-sc", "install=bash")
    assert completion.returncode == 0 and "hydra_bash_completion" in completion.stdout
    launcher = cli(main, "hydra/launcher=slurm_gpu", "--cfg", "hydra")
    assert launcher.returncode == 0 and "SlurmLauncher" in launcher.stdout and "gpus_per_node: 1" in launcher.stdout
    assert not (tmp_path / "runs").exists()


def test_own_experiments_through_the_search_path_each_expand_their_grid(tmp_path, cli):
    mine = tmp_path / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    for name, gammas in (("mine_a", "0.5,1"), ("mine_b", "2,4")):
        (mine / f"{name}.yaml").write_text(
            "# @package _global_\n"
            f"experiment_name: {name}\n"
            "hydra:\n  sweeper:\n    params:\n"
            f"      surrogate.gamma: {gammas}\n")
    proc = cli(main, "-m", "--config-dir", str(tmp_path / "my_configs"), "experiment=mine_a,mine_b", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert [d.name.rsplit("-", 1)[0] for d in run_dirs(tmp_path, "mine_a")] == [
        "digits-ilif-g0.5-s0", "digits-ilif-g1-s0"]
    assert [d.name.rsplit("-", 1)[0] for d in run_dirs(tmp_path, "mine_b")] == [
        "digits-ilif-g2-s0", "digits-ilif-g4-s0"]
    searchpath = cli(main, f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", "experiment=mine_b", "--cfg", "job")
    assert searchpath.returncode == 0 and "experiment_name: mine_b" in searchpath.stdout


@pytest.mark.parametrize("sweep, message", [
    ("seed=range(0,3)", None),
    ("neuron=glob(ilif_*)", None),
    ("surrogate.gamma=choice(0.5,-1)", "surrogate.gamma=-1 is not allowed: a finite number > 0"),
    ("trainer.T=range(1,5000)", None),
    ("optim.lr=interval(0.1,1)", "optim.lr='interval(0.1,1)' is not allowed: Can only enumerate CHOICE and RANGE "
                                 "sweeps, type is ValueType.INTERVAL_SWEEP"),
])
def test_precheck_validates_every_job_of_hydra_sweep_syntax(tmp_path, sweep, message):
    if message is None:
        precheck(["-m", sweep, "trainer.epochs=1"])
        return
    with pytest.raises(ConfigError) as err:
        precheck(["-m", sweep])
    assert str(err.value) == message and exit_code(err.value) == 2


def test_precheck_reaches_a_bad_value_late_in_a_huge_sweep():
    with pytest.raises(ConfigError) as err:
        precheck(["-m", "seed=range(0,4000)", "neuron=lif,ilif", "surrogate.gamma=0.5,1,2,-3"])
    assert str(err.value) == "surrogate.gamma=-3 is not allowed: a finite number > 0"


def test_bad_value_in_an_experiment_grid_is_caught_before_any_run(tmp_path, cli):
    proc = cli(main, "-m", "experiment=table2", "scale=mini", "surrogate.normalize=area,sideways")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: surrogate.normalize='sideways' is not allowed: choose one of ['area', 'peak']"]
    assert not (tmp_path / "runs").exists()
