"""What every spiking neuron of the package offers the meters and the trainer, and the base of a neuron
that is written as one step.

A neuron layer is a spikingjelly ``MemoryModule`` in multi-step mode that also says how many
state-update operations one neuron-step costs (the energy meter reports them apart from synaptic
operations) and exposes its threshold and surrogate (the spike meter's support occupancy). Meters
find neuron layers with ``isinstance(module, SpikingNeuron)``.

A new neuron subclasses :class:`StepNeuron`: it names its state (``memory_names``), checks its
parameters into ``self.params`` (a :class:`~ilif.neurons.functional.LIFParams`, or anything with
``v_threshold`` and ``surrogate``), and writes one step, charge, fire and reset (:meth:`StepNeuron.step`).
It gets the rest: single- and multi-step execution over [T, B, ...], the state set-up and reset,
``h_seq`` for the meters (``store_membrane``), autograd through its surrogate (so ``torch.compile`` traces
it), and the suite's contract tests once its config file exists.
"""

from __future__ import annotations

from typing import Optional

import torch
from spikingjelly.activation_based import base

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
        """The surrogate of the layer's ``params`` (:class:`~ilif.neurons.functional.LIFParams` or
        :class:`~ilif.neurons.functional.NeuronParams`)."""
        return self.params.surrogate

    def set_surrogate(self, surrogate: Surrogate) -> None:
        """Use ``surrogate`` from the next call on (a γ schedule or rule changes it between epochs)."""
        self.params = self.params._replace(surrogate=surrogate)


class StepNeuron(base.MemoryModule, SpikingNeuron):
    """A neuron written as one step (see the module). A subclass sets ``memory_names`` (its state, each
    [B, ...], zero at the start and after a reset), ``self.params`` and the ``step_mode`` in its
    ``__init__`` (calling ``super().__init__(step_mode, store_membrane)`` first), and implements
    :meth:`step` and :meth:`state_ops`."""

    memory_names: tuple[str, ...] = ("v",)

    def __init__(self, step_mode: str = "s", store_membrane: bool = False):
        super().__init__()
        self.step_mode = step_mode
        self.store_membrane = store_membrane
        self.h_seq = None
        for name in self.memory_names:
            self.register_memory(name, 0.0)

    @property
    def v_threshold(self) -> float:
        return self.params.v_threshold

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One step: input ``x`` [B, ...] and the state {name: [B, ...]} -> (spikes, the pre-spike
        potential h that the threshold compares, the new state), each [B, ...]."""
        raise NotImplementedError

    def run(self, x_seq: torch.Tensor) -> torch.Tensor:
        """x_seq [T, B, ...] -> spikes [T, B, ...], from the kept state and keeping the final one."""
        state = {name: getattr(self, name) for name in self.memory_names}
        if any(isinstance(value, float) for value in state.values()):
            state = {name: torch.zeros_like(x_seq[0]) for name in self.memory_names}
        spikes, potentials = [], []
        for x in x_seq:
            s, h, state = self.step(x, state)
            spikes.append(s)
            potentials.append(h)
        for name in self.memory_names:
            setattr(self, name, state[name])
        self.h_seq = torch.stack(potentials).detach() if self.store_membrane else None
        return torch.stack(spikes)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.unsqueeze(0))[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"multi-step input must have shape [T, B, ...] (at least 2 dims); got shape "
                             f"{tuple(x_seq.shape)}")
        return self.run(x_seq)
