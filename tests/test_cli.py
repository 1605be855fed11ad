"""ilif-train as a Hydra-native CLI: Hydra's flags, search-path additions, multi-experiment sweeps,
launcher presets, and the pre-check of every job of a sweep."""

import pytest

from ilif.conf import group_options
from ilif.errors import ConfigError, exit_code
from ilif.train.app import main, precheck
from test_train import run_dirs

TINY = ["trainer.progress=false", "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"]

WIDTH = "a width in [0.001, 1000] (outside it the surrogate gradient vanishes in float32)"


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
    ("surrogate.gamma=choice(0.5,-1)", "surrogate.gamma=-1.0 is not allowed: " + WIDTH),
    ("trainer.T=range(1,300)", None),
    ("remedy=learnable_gamma surrogate.gamma=1,32",  # a cross-key rule on the second value of an axis
     "remedy.init=32.0 is not allowed: within [remedy.min, remedy.max] = [0.05, 16.0]"),
    ("remedy=adaptive_gamma trainer.epochs=5,1",
     "remedy.every=1 is not allowed: below trainer.epochs=1 (the first refit is at epoch remedy.every)"),
    ("optim.lr=interval(0.1,1)", "optim.lr='interval(0.1,1)' is not allowed: Can only enumerate CHOICE and RANGE "
                                 "sweeps, type is ValueType.INTERVAL_SWEEP"),
])
def test_precheck_validates_every_job_of_hydra_sweep_syntax(tmp_path, sweep, message):
    if message is None:
        precheck(["-m", *sweep.split(), "trainer.epochs=1"])
        return
    with pytest.raises(ConfigError) as err:
        precheck(["-m", *sweep.split()])
    assert str(err.value) == message and exit_code(err.value) == 2


def test_precheck_reaches_a_bad_value_late_in_a_huge_sweep():
    with pytest.raises(ConfigError) as err:
        precheck(["-m", "seed=range(0,4000)", "neuron=lif,ilif", "surrogate.gamma=0.5,1,2,-3"])
    assert str(err.value) == "surrogate.gamma=-3.0 is not allowed: " + WIDTH


def test_bad_value_in_an_experiment_grid_is_caught_before_any_run(tmp_path, cli):
    proc = cli(main, "-m", "experiment=table2", "scale=mini", "surrogate.normalize=area,sideways")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: surrogate.normalize='sideways' is not allowed: choose one of ['area', 'peak']"]
    assert not (tmp_path / "runs").exists()


MISSPELT = [
    ("+surrogate.gama=2", "surrogate.gama=2 is not allowed: did you mean gamma? surrogate takes ['family', 'gamma', "
                          "'normalize']"),
    ("+trainer.epoch=1", "trainer.epoch=1 is not allowed: did you mean epochs? trainer takes ['T', 'epochs', "),
    ("+optim.lrr=0.01", "optim.lrr=0.01 is not allowed: did you mean lr? "),
    ("+loss.lamda=0.5", "loss.lamda=0.5 is not allowed: did you mean lam? "),
    ("+logger.wandb.mod=online", "logger.wandb.mod='online' is not allowed: did you mean mode? logger.wandb takes "),
    ("+neuron.tauu=2", "neuron.tauu=2 is not allowed: did you mean tau? "),
    ("+model.dropot=0.1", "model.dropot=0.1 is not allowed: did you mean dropout? "),
]


