"""The memory traffic of one neuron layer's training step on a GPU, counted on any machine: the bytes
the Triton kernels load and store per neuron per time step, and the launches per layer call (forward
and backward), for our LIF and ILIF (fp32 and bf16 input; ``trainer.memory`` standard and lean) and
spikingjelly 2.0.0's Triton LIF kernels (its installed source; its LIFNode's defaults: input decay, hard
reset, sigmoid surrogate), at the same T and neuron count.

The kernels run under Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set here before
Triton is imported); every load and store the interpreter executes is counted, masked lanes left out.
The kernels are memory-bound, so on a GPU their time follows these bytes. The torch ops our custom ops
run around the kernels (a zero, the spike count's sum) are launches too, counted as leaf ATen ops that
compute; their bytes are not in the kernel column. One difference from a GPU: the interpreter rounds
float32 to bfloat16 by truncation, so with bf16 input our backward writes grad_x in float32 there and
casts it (2 bytes per neuron-step and one launch more than on a GPU, which writes bfloat16 at once).

    python scripts/bench_kernels.py            # T = 6, 65,536 neurons
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

#: ATen ops that launch no kernel: allocations, views and metadata
NO_KERNEL = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty", "aten::view",
             "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::expand", "aten::detach",
             "aten::alias", "aten::lift_fresh", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice",
             "aten::t", "aten::transpose", "aten::permute", "aten::resolve_conj", "aten::resolve_neg",
             "aten::is_nonzero", "aten::result_type", "aten::contiguous", "aten::_unsafe_view", "aten::flatten",
             "aten::to"}  # (a leaf aten::to is a no-op; a real cast shows as its aten::copy_)


class Traffic:
    """Bytes the interpreted Triton kernels load and store, and their launches, while installed."""

    def __init__(self):
        self.loaded = self.stored = self.launches = 0
        builder = interpreter.InterpreterBuilder
        self._saved = (builder.create_masked_load, builder.create_masked_store, interpreter.GridExecutor.__call__)

    def __enter__(self):
        builder = interpreter.InterpreterBuilder
        load, store, launch = self._saved
        traffic = self

        def counted_load(this, ptrs, mask, *rest):
            traffic.loaded += int(mask.data.sum()) * ptrs.get_element_ty().primitive_bitwidth // 8
            return load(this, ptrs, mask, *rest)

        def counted_store(this, ptrs, value, mask, *rest):
            traffic.stored += int(mask.data.sum()) * ptrs.get_element_ty().primitive_bitwidth // 8
            return store(this, ptrs, value, mask, *rest)

        def counted_launch(this, *args, **kwargs):
            traffic.launches += 1
            with record_function("triton launch"):
                return launch(this, *args, **kwargs)

        builder.create_masked_load, builder.create_masked_store = counted_load, counted_store
        interpreter.GridExecutor.__call__ = counted_launch
        return self

    def __exit__(self, *exc):
        builder = interpreter.InterpreterBuilder
        builder.create_masked_load, builder.create_masked_store, interpreter.GridExecutor.__call__ = self._saved


def torch_launches(prof) -> int:
    """Leaf ATen ops that compute (a kernel launch each on a GPU), outside the Triton launches (the
    interpreter's own copies)."""
    events = prof.events()
    inside = set()
    for event in events:
        if event.name == "triton launch":
            inside.add(event.id)
    count = 0
    for event in events:
        if not event.name.startswith("aten::") or event.name in NO_KERNEL or event.cpu_children:
            continue
        parent, skip = event.cpu_parent, False
        while parent is not None:
            if parent.id in inside:
                skip = True
                break
            parent = parent.cpu_parent
        count += not skip
    return count


def ours(neuron: str, dtype: torch.dtype, memory: str, T: int, N: int):
    """One layer of our neuron, multi-step from a zero state: forward and backward."""
    from spikingjelly.activation_based import functional

    from ilif.neurons import ILIF, LIF
    from ilif.train.build import set_memory

    layer = torch.nn.Sequential({"LIF": LIF, "ILIF": ILIF}[neuron](step_mode="m", backend="triton"))
    set_memory(layer, memory)
    x = (torch.randn(T, N) + 0.5).to(dtype).requires_grad_()
    grad = torch.randn(T, N).to(dtype)

    def step():
        functional.reset_net(layer)
        x.grad = None  # (accumulating into x.grad is the caller's, not the layer's)
        layer(x).backward(grad)

    return step


def spikingjelly(dtype: torch.dtype, T: int, N: int):
    """spikingjelly's Triton LIF forward and backward kernels, launched as its wrapper launches them."""
    from spikingjelly._ops.lif import triton as sj

    x = (torch.randn(T, N) + 0.5).to(dtype)
    v = torch.zeros(N, dtype=torch.float32)
    grad = torch.randn(T, N).to(dtype)
    grid = (triton.cdiv(N, 256),)

    def step():
        spikes, voltages, charged = torch.empty_like(x), torch.empty_like(v), torch.empty(x.shape)
        sj._forward_kernel[grid](x, v, spikes, voltages, charged, T, N, 2.0, 1.0, 0.0, True, False, False, 256, None,
                                 enable_fp_fusion=False)
        gx, gv_init = torch.empty_like(charged, dtype=grad.dtype), torch.empty_like(v)
        sj._backward_kernel[grid](grad, torch.zeros_like(v), charged, gx, gv_init, T, N, 2.0, 1.0, 0.0, 4.0, True,
                                  False, False, 1, False, 1, 256, None, enable_fp_fusion=False)

    return step


def measure(step, T: int, N: int) -> dict:
    step()  # the first call compiles nothing here but fills the caches
    with Traffic() as traffic, profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {"bytes": (traffic.loaded + traffic.stored) / (T * N), "loaded": traffic.loaded / (T * N),
            "stored": traffic.stored / (T * N), "triton": traffic.launches, "torch": torch_launches(prof)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=6)
    parser.add_argument("--N", type=int, default=65536)
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    T, N = args.T, args.N
    rows = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        rows[f"spikingjelly Triton LIF, {name}"] = measure(spikingjelly(dtype, T, N), T, N)
        for neuron in ("LIF", "ILIF"):
            for memory in ("standard", "lean"):
                rows[f"{neuron} (ours), {memory}, {name}"] = measure(ours(neuron, dtype, memory, T, N), T, N)
    lines = [f"One layer, T = {T}, {N} neurons, forward + backward from a zero state; bytes per neuron per time "
             f"step counted from the kernels under Triton's interpreter (torch {torch.__version__}, triton "
             f"{triton.__version__}). Made by `python scripts/bench_kernels.py --T {T} --N {N}"
             f"{f' --out {args.out}' if args.out else ''}`.", "",
             "| neuron, memory, input | kernel bytes / neuron-step | loaded | stored | × spikingjelly "
             "| Triton launches | torch ops that launch | launches per layer call |",
             "|---|---|---|---|---|---|---|---|"]
    for row, r in rows.items():
        sj = rows[f"spikingjelly Triton LIF, {row.rsplit(', ', 1)[1]}"]["bytes"]
        lines.append(f"| {row} | {r['bytes']:.1f} | {r['loaded']:.1f} | {r['stored']:.1f} | {r['bytes'] / sj:.2f} | "
                     f"{r['triton']} | {r['torch']} | {r['triton'] + r['torch']} |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("# Memory traffic of the neuron kernels\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
