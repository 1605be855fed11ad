"""A compiled C kernel for the fused LIF/ILIF forward and backward on the CPU.

The kernel is plain C (no torch headers), built once with the system C compiler into a cache folder
(``$ILIF_KERNEL_CACHE``, default ``~/.cache/ilif``) and called through ctypes on the tensors' memory.
Each thread takes a block of neurons and runs all T steps over it with the state held in L1-sized
arrays, so every input is read once and every output written once (one pass over [T, N] forward, one
backward). Build failures (no compiler) make ``load(strict=False)`` return None and the torch loop is
used instead; all backends implement the same contract (see ``_contract``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch

from ._contract import KernelFlags, KernelParams, compute_dtype, kept, owned, unused
from .surrogate import Family

BLOCK = 512

_BODY = r"""
static inline __attribute__((always_inline)) REAL SFX(surrogate_grad)(
        REAL z, const int family, REAL half_width, REAL height, REAL alpha) {
    if (family == FAMILY_RECTANGLE) return FABS(z) <= half_width ? height : (REAL)0;
    if (family == FAMILY_TRIANGLE) { REAL r = (REAL)1 - FABS(z) / half_width; return r > 0 ? r * height : (REAL)0; }
    if (family == FAMILY_SIGMOID) { REAL sg = (REAL)1 / ((REAL)1 + EXP(-(z * alpha)));
                       return sg * ((REAL)1 - sg) * ((REAL)4 * height); }
    REAL q = z * ((REAL)(3.14159265358979323846 / 2.0) * alpha);
    return height / ((REAL)1 + q * q);
}

static inline __attribute__((always_inline)) void SFX(forward_block)(
        const REAL* x, REAL* spikes, REAL* h_seq, REAL* m_seq, uint8_t* i_grad,
        REAL* v_io, REAL* i_io, REAL* m_io, REAL* xs_io, int64_t T, int64_t N, int64_t b,
        REAL lam, REAL vth, REAL kc, REAL km, const int current, const int membrane, const int hard,
        const int clamp_ge) {
    {
        const int64_t n0 = b * BLOCK;
        const int64_t len = (N - n0) < BLOCK ? (N - n0) : BLOCK;
        REAL v[BLOCK], ic[BLOCK], m[BLOCK], xs[BLOCK];
        for (int64_t k = 0; k < len; ++k) {
            v[k] = v_io[n0 + k]; ic[k] = i_io[n0 + k]; m[k] = m_io[n0 + k]; xs[k] = xs_io[n0 + k];
        }
        for (int64_t t = 0; t < T; ++t) {
            const int64_t off = t * N + n0;
            #pragma omp simd
            for (int64_t k = 0; k < len; ++k) {
                const REAL xt = x[off + k];
                REAL h = lam * v[k];
                h = h + xt;
                if (current) {
                    const REAL i_new = kc * (ic[k] + xs[k]);
                    ic[k] = i_new;
                    i_grad[off + k] = (uint8_t)(clamp_ge ? i_new >= 0 : i_new > 0);
                    h = h - (i_new > 0 ? i_new : (REAL)0);
                }
                const REAL s = h >= vth ? (REAL)1 : (REAL)0;
                REAL u = hard ? h * ((REAL)1 - s) : h - s * vth;
                if (membrane) {
                    const REAL m_new = km * (m[k] + s * u);
                    m[k] = m_new;
                    m_seq[off + k] = m_new;
                    u = u - s * ((REAL)1 / ((REAL)1 + EXP(-m_new)));
                }
                v[k] = u;
                if (current) xs[k] = xt * s;
                spikes[off + k] = s;
                h_seq[off + k] = h;
            }
        }
        for (int64_t k = 0; k < len; ++k) {
            v_io[n0 + k] = v[k]; i_io[n0 + k] = ic[k]; m_io[n0 + k] = m[k]; xs_io[n0 + k] = xs[k];
        }
    }
}

