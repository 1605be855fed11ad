"""The fused contract (``_contract``) as two Triton kernels, for CUDA tensors.

One program per block of ``BLOCK`` neurons loops over T with the state (v, i, m, xs in the forward;
their gradients in the backward) in registers, so every input is read once and every output written
once per pass, as in the C kernel. The flags (units, reset, detach, clamp gradient, surrogate family)
are compile-time constants, so each combination is its own specialised kernel. The float constants
are the neuron's float64 tensor (``_contract``), loaded once per program and rounded to the compute
dtype here (float64 runs keep every digit, float32 runs round them as torch does): a launch copies
nothing from the host, so it never waits for the GPU and can be captured in a CUDA graph, whatever γ
does between steps. Time offsets are 64-bit (T·N may pass 2³¹).

Rounding on a GPU: floating-point contraction (FMA) is off and every division is IEEE round-to-nearest
(``div_rn``; Triton's ``/`` would compile to an approximate ``div.full.f32``), so additions,
multiplications and divisions round as the C kernel's do. The exponential in the sigmoids is CUDA's
``expf`` (libdevice; at most 2 ulp from exact by CUDA's programming guide) where the C kernel calls the
C library's, so a float32 sigmoid, and what depends on it, may differ from the C kernel's in the last
bits; spikes differ only where h lands within those bits of the threshold.

With ``TRITON_INTERPRET=1`` in the environment before this module is imported, Triton runs these
kernels on CPU tensors (slowly but exactly); the tests use that on machines without a GPU.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from ._contract import KernelFlags, compute_dtype, present, state_like, unused
from .surrogate import Family

# the surrogate families as the kernels compare them (a jitted function reads only constexpr globals)
_RECTANGLE = tl.constexpr(int(Family.RECTANGLE))
_TRIANGLE = tl.constexpr(int(Family.TRIANGLE))
_SIGMOID = tl.constexpr(int(Family.SIGMOID))

BLOCK = 256
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
#: libdevice's expf where the kernels are compiled; the interpreter (which has no libdevice) uses numpy's
PRECISE_EXP = not INTERPRET


@triton.jit
def _exp(x, PRECISE: tl.constexpr):
    if PRECISE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def _div(a, b):
    """a / b rounded to nearest (IEEE) in float32 too, where Triton's ``/`` is approximate."""
    if b.dtype == tl.float32:
        return tl.math.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _sigmoid(x, PRECISE: tl.constexpr):
    return _div(1.0, 1.0 + _exp(-x, PRECISE))

@triton.jit
def _surrogate_grad(z, half_width, height, alpha, atan_scale, FAMILY: tl.constexpr, PRECISE: tl.constexpr):
    if FAMILY == _RECTANGLE:
        g = tl.where(tl.abs(z) <= half_width, height, 0.0)
    elif FAMILY == _TRIANGLE:
        r = 1.0 - _div(tl.abs(z), half_width)
        g = tl.where(r > 0, r * height, 0.0)
    elif FAMILY == _SIGMOID:
        sg = _sigmoid(z * alpha, PRECISE)
        g = sg * (1.0 - sg) * (4.0 * height)
    else:
        q = z * atan_scale
        g = _div(height, 1.0 + q * q)
    return g


