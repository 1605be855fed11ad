"""The fused contract (``_contract``) as two Triton kernels, for CUDA tensors.

One program per block of ``BLOCK`` neurons loops over T with the state (v, i, m, xs in the forward;
their gradients in the backward) in registers, so every input is read once and every output written
once per pass, as in the C kernel. The flags (units, reset, detach, clamp gradient, surrogate family)
are compile-time constants, so each combination is its own specialised kernel. The float constants
travel in a small tensor of the compute dtype, so float64 runs keep every digit and float32 runs
round them exactly as the C kernel does. Floating-point contraction (FMA) is off, so float32 results
equal the C kernel's op for op, up to the exponential in the sigmoids.

With ``TRITON_INTERPRET=1`` in the environment before this module is imported, Triton runs these
kernels on CPU tensors (slowly but exactly); the tests use that on machines without a GPU.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ._contract import KernelParams, compute_dtype, unused

BLOCK = 256
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

@triton.jit
def _surrogate_grad(z, half_width, height, alpha, atan_scale, FAMILY: tl.constexpr):
    if FAMILY == 0:
        g = tl.where(tl.abs(z) <= half_width, height, 0.0)
    elif FAMILY == 1:
        r = 1.0 - tl.abs(z) / half_width
        g = tl.where(r > 0, r * height, 0.0)
    elif FAMILY == 2:
        sg = 1.0 / (1.0 + tl.exp(-(z * alpha)))
        g = sg * (1.0 - sg) * (4.0 * height)
    else:
        q = z * atan_scale
        g = height / (1.0 + q * q)
    return g


@triton.jit
def _block(N, BLOCK: tl.constexpr):
    """This program's neuron offsets and the mask of those below ``N``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < N


@triton.jit
def _constants4(c_ptr, first: tl.constexpr):
    """Four scalar constants ``c[first : first + 4]``."""
    return (tl.load(c_ptr + first), tl.load(c_ptr + first + 1), tl.load(c_ptr + first + 2),
            tl.load(c_ptr + first + 3))


@triton.jit
def _load4(a_ptr, b_ptr, c_ptr, d_ptr, offs, mask):
    """The four per-neuron state (or state-gradient) vectors of one block."""
    return (tl.load(a_ptr + offs, mask=mask, other=0.0), tl.load(b_ptr + offs, mask=mask, other=0.0),
            tl.load(c_ptr + offs, mask=mask, other=0.0), tl.load(d_ptr + offs, mask=mask, other=0.0))


@triton.jit
def _store4(a_ptr, b_ptr, c_ptr, d_ptr, a, b, c, d, offs, mask):
    tl.store(a_ptr + offs, a, mask=mask)
    tl.store(b_ptr + offs, b, mask=mask)
    tl.store(c_ptr + offs, c, mask=mask)
    tl.store(d_ptr + offs, d, mask=mask)


