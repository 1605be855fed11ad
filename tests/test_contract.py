"""One contract for every option of every config group, driven by the config folders themselves: an
option is tested the moment its file exists, and no test here lists options by hand. Each option is
composed and validated, then instantiated and used the way the trainer uses it."""

import dataclasses
import inspect

import pytest
import torch
from spikingjelly.activation_based import functional

from ilif.conf import compose_config, group_options
from ilif.checks import DATASET_COMMON as COMMON, DATASET_GIVEN as GIVEN
from ilif.data import dataset_function
from ilif.grid import plan
from ilif.metrics import SpikeMeter
from ilif.neurons import SpikingNeuron
from ilif.train.build import (build_datasets, build_model, build_optimizer, build_scheduler, neuron_factory,
                              surrogate_of)
from ilif.train.config import validate
from ilif.train.losses import loss_function
from ilif.train.remedies import build_remedy


def _composed(*overrides):
    cfg = compose_config(list(overrides))
    validate(cfg)
    return cfg


@pytest.mark.parametrize("option", group_options("neuron"))
def test_every_neuron_runs_multi_step_resets_and_is_metered(option):
    """Spikes of 0 and 1 in the input's shape, a finite non-zero input gradient, counts the spike
    meter agrees with, and after a reset the same spikes again (the state was cleared)."""
    cfg = _composed(f"neuron={option}", "surrogate=sigmoid")
    layer = neuron_factory(cfg)()
    assert isinstance(layer, SpikingNeuron) and layer.step_mode == "m"
    model = torch.nn.Sequential(layer)
    meter = SpikeMeter(model)
    torch.manual_seed(0)
    x = (torch.randn(5, 3, 12) * 1.5 + 0.8).requires_grad_()
    spikes = model(x)
    assert spikes.shape == x.shape and set(spikes.unique().tolist()) <= {0.0, 1.0} and spikes.sum() > 0
    (spikes * torch.linspace(-1, 1, spikes.numel()).view(spikes.shape)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    (counts,) = meter.counts.values()
    assert counts["spikes"].item() == spikes.sum().item() and counts["neuron_steps"].item() == x.numel()
    functional.reset_net(model)
    assert torch.equal(model(x.detach()), spikes.detach())
    mul, add = layer.state_ops()
    assert isinstance(mul, int) and isinstance(add, int) and mul + add > 0


@pytest.mark.parametrize("option", group_options("model"))
def test_every_model_maps_its_input_to_logits_per_time_step(option):
    """[B, C, H, W] -> [T, B, classes] on 3 × 32 × 32 images, with a gradient reaching the first weight."""
    cfg = _composed(f"model={option}", "trainer.T=2")
    _, _, _, info = build_datasets(cfg)
    info = dataclasses.replace(info, in_channels=3, input_size=32)
    model = build_model(cfg, info)
    torch.manual_seed(0)
    x = torch.randn(2, info.in_channels, info.input_size, info.input_size)
    logits = model(x)
    assert logits.shape == (2, 2, info.num_classes)
    loss_function(cfg.loss)(logits, torch.tensor([0, 1])).backward()
    first = next(p for p in model.parameters() if p.dim() > 1)
    assert first.grad is not None and torch.isfinite(first.grad).all()
    functional.reset_net(model)


@pytest.mark.parametrize("option", group_options("model"))
@pytest.mark.parametrize("neuron", group_options("neuron"))
def test_every_memory_mode_gives_every_model_and_neuron_the_same_gradients(option, neuron):
    """trainer.memory=lean against standard, float32 on the CPU: the same logits and every weight's
    gradient bit for bit (the neurons that cannot recompute keep standard, and say which)."""
    from ilif.train.build import set_memory

    cfg = _composed(f"model={option}", f"neuron={neuron}", "trainer.T=2")
    _, _, _, info = build_datasets(cfg)
    info = dataclasses.replace(info, in_channels=3, input_size=32)
    torch.manual_seed(0)
    model = build_model(cfg, info)
    x, y = torch.randn(2, info.in_channels, 32, 32), torch.tensor([0, 1])
    results = {}
    for mode in ("standard", "lean"):
        standard = set_memory(model, mode)
        model.zero_grad()
        logits = model(x)
        loss_function(cfg.loss)(logits, y).backward()
        results[mode] = (logits, [p.grad.clone() for p in model.parameters() if p.grad is not None])
        functional.reset_net(model)
    assert standard == ([] if neuron.startswith(("lif", "ilif")) else [type(neuron_factory(cfg)()).__name__])
    assert torch.equal(results["standard"][0], results["lean"][0])
    assert all(torch.equal(a, b) for a, b in zip(results["standard"][1], results["lean"][1]))


@pytest.mark.parametrize("option", group_options("dataset"))
def test_every_dataset_builds_samples_of_the_shape_its_info_gives(option):
    """On its stand-in data (the real files of most are not on this machine; their loaders are tested
    on fixtures in their on-disk formats): [T, C, H, W] frames for event (and row-by-row) data, else
    [C, H, W] images, with the channels, size and classes its info declares."""
    cfg = _composed(f"dataset={option}", "dataset.stand_in=true", "trainer.T=2")
    train_set, _, test_set, info = build_datasets(cfg)
    for data in (train_set, test_set):
        x, y = data[0]
        assert x.shape == (2,) * info.events + (info.in_channels, info.input_size, info.input_size)
        assert 0 <= int(y) < info.num_classes
    parameters = inspect.signature(dataset_function(cfg.dataset)).parameters.values()
    own = {p.name: p.default for p in parameters if p.name not in (*COMMON, *GIVEN)}
    assert all(type(default) in (bool, int, float, str) for default in own.values()), own  # each a YAML value


@pytest.mark.parametrize("option", group_options("surrogate"))
def test_every_surrogate_is_a_step_with_its_bump_as_gradient(option):
    cfg = _composed(f"surrogate={option}")
    surrogate = surrogate_of(cfg)
    z = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    spikes = surrogate(z)
    spikes.sum().backward()
    assert spikes.tolist() == [0.0, 1.0, 1.0] and z.grad[1].item() == pytest.approx(surrogate.height)


@pytest.mark.parametrize("option", group_options("loss"))
def test_every_loss_is_finite_with_a_gradient(option):
    cfg = _composed(f"loss={option}")
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 10, requires_grad=True)
    loss = loss_function(cfg.loss)(logits, torch.tensor([0, 3, 9, 2]))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and logits.grad.abs().sum() > 0


