"""What every spiking neuron of the package offers the meters and the trainer.

A neuron layer is a spikingjelly ``MemoryModule`` in multi-step mode that also says how many
state-update operations one neuron-step costs (the energy meter reports them apart from synaptic
operations) and exposes its threshold and surrogate (the spike meter's support occupancy). Meters
find neuron layers with ``isinstance(module, SpikingNeuron)``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .surrogate import Surrogate


class SpikingNeuron:
    """Mixin for neuron layers: :meth:`state_ops`, ``v_threshold``, ``surrogate``, ``h_seq`` and
    ``spike_count``."""

    #: pre-spike membrane potential of the last call [T, B, ...] when ``store_membrane`` is on, else None
    h_seq: Optional[torch.Tensor] = None
    store_membrane: bool = False
    #: the number of spikes of the last training call (0-dim, with its gradient) when ``count_spikes``
    #: is on and the layer counts them itself (the fused LIF and ILIF), else None
    spike_count: Optional[torch.Tensor] = None
    count_spikes: bool = False

    def state_ops(self) -> tuple[int, int]:
        """(multiply-class, add-class) operations of one neuron-step of this layer."""
        raise NotImplementedError

    @property
    def surrogate(self) -> Surrogate:
        """The surrogate of the layer's ``params`` (a :class:`~ilif.neurons.functional.NeuronParams`)."""
        return self.params.surrogate

    def set_surrogate(self, surrogate: Surrogate) -> None:
        """Use ``surrogate`` from the next call on (a γ schedule or rule changes it between epochs)."""
        self.params = self.params._replace(surrogate=surrogate)