@triton.jit
def _forward_kernel(x_ptr, spikes_ptr, h_ptr, mseq_ptr, igrad_ptr, v_ptr, i_ptr, m_ptr, xs_ptr, c_ptr, T, N,
                    CURRENT: tl.constexpr, MEMBRANE: tl.constexpr, HARD: tl.constexpr, CLAMP_GE: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs, mask = _block(N, BLOCK)
    lam, vth, kc, km = _constants4(c_ptr, 0)
    v, ic, m, xs = _load4(v_ptr, i_ptr, m_ptr, xs_ptr, offs, mask)
    for t in range(T):
        off = t * N + offs
        xt = tl.load(x_ptr + off, mask=mask, other=0.0).to(v.dtype)
        h = lam * v
        h = h + xt
        if CURRENT:
            ic = kc * (ic + xs)
            if CLAMP_GE:
                tl.store(igrad_ptr + off, (ic >= 0).to(tl.uint8), mask=mask)
            else:
                tl.store(igrad_ptr + off, (ic > 0).to(tl.uint8), mask=mask)
            h = h - tl.where(ic > 0, ic, 0.0)
        s = tl.where(h >= vth, 1.0, 0.0).to(v.dtype)
        if HARD:
            u = h * (1.0 - s)
        else:
            u = h - s * vth
        if MEMBRANE:
            m = km * (m + s * u)
            tl.store(mseq_ptr + off, m, mask=mask)
            u = u - s * (1.0 / (1.0 + tl.exp(-m)))
        v = u
        if CURRENT:
            xs = xt * s
        tl.store(spikes_ptr + off, s.to(spikes_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptr + off, h, mask=mask)
    _store4(v_ptr, i_ptr, m_ptr, xs_ptr, v, ic, m, xs, offs, mask)


@triton.jit
def _backward_kernel(gs_ptr, x_ptr, h_ptr, mseq_ptr, igrad_ptr, gx_ptr, gv_ptr, gi_ptr, gm_ptr, gxs_ptr, c_ptr, T, N,
                     CURRENT: tl.constexpr, MEMBRANE: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr,
                     FAMILY: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = _block(N, BLOCK)
    lam, vth, kc, km = _constants4(c_ptr, 0)
    half_width, height, alpha, atan_scale = _constants4(c_ptr, 4)
    gv, gi, gm, gxs = _load4(gv_ptr, gi_ptr, gm_ptr, gxs_ptr, offs, mask)
    for j in range(T):
        off = (T - 1 - j) * N + offs
        h = tl.load(h_ptr + off, mask=mask, other=0.0)
        s = tl.where(h >= vth, 1.0, 0.0).to(h.dtype)
        gs = tl.load(gs_ptr + off, mask=mask, other=0.0).to(h.dtype)
        if CURRENT:
            if not DETACH:
                gs = gs + gxs * tl.load(x_ptr + off, mask=mask, other=0.0).to(h.dtype)
        gu = gv
        if MEMBRANE:
            if HARD:
                u = h * (1.0 - s)
            else:
                u = h - s * vth
            sig = 1.0 / (1.0 + tl.exp(-tl.load(mseq_ptr + off, mask=mask, other=0.0)))
            gm_total = gm - gv * s * sig * (1.0 - sig)
            if not DETACH:
                gs = gs - gv * sig + km * gm_total * u
            gu = gu + km * gm_total * s
            gm = gm_total * km
        if HARD:
            gh = gu * (1.0 - s)
            if not DETACH:
                gs = gs - gu * h
        else:
            gh = gu
            if not DETACH:
                gs = gs - gu * vth
        gh = gh + gs * _surrogate_grad(h - vth, half_width, height, alpha, atan_scale, FAMILY)
        if CURRENT:
            tl.store(gx_ptr + off, (gh + gxs * s).to(gx_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(gx_ptr + off, gh.to(gx_ptr.dtype.element_ty), mask=mask)
        gv = gh * lam
        if CURRENT:
            passes = tl.load(igrad_ptr + off, mask=mask, other=0) != 0
            gi = tl.where(passes, gi - gh, gi) * kc
            gxs = gi
    _store4(gv_ptr, gi_ptr, gm_ptr, gxs_ptr, gv, gi, gm, gxs, offs, mask)


def _constants(kp: KernelParams, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The float constants [8] in the compute dtype, in the order the kernels load them."""
    values = [kp.lam, kp.vth, kp.kc, kp.km, kp.half_width, kp.height, kp.alpha, math.pi / 2.0 * kp.alpha]
    return torch.tensor(values, dtype=dtype, device=device)


def _grid(N: int) -> tuple[int]:
    return (triton.cdiv(N, BLOCK),)


def check_device(x: torch.Tensor) -> None:
    """Raise ValueError unless Triton can run on ``x``'s device (CUDA, or any device when interpreting)."""
    if x.device.type != "cuda" and not INTERPRET:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor; got one on {x.device} "
            "(set TRITON_INTERPRET=1 before importing ilif to run the kernels on CPU tensors)"
        )


def forward(x: torch.Tensor, v, i, m, xs, kp: KernelParams):
    """Kernel forward; see ``_contract``. ``x`` [T, N]; states [N] (compute dtype) updated in place."""
    x = x.contiguous()
    T, N = x.shape
    cdt = compute_dtype(x.dtype)
    spikes = torch.empty_like(x)
    h_seq = torch.empty(x.shape, dtype=cdt, device=x.device)
    m_seq = torch.empty_like(h_seq) if kp.membrane else unused(x, cdt)
    i_grad = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if kp.current else unused(x, torch.uint8)
    consts = _constants(kp, cdt, x.device)
    _forward_kernel[_grid(N)](
        x, spikes, h_seq, m_seq if kp.membrane else h_seq, i_grad if kp.current else spikes,
        v, i, m, xs, consts, T, N,
        CURRENT=kp.current, MEMBRANE=kp.membrane, HARD=kp.hard, CLAMP_GE=kp.clamp_ge, BLOCK=BLOCK,
        enable_fp_fusion=False,
    )
    return spikes, h_seq, m_seq, i_grad


def backward(grad_s, x, h_seq, m_seq, i_grad, gv, gi, gm, gxs, kp: KernelParams):
    """Kernel backward; see ``_contract``. Returns grad_x [T, N]; gv, gi, gm, gxs [N] become initial-state grads."""
    grad_s = grad_s.contiguous()
    T, N = h_seq.shape
    # The interpreter truncates float32 to bfloat16 where a GPU rounds to nearest even: there, grad_x is
    # written in the compute dtype and rounded by torch, as on a GPU.
    out_dtype = h_seq.dtype if INTERPRET else grad_s.dtype
    grad_x = torch.empty(h_seq.shape, dtype=out_dtype, device=h_seq.device)
    consts = _constants(kp, h_seq.dtype, h_seq.device)
    _backward_kernel[_grid(N)](
        grad_s, x if kp.current else h_seq, h_seq, m_seq if kp.membrane else h_seq,
        i_grad if kp.current else h_seq, grad_x, gv, gi, gm, gxs, consts, T, N,
        CURRENT=kp.current, MEMBRANE=kp.membrane, HARD=kp.hard, DETACH=kp.detach, FAMILY=kp.family, BLOCK=BLOCK,
        enable_fp_fusion=False,
    )
    return grad_x.to(grad_s.dtype)
