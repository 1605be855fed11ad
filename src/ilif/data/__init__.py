"""Datasets: the offline digits default and its two temporal forms (seqdigits, ndigits), CIFAR-10/100,
CIFAR10-DVS, DVS128 Gesture and ImageNet.

``build(cfg)`` returns (train, test, info) for ``cfg.name``; ``make_loader`` wraps a dataset in a
DataLoader with the configured workers and pinned memory. Static samples are [C, H, W] images, event
samples [T, C, H, W] frames; models take batches of either.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from ilif.conf import import_dotted
from ilif.rundir import close_inherited_locks

from .common import DatasetError, DatasetInfo, data_root
from .neuromorphic import cifar10_dvs, dvs_gesture
from .standin import stand_in
from .static import Cutout, cifar, digits, imagenet
from .temporal import ndigits, seqdigits

NAMES = ("digits", "seqdigits", "ndigits", "cifar10", "cifar100", "cifar10_dvs", "dvs_gesture", "imagenet")


def build(cfg: Mapping[str, Any]) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Build the train and test sets named by ``cfg["name"]``.

    Keys (all optional but ``name``): ``root`` (data root; default $ILIF_DATA or ./data), ``T`` (frames
    of event data), ``split`` (cifar10_dvs: reference | random), ``split_seed``, ``preprocess``
    (event frames: clean | reference), ``download`` (CIFAR: fetch when missing), ``augment``, and
    ``stand_in`` (tiny random data of the dataset's kind, for smoke runs; ``stand_in_size``, ``stand_in_samples``),
    and ``builder``: the dotted path of a function ``(cfg: dict) -> (train, test, DatasetInfo)`` for a
    dataset that lives outside this package (then ``name`` may be anything; the function gets the
    whole dict and honours ``stand_in`` itself).
    Raises DatasetError (one line: dataset, path, expected files, source) when data is missing or corrupt.
    """
    name = cfg["name"]
    if cfg.get("builder"):
        return builder_function(cfg["builder"])(dict(cfg))
    if name not in NAMES:
        raise ValueError(f"dataset={name!r} is not allowed: choose one of {NAMES}")
    root = data_root(cfg.get("root"))
    if cfg.get("stand_in"):
        return stand_in(name, T=cfg.get("T", 4), size=cfg.get("stand_in_size", 16),
                        samples=cfg.get("stand_in_samples", 16))
    if name == "digits":
        return digits(split_seed=cfg.get("split_seed", 0))
    if name == "seqdigits":
        return seqdigits(T=cfg.get("T", 8), split_seed=cfg.get("split_seed", 0))
    if name == "ndigits":
        return ndigits(root, T=cfg.get("T", 6), split_seed=cfg.get("split_seed", 0))
    if name in ("cifar10", "cifar100"):
        return cifar(name, root, download=cfg.get("download", True), augment=cfg.get("augment", True))
    if name == "cifar10_dvs":
        return cifar10_dvs(root, T=cfg.get("T", 10), split=cfg.get("split", "reference"),
                           preprocess=cfg.get("preprocess", "clean"), seed=cfg.get("split_seed", 0))
    if name == "dvs_gesture":
        return dvs_gesture(root, T=cfg.get("T", 20), preprocess=cfg.get("preprocess", "clean"))
    return imagenet(root)


def builder_function(path: str):
    """The dataset function at dotted ``path``; ValueError naming ``dataset.builder`` when there is none."""
    return import_dotted("dataset.builder", path)


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0, sampler: Optional[torch.utils.data.Sampler] = None, drop_last: bool = False,
                timeout_s: float = 0) -> DataLoader:
    """A DataLoader; shuffling (when ``train`` and no sampler) follows a generator seeded by ``seed``. With
    workers, a batch that takes longer than ``timeout_s`` (0: no bound) is an error."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last, generator=generator,
                      persistent_workers=num_workers > 0, timeout=timeout_s if num_workers > 0 else 0,
                      worker_init_fn=close_inherited_locks if num_workers > 0 else None)


__all__ = ["NAMES", "Cutout", "DatasetError", "DatasetInfo", "build", "data_root", "make_loader"]
