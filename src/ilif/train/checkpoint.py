"""Checkpoints that load with ``torch.load(weights_only=True)``, written atomically, with every RNG state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ilif.rundir import atomic_write


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save through :func:`ilif.rundir.atomic_write`: never a truncated checkpoint."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load(path: Path) -> dict:
    """A checkpoint, every tensor on the CPU: the RNG states must stay there (``torch.set_rng_state`` takes
    a CPU ByteTensor), and ``load_state_dict`` moves model and optimiser tensors to their parameters'
    device."""
    return torch.load(path, map_location="cpu", weights_only=True)
