"""Components that bring their own config: a backbone outside the package with a key of its own, a
dataset function with its own keys, a neuron file without ``name``. Their keys enter the hash of their
own runs only, and what a component does not take is refused in one line naming the key."""

import json

import pytest
from omegaconf import OmegaConf

from ilif.conf import compose_config, identity, run_leaf, use_config_dirs
from ilif.models import model_names
from ilif.train.build import build_datasets, build_model
from ilif.errors import ConfigError
from ilif.train.config import validate

BACKBONE = '''
from torch import nn


class TwoLayer(nn.Module):
    """[B, C, H, W] -> [T, B, classes] through one hidden layer of spiking neurons."""

    def __init__(self, neuron, num_classes, in_features, T, hidden):
        super().__init__()
        self.T, self.fc1, self.fc2 = T, nn.Linear(in_features, hidden), nn.Linear(hidden, num_classes)
        self.sn = neuron()

    def forward(self, x):
        h = self.fc1(x.flatten(1)).unsqueeze(0).repeat(self.T, 1, 1)
        return self.fc2(self.sn(h))


def two_layer(neuron, num_classes, in_channels, T, input_size, hidden=64):
    return TwoLayer(neuron, num_classes, in_channels * input_size ** 2, T, hidden)
'''


@pytest.fixture
def mine(tmp_path, monkeypatch):
    """A user's folder: ``mine/model/user_mlp.yaml`` (a backbone outside the package with its own ``hidden``),
    ``mine/neuron/user_lif.yaml`` (LIF's file without ``name``), ``mine/dataset/user_noisy.yaml`` (a dataset
    function with its own ``noise``) and the module ``user_parts`` they name."""
    (tmp_path / "user_parts.py").write_text(BACKBONE + '''

from ilif.neurons import LIF


class Damped(LIF):
    """LIF with a key of its own that its constructor checks."""

    def __init__(self, tau=2.0, v_threshold=1.0, rho=0.5, surrogate=None, step_mode="s"):
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho={rho!r} is not allowed: a number in [0, 1)")
        super().__init__(tau=tau, v_threshold=v_threshold, surrogate=surrogate, step_mode=step_mode)


def noisy(name, noise=0.5):
    import dataclasses

    from data_fixtures import tiny_dataset

    train, test, info = tiny_dataset(name)
    return train, test, dataclasses.replace(info, split=f"noise={noise}")
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    for group, text in (("model/user_mlp", "_target_: user_parts.two_layer\nhidden: 16\n"),
                        ("neuron/user_lif", "_target_: ilif.neurons.LIF\ntau: 2.0\n"),
                        ("neuron/user_damped", "_target_: user_parts.Damped\nrho: 0.5\n"),
                        ("dataset/user_noisy", "_target_: user_parts.noisy\nnoise: 0.5\n")):
        (tmp_path / "mine" / group).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mine" / f"{group}.yaml").write_text(text)
    use_config_dirs([tmp_path / "mine"])
    return tmp_path / "mine"


def test_a_component_is_named_by_its_file_and_its_keys_reach_it(mine):
    cfg = compose_config(["model=user_mlp", "neuron=user_lif", "model.hidden=8"])
    validate(cfg)
    assert (cfg.model.name, cfg.neuron.name, cfg.dataset.name) == ("user_mlp", "user_lif", "digits")
    _, _, _, info = build_datasets(cfg)
    assert build_model(cfg, info).fc1.out_features == 8
    assert run_leaf(cfg).startswith("digits-user_lif-g1-s0-")
    assert identity(cfg)["model"] == {"name": "user_mlp", "_target_": "user_parts.two_layer", "hidden": 8,
                                      "dropout": 0.0, "bn_per_step": False}
    assert run_leaf(compose_config(["model=user_mlp", "neuron=user_lif"])) != run_leaf(cfg)  # hidden is in its hash
    assert identity(compose_config([]))["model"] == {"name": "convnet_small", "dropout": 0.0, "bn_per_step": False}


def test_a_dataset_function_gets_its_own_keys(mine):
    cfg = compose_config(["dataset=user_noisy", "dataset.noise=0.25"])
    validate(cfg)
    assert build_datasets(cfg)[3].split == "noise=0.25"
    assert identity(cfg)["dataset"]["noise"] == 0.25 and "noise" not in identity(compose_config([]))["dataset"]


def test_a_parameter_of_a_shipped_dataset_function_is_a_key_of_its_dataset():
    """digits(split_seed, test_fraction): test_fraction, not in DatasetConfig, is digits' own key."""
    cfg = compose_config(["+dataset.test_fraction=0.5"])
    validate(cfg)
    train, _, test, info = build_datasets(cfg)
    assert (len(train), len(test), info.train_size) == (898, 899, 898)
    assert identity(cfg)["dataset"]["test_fraction"] == 0.5 and run_leaf(cfg) != run_leaf(compose_config([]))


def test_the_trainer_runs_a_users_backbone_and_neuron_from_their_folder(mine, tmp_path, cli):
    from ilif.train.app import main as train_main

    proc = cli(train_main, "--config-dir", str(mine), "model=user_mlp", "neuron=user_lif", "trainer.epochs=1",
               "trainer.progress=false", "trainer.limit_train_batches=2", "trainer.limit_eval_batches=1")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs" / "default").iterdir()
    assert run_dir.name.startswith("digits-user_lif-g1-s0-")
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert (saved.model.name, saved.model.hidden, saved.neuron.name) == ("user_mlp", 16, "user_lif")
    assert run_dir.name == run_leaf(saved)  # the directory's hash is the hash of the config it holds
    assert json.loads((run_dir / "summary.json").read_text())["neuron"] == "user_lif"


def test_the_keys_every_component_has_keep_their_types_and_the_hash():
    """The open groups' common keys convert as structured keys do (the run hash sees 0.0 for 0)."""
    from omegaconf.errors import ValidationError

    typed = compose_config(["model.bn_per_step=1", "dataset.root=5", "model.dropout=0", "dataset.val_fraction=0"])
    assert (typed.model.bn_per_step, typed.dataset.root, typed.model.dropout) == (True, "5", 0.0)
    assert run_leaf(compose_config(["model.dropout=0", "dataset.val_fraction=0"])) == run_leaf(compose_config([]))
    job = compose_config([]).copy()
    OmegaConf.update(job, "model.dropout", 0, merge=False)  # as a sweep sets a value on a copy
    assert job.model.dropout == 0.0 and isinstance(job.model.dropout, float)
    with pytest.raises(ValidationError):
        OmegaConf.update(job, "dataset.augment", "sideways", merge=False)


EVERY_DATASET = ("_target_, augment, download, name, preprocess, root, split, split_seed, stand_in, "
                 "stand_in_samples, stand_in_size, val_fraction")


@pytest.mark.parametrize("overrides, message", [
    (["+model.hidden=3"], "model.hidden=3 is not allowed: convnet_small takes ['dropout', 'bn_per_step']"),
    (["model=user_mlp", "model.dropout=0.1"], "model.dropout=0.1 is not allowed: two_layer takes ['hidden']"),
    (["~model.bn_per_step"], "model.bn_per_step=None is not allowed: every model has it (it was removed)"),
    (["+dataset.noise=1"], "dataset.noise=1 is not allowed: dataset digits takes ['test_fraction'] besides the keys "
                           f"every dataset has ({EVERY_DATASET})"),
    (["dataset=user_noisy", "+dataset.nosie=1"], "dataset.nosie=1 is not allowed: did you mean noise? dataset "
                                                 "user_noisy takes ['noise'] "
                                                 f"besides the keys every dataset has ({EVERY_DATASET})"),
    (["dataset=user_noisy", "dataset.stand_in=true"], "dataset.stand_in=True is not allowed: user_parts.noisy makes "
                                                      "no stand-in data (it takes no stand_in)"),
    (["+dataset.T=4"], "dataset.T=4 is not allowed: not a dataset key (trainer.T gives it)"),
    (["model.name=vgg16"], f"model.name='vgg16' is not allowed: choose one of {model_names()}, or give "
                           "model._target_ (a backbone function outside the package)"),
    (["neuron=user_damped", "neuron.rho=2"], "neuron.rho=2 is not allowed: a number in [0, 1)"),  # its own check
    (["neuron=user_damped", "+neuron.rhoo=0.1"], "neuron.rhoo=0.1 is not allowed: did you mean rho? Damped takes "
                                                 "['tau', 'v_threshold', 'rho']"),
    (["model=user_mlp", "model._target_=user_parts.nothing"],
     "model._target_='user_parts.nothing' is not allowed: it must name an importable function (AttributeError: "
     "module 'user_parts' has no attribute 'nothing')"),
])
def test_a_key_a_component_does_not_take_is_one_line(mine, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert str(err.value) == message


def test_every_error_lives_in_one_module_with_its_exit_code(tmp_path):
    import ast
    import signal
    from pathlib import Path

    import ilif
    from ilif import errors

    defined = [(path.name, node.name) for path in Path(ilif.__file__).parent.rglob("*.py") if path.name != "errors.py"
               for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
               and any(getattr(base, "id", "").endswith(("Error", "Exception", "Interrupt")) for base in node.bases)]
    assert defined == []
    codes = {cls.__name__: cls.exit_code for cls in (errors.ConfigError, errors.DatasetError, errors.RunBusy,
                                                     errors.RunConflict, errors.TrainingDiverged)}
    assert codes == {"ConfigError": 2, "DatasetError": 2, "RunBusy": 2, "RunConflict": 2, "TrainingDiverged": 3}
    stopped = errors.Interrupted("at epoch 1, step 0", signal.SIGTERM)
    assert (errors.exit_code(stopped), errors.exit_code(errors.Interrupted("", signal.SIGINT))) == (75, 130)
    assert errors.describe(stopped, tmp_path) == ("interrupted by SIGTERM at epoch 1, step 0, before its first "
                                                  "checkpoint: run the same command again to start it")
    (tmp_path / "last.pt").touch()
    assert errors.describe(stopped, tmp_path) == (f"interrupted by SIGTERM at epoch 1, step 0; {tmp_path / 'last.pt'} "
                                                  "resumes it at the last finished epoch: run the same command again")
    assert [errors.exit_code(e) for e in (OSError(28, "No space left on device"), KeyboardInterrupt(), KeyError("x"))] \
        == [2, 130, 1]
    assert errors.describe(KeyError("x")) == "KeyError: 'x' (ILIF_DEBUG=1 shows the traceback)"
    with pytest.raises(errors.ConfigError) as err:
        with errors.bad_input():
            compose_config(["trainer.epochs=abc"])
    assert str(err.value) == ("Error merging override trainer.epochs=abc: Value 'abc' of type 'str' could not be "
                              "converted to Integer")


def test_an_experiment_declares_the_neurons_its_tables_compare():
    from ilif.grid import table_jobs
    from ilif.report import tables
    from ilif.report.runs import compared, load_runs

    swapped = table_jobs([1], "smoke", ["compare.baseline=ilif", "compare.subject=lif"])
    assert [d for _, _, d in swapped] == [d for _, _, d in table_jobs([1], "smoke")]  # not in any run's hash
    records = load_runs(swapped)
    assert tables.table1(records, "smoke").header[-2:] == ["Δ top-1 vs ILIF (points)", "firing-rate reduction vs ILIF"]
    assert tables.table4(records, "smoke").header[4:6] == ["ILIF input rate", "LIF input rate"]
    assert tables.table5(load_runs(table_jobs([5], "smoke", ["compare.subject=lif"])), "smoke").header[-2:] == [
        "LIF − this: top-1 (points)", "LIF − this: firing rate"]
    with pytest.raises(ValueError) as err:
        compared(records + load_runs(table_jobs([1], "smoke")))
    assert str(err.value) == ("compare=[('ilif', 'lif'), ('lif', 'ilif')] is not allowed: one table compares one "
                              "baseline with one subject (its experiments must declare the same)")


def test_the_run_record_has_one_schema_that_writer_and_readers_share(train_run):
    import re
    from pathlib import Path

    import ilif
    from ilif.rundir import METRICS, SUMMARY_SCHEMA, finished_summary

    run_dir, summary = train_run("trainer.epochs=1", "trainer.progress=false", "trainer.limit_train_batches=2",
                                 "trainer.limit_eval_batches=1", "trainer.grad_diagnostics=true",
                                 "dataset.val_fraction=0.2", "remedy=learnable_gamma")
    assert summary.schema == SUMMARY_SCHEMA and set(summary.final) <= set(METRICS)
    assert finished_summary(run_dir) == summary
    package = Path(ilif.__file__).parent
    readers = [*package.glob("report/*.py"), package / "wandb_mirror.py", package / "study.py"]
    read = {key for path in readers
            for key in re.findall(r'"((?:train|val|test|grad|remedy)/[a-z0-9_]+)"', path.read_text())}
    assert read and read <= set(METRICS)
    older = {key: value for key, value in summary.to_json().items() if key not in ("schema", "neuron_state_ops")}
    (run_dir / "summary.json").write_text(json.dumps({**older, "written_by_a_later_version": 1}))
    again = finished_summary(run_dir)
    assert (again.schema, again.neuron_state_ops, again.final) == (1, [], summary.final)


def test_a_neuron_written_as_one_step_gets_the_rest_from_its_base():
    """An adaptive-threshold LIF in a dozen lines: multi-step and single-step runs agree, the meters
    count its spikes and its support occupancy (h_seq), a reset clears its state, and autograd reaches
    the input through its surrogate."""
    import torch
    from spikingjelly.activation_based import functional

    from ilif.metrics import SpikeMeter
    from ilif.neurons import LIFParams, StepNeuron, Surrogate

    class AdaptiveLIF(StepNeuron):
        memory_names = ("v", "a")

        def __init__(self, tau=2.0, v_threshold=1.0, beta=0.2, surrogate=None, step_mode="s", store_membrane=False):
            super().__init__(step_mode, store_membrane)
            self.params = LIFParams(tau=tau, v_threshold=v_threshold, surrogate=surrogate or Surrogate()).validated()
            self.beta = beta

        def step(self, x, state):
            p = self.params
            h = p.decay * state["v"] + x
            s = p.surrogate(h - p.v_threshold - state["a"])
            return s, h, {"v": h - s * p.v_threshold, "a": 0.9 * state["a"] + self.beta * s}

        def state_ops(self):
            return 3, 4

    torch.manual_seed(0)
    x = (torch.randn(6, 4, 10) + 0.9).requires_grad_()
    multi = AdaptiveLIF(surrogate=Surrogate("sigmoid"), step_mode="m")
    meter = SpikeMeter(torch.nn.Sequential(multi))
    spikes = multi(x)
    single = AdaptiveLIF(surrogate=Surrogate("sigmoid"))
    assert torch.equal(torch.stack([single(x_t) for x_t in x.detach()]), spikes.detach())
    summary = meter.summary()
    assert summary["firing_rate"] == spikes.sum().item() / x.numel() and summary["occupancy"] is not None
    spikes.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    functional.reset_net(multi)
    assert isinstance(multi.v, float) and torch.equal(multi(x.detach()), spikes.detach())


def test_the_fused_ops_take_the_constants_and_the_kernel_flags_by_their_field_names_and_one_family_enum():
    import inspect

    from ilif.neurons import FAMILIES, Surrogate
    from ilif.neurons._contract import KernelFlags
    from ilif.neurons._cpu_kernel import _source
    from ilif.neurons._ops import neuron_backward, neuron_forward
    from ilif.neurons.surrogate import Family

    for op, first in ((neuron_forward, "gamma"), (neuron_backward, "initial")):
        names = list(inspect.signature(op._init_fn).parameters)
        assert names[names.index(first) + 1:] == ["constants", *KernelFlags._fields, "recompute", "count", "backend"]
    assert FAMILIES == ("rectangle", "triangle", "sigmoid", "atan")
    assert [Surrogate(name).family_id for name in FAMILIES] == list(Family)
    assert all(f"#define FAMILY_{member.name} {int(member)}\n" in _source() for member in Family)


def test_a_backbone_gets_input_size_and_the_keys_it_names_or_takes_with_kwargs(mine, tmp_path):
    import torch

    from ilif.models import create_model
    from ilif.neurons import LIF
    from ilif.train.build import model_arguments

    resnet = create_model("preact_resnet18", lambda: LIF(step_mode="m"), num_classes=10, in_channels=3, T=2,
                          input_size=32)  # as scripts/bench_train.py asks; this backbone does not need the size
    assert resnet(torch.zeros(1, 3, 32, 32)).shape == (2, 1, 10)
    cfg = compose_config(["model=user_mlp", "+model.width=3"])

    def open_backbone(neuron, num_classes, in_channels, T, *layers, hidden=8, **options):
        return None

    def positional_only(neuron, num_classes, in_channels, T, *layers):
        return None

    assert model_arguments(cfg, open_backbone) == {"hidden": 16, "width": 3}
    with pytest.raises(ValueError) as err:
        model_arguments(compose_config(["model=user_mlp", "~model.hidden", "+model.layers=2"]), positional_only)
    assert str(err.value) == "model.layers=2 is not allowed: positional_only takes []"


def test_an_old_or_odd_summary_reads_with_empty_tables():
    from ilif.rundir import RunSummary

    from ilif.records import Invalid
    from ilif.rundir import check_summary

    old = {"status": "finished", "final": {"epoch": 0, "test/acc1": 0.5}, "provenance": None, "config": None,
           "layers": None, "best": None}
    odd = RunSummary.from_json(check_summary(old, ""))
    assert (odd.provenance, odd.config, odd.layers, odd.best, odd.schema) == ({}, {}, [], None, 1)
    assert odd.best_metrics == {"epoch": 0, "test/acc1": 0.5}
    with pytest.raises(Invalid, match="layers: {'not': 'a list'} is not a list"):  # a table of another type: refused
        check_summary({**old, "layers": {"not": "a list"}}, "")


PARTS = '''
import torch

from ilif.checks import positive
from ilif.train.remedies import Remedy

CALLS = []


def lion_like(params, lr, weight_decay, betas=(0.9, 0.99)):
    CALLS.append(("optim", lr, tuple(betas)))
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def constant(optimizer, factor):
    CALLS.append(("schedule", factor))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=factor, total_iters=1)


