"""LIF and ILIF neurons with a γ-parameterised surrogate gradient (and the PLIF and CLIF baselines).

    from ilif.neurons import ILIF, LIF, Surrogate
    neuron = ILIF(tau=2.0, surrogate=Surrogate("rectangle", gamma=1.0), step_mode="m")
"""

import importlib
from typing import TYPE_CHECKING

from .rules import FAMILIES, NORMALIZATIONS

if TYPE_CHECKING:  # imported on first use by __getattr__ (PEP 562): ilif.neurons.rules loads without torch
    from .base import SpikingNeuron, StepNeuron
    from .clif import CLIF
    from .functional import LIFParams, NeuronParams, NeuronState, multistep, step, zero_state
    from .modules import ILIF, LIF
    from .plif import PLIF
    from .surrogate import Surrogate, heaviside

_MODULES = ("base", "clif", "functional", "modules", "plif", "surrogate")


def __getattr__(name: str):
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f".{module}", __name__), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "CLIF",
    "FAMILIES",
    "ILIF",
    "LIF",
    "LIFParams",
    "NORMALIZATIONS",
    "NeuronParams",
    "NeuronState",
    "PLIF",
    "SpikingNeuron",
    "StepNeuron",
    "Surrogate",
    "heaviside",
    "multistep",
    "step",
    "zero_state",
]
