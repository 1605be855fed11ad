"""Shared pieces of the data layer: the data root, the dataset error, the description of a dataset."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ilif.errors import DatasetError  # noqa: F401  (the data modules raise it)


def data_root(root: Optional[str] = None) -> Path:
    """``root`` if given, else $ILIF_DATA, else ./data."""
    return Path(root or os.environ.get("ILIF_DATA") or "data").expanduser()


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a run need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int
    events: bool  # True: samples are [T, C, H, W] event frames; False: static [C, H, W] images
    split: str
    train_size: int
    test_size: int
    details: dict = field(default_factory=dict)


def remove_stale(path: Path) -> None:
    """Remove a half-built folder or file (a failed build's leftover) if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
