"""The γ-dilemma remedies: the regulariser's gradient by hand, a learnable γ's gradient against finite
differences and in every fused backend, the schedule's γ at each epoch, the adaptive rule reaching its
target occupancy, their config checks, and a run that logs its γ."""

import json
import math

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from devices import FUSED
from ilif.conf import compose_config, config_hash
from ilif.metrics import SpikeMeter
from ilif.neurons import CLIF, FAMILIES, ILIF, LIF, NORMALIZATIONS, PLIF, NeuronParams, Surrogate, multistep
from ilif.neurons.functional import multistep_with_count
from ilif.errors import ConfigError
from ilif.train.config import validate
from ilif.train.remedies import (REMEDIES, AdaptiveGamma, AnnealedGamma, LearnableGamma, RateRegularisation,
                                 annealed_gamma, fitted_gamma)



@pytest.mark.parametrize("form", ["l2", "l1"])
def test_the_rate_regulariser_gradient_by_hand(form):
    surrogate = Surrogate("rectangle", gamma=1.0, normalize="area")
    model = nn.Sequential(LIF(surrogate=surrogate, step_mode="m"))
    remedy = RateRegularisation(target=0.2, weight=3.0, form=form).attach(model, None)
    x = torch.tensor([[0.2, 0.7, 1.1, 1.4, 0.95, 2.0]], dtype=torch.float64, requires_grad=True)  # T = 1, B = 1
    model.train()
    spikes = model(x)
    penalty = remedy.penalty()
    rate = spikes.mean().item()
    assert rate == 3 / 6
    assert penalty.item() == pytest.approx(3.0 * (rate - 0.2) ** 2 if form == "l2" else 3.0 * rate)
    penalty.backward()
    g = ((x.detach() - 1.0).abs() <= 0.5).double()  # the rectangle's derivative, height 1/γ = 1
    factor = 2 * 3.0 * (rate - 0.2) if form == "l2" else 3.0
    assert torch.allclose(x.grad, factor * g / 6, atol=1e-15)
    assert remedy.penalty() is None  # each step's rates are used once
    model.eval()
    model(x)
    assert remedy.penalty() is None  # evaluation adds nothing


@pytest.mark.parametrize("backend", FUSED)
def test_every_fused_backend_counts_spikes_and_passes_the_count_its_gradient(backend):
    """The op's spike count equals the spikes' sum, and its gradient (added to every spike's inside the
    backward pass) gives the gradient autograd gives through the sum, in float64."""
    torch.manual_seed(2)
    x0 = torch.randn(5, 2, 30, dtype=torch.float64) * 1.2 + 0.6
    params = NeuronParams(tau=1.7, surrogate=Surrogate("sigmoid", 1.3), current_inhibition=True,
                          membrane_inhibition=True, kappa_current=0.3, kappa_membrane=0.8).validated()
    results = []
    for which in (backend, "reference"):
        x = x0.clone().requires_grad_()
        spikes, final, _, count = multistep_with_count(x, None, params, backend=which)
        weights = torch.linspace(-1, 1, spikes.numel(), dtype=torch.float64).view(spikes.shape)
        objective = (spikes * weights).sum() + 0.7 * count + final.v.sum()
        results.append((count.item(), spikes.sum().item(), torch.autograd.grad(objective, x)[0]))
    (count, total, grad), (ref_count, _, ref_grad) = results
    assert count == total == ref_count > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


