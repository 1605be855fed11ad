"""The Triton kernels compiled for real GPU targets on a machine without a GPU (Triton's own compiler
and ``ptxas``): every specialisation the trainer can launch, its IR, PTX and ptxas' resource report.

Compiling needs the kernels as Triton JIT functions, so it runs in a process without
``TRITON_INTERPRET`` (the suite's own processes interpret them):

    python tests/triton_targets.py subset|all   # one JSON object per specialisation on stdout
"""

from __future__ import annotations

import itertools
import json
import sys
import re
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

from ilif.neurons import _triton_kernel as tk

#: (input dtype, compute dtype) as Triton spells them: the precision policy of ``_contract``
DTYPES = (("fp32", "fp32"), ("bf16", "fp32"), ("fp16", "fp32"), ("fp64", "fp64"))
ARCHS = (80, 90)
FORWARD_FLAGS = tuple(dict(zip(("CURRENT", "MEMBRANE", "HARD", "CLAMP_GE", "LOAD_STATE"), f))
                      for f in itertools.product((False, True), repeat=5))
BACKWARD_FLAGS = tuple(dict(zip(("CURRENT", "MEMBRANE", "HARD", "DETACH", "LOAD_GRADS", "STORE_GRADS", "FAMILY"),
                                (*f, family)))
                       for f in itertools.product((False, True), repeat=6) for family in range(4))


class Compiled(NamedTuple):
    ttir: str
    ptx: str
    registers: int
    spill_bytes: int  # spill stores + spill loads reported by ptxas


def _signature(kind: str, flags: dict, dtype: str, cdt: str) -> dict:
    ptr = {"in": f"*{dtype}", "c": f"*{cdt}", "u8": "*u8"}
    if kind == "forward":
        names = [("x_ptr", "in"), ("spikes_ptr", "in"), ("h_ptr", "c"), ("mseq_ptr", "c"),
                 ("igrad_ptr", "u8" if flags["CURRENT"] else "in")]
    else:
        names = [("gs_ptr", "in"), ("x_ptr", "in" if flags["CURRENT"] else "c"), ("h_ptr", "c"), ("mseq_ptr", "c"),
                 ("igrad_ptr", "u8" if flags["CURRENT"] else "c"), ("gx_ptr", "in")]
        names += [(n, "c") for n in ("gv_ptr", "gi_ptr", "gm_ptr", "gxs_ptr", "gv_out", "gi_out", "gm_out", "gxs_out",
                                     "gzz_ptr")] + [("gsum_ptr", "f64")]
    if kind == "forward":
        names += [(n, "c") for n in ("v_ptr", "i_ptr", "m_ptr", "xs_ptr", "v_out", "i_out", "m_out", "xs_out")]
    ptr["f64"] = "*fp64"  # the constants and the spike count's gradient: float64 whatever the compute dtype
    sig = {name: ptr[p] for name, p in names}
    sig.update({"c_ptr": ptr["f64"], "T": "i32", "N": "i32"})
    sig.update({name: "constexpr" for name in (*flags, "PRECISE", "BLOCK")})
    return sig


def compile_kernel(kind: str, flags: dict, dtype: str, cdt: str, arch: int) -> Compiled:
    """Compile ``_forward_kernel`` or ``_backward_kernel`` for ``sm_{arch}`` as ``forward``/``backward``
    launch it (libdevice exp, FMA contraction off), then assemble its PTX with ``ptxas -v``."""
    fn = tk._forward_kernel if kind == "forward" else tk._backward_kernel
    constexprs = {**flags, "PRECISE": True, "BLOCK": tk.BLOCK}
    source = ASTSource(fn=fn, signature=_signature(kind, flags, dtype, cdt), constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"enable_fp_fusion": False})
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        target = re.search(r"^\.target (\w+)", ptx, re.M).group(1)  # sm_80, sm_90a
        report = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={target}", str(path), "-o",
                                 str(Path(tmp) / "kernel.cubin")], capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", report))
    return Compiled(compiled.asm["ttir"], ptx, registers, spills)


def thirty_two_bit_multiplies(ttir: str) -> list[str]:
    """The TTIR lines that multiply integers in 32 bits (an address computed that way wraps at 2³¹)."""
    return [line.strip() for line in ttir.splitlines() if re.search(r"arith\.muli .*: (tensor<\d+x)?i32", line)]


# What the trainer launches: LIF (no unit) and ILIF (both units), soft reset, every surrogate, from a zero
# state and with no gradient of the final one, in bfloat16 (AMP) and float32, for both GPU generations.
def _trainer_launches(flags: dict) -> bool:
    return flags["CURRENT"] == flags["MEMBRANE"] and not flags["HARD"] and not flags.get("DETACH") \
        and flags.get("CLAMP_GE", True) and not any(flags.get(k) for k in ("LOAD_STATE", "LOAD_GRADS", "STORE_GRADS"))


def cases(which: str) -> list[tuple[str, dict, str, str, int]]:
    """(kind, flags, input dtype, compute dtype, arch) of the ``subset`` the trainer launches, or ``all``."""
    dtypes = DTYPES if which == "all" else DTYPES[:2]
    return [(kind, flags, dtype, cdt, arch) for arch in ARCHS for dtype, cdt in dtypes
            for kind, grid in (("forward", FORWARD_FLAGS), ("backward", BACKWARD_FLAGS))
            for flags in grid if which == "all" or _trainer_launches(flags)]


def main(which: str) -> None:
    for kind, flags, dtype, cdt, arch in cases(which):
        compiled = compile_kernel(kind, flags, dtype, cdt, arch)
        print(json.dumps({"kind": kind, "flags": flags, "dtype": dtype, "arch": arch, "registers": compiled.registers,
                          "spill_bytes": compiled.spill_bytes,
                          "muls_32bit": thirty_two_bit_multiplies(compiled.ttir),
                          "approx_division": "div.full.f32" in compiled.ptx or "div.approx" in compiled.ptx,
                          "ieee_division": "div.rn.f32" in compiled.ptx or "div.rn.f64" in compiled.ptx}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
