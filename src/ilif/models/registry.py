"""Model registry: ``create_model(name, neuron=..., num_classes=..., in_channels=..., **kw)``, and
:func:`backbone`, the function a model config names (registered, or outside the package by ``_target_``)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional

from torch import nn

from ilif.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a backbone under its function name; a name taken twice is an error. A backbone takes
    ``neuron, num_classes, in_channels, T``, the keys of its config file (``dropout`` and ``bn_per_step``
    where it honours them), and ``input_size`` (the input's side in pixels) if it needs it."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered ({_MODELS[fn.__name__].__module__})")
    _MODELS[fn.__name__] = fn
    return fn


def model_names() -> list[str]:
    return sorted(_MODELS)


def backbone(spec: Mapping[str, Any]) -> Callable[..., nn.Module]:
    """The backbone function of a model config: the one at dotted ``spec["_target_"]``, else the one
    registered as ``spec["name"]``. Raises ValueError naming the key and what is allowed."""
    from ilif.conf import component_function

    return component_function("model", spec, _MODELS, "_target_", "backbone")


def create_model(name: str, neuron: Callable[[], nn.Module], num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: a name from :func:`model_names`.
        neuron: factory returning a fresh neuron module (e.g. ``functools.partial(ILIF, tau=1.1)``);
            models never build neurons themselves, so LIF and ILIF networks share every parameter.
        num_classes: classifier outputs.
        in_channels: input channels (3 for images, 2 for event polarities, 1 for digits).
        kwargs: the backbone's options (``T``, ``dropout``, ``bn_per_step``, ``input_size`` where it takes them).
    Returns:
        a module mapping [B, C, H, W] (static) or [B, T, C, H, W] (events) to logits [T, B, num_classes].
    """
    return call_backbone(backbone({"name": name}), neuron=neuron, num_classes=num_classes, in_channels=in_channels,
                         **kwargs)


def call_backbone(function: Callable[..., nn.Module], input_size: Optional[int] = None, **kwargs) -> nn.Module:
    """``function`` (a backbone) with ``kwargs``, and with ``input_size`` (the input's side in pixels;
    None: the backbone's default) only when it names it: the trainer knows the size of every dataset,
    few backbones need it."""
    if input_size is not None and "input_size" in inspect.signature(function).parameters:
        kwargs["input_size"] = input_size
    model = function(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError.from_message(f"model: the backbone {getattr(function, '__name__', function)!r} returned a "
                                       f"{type(model).__name__}, not a torch.nn.Module")
    return model


def spiking(neuron: Callable[[], nn.Module]) -> nn.Module:
    """A fresh neuron from the factory, switched to multi-step mode; ConfigError naming
    ``neuron._target_`` when the factory makes something else than a neuron (a torch module)."""
    module = neuron()
    if not isinstance(module, nn.Module):
        raise ConfigError.from_message(f"neuron._target_ is not allowed to make a {type(module).__name__}: it must "
                                       "name a neuron class (a torch.nn.Module taking surrogate and step_mode)")
    module.step_mode = "m"
    return module
