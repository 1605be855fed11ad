import math

import pytest
import torch
from spikingjelly.activation_based import surrogate as sj

from ilif.neurons import FAMILIES, NORMALIZATIONS, Surrogate, heaviside

GAMMAS = (0.25, 1.0, 4.0)


def test_forward_is_heaviside_in_input_dtype():
    for dtype in (torch.float16, torch.float32, torch.float64):
        z = torch.tensor([-1.0, -1e-3, 0.0, 1e-3, 2.0], dtype=dtype, requires_grad=True)
        out = Surrogate("sigmoid", 1.0)(z)
        assert out.dtype == dtype
        assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert heaviside(torch.tensor([-0.0, 0.0])).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_height_and_area(family, normalize, gamma):
    sg = Surrogate(family, gamma, normalize)
    assert sg.grad(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(sg.height, rel=1e-12)
    if normalize == "peak":
        assert sg.height == 1.0
    # ∫ g(z) dz over the whole line as ∫ g(γ tan θ) γ sec²θ dθ over (-π/2, π/2): the tails fold into a finite range
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 400_001, dtype=torch.float64)[1:-1]
    integrand = sg.grad(gamma * torch.tan(theta)) * gamma / torch.cos(theta) ** 2
    area = torch.trapezoid(integrand, theta).item()
    expected = 1.0 if normalize == "area" else 1.0 / {"rectangle": 1 / gamma, "triangle": 2 / gamma,
                                                        "sigmoid": sg.alpha / 4, "atan": sg.alpha / 2}[family]
    assert area == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("family", ["rectangle", "triangle"])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_support_edges(family, gamma):
    sg = Surrogate(family, gamma)
    eps = 1e-9
    edge = gamma / 2
    inside = torch.tensor([-edge + eps, edge - eps], dtype=torch.float64)
    outside = torch.tensor([-edge - eps, edge + eps, 10 * gamma], dtype=torch.float64)
    assert (sg.grad(inside) > 0).all()
    assert sg.grad(outside).tolist() == [0.0, 0.0, 0.0]
    if family == "rectangle":
        assert sg.grad(torch.tensor([edge, -edge], dtype=torch.float64)).tolist() == [1 / gamma, 1 / gamma]


@pytest.mark.parametrize("family", ["sigmoid", "atan"])
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_full_width_at_half_maximum_is_gamma(family, normalize, gamma):
    sg = Surrogate(family, gamma, normalize)
    half = sg.grad(torch.tensor([-gamma / 2, gamma / 2], dtype=torch.float64))
    assert half.tolist() == pytest.approx([sg.height / 2] * 2, rel=1e-9)


@pytest.mark.parametrize(
    "family, sj_backward",
    [("rectangle", sj.rect_backward), ("triangle", sj.piecewise_quadratic_backward),
     ("sigmoid", sj.sigmoid_backward), ("atan", sj.atan_backward)],
)
def test_alpha_matches_spikingjelly(family, sj_backward):
    sg = Surrogate(family, 0.7)
    z = torch.randn(10_000, dtype=torch.float64)
    ours = sg.grad(z)
    theirs = sj_backward(torch.ones_like(z), z, sg.alpha)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_backward_applies_grad():
    sg = Surrogate("triangle", 2.0)
    z = torch.tensor([-0.5, 0.0, 0.5, 1.5], requires_grad=True)
    sg(z).sum().backward()
    assert z.grad.tolist() == [0.5, 1.0, 0.5, 0.0]


def test_describe_reports_resolved_parameters():
    assert Surrogate("atan", 2.0, "area").describe() == {
        "family": "atan", "gamma": 2.0, "normalize": "area", "height": 1 / math.pi, "alpha": 2 / math.pi,
    }
    assert Surrogate("rectangle", 0.5, "peak").describe()["alpha"] == 2.0


@pytest.mark.parametrize(
    "kwargs, words",
    [({"gamma": 0.0}, "gamma"), ({"gamma": -1.0}, "gamma"), ({"gamma": float("nan")}, "gamma"),
     ({"gamma": float("inf")}, "gamma"), ({"family": "gauss"}, "family"), ({"normalize": "max"}, "normalize")],
)
def test_bad_parameters_raise_naming_the_key(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Surrogate(**kwargs)