def _unit_jump_step(family: str, z: torch.Tensor, gamma: float) -> torch.Tensor:
    """F₁(z; γ): the smooth step from 0 to 1 whose derivative is the unit-area bump of width γ, written
    from each family's definition (not from the package)."""
    u = z / gamma
    if family == "rectangle":
        return (u + 0.5).clamp(0.0, 1.0)
    if family == "triangle":
        rising, falling = 2 * (u + 0.5) ** 2, 1 - 2 * (0.5 - u) ** 2
        return torch.where(u < -0.5, 0.0, torch.where(u <= 0, rising, torch.where(u <= 0.5, falling, 1.0)))
    if family == "sigmoid":
        return torch.sigmoid(2 * math.log(3 + 2 * math.sqrt(2)) * u)
    return 0.5 + torch.atan(2 * u) / math.pi  # (π/2)·α·z with α = 4/(πγ)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_a_learnable_gamma_gets_the_finite_difference_gradient(family, normalize):
    """One step (T = 1) of LIF from rest through the fused op: dL/dγ of L = Σ w·S equals the central
    difference of Σ w·c·F₁(x − V_th; γ), c the bump's area (1 at unit area), in float64."""
    torch.manual_seed(3)
    gamma0 = 1.3
    x = torch.rand(1, 400, dtype=torch.float64) * 3.0 - 0.5
    z = x[0] - 1.0
    x = x[:, (z.abs() - gamma0 / 2).abs() > 1e-3]  # no potential on the rectangle's or triangle's edges
    w = torch.randn(x.shape[1], dtype=torch.float64)
    gamma = torch.tensor(gamma0, dtype=torch.float64, requires_grad=True)
    sg = Surrogate(family, gamma0, normalize, parameter=gamma)
    spikes, _, _ = multistep(x, None, NeuronParams(surrogate=sg))
    (spikes[0] * w).sum().backward()
    area = 1.0 / Surrogate(family, gamma0, "area").height if normalize == "peak" else 1.0
    eps = 1e-6
    smooth = [(w * _unit_jump_step(family, x[0] - 1.0, gamma0 + d)).sum().item() for d in (eps, -eps)]
    assert gamma.grad.item() == pytest.approx(area * (smooth[0] - smooth[1]) / (2 * eps), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_every_fused_backend_gives_a_learnable_gamma_the_oracle_gradient(backend, family, normalize):
    """ILIF with both units, T = 6, through reset and inhibition: the kernels' dL/dγ (from Σ g_z·z)
    equals autograd through the op-by-op step, in float64."""
    torch.manual_seed(1)
    x0 = torch.randn(6, 3, 40, dtype=torch.float64) * 1.2 + 0.6
    grads = []
    for which in (backend, "reference"):
        gamma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
        params = NeuronParams(tau=1.7, surrogate=Surrogate(family, 1.3, normalize, parameter=gamma),
                              current_inhibition=True, membrane_inhibition=True, kappa_current=0.3,
                              kappa_membrane=0.8).validated()
        x = x0.clone().requires_grad_()
        spikes, final, _ = multistep(x, None, params, backend=which)
        weights = torch.linspace(-1, 1, spikes.numel(), dtype=torch.float64).view(spikes.shape)
        objective = (spikes * weights).sum() + final.v.sum() + 0.5 * final.i.sum()
        grads.append(torch.autograd.grad(objective, (gamma, x)))
    (g_gamma, g_x), (ref_gamma, ref_x) = grads
    assert g_gamma.item() != 0.0
    assert g_gamma.item() == pytest.approx(ref_gamma.item(), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(g_x, ref_x, rtol=1e-10, atol=1e-10)


def _learnable(model, init=1.0, lr=0.01, low=0.05, high=16.0):
    return LearnableGamma(init=init, lr=lr, min=low, max=high).attach(model, None)


@pytest.mark.parametrize("neuron", [LIF, ILIF, CLIF, PLIF])
def test_each_neuron_layer_trains_its_own_gamma_within_bounds(neuron):
    """Adam's first step moves each γ by lr·g/(|g| + 1e-8) against its gradient g; a γ at a bound stays."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), neuron(surrogate=Surrogate("sigmoid"), step_mode="m"), nn.Linear(16, 4),
                          neuron(surrogate=Surrogate("sigmoid"), step_mode="m"))
    remedy = _learnable(model, init=1.0, lr=0.01)
    (model(torch.randn(4, 5, 8) * 2 + 0.5) * torch.randn(4, 5, 4)).sum().backward()
    grads = dict(zip(remedy.layers, remedy.gammas.grad.tolist()))
    assert all(g != 0.0 for g in grads.values())
    remedy.after_step(1.0, skipped=False)
    for name, value in remedy.record()["remedy/gamma"].items():
        g = grads[name]
        assert value == pytest.approx(1.0 - 0.01 * g / (abs(g) + 1e-8), rel=1e-14)
        assert model.get_submodule(name).surrogate.parameter._base is remedy.gammas
    assert remedy.gammas.grad is None
    for init, push in ((0.05, 1e3), (16.0, -1e3)):  # a gradient pushing γ past its bound leaves it there
        edge = _learnable(model, init=init, lr=1.0)
        edge.gammas.grad = torch.full_like(edge.gammas, push)
        edge.after_step(1.0, skipped=False)
        assert set(edge.record()["remedy/gamma"].values()) == {init}


def test_a_learnable_gamma_is_unscaled_and_skips_an_overflowing_step():
    """A float16 gradient scaler at 2^16: γ's gradient is unscaled; an infinite one, or a step the
    scaler skipped for the model, moves no γ."""
    remedy = _learnable(nn.Sequential(LIF(step_mode="m")), lr=0.1)
    remedy.gammas.grad = torch.tensor([float("inf")], dtype=torch.float64)
    remedy.after_step(2.0 ** 16, skipped=False)
    remedy.gammas.grad = torch.tensor([1.0], dtype=torch.float64)
    remedy.after_step(2.0 ** 16, skipped=True)
    assert remedy.record()["remedy/gamma"] == {"0": 1.0} and not remedy.optimizer.state
    remedy.gammas.grad = torch.tensor([2.0 ** 16 * 1e-3], dtype=torch.float64)  # unscaled: 1e-3
    remedy.after_step(2.0 ** 16, skipped=False)
    assert remedy.optimizer.state[remedy.gammas]["exp_avg"].item() == pytest.approx(0.1 * 1e-3, rel=1e-12)


def test_a_learnable_gamma_gradient_does_not_overflow_in_float16():
    """CLIF and PLIF compute in the input's dtype: their γ gradient is summed in float64 all the same."""
    gamma = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    z = torch.full((200_000,), 0.25, dtype=torch.float16, requires_grad=True)
    Surrogate("sigmoid", 1.0, parameter=gamma)(z).backward(torch.full_like(z, 2000.0))
    sg = Surrogate("sigmoid", 1.0)
    expected = -(2000.0 * sg.grad(torch.tensor(0.25, dtype=torch.float64)).item() * 0.25) * 200_000
    assert gamma.grad.item() == pytest.approx(expected, rel=1e-3)


def test_a_copy_of_a_model_keeps_the_learnt_gamma_as_a_constant():
    import copy

    model = nn.Sequential(LIF(step_mode="m"))
    remedy = _learnable(model, init=0.7)
    twin = copy.deepcopy(model)
    assert twin[0].surrogate == model[0].surrogate and twin[0].surrogate.parameter is None
    assert model[0].surrogate.parameter is not None and remedy.record()["remedy/gamma"] == {"0": 0.7}


def test_the_rate_regulariser_acts_the_same_under_torch_compile():
    """The hooks and the op's spike count traced by torch.compile: the same penalty and the same gradient."""
    torch.manual_seed(0)
    sigmoid = Surrogate("sigmoid")
    model = nn.Sequential(nn.Linear(8, 16), ILIF(surrogate=sigmoid, step_mode="m"), nn.Linear(16, 4),
                          ILIF(surrogate=sigmoid, step_mode="m"))
    remedy = RateRegularisation(target=0.1, weight=3.0, form="l2").attach(model, None)
    x = torch.randn(4, 5, 8) * 2 + 0.5
    results = []
    for net in (model, torch.compile(model, dynamic=False)):
        net(x)
        penalty = remedy.penalty()
        results.append((penalty.item(), torch.autograd.grad(penalty, model[0].weight)[0]))
        functional.reset_net(model)
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert compiled == eager > 0
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("remedy", ["anneal_gamma", "learnable_gamma"])
def test_a_moving_gamma_never_recompiles_the_network_and_trains_as_it_does_eagerly(remedy):
    """anneal_gamma (adaptive_gamma: the same set_gamma) changes every layer's γ between epochs and
    learnable_gamma after every step: the compiled network takes the neurons' constants tensors as inputs,
    so what is compiled at the first step serves every later one, with the eager gradients."""
    import copy

    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), ILIF(surrogate=Surrogate("triangle"), step_mode="m"), nn.Linear(8, 3),
                          LIF(surrogate=Surrogate("sigmoid", normalize="peak"), step_mode="m"))
    eager = copy.deepcopy(model)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, dynamic=False)
    make = {"anneal_gamma": lambda: AnnealedGamma(start=4.0, end=0.25, shape="geometric"),
            "learnable_gamma": lambda: LearnableGamma(init=1.0, lr=0.1, min=0.05, max=16.0)}[remedy]
    remedies = [make().attach(m, None) for m in (model, eager)]
    x = torch.randn(4, 5, 6) * 2
    for epoch in range(4):
        grads = []
        for each, net, run in zip(remedies, (model, eager), (compiled, eager)):
            each.start_epoch(epoch, 4)
            functional.reset_net(net)
            net.zero_grad()
            run(x).sum().backward()
            learnt = [each.gammas.grad] if remedy == "learnable_gamma" else []
            grads.append([p.grad for p in net.parameters()] + learnt)
            each.after_step(1.0, False)
        assert all(torch.equal(a, b) for a, b in zip(*grads)), epoch
        if epoch == 0:
            first = counter.frame_count
    assert counter.frame_count == first
    gammas = [layer.surrogate.gamma for layer in (model[1], model[3])]
    assert gammas == ([0.25, 0.25] if remedy == "anneal_gamma" else remedies[1].gammas.tolist())