static inline __attribute__((always_inline)) void SFX(backward_block)(
        const REAL* grad_s, const REAL* x, const REAL* h_seq, const REAL* m_seq, const uint8_t* i_grad,
        REAL* grad_x, REAL* gv_io, REAL* gi_io, REAL* gm_io, REAL* gxs_io, REAL* gz_z, int64_t T, int64_t N,
        int64_t b, REAL lam, REAL vth, REAL kc, REAL km, const int current, const int membrane, const int hard,
        const int detach, const int family, REAL half_width, REAL height, REAL alpha, const int add_sum, REAL g_sum) {
    {
        const int64_t n0 = b * BLOCK;
        const int64_t len = (N - n0) < BLOCK ? (N - n0) : BLOCK;
        REAL gv[BLOCK], gi[BLOCK], gm[BLOCK], gxs[BLOCK], gzz[BLOCK];
        for (int64_t k = 0; k < len; ++k) {
            gv[k] = gv_io[n0 + k]; gi[k] = gi_io[n0 + k]; gm[k] = gm_io[n0 + k]; gxs[k] = gxs_io[n0 + k];
            gzz[k] = 0;
        }
        for (int64_t t = T - 1; t >= 0; --t) {
            const int64_t off = t * N + n0;
            #pragma omp simd
            for (int64_t k = 0; k < len; ++k) {
                const REAL h = h_seq[off + k];
                const REAL s = h >= vth ? (REAL)1 : (REAL)0;
                REAL gs = grad_s[off + k];
                if (add_sum) gs = gs + g_sum;
                REAL gx_extra = 0;
                if (current) {
                    gx_extra = gxs[k] * s;
                    if (!detach) gs = gs + gxs[k] * x[off + k];
                }
                REAL gu = gv[k];
                if (membrane) {
                    const REAL u = hard ? h * ((REAL)1 - s) : h - s * vth;
                    const REAL sig = (REAL)1 / ((REAL)1 + EXP(-m_seq[off + k]));
                    const REAL gm_total = gm[k] - gv[k] * s * sig * ((REAL)1 - sig);
                    if (!detach) gs = gs - gv[k] * sig + km * gm_total * u;
                    gu = gu + km * gm_total * s;
                    gm[k] = gm_total * km;
                }
                REAL gh;
                if (hard) { gh = gu * ((REAL)1 - s); if (!detach) gs = gs - gu * h; }
                else { gh = gu; if (!detach) gs = gs - gu * vth; }
                const REAL z = h - vth;
                const REAL gz = gs * SFX(surrogate_grad)(z, family, half_width, height, alpha);
                gzz[k] = gzz[k] + gz * z;
                gh = gh + gz;
                grad_x[off + k] = gh + gx_extra;
                gv[k] = gh * lam;
                if (current) {
                    const REAL gi_total = i_grad[off + k] ? gi[k] - gh : gi[k];
                    gi[k] = gi_total * kc;
                    gxs[k] = gi_total * kc;
                }
            }
        }
        for (int64_t k = 0; k < len; ++k) {
            gv_io[n0 + k] = gv[k]; gi_io[n0 + k] = gi[k]; gm_io[n0 + k] = gm[k]; gxs_io[n0 + k] = gxs[k];
            gz_z[n0 + k] = gzz[k];
        }
    }
}

void SFX(neuron_forward)(const REAL* x, REAL* spikes, REAL* h_seq, REAL* m_seq, uint8_t* i_grad,
                         REAL* v_io, REAL* i_io, REAL* m_io, REAL* xs_io,
                         int64_t T, int64_t N, double lam, double vth, double kc, double km,
                         int current, int membrane, int hard, int clamp_ge, int nthreads) {
    const int64_t nblocks = (N + BLOCK - 1) / BLOCK;
    const int key = (clamp_ge << 3) | (current << 2) | (membrane << 1) | hard;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t b = 0; b < nblocks; ++b) {
        switch (key) {
FORWARD_CASES
        }
    }
}

