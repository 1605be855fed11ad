"""Tiny random stand-in data with a dataset's kind (static or events, channels, classes), for smoke runs.

Smoke-scale reproductions run every table's grid end to end on this data in seconds; its numbers
mean nothing and every table built from it says so (its split is named ``stand-in``).
"""

from __future__ import annotations

import torch

from .common import DatasetInfo
from .static import TensorImages

KINDS = {  # name: (classes, channels, events)
    "digits": (10, 1, False), "seqdigits": (10, 1, True), "ndigits": (10, 2, True),
    "cifar10": (10, 3, False), "cifar100": (100, 3, False),
    "cifar10_dvs": (10, 2, True), "dvs_gesture": (11, 2, True), "imagenet": (1000, 3, False),
}


def stand_in(name: str, T: int = 4, size: int = 16, samples: int = 16, seed: int = 0):
    """Random train and test sets of ``samples`` each: N(0, 1) images [C, size, size] or Poisson(0.5)
    event counts [T, C, size, size]; labels cycle through the classes. Returns (train, test, info)."""
    classes, channels, events = KINDS[name]
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(2):
        shape = (samples, T, channels, size, size) if events else (samples, channels, size, size)
        x = (torch.poisson(torch.full(shape, 0.5), generator=generator) if events
             else torch.randn(shape, generator=generator))
        sets.append(TensorImages(x, torch.arange(samples) % classes))
    info = DatasetInfo(name, classes, channels, size, events, "stand-in", samples, samples, {"stand_in": True})
    return sets[0], sets[1], info
