"""Smoke test of the Triton kernels on a device: spikes and gradients against the torch loop on the same
device and against the C kernel on CPU copies, in float32, bfloat16 and float16, on contiguous and
non-contiguous inputs, with the launches run under ``torch.cuda.set_sync_debug_mode("error")`` (a launch
that waits for the GPU fails). Prints one markdown row per case as it is measured.

    python scripts/kernel_smoke.py                      # CUDA
    TRITON_INTERPRET=1 python scripts/kernel_smoke.py --device cpu --N 2000   # dry run on the CPU
    python scripts/kernel_smoke.py --big                # T·N > 2³¹ elements (about 40 GB of GPU memory)
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from ilif.neurons import NeuronParams, Surrogate, multistep

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NEURONS = {
    "LIF": NeuronParams(tau=2.0, surrogate=Surrogate("sigmoid", 1.0)),
    "ILIF": NeuronParams(tau=1.1, surrogate=Surrogate("sigmoid", 1.0), current_inhibition=True,
                         membrane_inhibition=True),
}


def layouts(T: int, N: int, dtype, device):
    """(name, leaf, x [T, N]) for a row-major, a sliced and a transposed input."""
    gen = torch.Generator().manual_seed(0)
    dense = (torch.randn(T, N, generator=gen) * 1.5 + 0.4).to(device, dtype).requires_grad_()
    wide = (torch.randn(T, 2, N, generator=gen) * 1.5 + 0.4).to(device, dtype).requires_grad_()
    tall = (torch.randn(N, T, generator=gen) * 1.5 + 0.4).to(device, dtype).requires_grad_()
    return [("row-major", dense, lambda: dense), ("sliced", wide, lambda: wide[:, 1]),
            ("transposed", tall, lambda: tall.t())]


def run(params, leaf, make, backend: str, sync_check: bool):
    """Spikes and d(Σ w·s)/d leaf, both as float64 CPU tensors (copied after the checked block)."""
    with _sync_errors() if sync_check else contextlib.nullcontext():
        spikes, _, _ = multistep(make(), None, params, backend=backend)
        weights = torch.linspace(-1, 1, spikes.numel(), device=spikes.device).view(spikes.shape).to(spikes.dtype)
        (grad,) = torch.autograd.grad((spikes * weights).sum(), leaf)
    return spikes.double().cpu(), grad.double().cpu()


@contextlib.contextmanager
def _sync_errors():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def compare(T: int, N: int, device: str) -> bool:
    print("| neuron | dtype | input | spikes ≠ torch loop | spikes ≠ C (CPU) | max grad err vs torch loop | "
          "vs C (CPU) | launch without a sync |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for neuron, params in NEURONS.items():
        for dname, dtype in DTYPES.items():
            for lname, leaf, make in layouts(T, N, dtype, device):
                run(params, leaf, make, "triton", False)  # warm-up: compile, constants made once
                sync = "not checked (CPU)"
                if device == "cuda":
                    try:
                        run(params, leaf, make, "triton", True)
                        sync = "yes"
                    except RuntimeError as err:  # a synchronising call inside the forward or backward
                        sync = f"no ({str(err).splitlines()[0][:60]})"
                spikes, grad = run(params, leaf, make, "triton", False)
                ref_s, ref_g = run(params, leaf, make, "torch", False)
                cpu_leaf = leaf.detach().cpu().requires_grad_()
                rebuild = {"row-major": lambda: cpu_leaf, "sliced": lambda: cpu_leaf[:, 1],
                           "transposed": lambda: cpu_leaf.t()}[lname]
                c_s, c_g = run(params, cpu_leaf, rebuild, "c", False)
                scale = max(ref_g.abs().max().item(), 1.0)
                err_t = (grad - ref_g).abs().max().item() / scale
                err_c = (grad - c_g).abs().max().item() / scale
                diff_t = int((spikes != ref_s).sum())
                diff_c = int((spikes != c_s).sum())
                tol = 1e-5 if dtype == torch.float32 else 1e-2
                row_ok = diff_t == 0 and err_t <= tol and err_c <= tol and not sync.startswith("no (")
                ok &= row_ok
                print(f"| {neuron} | {dname} | {lname} | {diff_t} | {diff_c} | {err_t:.1e} | {err_c:.1e} | "
                      f"{sync} |{'' if row_ok else ' **FAIL**'}", flush=True)
    return ok


def big(device: str) -> bool:
    """T·N > 2³¹: a LIF layer whose every neuron spikes at t = 0 and t = 2 only; the last neuron's spikes
    and gradient are checked (a wrapped 32-bit offset writes them elsewhere)."""
    T, N = 3, 2**31 // 3 + 1024
    x = torch.zeros(T, N, dtype=torch.float16, device=device)
    x[0] = 1.5
    x[2] = 1.5
    x.requires_grad_()
    spikes, _, _ = multistep(x, None, NEURONS["LIF"], backend="triton")
    tail = spikes[:, -4:].float().cpu()
    expected = torch.tensor([1.0, 0.0, 1.0]).view(3, 1).expand(3, 4)
    spikes.sum().backward()
    ok = torch.equal(tail, expected) and bool(torch.isfinite(x.grad[:, -4:]).all()) and x.grad[2, -1].item() > 0
    print(f"| T·N = {T * N:,} (> 2³¹) | last neuron's spikes {tail[:, -1].tolist()} | gradient finite and > 0 at t=2: "
          f"{ok} |{'' if ok else ' **FAIL**'}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--T", type=int, default=6)
    parser.add_argument("--N", type=int, default=2**16 + 77)
    parser.add_argument("--big", action="store_true", help="only the T·N > 2³¹ probe")
    args = parser.parse_args()
    ok = big(args.device) if args.big else compare(args.T, args.N, args.device)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