def test_the_annealed_gamma_at_each_epoch():
    assert [annealed_gamma(4.0, 1.0, "linear", e, 3) for e in range(3)] == [4.0, 2.5, 1.0]
    assert [annealed_gamma(4.0, 0.25, "geometric", e, 3) for e in range(3)] == pytest.approx([4.0, 1.0, 0.25])
    cosine = [annealed_gamma(4.0, 0.25, "cosine", e, 5) for e in range(5)]
    assert cosine == pytest.approx([4.0, 0.25 + 3.75 * (1 + math.cos(math.pi / 4)) / 2, 2.125,
                                    0.25 + 3.75 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.25])
    assert annealed_gamma(4.0, 0.25, "linear", 0, 1) == 4.0  # one epoch: the start
    model = nn.Sequential(LIF(step_mode="m"), nn.Identity(), LIF(surrogate=Surrogate("sigmoid", normalize="peak"),
                                                                 step_mode="m"))
    remedy = AnnealedGamma(start=4.0, end=1.0, shape="linear").attach(model, None)
    remedy.start_epoch(1, 3)
    record = remedy.record()
    assert record["remedy/gamma"] == {"0": 2.5, "2": 2.5} and record["remedy/gamma_mean"] == 2.5
    assert (model[2].surrogate.family, model[2].surrogate.normalize) == ("sigmoid", "peak")  # only γ changes