void SFX(neuron_backward)(const REAL* grad_s, const REAL* x, const REAL* h_seq, const REAL* m_seq,
                          const uint8_t* i_grad, REAL* grad_x,
                          REAL* gv_io, REAL* gi_io, REAL* gm_io, REAL* gxs_io, REAL* gz_z, const REAL* g_sum_io,
                          int64_t T, int64_t N, double lam, double vth, double kc, double km,
                          int current, int membrane, int hard, int detach,
                          int family, double half_width, double height, double alpha, int nthreads) {
    const int64_t nblocks = (N + BLOCK - 1) / BLOCK;
    const int add_sum = g_sum_io != 0;
    const REAL g_sum = add_sum ? g_sum_io[0] : (REAL)0;
    const int key = (family << 4) | (current << 3) | (membrane << 2) | (hard << 1) | detach;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t b = 0; b < nblocks; ++b) {
        switch (key) {
BACKWARD_CASES
        }
    }
}
"""


def _cases() -> tuple[str, str]:
    """The switch cases that call the cores with compile-time flags, so each combination is specialised
    (no branch on a flag inside the inner loop, which then vectorises)."""
    fwd, bwd = [], []
    for key in range(16):
        ge, c, m, hd = key >> 3, key >> 2 & 1, key >> 1 & 1, key & 1
        fwd.append(
            f"        case {key}: SFX(forward_block)(x, spikes, h_seq, m_seq, i_grad, v_io, i_io, m_io, xs_io, "
            f"T, N, b, (REAL)lam, (REAL)vth, (REAL)kc, (REAL)km, {c}, {m}, {hd}, {ge}); break;"
        )
    for key in range(16 * len(Family)):
        fam, c, m, hd, det = key >> 4, key >> 3 & 1, key >> 2 & 1, key >> 1 & 1, key & 1
        bwd.append(
            f"        case {key}: SFX(backward_block)(grad_s, x, h_seq, m_seq, i_grad, grad_x, gv_io, gi_io, gm_io, "
            f"gxs_io, gz_z, T, N, b, (REAL)lam, (REAL)vth, (REAL)kc, (REAL)km, {c}, {m}, {hd}, {det}, {fam}, "
            f"(REAL)half_width, (REAL)height, (REAL)alpha, add_sum, g_sum); break;"
        )
    return "\n".join(fwd), "\n".join(bwd)


def _source() -> str:
    # Declaring exp as a SIMD function lets the compiler call glibc's vector exp (libmvec) inside the
    # vectorised loops without -ffast-math.
    head = (
        f"#include <stdint.h>\n#include <math.h>\n#define BLOCK {BLOCK}\n"
        + "".join(f"#define FAMILY_{member.name} {int(member)}\n" for member in Family) +
        '__attribute__((simd("notinbranch"))) float expf(float);\n'
        '__attribute__((simd("notinbranch"))) double exp(double);\n'
    )
    fwd_cases, bwd_cases = _cases()
    body = _BODY.replace("FORWARD_CASES", fwd_cases).replace("BACKWARD_CASES", bwd_cases)
    parts = [head]
    for real, suffix, exp, fabs in (("float", "f32", "expf", "fabsf"), ("double", "f64", "exp", "fabs")):
        parts.append(
            f"#define REAL {real}\n#define SFX(name) name##_{suffix}\n#define EXP {exp}\n#define FABS {fabs}\n"
            + body
            + "#undef REAL\n#undef SFX\n#undef EXP\n#undef FABS\n"
        )
    return "".join(parts)


def _cpu_signature() -> str:
    """Part of the cache key: the library is built with -march=native for this processor."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return platform.machine() + "".join(wanted)


_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
_LIBS = ["-lmvec", "-lm"]
_lib: Optional[ctypes.CDLL] = None
_failed: Optional[str] = None


def _cache_dir() -> Path:
    return Path(os.environ.get("ILIF_KERNEL_CACHE", Path.home() / ".cache" / "ilif"))


def _private(path: Path) -> bool:
    """Whether ``path`` is this user's own (not a link, owned by this user, writable by no one else)."""
    info = os.lstat(path)
    return not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trusted(target: Path) -> bool:
    """Whether a cached kernel may be loaded: a regular file in a folder, both this user's own
    (:func:`_private`), whose content has the digest its build recorded beside it (``.sha256``, also
    this user's own). Anything else is built again, never loaded."""
    record = target.with_suffix(".sha256")
    try:
        return (_private(target.parent) and _private(target) and stat.S_ISREG(os.lstat(target).st_mode)
                and _private(record) and record.read_text().strip() == _digest_file(target))
    except OSError:
        return False


