"""What every fused backend (C kernel, torch loop, Triton kernel) implements, and the precision policy.

    forward(x [T, N], state: (v, i, m, xs), flags: KernelFlags, constants [8] float64)
        -> spikes [T, N] (x's dtype), h [T, N], m_seq [T, N] or [0], i_grad [T, N] uint8 or [0],
           the final (v, i, m, xs)
    backward(grad_s [T, N], x [T, N] or [0], h, m_seq, i_grad, grads: the final state's (gv, gi, gm, gxs),
             g_sum [] or [0], initial: bool, flags, constants)
        -> grad_x [T, N] (grad_s's dtype), the initial state's (gv, gi, gm, gxs), gz_z [N]

A state or state gradient is [N] in the compute dtype, or [0]: zero (an initial state after a reset,
the gradient of a final state nothing used). The units a neuron lacks (i and xs without the current
unit, m without the membrane unit; :func:`present`) are never read and come back as [0], and so do
the initial state's gradients unless ``initial`` (a given initial state): no byte moves for a state
that is zero or absent. The inputs are never changed.

The float constants (:data:`CONSTANTS`) travel as one float64 tensor on the input's device, never as
Python numbers: a neuron module keeps its own and replaces it when γ changes, and a learnable γ
derives its part on the device, so a new γ neither copies anything from the host nor recompiles a
compiled network. The C kernel and the torch loop read them as numbers (a CPU tensor: no wait); the
Triton kernels load them and round them to the compute dtype (as torch rounds: to nearest even).

g_sum is the gradient of the layer's spike count (the op's ``spike_sum`` output, which an activity
regulariser reads), added to grad_s at every step and neuron inside the pass; [0] where nothing uses
the count.

gz_z is Σ_t g_z·z per neuron (compute dtype), with z = h − V_th and g_z the gradient reaching z through
the surrogate: what a learnable surrogate width needs (dL/dγ = −Σ gz_z / γ; ``surrogate.py``).

Saved for the backward: h (always), m_seq (membrane unit on), the mask i_grad = d max(i, 0)/di as uint8
(current unit on) and the input x itself (current unit on). Spikes and u are recomputed from h. An
empty tensor ([0]) stands for "not used" (a custom op cannot return None).

Precision: x may be float16, bfloat16, float32 or float64. The state (v, i, m, xs), h, m_seq and the
threshold comparison are computed in float32 (float64 for float64 input); spikes come back in x's
dtype (0 and 1 are exact in every dtype), and the gradient of x in x's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


#: the float constants of a fused neuron, in the order of its constants tensor: λ, V_th, κ_I, κ_M (the
#: neuron's), then the surrogate's γ/2, height, alpha and π/2·alpha (what the backward reads)
CONSTANTS = ("lam", "vth", "kc", "km", "half_width", "height", "alpha", "atan_scale")
#: where the surrogate's part of the constants starts
SURROGATE_CONSTANTS = CONSTANTS.index("half_width")


class KernelFlags(NamedTuple):
    """What a kernel is specialised on (see ``NeuronParams.kernel_flags``). The custom ops take them as
    scalar arguments named and ordered as these fields (then ``count`` and ``backend``): :meth:`from_op`
    reads them back."""

    current: bool
    membrane: bool
    hard: bool
    detach: bool
    clamp_ge: bool  # d max(i, 0)/di is 1[i ≥ 0] (True) or 1[i > 0] (False)
    family: int

    @classmethod
    def from_op(cls, scalars) -> "KernelFlags":
        """The flags among a custom op's scalar arguments (the fields, in order, then the rest)."""
        return cls(*scalars[:len(cls._fields)])


class KernelParams(NamedTuple):
    """The flags and the constants as numbers, as the C kernel and the torch loop read them."""

    current: bool
    membrane: bool
    hard: bool
    detach: bool
    clamp_ge: bool
    family: int
    lam: float
    vth: float
    kc: float
    km: float
    half_width: float
    height: float
    alpha: float
    atan_scale: float

    @classmethod
    def of(cls, flags: KernelFlags, constants: torch.Tensor) -> "KernelParams":
        """``constants`` [8] (:data:`CONSTANTS`) read as numbers (on a GPU, a wait for it)."""
        return cls(*flags, *constants.tolist())


def present(flags: KernelFlags) -> tuple[bool, bool, bool, bool]:
    """Which of (v, i, m, xs) a neuron with ``flags`` has."""
    return True, flags.current, flags.membrane, flags.current


def owned(states, like: torch.Tensor) -> list[torch.Tensor]:
    """A backend's own copies of (v, i, m, xs) [N] to update in place: zeros for [0] (``like``: [T, N] in
    the compute dtype)."""
    return [s.clone() if s.numel() else like.new_zeros(like.shape[1:]) for s in states]


def state_like(like: torch.Tensor, flags: KernelFlags, wanted: bool = True) -> list[torch.Tensor]:
    """Empty (v, i, m, xs) as a backend returns them for ``like`` [T, N]: [N] in the compute dtype for
    each unit the neuron has, [0] for the others, or for all when not ``wanted``."""
    cdt = compute_dtype(like.dtype)
    return [like.new_empty((like.shape[1],) if has and wanted else (0,), dtype=cdt) for has in present(flags)]


def kept(states, flags: KernelFlags, wanted: bool = True) -> tuple[torch.Tensor, ...]:
    """(v, i, m, xs) as a backend returns them: [0] for a unit the neuron lacks, or all when not ``wanted``."""
    return tuple(s if has and wanted else unused(s, s.dtype) for s, has in zip(states, present(flags)))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the state is computed in for input ``dtype``: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_dtype(x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` has one of :data:`INPUT_DTYPES`."""
    if x.dtype not in INPUT_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in INPUT_DTYPES)
        raise ValueError(f"neuron input dtype {str(x.dtype).replace('torch.', '')} is not allowed: use one of {names}")


def unused(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The empty [0] tensor that stands for an output a configuration does not produce."""
    return like.new_empty((0,), dtype=dtype)
