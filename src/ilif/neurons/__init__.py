"""LIF and ILIF neurons with a γ-parameterised surrogate gradient (and the PLIF and CLIF baselines).

    from ilif.neurons import ILIF, LIF, Surrogate
    neuron = ILIF(tau=2.0, surrogate=Surrogate("rectangle", gamma=1.0), step_mode="m")
"""

from .base import SpikingNeuron, StepNeuron
from .clif import CLIF
from .functional import LIFParams, NeuronParams, NeuronState, multistep, step, zero_state
from .modules import ILIF, LIF
from .plif import PLIF
from .surrogate import FAMILIES, NORMALIZATIONS, Surrogate, heaviside

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
