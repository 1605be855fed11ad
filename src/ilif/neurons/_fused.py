"""Fused multi-step LIF/ILIF: one autograd Function over [T, N] with a hand-written BPTT backward.

The contract every backend implements (torch loop here, C kernel in ``_cpu_kernel``; a Triton kernel
would implement the same two functions):

    forward(x [T, N], v, i, m, xs [N] (updated in place to the final state), params)
        -> spikes [T, N], h [T, N], m_seq [T, N] or None, i_positive [T, N] uint8 or None
    backward(grad_spikes [T, N], x, h, m_seq, i_positive,
             gv, gi, gm, gxs [N] (grads of the final state, replaced in place by the grads of the
             initial state), params) -> grad_x [T, N]

Saved for the backward: h (always), m_seq (membrane unit on), the mask i > 0 as uint8 and the input
x itself (current unit on). Spikes and u are recomputed from h.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _cpu_kernel
from .functional import NeuronParams, NeuronState

BACKENDS = ("auto", "c", "torch", "reference")


def _torch_forward(x, v, i, m, xs, p: NeuronParams):
    T = x.shape[0]
    spikes = torch.empty_like(x)
    h_seq = torch.empty_like(x)
    m_seq = torch.empty_like(x) if p.membrane_inhibition else None
    i_pos = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if p.current_inhibition else None
    lam, vth = p.decay, p.v_threshold
    for t in range(T):
        h = torch.mul(v, lam, out=h_seq[t])
        h.add_(x[t])
        if p.current_inhibition:
            i.add_(xs).mul_(p.kappa_current)
            torch.gt(i, 0, out=i_pos[t])
            h.sub_(i.clamp(min=0.0))
        s = spikes[t].copy_(h >= vth)
        if p.reset == "soft":
            torch.sub(h, s, alpha=vth, out=v)
        else:
            torch.mul(h, 1.0 - s, out=v)
        if p.membrane_inhibition:
            m.addcmul_(s, v).mul_(p.kappa_membrane)
            m_seq[t].copy_(m)
            v.sub_(s * torch.sigmoid(m))
        if p.current_inhibition:
            torch.mul(x[t], s, out=xs)
    return spikes, h_seq, m_seq, i_pos


def _torch_backward(grad_s, x, h_seq, m_seq, i_pos, gv, gi, gm, gxs, p: NeuronParams):
    T = h_seq.shape[0]
    grad_x = torch.empty_like(h_seq)
    lam, vth, detach = p.decay, p.v_threshold, p.detach_reset
    for t in range(T - 1, -1, -1):
        h = h_seq[t]
        s = (h >= vth).to(h.dtype)
        gs = grad_s[t].clone()
        if p.current_inhibition:
            grad_x_extra = gxs * s
            if not detach:
                gs.addcmul_(gxs, x[t])
        gu = gv.clone()
        if p.membrane_inhibition:
            u = h - s * vth if p.reset == "soft" else h * (1.0 - s)
            sig = torch.sigmoid(m_seq[t])
            gm_total = gm - gv * s * sig * (1.0 - sig)
            if not detach:
                gs.sub_(gv * sig).addcmul_(gm_total, u, value=p.kappa_membrane)
            gu.addcmul_(gm_total, s, value=p.kappa_membrane)
            gm = gm_total * p.kappa_membrane
        if p.reset == "soft":
            gh = gu
            if not detach:
                gs.sub_(gu, alpha=vth)
        else:
            gh = gu * (1.0 - s)
            if not detach:
                gs.sub_(gu * h)
        gh = gh + gs * p.surrogate.grad(h - vth)
        grad_x[t] = gh + grad_x_extra if p.current_inhibition else gh
        gv = gh * lam
        if p.current_inhibition:
            gi_total = gi - gh * i_pos[t].to(gh.dtype)
            gi = gi_total * p.kappa_current
            gxs = gi
    return grad_x, gv, gi, gm, gxs


def _use_c(x: torch.Tensor, backend: str) -> bool:
    if backend == "torch":
        return False
    supported = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    if backend == "c":
        if not supported:
            raise ValueError(f"backend='c' needs a float32/float64 CPU tensor; got {x.dtype} on {x.device}")
        _cpu_kernel.load(strict=True)
        return True
    return supported and _cpu_kernel.load(strict=False) is not None


class _FusedNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, i0, m0, xs0, params: NeuronParams, use_c: bool):
        v, i, m, xs = (t.clone() for t in (v0, i0, m0, xs0))
        if use_c:
            spikes, h_seq, m_seq, i_pos = _cpu_kernel.forward(x, v, i, m, xs, params)
        else:
            spikes, h_seq, m_seq, i_pos = _torch_forward(x, v, i, m, xs, params)
        ctx.params, ctx.use_c = params, use_c
        ctx.save_for_backward(
            h_seq,
            m_seq,
            i_pos,
            x if params.current_inhibition else None,
        )
        ctx.mark_non_differentiable(h_seq)
        return spikes, v, i, m, xs, h_seq

    @staticmethod
    def backward(ctx, grad_s, gv, gi, gm, gxs, _grad_h):
        h_seq, m_seq, i_pos, x = ctx.saved_tensors
        gv, gi, gm, gxs = (g.contiguous().clone() for g in (gv, gi, gm, gxs))
        grad_s = grad_s.contiguous()
        if ctx.use_c:
            grad_x = _cpu_kernel.backward(grad_s, x, h_seq, m_seq, i_pos, gv, gi, gm, gxs, ctx.params)
        else:
            grad_x, gv, gi, gm, gxs = _torch_backward(grad_s, x, h_seq, m_seq, i_pos, gv, gi, gm, gxs, ctx.params)
        return grad_x, gv, gi, gm, gxs, None, None


def fused_multistep(
    x_seq: torch.Tensor, state: Optional[NeuronState], params: NeuronParams, backend: str = "auto"
) -> tuple[torch.Tensor, NeuronState, torch.Tensor]:
    """See :func:`ilif.neurons.functional.multistep`; shapes [T, B, ...] in and out."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed: choose one of {BACKENDS}")
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], -1).contiguous()
    if state is None:
        zeros = x.new_zeros(x.shape[1])
        state_flat = (zeros,) * 4
    else:
        if state.v.shape != shape[1:]:
            raise ValueError(
                f"neuron state has shape {tuple(state.v.shape)} but one step of input has shape {tuple(shape[1:])}: "
                "reset the network (spikingjelly functional.reset_net) before a new batch"
            )
        state_flat = tuple(t.reshape(-1).to(x.dtype) for t in state)
    spikes, v, i, m, xs, h_seq = _FusedNeuron.apply(x, *state_flat, params, _use_c(x, backend))
    step_shape = shape[1:]
    new_state = NeuronState(*(t.view(step_shape) for t in (v, i, m, xs)))
    return spikes.view(shape), new_state, h_seq.view(shape)