def test_the_adaptive_rule_reaches_its_target_occupancy_on_a_fixed_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(2), nn.Linear(16, 32), LIF(step_mode="m"), nn.Linear(32, 8), LIF(step_mode="m"))

    class Frames(torch.utils.data.Dataset):  # 300 samples of [T = 4, 16] inputs
        data = torch.randn(300, 4, 4, 4)

        def __len__(self):
            return 300

        def __getitem__(self, i):
            return self.data[i], 0

    class TimeFirst(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):  # [B, T, ...] -> [T, B, ...]
            return self.net(x.transpose(0, 1))

    net = TimeFirst(model)
    remedy = AdaptiveGamma(target=0.3, every=2, min=0.05, max=16.0).attach(net, Frames())
    remedy.start_epoch(0, 4)
    assert remedy.record()["remedy/gamma"] == {"net.2": 1.0, "net.4": 1.0}  # the first epoch: the configured γ
    remedy.start_epoch(2, 4)
    gammas = remedy.record()["remedy/gamma"]
    assert gammas["net.2"] != 1.0 and gammas["net.4"] != 1.0
    meter = SpikeMeter(net)
    net.eval()
    with torch.no_grad():
        net(torch.stack([Frames()[i][0] for i in range(256)]))  # the rule's fixed batch: the first 256 samples
    for layer in meter.counts.values():
        occupancy = (layer["in_support"] / layer["potentials"]).item()
        assert abs(occupancy - 0.3) <= 1 / layer["potentials"].item() + 1e-12  # the quantile, to one potential
    before = dict(gammas)
    remedy.start_epoch(3, 4)
    assert remedy.record()["remedy/gamma"] == before  # every 2 epochs
    assert fitted_gamma(torch.full((10,), 1.0), 1.0, 0.3, 0.05, 16.0) == 0.05  # all on the threshold: the floor
    assert fitted_gamma(torch.tensor([100.0, -100.0]), 1.0, 0.5, 0.05, 16.0) == 16.0  # the ceiling


