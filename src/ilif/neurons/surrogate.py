"""Surrogate spike functions parameterised by their width γ.

Forward is always the Heaviside step Θ(z) (1 where z ≥ 0, else 0, in the input dtype), with
z = h − V_th. Backward replaces dΘ/dz by a bump g(z) whose width is γ:

| family    | g(z)                                   | width meaning              | area-normalised height |
|-----------|----------------------------------------|----------------------------|------------------------|
| rectangle | H · 1[|z| ≤ γ/2]                       | support [−γ/2, γ/2]        | H = 1/γ                |
| triangle  | H · max(0, 1 − |z| / (γ/2))            | support [−γ/2, γ/2]        | H = 2/γ                |
| sigmoid   | H · 4·σ(αz)(1 − σ(αz)),  α = 3.5255/γ  | full width at half maximum | H = α/4                |
| atan      | H / (1 + (π/2 · α z)²),  α = 4/(πγ)    | full width at half maximum | H = α/2                |

``normalize="area"`` makes ∫g = 1 (the released code's rectangle: height 1/γ);
``normalize="peak"`` makes max g = 1. ``alpha`` is the spikingjelly 2.0.0 parameter that gives the
same area-normalised bump: ``Rect(alpha=1/γ)``, ``PiecewiseQuadratic(alpha=2/γ)``,
``Sigmoid(alpha=3.5255/γ)``, ``ATan(alpha=4/(πγ))``.

A learnable width (``parameter``: a 0-dim tensor holding γ; ``remedy=learnable_gamma``) gets the
gradient dS/dγ = −(z/γ)·g(z). Every family is a scale family, g(z) = c·φ(z/γ)/γ, so g is c times the
derivative of the unit-jump smooth step F₁(z) = Φ(z/γ), and −(z/γ)·g is c times ∂F₁/∂γ: both
derivatives of S are those of c·F₁ with c held fixed (c = 1 at unit area; at unit peak c is the
bump's area, which grows with γ, and is held fixed as the bump's height is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Optional

import torch

from .rules import FAMILIES, NORMALIZATIONS


#: The surrogate families, numbered as every kernel takes them (RECTANGLE = 0, TRIANGLE, SIGMOID,
#: ATAN): the torch loop compares with these members, the C kernel with ``FAMILY_*`` macros and the
#: Triton kernel with constants made from them. Their names and order are :data:`ilif.neurons.rules.FAMILIES`.
Family = IntEnum("Family", [(name.upper(), number) for number, name in enumerate(FAMILIES)])

# FWHM of σ'(x) = σ(x)(1 − σ(x)) is 2·ln(3 + 2√2) ≈ 3.5255 (half maximum where σ = (1 ± 1/√2)/2).
SIGMOID_FWHM = 2.0 * math.log(3.0 + 2.0 * math.sqrt(2.0))


def _check_positive_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number > 0")
    return value


@dataclass(frozen=True)
class Surrogate:
    """A γ-parameterised surrogate gradient for the spike step.

    Args:
        family: one of ``rectangle``, ``triangle``, ``sigmoid``, ``atan``.
        gamma: support width (rectangle, triangle) or full width at half maximum (sigmoid, atan), > 0.
        normalize: ``area`` (∫g = 1) or ``peak`` (max g = 1).
        parameter: a 0-dim floating tensor that receives dL/dγ (a learnable width); None: γ is a
            constant. The fused LIF and ILIF compute their constants from the tensor, where it lives
            (nothing is read back to the host); every other path reads ``gamma``. So ``gamma`` must be
            the tensor's value: whoever updates the tensor makes a new Surrogate with it
            (``remedy=learnable_gamma`` does, after every step). A deep copy (an EMA of the model, say)
            keeps ``gamma`` and drops the tensor.
    """

    family: str = "rectangle"
    gamma: float = 1.0
    normalize: str = "area"
    parameter: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"surrogate family={self.family!r} is not allowed: choose one of {FAMILIES}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"surrogate normalize={self.normalize!r} is not allowed: choose one of {NORMALIZATIONS}"
            )
        object.__setattr__(self, "gamma", _check_positive_finite("surrogate gamma", self.gamma))
        if self.parameter is not None and not (torch.is_tensor(self.parameter) and self.parameter.dim() == 0
                                               and self.parameter.is_floating_point()):
            raise ValueError(f"surrogate parameter={self.parameter!r} is not allowed: "
                             "it must be a 0-dim floating tensor")

    @property
    def alpha(self) -> float:
        """The spikingjelly 2.0.0 ``alpha`` giving the same area-normalised bump."""
        return {
            "rectangle": 1.0 / self.gamma,
            "triangle": 2.0 / self.gamma,
            "sigmoid": SIGMOID_FWHM / self.gamma,
            "atan": 4.0 / (math.pi * self.gamma),
        }[self.family]

    @property
    def height(self) -> float:
        """Peak value of g (at z = 0)."""
        if self.normalize == "peak":
            return 1.0
        return {
            "rectangle": 1.0 / self.gamma,
            "triangle": 2.0 / self.gamma,
            "sigmoid": self.alpha / 4.0,
            "atan": self.alpha / 2.0,
        }[self.family]

    @property
    def half_width(self) -> float:
        """γ/2: the support half-width, or the half width at half maximum for smooth families."""
        return self.gamma / 2.0

    @property
    def family_id(self) -> Family:
        return Family[self.family.upper()]

    def constant_values(self) -> tuple[float, float, float, float]:
        """(γ/2, height, alpha, π/2·alpha): the surrogate's part of a fused kernel's constants."""
        return self.half_width, self.height, self.alpha, math.pi / 2.0 * self.alpha

    def constants_on_device(self) -> torch.Tensor:
        """:meth:`constant_values` [4] float64 computed from ``parameter`` where it lives, by the same
        float64 operations (so the same numbers), without reading it back to the host."""
        gamma = self.parameter.detach().to(torch.float64)
        scale = {"rectangle": 1.0, "triangle": 2.0, "sigmoid": SIGMOID_FWHM}.get(self.family)
        # torch.div, not a number over a tensor (which multiplies by the reciprocal: two roundings)
        alpha = torch.div(torch.full_like(gamma, scale if scale is not None else 4.0),
                          gamma if scale is not None else math.pi * gamma)
        if self.normalize == "peak":
            height = torch.ones_like(gamma)
        elif self.family in ("rectangle", "triangle"):
            height = alpha  # 1/γ and 2/γ at unit area: alpha itself
        else:
            height = alpha / (4.0 if self.family == "sigmoid" else 2.0)
        return torch.stack((gamma / 2.0, height, alpha, math.pi / 2.0 * alpha))

    def __deepcopy__(self, memo) -> "Surrogate":
        return Surrogate(self.family, self.gamma, self.normalize)

    def describe(self) -> dict:
        """Resolved parameters, for logging: family, γ, normalisation, height and library alpha."""
        return {
            "family": self.family,
            "gamma": self.gamma,
            "normalize": self.normalize,
            "height": self.height,
            "alpha": self.alpha,
        }

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """g(z), the surrogate derivative dS/dz, elementwise; same shape and dtype as ``z``."""
        return surrogate_grad(z, self.family_id, self.half_width, self.height, self.alpha)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Θ(z) forward, g(z) backward (and dS/dγ to ``parameter``). ``z``: any shape; returns spikes of
        the same shape/dtype."""
        return _SpikeFunction.apply(z, self.parameter, self)