def last_step_ce(logits, target, smoothing):
    CALLS.append(("loss", smoothing))
    return torch.nn.functional.cross_entropy(logits[-1], target, label_smoothing=smoothing)


class Noisy(Remedy):
    """Adds weight times the number of layers to the loss."""

    def __init__(self, weight):
        positive()("remedy.weight", weight)
        self.weight = weight
        CALLS.append(("remedy", weight))

    def penalty(self):
        return torch.tensor(self.weight * len(self.layers))
'''


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """A user's optimiser, schedule, loss and remedy (one file each in their folder, named by _target_;
    their names are the user's, so a shipped option of the same name cannot shadow them)."""
    (tmp_path / "user_train_parts.py").write_text(PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for group, text in (("optim/user_lion", "_target_: user_train_parts.lion_like\nlr: 0.002\nbetas: [0.8, 0.9]\n"),
                        ("schedule/user_flat", "_target_: user_train_parts.constant\nfactor: 0.5\n"),
                        ("loss/user_last", "_target_: user_train_parts.last_step_ce\nsmoothing: 0.1\n"),
                        ("remedy/user_noisy", "name: user_noisy\n_target_: user_train_parts.Noisy\nweight: 0.25\n")):
        (tmp_path / "parts" / group).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "parts" / f"{group}.yaml").write_text(text)
    return tmp_path / "parts"


def test_a_users_optimiser_schedule_loss_and_remedy_are_one_file_each(parts, tmp_path, cli):
    import user_train_parts

    from ilif.train.app import main as train_main

    proc = cli(train_main, "--config-dir", str(parts), "optim=user_lion", "schedule=user_flat", "loss=user_last",
               "remedy=user_noisy", "trainer.epochs=1", "trainer.progress=false", "trainer.limit_train_batches=2",
               "trainer.limit_eval_batches=1")
    assert proc.returncode == 0, proc.stderr
    assert {call for call in user_train_parts.CALLS} >= {("optim", 0.002, (0.8, 0.9)), ("schedule", 0.5),
                                                         ("loss", 0.1), ("remedy", 0.25)}
    (run_dir,) = (tmp_path / "runs" / "default").iterdir()
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert (saved.optim.name, saved.schedule.name, saved.loss.name) == ("user_lion", "user_flat", "user_last")
    assert run_dir.name == run_leaf(saved)


@pytest.mark.parametrize("overrides, message", [
    (["optim=user_lion", "+optim.beta=1"],
     "optim.beta=1 is not allowed: did you mean betas? lion_like takes ['lr', 'weight_decay', 'betas']"),
    (["optim=user_lion", "optim.momentum=0.5"],
     "optim.momentum=0.5 is not allowed: lion_like takes ['lr', 'weight_decay', 'betas']"),
    (["schedule=user_flat", "~schedule.factor"], "schedule.factor=None is not allowed: constant needs it"),
    (["remedy=user_noisy", "remedy.weight=-1"], "remedy.weight=-1 is not allowed: a finite number > 0"),
    (["loss=user_last", "loss._target_=user_train_parts.nothing"],
     "loss._target_='user_train_parts.nothing' is not allowed: it must name an importable function "
     "(AttributeError: module 'user_train_parts' has no attribute 'nothing')"),
])
def test_a_users_part_is_checked_against_its_signature(parts, overrides, message):
    use_config_dirs([parts])
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert str(err.value) == message


def test_every_metric_name_in_the_package_is_one_the_run_record_declares():
    """A metric key written as a string anywhere in the package (the trainer, the report, the wandb
    mirror) is a key of ilif.rundir.METRICS, so a renamed or misspelt metric fails here."""
    import ast
    import re
    from pathlib import Path

    import ilif
    from ilif.rundir import METRICS

    pattern = re.compile(r"^(train|val|test|grad|remedy)/[a-z0-9_]+$")
    found = {}
    for path in Path(ilif.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                found.setdefault(node.value, path.name)
    assert found and {name: where for name, where in found.items() if name not in METRICS} == {}