WIDTH = "(outside it the surrogate gradient vanishes in float32)"


@pytest.mark.parametrize("override,message", [
    ("remedy=rate_reg remedy.form=l3", "remedy.form='l3' is not allowed: choose one of ['l2', 'l1']"),
    ("remedy=rate_reg remedy.target=1.5", "remedy.target=1.5 is not allowed: a number in [0, 1]"),
    ("remedy=rate_reg +remedy.start=1.0",
     "remedy.start=1.0 is not allowed: did you mean target? RateRegularisation takes ['target', 'weight', 'form']"),
    ("remedy=anneal_gamma remedy.end=0", f"remedy.end=0 is not allowed: a width in [0.001, 1000] {WIDTH}"),
    ("remedy=anneal_gamma remedy.end=1e-9", f"remedy.end=1e-09 is not allowed: a width in [0.001, 1000] {WIDTH}"),
    ("remedy=adaptive_gamma remedy.every=20",
     "remedy.every=20 is not allowed: below trainer.epochs=20 (the first refit is at epoch remedy.every)"),
    ("remedy=adaptive_gamma neuron=plif", "remedy='adaptive_gamma' is not allowed: a neuron that records its membrane "
     "potentials for the fit (store_membrane); PLIF does not"),
    ("remedy=anneal_gamma remedy.shape=step",
     "remedy.shape='step' is not allowed: choose one of ['linear', 'cosine', 'geometric']"),
    ("remedy=adaptive_gamma remedy.every=0", "remedy.every=0 is not allowed: an integer > 0"),
    ("remedy=adaptive_gamma remedy.min=20.0", "remedy.min=20.0 is not allowed: below remedy.max=16.0"),
    ("remedy=learnable_gamma remedy.lr=-1", "remedy.lr=-1 is not allowed: a finite number > 0"),
    ("remedy=learnable_gamma surrogate.gamma=32",
     "remedy.init=32.0 is not allowed: within [remedy.min, remedy.max] = [0.05, 16.0]"),
])
def test_bad_remedy_values_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(override.split()))
    assert str(err.value) == message


