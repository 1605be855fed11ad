"""What every fused backend (C kernel, torch loop, Triton kernel) implements, and the precision policy.

    forward(x [T, N], v, i, m, xs [N] (updated in place to the final state), kp: KernelParams)
        -> spikes [T, N] (x's dtype), h [T, N], m_seq [T, N] or [0], i_grad [T, N] uint8 or [0]
    backward(grad_s [T, N], x [T, N] or [0], h, m_seq, i_grad,
             gv, gi, gm, gxs [N] (grads of the final state, replaced in place by the grads of the
             initial state), g_sum [] or [0], kp) -> grad_x [T, N] (grad_s's dtype), gz_z [N]

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


class KernelParams(NamedTuple):
    """The resolved constants a kernel needs (see ``NeuronParams.kernel_params``). The custom ops take
    them as scalar arguments named and ordered as these fields (then ``count`` and ``backend``):
    :meth:`from_op` reads them back; the C and Triton kernels receive these fields by name."""

    lam: float
    vth: float
    kc: float
    km: float
    current: bool
    membrane: bool
    hard: bool
    detach: bool
    clamp_ge: bool  # d max(i, 0)/di is 1[i ≥ 0] (True) or 1[i > 0] (False)
    family: int
    half_width: float
    height: float
    alpha: float

    @classmethod
    def from_op(cls, scalars) -> "KernelParams":
        """The params among a custom op's scalar arguments (the fields, in order, then the rest)."""
        return cls(*scalars[:len(cls._fields)])


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