@pytest.mark.parametrize("override, message", MISSPELT)
@pytest.mark.parametrize("how", ["run", "sweep", "cfg", "study"])
def test_a_misspelt_key_of_any_group_is_one_line_naming_the_nearest_everywhere(tmp_path, cli, override, message,
                                                                               how):
    """With or without '+', in a single run, a sweep, --cfg and ilif-study --override: exit 2, one line,
    nothing trained and no run directory (it trained at the default before: the key was stored unused)."""
    from ilif.study import main as study_main

    runs = f"runs_root={tmp_path / 'runs'}"
    if how == "study":
        proc = cli(study_main, "demo", "--override", override, "--override", runs, "--dry-run")
    else:
        key, _, value = override.partition("=")
        argv = {"run": [override], "sweep": ["-m", f"{key}={value},{value}"], "cfg": [override, "--cfg", "job"]}[how]
        proc = cli(main, *argv, runs)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_key_a_users_config_file_misspells_is_one_line(tmp_path, cli):
    (tmp_path / "mine" / "optim").mkdir(parents=True)
    (tmp_path / "mine" / "optim" / "fast.yaml").write_text("name: sgd\nlrr: 0.5\n")
    proc = cli(main, "--config-dir", str(tmp_path / "mine"), "optim=fast", f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "lrr" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


TORCH_FREE = """
import sys
from ilif.train.app import main
sys.argv = ["ilif-train", *sys.argv[1:]]
try:
    code = main()
except SystemExit as stop:
    code = stop.code
print("torch imported" if "torch" in sys.modules else "torch not imported", code or 0)
"""


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0), (["--version"], 0), (["--cfg", "job"], 0), (["--cfg", "hydra"], 0),
    (["-sc", "install=bash"], 0), (["+trainer.epoch=1"], 2), (["surrogate.gamma=-1"], 2), (["neuron=lfi"], 2),
    (["-m", "seed=0,1", "+optim.lrr=1,2"], 2),
    # the components' errors: keys read from their source, the neurons' rules, the remedy built without torch
    (["neuron.tau=-1"], 2), (["+neuron.tauu=2"], 2), (["neuron=lif", "+neuron.kappa_current=0.1"], 2),
    (["neuron=plif", "neuron.decay_input=1"], 2), (["+neuron.backend=cuda"], 2), (["surrogate.family=bogus"], 2),
    (["neuron._target_=ilif.neurons.ILIFF"], 2), (["+model.widht=2"], 2), (["model.name=bogus"], 2),
    (["+dataset.foo=1"], 2), (["dataset.name=bogus"], 2), (["dataset=seqdigits", "trainer.T=5"], 2),
    (["remedy=rate_reg", "remedy.weight=-1"], 2), (["remedy=adaptive_gamma", "neuron=plif"], 2),
    (["remedy=adaptive_gamma", "remedy.every=3", "trainer.epochs=3"], 2), (["+remedy.foo=1"], 2),
    (["-m", "neuron.tau=2.0,0.5"], 2),
])
def test_the_cli_answers_without_importing_torch(argv, code):
    """--help, --version, completion, --cfg and every error of a key or a value, the components' own
    included, end before torch is imported (importing it is most of a second-long start here;
    scripts/bench_cli.py times them)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, *argv], capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == f"torch not imported {code}", proc.stderr


@pytest.mark.parametrize("argv, code, line", [
    (["surrogate.family=bogus", "--cfg", "job"], 2,
     "error: surrogate.family='bogus' is not allowed: choose one of ['rectangle', 'triangle', 'sigmoid', 'atan']"),
    (["remedy=adaptive_gamma", "neuron=plif", "--cfg", "job"], 2,
     "error: remedy='adaptive_gamma' is not allowed: a neuron that records its membrane potentials for the fit "
     "(store_membrane); PLIF does not"),
    (["runs_root=/proc/nowhere", "--cfg", "job"], 0, None),  # printing a config writes nothing
    (["optim.name=[a,b]"], 2, "error: optim.name=['a', 'b'] is not allowed: choose one of ['adamw', 'sgd'], or give "
                              "optim._target_ (an optimiser function outside the package)"),
])
def test_a_printed_config_with_overrides_is_checked_whole(tmp_path, cli, argv, code, line):
    """--cfg prints only a config that would train (its overrides are checked as a run's are), and
    checks nothing about where runs would write."""
    proc = cli(main, *argv)
    assert proc.returncode == code, proc.stderr
    assert (proc.stderr.strip().splitlines() == [line]) if line else "runs_root: /proc/nowhere" in proc.stdout
    assert not (tmp_path / "runs").exists()


def test_a_bare_tilde_key_is_removed_alike_by_a_sweep_and_a_study(tmp_path, cli):
    from ilif.study import main as study_main

    studied = cli(study_main, "demo", "--override", "~neuron.tau", "--dry-run")
    assert studied.returncode == 0, studied.stderr
    refused = cli(main, "-m", "neuron=lif", "~neuron.tau", "+neuron.tauu=1")  # the pre-check sees the whole line
    assert refused.returncode == 2 and "neuron.tauu=1 is not allowed: did you mean tau? " in refused.stderr


@pytest.mark.parametrize("override, hint", [
    ("trainer.epoch=1", "(key trainer.epoch): did you mean epochs? trainer has ['T', 'epochs', "),
    ("model.dropot=0.1", "model.dropot=0.1 is not allowed: did you mean dropout? convnet_small takes ['dropout', "
                         "'bn_per_step']"),  # an open group: its component's keys
])
def test_a_misspelt_key_without_plus_names_the_nearest_too(tmp_path, cli, override, hint):
    proc = cli(main, override)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and hint in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, line", [
    ("neuron.tauu=2", "error: neuron.tauu=2 is not allowed: did you mean tau? ILIF takes ['tau', 'v_threshold', "
                      "'reset', 'detach_reset', 'kappa_current', 'kappa_membrane', 'current_inhibition', "
                      "'membrane_inhibition', 'clamp_grad_at_zero']"),
    ("remedy.weigth=1", "error: remedy.weigth=1 is not allowed: did you mean weight? RateRegularisation takes "
                        "['target', 'weight', 'form']"),
    ("optim.lrr=1", "error: optim.lrr=1 is not allowed: did you mean lr? sgd takes ['lr', 'momentum', 'weight_decay']"),
])
def test_a_component_key_misspelt_without_plus_names_the_keys_its_callable_takes(override, line, cli, tmp_path):
    """Not the keys of its group's file (Hydra's struct error knows only those): the sweep's and the
    run's pre-check set the key as ``+`` would, and the component's signature answers."""
    for multirun in ([], ["-m"]):
        proc = cli(main, *multirun, "remedy=rate_reg", override)
        assert proc.returncode == 2 and proc.stderr.strip() == line, proc.stderr
    assert not (tmp_path / "runs").exists()