def test_no_remedy_is_not_part_of_the_run_hash_and_every_remedy_is():
    plain = compose_config([])
    assert "remedy" not in json.dumps(__import__("ilif.conf", fromlist=["identity"]).identity(plain))
    hashes = {config_hash(compose_config([f"remedy={name}"])) for name in REMEDIES}
    assert len(hashes) == len(REMEDIES) and config_hash(compose_config(["remedy=none"])) == config_hash(plain)


@pytest.mark.parametrize("remedy,expected", [
    ("anneal_gamma", [[4.0, 4.0], [1.0, 1.0]]),  # from the configured γ = 4 to 1
    ("adaptive_gamma", None),
    ("learnable_gamma", None),
    ("rate_reg", [[1.0, 1.0], [1.0, 1.0]]),
])
def test_a_run_logs_the_gamma_of_each_layer_every_epoch(train_run, remedy, expected):
    extra = ["remedy.shape=linear", "surrogate.gamma=4"] if remedy == "anneal_gamma" else []
    run_dir, summary = train_run(f"remedy={remedy}", *extra, "trainer.epochs=2", "trainer.limit_train_batches=3",
                                 "trainer.limit_eval_batches=1")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gammas = [list(h["remedy/gamma"].values()) for h in history]
    if expected is not None:
        assert gammas == expected
    elif remedy == "adaptive_gamma":
        assert gammas[0] == [1.0, 1.0] and all(g != 1.0 for g in gammas[1])  # refitted after the first epoch
    else:  # trained: after 3 steps of lr 0.01 each γ is within 0.03 of where it started, and has moved
        assert all(0 < abs(g - 1.0) <= 0.03 + 1e-9 for g in gammas[0]) and gammas[1] != gammas[0]
    assert summary.final["remedy/gamma_mean"] == pytest.approx(sum(gammas[-1]) / 2)
    assert summary.config["remedy"]["name"] == remedy


def test_table5_compares_each_row_with_ilif_without_a_remedy(tmp_path):
    from ilif.grid import table_jobs
    from ilif.report import tables
    from ilif.report.runs import load_runs
    from test_experiments import _write_summary

    jobs = table_jobs([5], "mini", [f"runs_root={tmp_path / 'runs'}"])
    assert len(jobs) == 2 * 2 * len(REMEDIES) * 2 * 3  # datasets × neurons × remedies × γ × seeds
    acc = {("ilif", "none"): 0.95, ("lif", "none"): 0.93, ("lif", "rate_reg"): 0.94}
    for _, cfg, run_dir in jobs:
        remedy = cfg.get("remedy", {}).get("name", "none")
        _write_summary(run_dir, acc=acc.get((cfg.neuron.name, remedy), 0.9) + 0.01 * cfg.seed,
                       rate=0.1 if cfg.neuron.name == "ilif" else 0.2)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["final"].update({"remedy/gamma_mean": 2.0, "remedy/gamma_min": 1.0, "remedy/gamma_max": 3.0})
        (run_dir / "summary.json").write_text(json.dumps(summary))
    table = tables.table5(load_runs(jobs), "mini")
    rows = {tuple(row[:4]): row for row in table.rows}
    assert list(rows)[:len(REMEDIES)] == [("digits", "0.25", "lif", name) for name in REMEDIES]
    lif_reg = rows[("seqdigits", "4", "lif", "rate_reg")]
    assert lif_reg[-2:] == [f"+1.00 ± {100 * math.sqrt(2 * 0.01 ** 2 / 3):.2f}", "-0.1000 ± 0.0000"]
    assert rows[("digits", "4", "ilif", "none")][-2:] == ["—", "—"]
    assert lif_reg[4 + 6:4 + 9] == ["2.000 ± 0.000", "1.000 ± 0.000", "3.000 ± 0.000"]


