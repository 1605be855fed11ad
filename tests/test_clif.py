"""CLIF against an independent float64 implementation of its equations, step by step."""

import math

import pytest
import torch
from spikingjelly.activation_based import functional

from ilif.neurons import CLIF, Surrogate


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clif_scalar(xs: list[float], tau: float, v_th: float, reset: str) -> tuple[list[float], list[float], list[float]]:
    """The equations, one neuron, plain Python floats: (spikes, H, V) per step."""
    v = m = 0.0
    spikes, potentials, membranes = [], [], []
    for x in xs:
        h = (1 - 1 / tau) * v + x
        m = m * _sigmoid(h / tau)
        s = 1.0 if h - v_th >= 0 else 0.0
        m = m + s
        v = h - s * v_th if reset == "soft" else h * (1 - s)
        v = v - s * _sigmoid(m)
        spikes.append(s)
        potentials.append(h)
        membranes.append(v)
    return spikes, potentials, membranes


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_clif_equals_its_equations_step_by_step(reset):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 5, generator=generator, dtype=torch.float64) * 1.6
    neuron = CLIF(tau=2.0, reset=reset, step_mode="m", store_membrane=True)
    spikes = neuron(x)
    assert 0.1 < spikes.mean().item() < 0.9  # the trace exercises both branches
    for b in range(3):
        for n in range(5):
            want_s, want_h, want_v = _clif_scalar(x[:, b, n].tolist(), 2.0, 1.0, reset)
            assert spikes[:, b, n].tolist() == want_s
            assert neuron.h_seq[:, b, n].tolist() == pytest.approx(want_h, abs=1e-12)
            assert neuron.v[b, n].item() == pytest.approx(want_v[-1], abs=1e-12)
    functional.reset_net(neuron)
    stepwise = CLIF(tau=2.0, reset=reset, step_mode="s")
    assert torch.equal(torch.stack([stepwise(x_t) for x_t in x]), spikes)  # single-step mode, the same spikes


def test_clif_gradients_follow_the_surrogate():
    """Autograd through CLIF equals autograd through the same equations written with the surrogate's
    derivative by hand (float64)."""
    surrogate = Surrogate("sigmoid", gamma=0.7, normalize="peak")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return (z >= 0).to(z.dtype)

        @staticmethod
        def backward(ctx, grad):
            (z,) = ctx.saved_tensors
            alpha = 2 * math.log(3 + 2 * math.sqrt(2)) / 0.7  # full width at half maximum 0.7
            sig = torch.sigmoid(alpha * z)
            return grad * 4 * sig * (1 - sig)  # the sigmoid family at unit peak

    x = (torch.rand(8, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5).requires_grad_()
    weights = torch.randn(8, 4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (CLIF(tau=1.5, surrogate=surrogate, step_mode="m")(x) * weights).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    v = m = torch.zeros(4, 3, dtype=torch.float64)
    out = []
    for x_t in x:
        h = (1 - 1 / 1.5) * v + x_t
        m = m * torch.sigmoid(h / 1.5)
        s = Spike.apply(h - 1.0)
        m = m + s
        v = h - s - s * torch.sigmoid(m)
        out.append(s)
    (torch.stack(out) * weights).sum().backward()
    assert torch.allclose(ours, x.grad, rtol=1e-12, atol=1e-12) and ours.abs().sum() > 0


def test_clif_is_a_neuron_of_every_table():
    from ilif.conf import compose_config
    from ilif.train.build import neuron_factory
    from ilif.train.config import validate

    cfg = compose_config(["neuron=clif", "surrogate=rectangle", "surrogate.gamma=0.5"])
    validate(cfg)
    neuron = neuron_factory(cfg)()
    assert type(neuron) is CLIF and neuron.surrogate.gamma == 0.5 and neuron.state_ops() == (9, 7)
    with pytest.raises(ValueError, match=r"^tau=1.0 is not allowed"):
        CLIF(tau=1.0)