@triton.jit
def _block(N, BLOCK: tl.constexpr):
    """This program's neuron offsets and the mask of those below ``N``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < N


@triton.jit
def _constants4(c_ptr, first: tl.constexpr, dtype: tl.constexpr):
    """Four scalar constants ``c[first : first + 4]`` (float64) rounded to ``dtype``."""
    return (tl.load(c_ptr + first).to(dtype), tl.load(c_ptr + first + 1).to(dtype),
            tl.load(c_ptr + first + 2).to(dtype), tl.load(c_ptr + first + 3).to(dtype))


@triton.jit
def _load4(a_ptr, b_ptr, c_ptr, d_ptr, offs, mask, dtype: tl.constexpr, LOAD: tl.constexpr, CURRENT: tl.constexpr,
           MEMBRANE: tl.constexpr, BLOCK: tl.constexpr):
    """The four per-neuron state (or state-gradient) vectors (v, i, m, xs) of one block: loaded where
    ``LOAD`` and the neuron has the unit, else zeros (no load)."""
    zero = tl.zeros([BLOCK], dtype=dtype)
    a, b, c, d = zero, zero, zero, zero
    if LOAD:
        a = tl.load(a_ptr + offs, mask=mask, other=0.0)
        if CURRENT:
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
            d = tl.load(d_ptr + offs, mask=mask, other=0.0)
        if MEMBRANE:
            c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    return a, b, c, d


@triton.jit
def _store4(a_ptr, b_ptr, c_ptr, d_ptr, a, b, c, d, offs, mask, CURRENT: tl.constexpr, MEMBRANE: tl.constexpr):
    """Store (v, i, m, xs) of one block, the units the neuron has."""
    tl.store(a_ptr + offs, a, mask=mask)
    if CURRENT:
        tl.store(b_ptr + offs, b, mask=mask)
        tl.store(d_ptr + offs, d, mask=mask)
    if MEMBRANE:
        tl.store(c_ptr + offs, c, mask=mask)


@triton.jit
def _forward_kernel(x_ptr, spikes_ptr, h_ptr, mseq_ptr, igrad_ptr, v_ptr, i_ptr, m_ptr, xs_ptr,
                    v_out, i_out, m_out, xs_out, c_ptr, T, N,
                    CURRENT: tl.constexpr, MEMBRANE: tl.constexpr, HARD: tl.constexpr, CLAMP_GE: tl.constexpr,
                    LOAD_STATE: tl.constexpr, PRECISE: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = _block(N, BLOCK)
    cdt = v_out.dtype.element_ty
    lam, vth, kc, km = _constants4(c_ptr, 0, cdt)
    v, ic, m, xs = _load4(v_ptr, i_ptr, m_ptr, xs_ptr, offs, mask, cdt, LOAD_STATE, CURRENT, MEMBRANE, BLOCK)
    for t in range(T):
        off = tl.cast(t, tl.int64) * N + offs
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
            u = u - s * _sigmoid(m, PRECISE)
        v = u
        if CURRENT:
            xs = xt * s
        tl.store(spikes_ptr + off, s.to(spikes_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptr + off, h, mask=mask)
    _store4(v_out, i_out, m_out, xs_out, v, ic, m, xs, offs, mask, CURRENT, MEMBRANE)


@triton.jit
def _backward_kernel(gs_ptr, x_ptr, h_ptr, mseq_ptr, igrad_ptr, gx_ptr, gv_ptr, gi_ptr, gm_ptr, gxs_ptr,
                     gv_out, gi_out, gm_out, gxs_out, gzz_ptr, gsum_ptr, c_ptr, T, N,
                     CURRENT: tl.constexpr, MEMBRANE: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr,
                     FAMILY: tl.constexpr, LOAD_GRADS: tl.constexpr, STORE_GRADS: tl.constexpr,
                     PRECISE: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = _block(N, BLOCK)
    cdt = gzz_ptr.dtype.element_ty
    lam, vth, kc, km = _constants4(c_ptr, 0, cdt)
    half_width, height, alpha, atan_scale = _constants4(c_ptr, 4, cdt)
    gv, gi, gm, gxs = _load4(gv_ptr, gi_ptr, gm_ptr, gxs_ptr, offs, mask, cdt, LOAD_GRADS, CURRENT, MEMBRANE, BLOCK)
    gzz = tl.zeros([BLOCK], dtype=gv.dtype)
    g_sum = tl.load(gsum_ptr).to(cdt)  # the gradient of the spike count (0 where nothing uses it)
    for j in range(T):
        off = tl.cast(T - 1 - j, tl.int64) * N + offs
        h = tl.load(h_ptr + off, mask=mask, other=0.0)
        s = tl.where(h >= vth, 1.0, 0.0).to(h.dtype)
        gs = tl.load(gs_ptr + off, mask=mask, other=0.0).to(h.dtype) + g_sum
        if CURRENT:
            if not DETACH:
                gs = gs + gxs * tl.load(x_ptr + off, mask=mask, other=0.0).to(h.dtype)
        gu = gv
        if MEMBRANE:
            if HARD:
                u = h * (1.0 - s)
            else:
                u = h - s * vth
            sig = _sigmoid(tl.load(mseq_ptr + off, mask=mask, other=0.0), PRECISE)
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
        z = h - vth
        gz = gs * _surrogate_grad(z, half_width, height, alpha, atan_scale, FAMILY, PRECISE)
        gzz = gzz + gz * z
        gh = gh + gz
        if CURRENT:
            tl.store(gx_ptr + off, (gh + gxs * s).to(gx_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(gx_ptr + off, gh.to(gx_ptr.dtype.element_ty), mask=mask)
        gv = gh * lam
        if CURRENT:
            passes = tl.load(igrad_ptr + off, mask=mask, other=0) != 0
            gi = tl.where(passes, gi - gh, gi) * kc
            gxs = gi
    if STORE_GRADS:
        _store4(gv_out, gi_out, gm_out, gxs_out, gv, gi, gm, gxs, offs, mask, CURRENT, MEMBRANE)
    tl.store(gzz_ptr + offs, gzz, mask=mask)


@functools.lru_cache(maxsize=8)
def _zero(device: torch.device) -> torch.Tensor:
    """A float64 0 on ``device``: the spike count's gradient where nothing uses the count (made once)."""
    return torch.zeros(1, dtype=torch.float64, device=device)