def test_a_resume_restores_the_gamma_each_layer_trained_with(tmp_path, trainer_cfg):
    from types import SimpleNamespace

    from ilif.train import loop

    def parts():
        model = nn.Sequential(LIF(step_mode="m"), LIF(step_mode="m"))
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        remedy = AdaptiveGamma(target=0.3, every=1, min=0.05, max=16.0).attach(model, None)
        return SimpleNamespace(model=model, optimizer=optimizer,
                               scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 2),
                               start_epoch=0, best=None, changed_on_resume=[], epoch_seconds=[], resume_inside=None,
                               data=(range(16),),
                               remedy=remedy)

    before = parts()
    before.remedy.set_gamma("0", 0.37)
    before.remedy.set_gamma("1", 2.5)
    run = SimpleNamespace(scaler=torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"))
    loop.Trainer(trainer_cfg, run, before, tmp_path, "h").save(3, False)
    after = parts()
    loop.Trainer(trainer_cfg, run, after, tmp_path, "h").resume()
    assert after.remedy.record()["remedy/gamma"] == {"0": 0.37, "1": 2.5} and after.start_epoch == 4


def test_a_resume_restores_each_learnable_gamma_and_its_optimiser(tmp_path, trainer_cfg):
    from types import SimpleNamespace

    from ilif.train import loop

    def parts():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), LIF(surrogate=Surrogate("sigmoid"), step_mode="m"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return SimpleNamespace(model=model, optimizer=optimizer,
                               scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 2),
                               start_epoch=0, best=None, changed_on_resume=[], epoch_seconds=[], resume_inside=None,
                               data=(range(16),),
                               remedy=_learnable(model, lr=0.05))

    def train_step(p):
        p.model(torch.linspace(-1, 3, 4 * 3 * 8).view(4, 3, 8)).sum().backward()
        p.remedy.after_step(1.0, skipped=False)

    run = SimpleNamespace(scaler=torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"))
    before, after = parts(), parts()
    train_step(before)
    loop.Trainer(trainer_cfg, run, before, tmp_path, "h").save(0, False)
    loop.Trainer(trainer_cfg, run, after, tmp_path, "h").resume()
    assert after.remedy.record() == before.remedy.record()
    assert after.model[1].surrogate.parameter._base is after.remedy.gammas
    for p in (before, after):
        functional.reset_net(p.model)
        train_step(p)  # the second Adam step needs the first's moments
    assert after.remedy.record() == before.remedy.record() != parts().remedy.record()


def _ddp_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), LIF(surrogate=Surrogate("sigmoid"), step_mode="m"))
    remedy = _learnable(model, lr=0.05)
    model(torch.linspace(-1, 3, 96, dtype=torch.float32).view(4, 3, 8) * (1 + rank)).mean().backward()
    torch.save({"grad": remedy.gammas.grad.item()}, f"{out}.grad{rank}")
    remedy.after_step(1.0, skipped=False)
    moment = remedy.optimizer.state[remedy.gammas]["exp_avg"].item()
    torch.save({"gamma": remedy.record()["remedy/gamma"], "moment": moment}, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_processes_of_one_ddp_run_train_one_gamma_from_their_mean_gradient(tmp_path):
    """gloo, 2 processes with different batches: both end at the γ one Adam step on the mean gradient gives."""
    torch.multiprocessing.spawn(_ddp_rank, args=(str(tmp_path / "init"), str(tmp_path / "gamma")), nprocs=2)
    ends = [torch.load(tmp_path / f"gamma.{r}") for r in (0, 1)]
    grads = [torch.load(tmp_path / f"gamma.grad{r}")["grad"] for r in (0, 1)]
    assert grads[0] != grads[1] and ends[0] == ends[1]
    mean = (grads[0] + grads[1]) / 2
    assert ends[0]["moment"] == pytest.approx(0.1 * mean, rel=1e-12)  # Adam's first moment: (1 − β₁) · the mean
    assert ends[0]["gamma"]["1"] == pytest.approx(1.0 - 0.05 * mean / (abs(mean) + 1e-8), rel=1e-14)
