"""The fused neuron as two torch custom ops, ``ilif::neuron_forward`` and ``ilif::neuron_backward``.

Registered with ``torch.library`` (fake implementations for tracing, autograd through the backward
op), so ``torch.compile`` traces a whole spiking network without a graph break, and autograd runs the
hand-written BPTT backward. Each op picks a backend at run time from the tensors it is given:

- ``c``: the compiled C kernel (``_cpu_kernel``), CPU tensors; the ``auto`` choice on the CPU.
- ``triton``: the Triton kernels (``_triton_kernel``), CUDA tensors (CPU tensors too under
  ``TRITON_INTERPRET=1``); the ``auto`` choice on CUDA.
- ``torch``: a loop over T of torch ops (``_torch_loop``), any device; the fallback when the other two
  cannot run.

All three implement the contract and the precision policy of ``_contract``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from . import _cpu_kernel, _torch_loop
from ._contract import CONSTANTS, KernelFlags, compute_dtype, state_like
from .surrogate import width_grad


def _triton() -> ModuleType | None:
    """The Triton kernel module, or None where Triton is not installed."""
    try:
        return importlib.import_module("ilif.neurons._triton_kernel")
    except ImportError:
        return None


def backend_module(backend: str, x: Tensor) -> ModuleType:
    """The module implementing ``backend`` (one of :data:`ilif.neurons.rules.FUSED_BACKENDS`) for tensors like ``x``;
    ``auto`` resolves by device. Raises ValueError naming the backend when it cannot run on ``x``.
    """
    if backend == "torch":
        return _torch_loop
    if backend == "c" or (backend == "auto" and x.device.type == "cpu"):
        if x.device.type != "cpu":
            raise ValueError(f"backend='c' needs a CPU tensor; got one on {x.device}")
        if _cpu_kernel.load(strict=backend == "c") is not None:
            return _cpu_kernel
        return _torch_loop
    triton_kernel = _triton()
    if triton_kernel is None:
        if backend == "triton":
            raise ValueError("backend='triton' needs the triton package (pip install triton)")
        return _torch_loop
    if backend == "triton":
        triton_kernel.check_device(x)
    return triton_kernel if x.device.type == "cuda" or backend == "triton" else _torch_loop


_OUTPUTS = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _check_constants(x: Tensor, constants: Tensor) -> None:
    if constants.dtype != torch.float64 or constants.shape != (len(CONSTANTS),) or constants.device != x.device:
        raise ValueError(f"neuron constants of dtype {constants.dtype}, shape {tuple(constants.shape)} on "
                         f"{constants.device} are not allowed: float64 [{len(CONSTANTS)}] on the input's device "
                         f"({x.device}); move the neuron with the model (model.to(device))")


@torch.library.custom_op("ilif::neuron_forward", mutates_args=())
def neuron_forward(
    x: Tensor, v: Tensor, i: Tensor, m: Tensor, xs: Tensor, gamma: Tensor, constants: Tensor,
    current: bool, membrane: bool, hard: bool, detach: bool, clamp_ge: bool, family: int, recompute: bool,
    count: bool, backend: str,
) -> _OUTPUTS:
    """All T steps. ``x`` [T, N]; v, i, m, xs [N] in the compute dtype, or [0] for zero (``_contract``);
    ``gamma``: the learnable surrogate width (0-dim, its value 2·``constants[4]``; only its gradient is
    computed here) or [0] where γ is a constant; ``constants`` [8] float64 (``_contract.CONSTANTS``) on
    x's device; ``recompute``: keep only x and the initial state for the backward, which runs the
    forward again for h, m_seq and i_grad (the same numbers, bit for bit). Returns spikes [T, N] (x's
    dtype), h [T, N], m_seq [T, N] or [0], i_grad [T, N] uint8 or [0], the final v, i, m, xs ([N] for
    the units the neuron has, else [0]), and with ``count`` the number of spikes (0-dim float64, exact;
    its gradient reaches every spike inside the backward pass), else [0]."""
    _check_constants(x, constants)
    flags = KernelFlags(current, membrane, hard, detach, clamp_ge, family)
    spikes, h_seq, m_seq, i_grad, final = backend_module(backend, x).forward(x, (v, i, m, xs), flags, constants)
    spike_sum = spikes.sum(dtype=torch.float64) if count else x.new_empty((0,), dtype=torch.float64)
    return spikes, h_seq, m_seq, i_grad, *final, spike_sum


@neuron_forward.register_fake
def _(x, v, i, m, xs, gamma, constants, current, membrane, hard, detach, clamp_ge, family, recompute, count, backend):
    cdt = compute_dtype(x.dtype)
    full = x.new_empty(x.shape, dtype=cdt)  # new_empty: row-major, as every backend returns, whatever x's strides
    return (
        x.new_empty(x.shape), full, x.new_empty(x.shape if membrane else (0,), dtype=cdt),
        x.new_empty(x.shape if current else (0,), dtype=torch.uint8),
        *state_like(x, KernelFlags(current, membrane, hard, detach, clamp_ge, family)),
        x.new_empty(() if count else (0,), dtype=torch.float64),
    )


@torch.library.custom_op("ilif::neuron_backward", mutates_args=())
def neuron_backward(
    grad_s: Tensor, x: Tensor, h_seq: Tensor, m_seq: Tensor, i_grad: Tensor,
    gv: Tensor, gi: Tensor, gm: Tensor, gxs: Tensor, g_sum: Tensor, initial: bool, constants: Tensor,
    current: bool, membrane: bool, hard: bool, detach: bool, clamp_ge: bool, family: int, recompute: bool,
    count: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT through all T steps. ``gv, gi, gm, gxs``: the final state's gradients ([0]: zero);
    ``initial``: return the initial state's. Returns grad_x [T, N] (grad_s's dtype), the initial state's
    gradients (v, i, m, xs: [N] for the units the neuron has when ``initial``, else [0]) and gz_z [N]
    (``_contract``); ``g_sum``: the gradient of the spike count, or [0]."""
    _check_constants(h_seq, constants)
    flags = KernelFlags(current, membrane, hard, detach, clamp_ge, family)
    grads = tuple(g.contiguous() for g in (gv, gi, gm, gxs))
    grad_x, state_grads, gz_z = backend_module(backend, h_seq).backward(grad_s.contiguous(), x, h_seq, m_seq, i_grad,
                                                                        grads, g_sum, initial, flags, constants)
    return grad_x, *state_grads, gz_z