def _tiny_network(cfg):
    """A linear layer, a neuron of ``cfg`` and a linear read-out: [T, B, 4] -> [T, B, 3]."""
    return torch.nn.Sequential(torch.nn.Linear(4, 6), neuron_factory(cfg)(), torch.nn.Linear(6, 3))


@pytest.mark.parametrize("option", group_options("optim"))
def test_every_optimiser_and_schedule_moves_the_weights_and_keeps_the_learning_rate_in_bounds(option):
    for schedule in group_options("schedule"):
        cfg = _composed(f"optim={option}", f"schedule={schedule}", "trainer.epochs=3")
        net = _tiny_network(cfg)
        optimizer = build_optimizer(cfg, net)
        scheduler = build_scheduler(cfg, optimizer)
        before = [p.detach().clone() for p in net.parameters()]
        net(torch.randn(2, 5, 4)).square().mean().backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        functional.reset_net(net)
        assert lr == cfg.optim.lr and 0 <= optimizer.param_groups[0]["lr"] <= lr
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("option", group_options("remedy"))
def test_every_remedy_attaches_to_the_neuron_layers_and_adds_a_finite_term_or_none(option):
    cfg = _composed(f"remedy={option}", "trainer.epochs=2")
    net = _tiny_network(cfg)
    remedy = build_remedy(cfg, net, [(torch.randn(5, 4), 0)] * 4)
    remedy.start_epoch(0, 2)
    net(torch.randn(2, 5, 4)).sum().backward()
    penalty = remedy.penalty()
    remedy.after_step(1.0, False)
    functional.reset_net(net)
    assert list(remedy.layers) == ["1"] and (penalty is None or bool(torch.isfinite(penalty)))
    assert len(remedy.record()["remedy/gamma"]) == 1


@pytest.mark.parametrize("option", group_options("experiment"))
def test_every_experiment_plans_a_grid_of_valid_distinct_runs(option):
    jobs = plan([option], ["scale=smoke"] if "scale" in compose_config([f"experiment={option}"]) else [])
    assert jobs and len({run_dir for _, _, run_dir in jobs}) == len(jobs)
    for _, cfg, _ in jobs[:4]:
        validate(cfg)
