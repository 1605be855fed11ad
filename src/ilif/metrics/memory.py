"""What autograd keeps for the backward pass, counted exactly: the same bytes on any device, so a CPU
measures what a GPU will hold (the activation memory that grows with T and batch)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


def resident(model: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors ``model`` holds whatever it computes: its parameters, buffers and the fused neurons'
    ``kernel_constants`` (what :func:`saved_for_backward` leaves out)."""
    constants = [m.kernel_constants for m in model.modules() if torch.is_tensor(getattr(m, "kernel_constants", None))]
    return [*model.parameters(), *model.buffers(), *constants]


def saved_for_backward(forward: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> tuple[Any, dict]:
    """Run ``forward`` (a forward pass that builds a graph) and count the tensors autograd saves for its
    backward: each storage once, whole, however many ops or views save it (our neurons' custom ops
    included); the storages of ``exclude`` (:func:`resident`: the model's own tensors) left out. Returns
    (``forward``'s result, which keeps the graph alive; ``{"bytes", "storages", "by_dtype": {dtype name:
    bytes}}``)."""
    excluded = {tensor.untyped_storage().data_ptr() for tensor in exclude}
    storages: dict[tuple, tuple[int, torch.dtype]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if storage.data_ptr() not in excluded and storage.nbytes():
            storages.setdefault(key, (storage.nbytes(), tensor.dtype))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    by_dtype: dict[str, int] = {}
    for nbytes, dtype in storages.values():
        by_dtype[str(dtype).removeprefix("torch.")] = by_dtype.get(str(dtype).removeprefix("torch."), 0) + nbytes
    return result, {"bytes": sum(by_dtype.values()), "storages": len(storages), "by_dtype": by_dtype}
