"""Datasets: the offline digits default and its two temporal forms (seqdigits, ndigits), CIFAR-10/100,
CIFAR10-DVS, DVS128 Gesture and ImageNet.

``build(cfg)`` returns (train, test, info) for a dataset config (BUILTIN: name -> function);
``make_loader`` wraps a dataset in a DataLoader with the configured workers and pinned memory.
Static samples are [C, H, W] images, event samples [T, C, H, W] frames; models take batches of either.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from ilif.checks import dataset_keys
from ilif.conf import component_function, keyword_parameters
from ilif.rundir import close_inherited_locks

from .common import DatasetError, DatasetInfo, data_root
from .neuromorphic import cifar10_dvs, dvs_gesture
from .standin import stand_in
from .static import Cutout, cifar, digits, imagenet
from .temporal import ndigits, seqdigits

#: dataset name -> its function (train, test, DatasetInfo); each is called with the keys of its config
#: that it names (:func:`dataset_arguments`), so a parameter of the function is a key of the dataset
BUILTIN = {
    "digits": digits, "seqdigits": seqdigits, "ndigits": ndigits,
    "cifar10": functools.partial(cifar, "cifar10"), "cifar100": functools.partial(cifar, "cifar100"),
    "cifar10_dvs": cifar10_dvs, "dvs_gesture": dvs_gesture, "imagenet": imagenet,
}
NAMES = tuple(BUILTIN)



def build(cfg: Mapping[str, Any]) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Build the train and test sets of the dataset config ``cfg`` (its keys, and ``T``: frames of
    event data): the function :func:`dataset_function` finds, called with the keys it names.

    Every config has the keys of DatasetConfig (``root``: data root, default $ILIF_DATA or ./data;
    ``split``, ``split_seed``, ``preprocess``, ``download``, ``augment``, ``stand_in``: tiny random data of
    the dataset's kind for smoke runs, with ``stand_in_size`` and ``stand_in_samples``); a built-in
    dataset uses those it names. ``_target_`` names a function outside this package instead (then
    ``name`` may be anything, and the function makes its own stand-in data if it names ``stand_in``).
    Raises DatasetError (one line: dataset, path, expected files, source) when data is missing or
    corrupt; ValueError naming ``dataset.<key>`` for a key the function does not take.
    """
    function = dataset_function(cfg)
    if cfg.get("stand_in") and not cfg.get("_target_"):
        return stand_in(cfg["name"], T=cfg.get("T", 4), size=cfg.get("stand_in_size", 16),
                        samples=cfg.get("stand_in_samples", 16))
    return made("dataset._target_" if cfg.get("_target_") else "dataset",
                cfg.get("_target_") or cfg["name"], function(**dataset_arguments(cfg, function)))


def made(key: str, value: str, result: Any) -> tuple[Dataset, Dataset, DatasetInfo]:
    """``result`` when it is what a dataset function returns: (train, test, info), both sets sized and
    indexable, ``info`` a :class:`DatasetInfo`; ConfigError naming ``key`` otherwise."""
    from ilif.errors import ConfigError

    ok = isinstance(result, tuple) and len(result) == 3 and isinstance(result[2], DatasetInfo) and all(
        hasattr(part, "__len__") and hasattr(part, "__getitem__") for part in result[:2])
    if not ok:
        raise ConfigError(key, value, f"a dataset function returning (train set, test set, DatasetInfo); it returned "
                          f"{type(result).__name__}")
    return result


def dataset_function(cfg: Mapping[str, Any]) -> Callable[..., tuple[Dataset, Dataset, DatasetInfo]]:
    """The function of a dataset config: the one at dotted ``cfg["_target_"]``, else the built-in named
    ``cfg["name"]``. Raises ValueError naming the key and what is allowed."""
    return component_function("dataset", cfg, BUILTIN, "_target_", "dataset", name_key="dataset")


def dataset_arguments(cfg: Mapping[str, Any], function: Callable) -> dict:
    """The keyword arguments ``function`` (a dataset function) gets from ``cfg``: the keys
    :func:`ilif.checks.dataset_keys` lets through, with ``root`` resolved by :func:`data_root` (also
    when ``cfg`` has none) where the function names it. Raises ValueError naming ``dataset.<key>``."""
    arguments = dataset_keys(cfg, function)
    if "root" in keyword_parameters(function)[0]:
        arguments["root"] = data_root(cfg.get("root"))
    return arguments


def setting_of(cfg) -> tuple:
    """What a trainer config's data depends on: (dataset name, stand-in, T, root)."""
    return cfg.dataset.name, cfg.dataset.stand_in, cfg.trainer.T, cfg.dataset.get("root")


def missing_datasets(configs) -> dict[tuple, str]:
    """Build each dataset of ``configs`` (trainer configs) once: every one that is missing or corrupt,
    keyed by :func:`setting_of`, with its one-line error."""
    from omegaconf import OmegaConf

    missing, seen = {}, set()
    for cfg in configs:
        key = setting_of(cfg)
        if key not in seen:
            seen.add(key)
            try:
                build({**OmegaConf.to_container(cfg.dataset, resolve=True), "T": cfg.trainer.T})
            except DatasetError as err:
                missing[key] = str(err)
    return missing


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


__all__ = ["BUILTIN", "NAMES", "Cutout", "DatasetError", "DatasetInfo", "build", "data_root",
           "dataset_arguments", "dataset_function", "make_loader", "missing_datasets", "setting_of"]
