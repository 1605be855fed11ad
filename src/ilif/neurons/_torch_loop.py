"""The fused contract (``_contract``) as a torch loop over T: any device, a dozen small ops per step.

The fallback where neither the C kernel (CPU) nor Triton (CUDA) can run (on a GPU it reads the
constants back to the host once per call).
"""

from __future__ import annotations

import torch

from ._contract import KernelFlags, KernelParams, compute_dtype, kept, owned, unused
from .surrogate import surrogate_grad


def forward(x: torch.Tensor, state, flags: KernelFlags, constants: torch.Tensor):
    """See ``_contract``. ``x`` [T, N]."""
    kp = KernelParams.of(flags, constants)
    out_dtype = x.dtype
    x = x.to(compute_dtype(x.dtype))
    v, i, m, xs = owned(state, x)
    T = x.shape[0]
    spikes = x.new_empty(x.shape)  # row-major whatever x's strides, as the fake implementation says
    h_seq = x.new_empty(x.shape)
    m_seq = x.new_empty(x.shape) if kp.membrane else unused(x, x.dtype)
    i_grad = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if kp.current else unused(x, torch.uint8)
    for t in range(T):
        h = torch.mul(v, kp.lam, out=h_seq[t])
        h.add_(x[t])
        if kp.current:
            i.add_(xs).mul_(kp.kc)
            (torch.ge if kp.clamp_ge else torch.gt)(i, 0, out=i_grad[t])
            h.sub_(i.clamp(min=0.0))
        s = spikes[t].copy_(h >= kp.vth)
        if kp.hard:
            torch.mul(h, 1.0 - s, out=v)
        else:
            torch.sub(h, s, alpha=kp.vth, out=v)
        if kp.membrane:
            m.addcmul_(s, v).mul_(kp.km)
            m_seq[t].copy_(m)
            v.sub_(s * torch.sigmoid(m))
        if kp.current:
            torch.mul(x[t], s, out=xs)
    return spikes.to(out_dtype), h_seq, m_seq, i_grad, kept((v, i, m, xs), flags)


def backward(grad_s, x, h_seq, m_seq, i_grad, grads, g_sum, initial: bool, flags: KernelFlags,
             constants: torch.Tensor):
    """See ``_contract``."""
    kp = KernelParams.of(flags, constants)
    gv, gi, gm, gxs = owned(grads, h_seq)
    out_dtype = grad_s.dtype
    grad_s = grad_s.to(h_seq.dtype)
    x = x.to(h_seq.dtype)
    T = h_seq.shape[0]
    grad_x = torch.empty_like(h_seq)
    gz_z = torch.zeros_like(gv)
    vth, detach = kp.vth, kp.detach
    for t in range(T - 1, -1, -1):
        h = h_seq[t]
        s = (h >= vth).to(h.dtype)
        gs = grad_s[t].clone()
        if g_sum.numel():
            gs.add_(g_sum.to(gs.dtype))
        if kp.current:
            grad_x_extra = gxs * s
            if not detach:
                gs.addcmul_(gxs, x[t])
        gu = gv.clone()
        if kp.membrane:
            u = h * (1.0 - s) if kp.hard else h - s * vth
            sig = torch.sigmoid(m_seq[t])
            gm_total = gm - gv * s * sig * (1.0 - sig)
            if not detach:
                gs.sub_(gv * sig).addcmul_(gm_total, u, value=kp.km)
            gu.addcmul_(gm_total, s, value=kp.km)
            gm.copy_(gm_total * kp.km)
        if kp.hard:
            gh = gu * (1.0 - s)
            if not detach:
                gs.sub_(gu * h)
        else:
            gh = gu
            if not detach:
                gs.sub_(gu, alpha=vth)
        z = h - vth
        gz = gs * surrogate_grad(z, kp.family, kp.half_width, kp.height, kp.alpha)
        gz_z.addcmul_(gz, z)
        gh = gh + gz
        grad_x[t] = gh + grad_x_extra if kp.current else gh
        gv.copy_(gh * kp.lam)
        if kp.current:
            gi.sub_(gh * i_grad[t].to(gh.dtype)).mul_(kp.kc)
            gxs.copy_(gi)
    return grad_x.to(out_dtype), kept((gv, gi, gm, gxs), flags, initial), gz_z