def device_guard(device: torch.device):
    """Launch on ``device``'s GPU whichever GPU is current (a no-op off CUDA)."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def _grid(N: int) -> tuple[int]:
    return (triton.cdiv(N, BLOCK),)


def check_device(x: torch.Tensor) -> None:
    """Raise ValueError unless Triton can run on ``x``'s device (CUDA, or any device when interpreting)."""
    if x.device.type != "cuda" and not INTERPRET:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor; got one on {x.device} "
            "(set TRITON_INTERPRET=1 before importing ilif to run the kernels on CPU tensors)"
        )


def _read(states, has, like: torch.Tensor) -> tuple[list[torch.Tensor], bool]:
    """(v, i, m, xs) as a kernel reads them, and whether it reads them: not at all when every unit the
    neuron has (``has``) is [0] (zero); else each such unit contiguous, a [0] among them made zeros."""
    given = any(s.numel() for s, unit in zip(states, has) if unit)
    if not given:
        return list(states), False
    return [(s.contiguous() if s.numel() else like.new_zeros(like.shape[1:])) if unit else s
            for s, unit in zip(states, has)], True


def _pointers(states, stand_in: torch.Tensor) -> list[torch.Tensor]:
    """Tensors to pass for (v, i, m, xs): each itself, or ``stand_in`` for a [0] the kernel does not touch."""
    return [s if s.numel() else stand_in for s in states]


def forward(x: torch.Tensor, state, kp: KernelFlags, constants: torch.Tensor):
    """Kernel forward; see ``_contract``. ``x`` [T, N] (any strides). A given state is read (all four:
    [0] among them made zeros), a zero one is not; only the neuron's units are stored."""
    x = x.contiguous()
    T, N = x.shape
    cdt = compute_dtype(x.dtype)
    spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    h_seq = torch.empty(x.shape, dtype=cdt, device=x.device)
    m_seq = torch.empty_like(h_seq) if kp.membrane else unused(x, cdt)
    i_grad = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if kp.current else unused(x, torch.uint8)
    state, given = _read(state, present(kp), h_seq)
    final = state_like(x, kp)
    with device_guard(x.device):
        _forward_kernel[_grid(N)](
            x, spikes, h_seq, m_seq if kp.membrane else h_seq, i_grad if kp.current else spikes,
            *_pointers(state, h_seq), *_pointers(final, h_seq), constants, T, N,
            CURRENT=kp.current, MEMBRANE=kp.membrane, HARD=kp.hard, CLAMP_GE=kp.clamp_ge, LOAD_STATE=given,
            PRECISE=PRECISE_EXP, BLOCK=BLOCK, enable_fp_fusion=False,
        )
    return spikes, h_seq, m_seq, i_grad, tuple(final)


def backward(grad_s, x, h_seq, m_seq, i_grad, grads, g_sum, initial: bool, kp: KernelFlags, constants: torch.Tensor):
    """Kernel backward; see ``_contract``. ``grad_s`` and ``x`` [T, N] (any strides; ``x`` as the forward
    was given it). Given final-state gradients are read (all four: [0] among them made zeros), zero ones
    are not; the initial state's are stored only when ``initial``."""
    grad_s = grad_s.contiguous()
    x = x.contiguous() if kp.current else h_seq
    T, N = h_seq.shape
    # The interpreter truncates float32 to bfloat16 where a GPU rounds to nearest even: there, grad_x is
    # written in the compute dtype and rounded by torch, as on a GPU.
    out_dtype = h_seq.dtype if INTERPRET else grad_s.dtype
    grad_x = torch.empty(h_seq.shape, dtype=out_dtype, device=h_seq.device)
    gz_z = h_seq.new_empty((N,))
    g_sum = g_sum.reshape(1) if g_sum.numel() else _zero(h_seq.device)
    grads, given = _read(grads, present(kp), h_seq)
    out = state_like(h_seq, kp, initial)
    with device_guard(h_seq.device):
        _backward_kernel[_grid(N)](
            grad_s, x, h_seq, m_seq if kp.membrane else h_seq, i_grad if kp.current else h_seq, grad_x,
            *_pointers(grads, gz_z), *_pointers(out, gz_z), gz_z, g_sum, constants, T, N,
            CURRENT=kp.current, MEMBRANE=kp.membrane, HARD=kp.hard, DETACH=kp.detach, FAMILY=kp.family,
            LOAD_GRADS=given, STORE_GRADS=initial, PRECISE=PRECISE_EXP, BLOCK=BLOCK, enable_fp_fusion=False,
        )
    return grad_x.to(grad_s.dtype), tuple(out), gz_z