def _build(source: str, target: Path) -> None:
    """Compile ``source`` into ``target`` and record its digest beside it (``.sha256``), each file moved
    into place whole: concurrent builders never see a half-written library."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "neuron_kernel.c"
        src.write_text(source)
        out = Path(tmp) / target.name
        proc = subprocess.run([compiler, *_FLAGS, str(src), "-o", str(out), *_LIBS], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
        record = Path(tmp) / "digest"
        record.write_text(_digest_file(out) + "\n")
        os.replace(record, target.with_suffix(".sha256"))
        os.replace(out, target)


def _cache_folder() -> tuple[Path, bool]:
    """The kernel cache (made private when it is new), or, when the cache is not this user's own
    (another user could have put a library there), a private temporary folder of this process's, to
    be removed once the library is loaded: (folder, whether it is temporary)."""
    folder = _cache_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _private(folder):
        return folder, False
    warnings.warn(f"ilif: {folder} is not yours alone (owner or permissions); the C neuron kernel is built in a "
                  "private temporary folder instead", RuntimeWarning)
    return Path(tempfile.mkdtemp(prefix="ilif-kernel-")), True


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, d, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"neuron_forward_{suffix}")
        fwd.argtypes = [p] * 9 + [i64, i64, d, d, d, d, c_int, c_int, c_int, c_int, c_int]
        fwd.restype = None
        bwd = getattr(lib, f"neuron_backward_{suffix}")
        bwd.argtypes = [p] * 12 + [i64, i64, d, d, d, d, c_int, c_int, c_int, c_int, c_int, d, d, d, c_int]
        bwd.restype = None


def load(strict: bool = False) -> Optional[ctypes.CDLL]:
    """Build (once, cached by source hash) and load the kernel; None if it cannot be built and not strict."""
    global _lib, _failed
    if _lib is not None:
        return _lib
    if _failed is not None and not strict:
        return None
    source = _source()
    digest = hashlib.sha256("\n".join([source, *_FLAGS, *_LIBS, _cpu_signature()]).encode()).hexdigest()[:16]
    try:
        folder, temporary = _cache_folder()
        target = folder / f"neuron_kernel_{digest}.so"
        try:
            if not trusted(target):
                _build(source, target)
            lib = ctypes.CDLL(str(target))
        finally:
            if temporary:  # a loaded library stays mapped once its file is gone
                shutil.rmtree(folder, ignore_errors=True)
        _declare(lib)
    except (OSError, RuntimeError) as err:
        _failed = str(err)
        if strict:
            raise RuntimeError(f"the C neuron kernel could not be built: {err}") from err
        warnings.warn(f"ilif: C neuron kernel unavailable ({err}); using the torch loop", RuntimeWarning)
        return None
    _lib = lib
    return lib


def _ptr(t: torch.Tensor) -> Optional[int]:
    return t.data_ptr() if t.numel() else None


def _suffix(x: torch.Tensor) -> str:
    return "f32" if x.dtype == torch.float32 else "f64"


def forward(x, state, flags: KernelFlags, constants: torch.Tensor):
    """Kernel forward; see ``_contract``. ``x`` [T, N] on the CPU."""
    kp = KernelParams.of(flags, constants)
    lib = load(strict=True)
    out_dtype = x.dtype
    x = x.to(compute_dtype(x.dtype)).contiguous()
    T, N = x.shape
    spikes = torch.empty_like(x)
    h_seq = torch.empty_like(x)
    v, i, m, xs = owned(state, x)
    m_seq = torch.empty_like(x) if kp.membrane else unused(x, x.dtype)
    i_grad = torch.empty(x.shape, dtype=torch.uint8) if kp.current else unused(x, torch.uint8)
    getattr(lib, f"neuron_forward_{_suffix(x)}")(
        _ptr(x), _ptr(spikes), _ptr(h_seq), _ptr(m_seq), _ptr(i_grad),
        _ptr(v), _ptr(i), _ptr(m), _ptr(xs),
        T, N, kp.lam, kp.vth, kp.kc, kp.km,
        int(kp.current), int(kp.membrane), int(kp.hard), int(kp.clamp_ge), torch.get_num_threads(),
    )
    return spikes.to(out_dtype), h_seq, m_seq, i_grad, kept((v, i, m, xs), flags)


def backward(grad_s, x, h_seq, m_seq, i_grad, grads, g_sum, initial: bool, flags: KernelFlags,
             constants: torch.Tensor):
    """Kernel backward; see ``_contract``."""
    kp = KernelParams.of(flags, constants)
    gv, gi, gm, gxs = owned(grads, h_seq)
    lib = load(strict=True)
    out_dtype = grad_s.dtype
    grad_s = grad_s.to(h_seq.dtype).contiguous()
    x = x.to(h_seq.dtype).contiguous()
    T, N = h_seq.shape
    grad_x = torch.empty_like(h_seq)
    gz_z = torch.empty_like(gv)
    g_sum = g_sum.to(h_seq.dtype)  # held here: the kernel reads its memory
    getattr(lib, f"neuron_backward_{_suffix(h_seq)}")(
        _ptr(grad_s), _ptr(x), _ptr(h_seq), _ptr(m_seq), _ptr(i_grad), _ptr(grad_x),
        _ptr(gv), _ptr(gi), _ptr(gm), _ptr(gxs), _ptr(gz_z), _ptr(g_sum),
        T, N, kp.lam, kp.vth, kp.kc, kp.km,
        int(kp.current), int(kp.membrane), int(kp.hard), int(kp.detach),
        kp.family, kp.half_width, kp.height, kp.alpha, torch.get_num_threads(),
    )
    return grad_x.to(out_dtype), kept((gv, gi, gm, gxs), flags, initial), gz_z