def surrogate_grad(z: torch.Tensor, family_id: int, half_width: float, height: float, alpha: float) -> torch.Tensor:
    """g(z) for the :class:`Family` ``family_id``, from the resolved constants (what the kernels
    receive). ``z``: any shape; returns the same shape and dtype."""
    if family_id == Family.RECTANGLE:
        return (z.abs() <= half_width).to(z.dtype) * height
    if family_id == Family.TRIANGLE:
        return (1.0 - z.abs() / half_width).clamp_(min=0.0) * height
    if family_id == Family.SIGMOID:
        sg = torch.sigmoid(z * alpha)
        return sg * (1.0 - sg) * (4.0 * height)
    scaled = z * (math.pi / 2.0 * alpha)
    return height / (1.0 + scaled * scaled)


def width_grad(gz_z: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """dL/dγ = Σ dL/dS · dS/dγ = −Σ g_z·z / γ from ``gz_z`` (any shape), the products g_z·z (or their
    sums) of the gradient reaching z through the surrogate and z itself; a 0-dim tensor of gz_z's dtype.
    ``gamma``: a number or a 0-dim tensor (-1/γ is rounded to gz_z's dtype either way)."""
    scale = -1.0 / gamma
    return gz_z.sum() * (scale.to(gz_z.dtype) if torch.is_tensor(scale) else scale)


def heaviside(z: torch.Tensor) -> torch.Tensor:
    """Θ(z): 1.0 where z ≥ 0, else 0.0, in the dtype of ``z``."""
    return (z >= 0).to(z.dtype)


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, parameter: Optional[torch.Tensor], surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return heaviside(z)

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        (z,) = ctx.saved_tensors
        sg = ctx.surrogate
        grad_z = grad_spike * sg.grad(z)
        grad_gamma = None
        if ctx.needs_input_grad[1]:  # summed in float64: a float16 sum over a layer overflows
            grad_gamma = width_grad(grad_z.double() * z.double(), sg.gamma).to(sg.parameter.dtype)
        return grad_z, grad_gamma, None