@neuron_backward.register_fake
def _(grad_s, x, h_seq, m_seq, i_grad, gv, gi, gm, gxs, g_sum, initial, constants, *scalars):
    state_grads = state_like(h_seq, KernelFlags.from_op(scalars), initial)
    return (grad_s.new_empty(grad_s.shape), *state_grads, h_seq.new_empty((h_seq.shape[1],)))


#: where ``recompute`` is among the ops' scalar arguments (after the kernel flags)
_RECOMPUTE = len(KernelFlags._fields)


def _setup_context(ctx, inputs, output):
    x, v, i, m, xs, gamma, constants, *scalars = inputs
    _spikes, h_seq, m_seq, i_grad, *_state, _spike_sum = output
    if scalars[_RECOMPUTE]:  # x and the initial state: the backward runs the forward again
        ctx.save_for_backward(x, v, i, m, xs, constants)
    else:
        saved_x = x if KernelFlags.from_op(scalars).current else x.new_empty((0,))
        ctx.save_for_backward(saved_x, h_seq, m_seq, i_grad, constants)
    ctx.scalars = scalars
    ctx.given = tuple(t.numel() > 0 for t in (v, i, m, xs))
    ctx.gamma_dtype = gamma.dtype
    ctx.mark_non_differentiable(h_seq, m_seq, i_grad)
    ctx.set_materialize_grads(False)  # no [T, N] zeros for outputs the loss does not use


def _saved(ctx) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x (or [0] where the backward does not read it), h, m_seq, i_grad and the constants of the forward:
    kept, or computed again from x and the initial state."""
    scalars = ctx.scalars
    if not scalars[_RECOMPUTE]:
        return ctx.saved_tensors
    x, v, i, m, xs, constants = ctx.saved_tensors
    no_gamma = x.new_empty((0,))
    with torch.no_grad():
        _spikes, h_seq, m_seq, i_grad, *_ = neuron_forward(x, v, i, m, xs, no_gamma, constants,
                                                           *scalars[:_RECOMPUTE], False, False, scalars[-1])
    return x if KernelFlags.from_op(scalars).current else x.new_empty((0,)), h_seq, m_seq, i_grad, constants


def _backward(ctx, grad_s, _grad_h, _grad_m_seq, _grad_i_grad, gv, gi, gm, gxs, g_sum):
    x, h_seq, m_seq, i_grad, constants = _saved(ctx)
    grad_s = torch.zeros(h_seq.shape, dtype=x.dtype, device=h_seq.device) if grad_s is None else grad_s
    empty = h_seq.new_empty((0,))
    gv, gi, gm, gxs = (empty if g is None or not g.numel() else g for g in (gv, gi, gm, gxs))  # [0]: zero
    g_sum = empty if g_sum is None else g_sum
    grad_x, *state_grads, gz_z = neuron_backward(grad_s, x, h_seq, m_seq, i_grad, gv, gi, gm, gxs, g_sum,
                                                  any(ctx.given), constants, *ctx.scalars)
    state_grads = [g if g.numel() and given else None for g, given in zip(state_grads, ctx.given)]  # none for [0]
    grad_gamma = None
    if ctx.needs_input_grad[5]:
        gamma = 2.0 * constants[CONSTANTS.index("half_width")]
        grad_gamma = width_grad(gz_z, gamma).to(ctx.gamma_dtype)
    return (grad_x, *state_grads, grad_gamma, None, *([None] * len(ctx.scalars)))


neuron_forward.register_autograd(_backward, setup_context=_setup_context)
