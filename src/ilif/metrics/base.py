"""What every meter shares: forward hooks on chosen modules, an ``enabled`` switch (a disabled hook
returns at once), a ``recording()`` block, and removal of the hooks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

from torch import nn

from ilif.models.layers import display_name
from ilif.neurons import SpikingNeuron


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's neuron layers by display name, in module order."""
    return {display_name(name): m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}


class HookMeter:
    """Base of the meters. Subclasses call :meth:`attach` for each module they watch and implement
    ``reset()``; a hook made by :meth:`attach` runs ``fn(name, module, inputs, output)`` only while
    the meter is enabled."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def attach(self, name: str, module: nn.Module, fn: Callable) -> None:
        def hook(mod, inputs, output):
            if self.enabled:
                fn(name, mod, inputs, output)

        module.register_forward_hook(hook)

    def attach_pre(self, module: nn.Module, fn: Callable) -> None:
        """A forward pre-hook ``fn(module, inputs)``, run only while enabled."""
        def hook(mod, inputs):
            if self.enabled:
                fn(mod, inputs)

        module.register_forward_pre_hook(hook)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def recording(self):
        """Enable the meter inside the block, restore the previous setting after it."""
        previous = self.enabled
        self.set_enabled(True)
        try:
            yield self
        finally:
            self.set_enabled(previous)

