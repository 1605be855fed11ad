"""From a composed config to the objects of a run: data, neuron factory, model, optimiser, schedule.

The neuron group's files name their class with ``_target_`` (``ilif.neurons.ILIF``, ``ilif.neurons.LIF``,
``ilif.neurons.PLIF``, or any importable neuron of a user's), and every other key except ``name`` is a
constructor argument, so a neuron's parameters and their checks live in its class only.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Subset

from ilif.checks import MODEL_GIVEN, component_arguments, part
from ilif.conf import keyword_parameters
from ilif.data import build as build_data
from ilif.models import backbone
from ilif.models.registry import call_backbone
from ilif.neurons import LIF, SpikingNeuron, Surrogate


def surrogate_of(cfg: DictConfig) -> Surrogate:
    return Surrogate(cfg.surrogate.family, cfg.surrogate.gamma, cfg.surrogate.normalize)


def neuron_factory(cfg: DictConfig) -> Callable[[], nn.Module]:
    """A factory of fresh multi-step neurons as ``cfg.neuron`` describes them, with ``cfg.surrogate``."""
    spec = {k: v for k, v in OmegaConf.to_container(cfg.neuron, resolve=True).items() if k != "name"}
    return functools.partial(instantiate({**spec, "_partial_": True}), surrogate=surrogate_of(cfg), step_mode="m")


def model_arguments(cfg: DictConfig, function: Callable) -> dict:
    """The keys of ``cfg.model`` that ``function`` (a backbone) is called with
    (:func:`ilif.checks.component_arguments`). Raises ConfigError naming ``model.<key>`` that the backbone
    does not take."""
    return component_arguments("model", OmegaConf.to_container(cfg.model, resolve=True), function, MODEL_GIVEN)


def build_model(cfg: DictConfig, info) -> nn.Module:
    """The configured backbone with the configured neuron, for a dataset described by ``info``; it maps
    [B, C, H, W] (static) or [B, T, C, H, W] (events) to logits [T, B, classes]."""
    function = backbone(cfg.model)
    return call_backbone(function, info.input_size, neuron=neuron_factory(cfg), num_classes=info.num_classes,
                         in_channels=info.in_channels, T=cfg.trainer.T, **model_arguments(cfg, function))


def set_memory(model: nn.Module, mode: str) -> list[str]:
    """Make every neuron layer of ``model`` keep for its backward what ``trainer.memory`` says:
    ``standard`` (its outputs and internal states) or ``lean`` (its input alone, the rest computed
    again in the backward: the fused LIF and ILIF, and their subclasses). The numbers are the same in
    both. Returns the class names of the neuron layers that keep ``standard``."""
    standard = set()
    for module in model.modules():
        if isinstance(module, LIF):
            module.recompute = mode == "lean"
        elif isinstance(module, SpikingNeuron) and mode != "standard":
            standard.add(type(module).__name__)
    return sorted(standard)


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    function, arguments = part("optim", cfg.optim)
    return function(params=model.parameters(), **arguments)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    """The per-epoch learning-rate schedule; it is given ``epochs`` (the run's) where it names it."""
    function, arguments = part("schedule", cfg.schedule)
    given = {"epochs": cfg.trainer.epochs} if "epochs" in keyword_parameters(function)[0] else {}
    return function(optimizer=optimizer, **given, **arguments)


def build_datasets(cfg: DictConfig):
    """(train, val or None, test, info); the validation part is held out of train by ``dataset.val_fraction``."""
    data_cfg = {**OmegaConf.to_container(cfg.dataset, resolve=True), "T": cfg.trainer.T}
    train_set, test_set, info = build_data(data_cfg)
    val_set = None
    if cfg.dataset.val_fraction > 0:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.dataset.split_seed)).tolist()
        n_val = int(round(cfg.dataset.val_fraction * len(train_set)))
        val_set, train_set = Subset(train_set, sorted(order[:n_val])), Subset(train_set, sorted(order[n_val:]))
    return train_set, val_set, test_set, info


