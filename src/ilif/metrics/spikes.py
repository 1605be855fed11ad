"""Spike meter: counts spikes of every neuron layer through forward hooks (no model changes).

Everything is accumulated as COUNTS (float64 tensors on the model's device, exact for integers below
2^53; a batch adds to them without a host sync), so counts add
across batches, and across DDP ranks by a sum all-reduce, and rates are derived only at the end:

- firing rate of a layer = spikes / (neurons × T × samples)
- network firing rate    = Σ spikes / Σ (neurons × T × samples)   (layers weighted by neurons)
- rate at step t         = Σ spikes at t / Σ (neurons × samples)
- silent share           = neurons that never fire on the evaluated set / neurons
- saturated share        = neurons that fire at every step of every sample / neurons
- support occupancy      = pre-spike potentials h with |h − V_th| ≤ γ/2 / all potentials
  (for smooth surrogates: within the half width at half maximum of the threshold)
"""

from __future__ import annotations

import torch
from torch import nn

from ilif.neurons import SpikingNeuron

from .base import HookMeter, neuron_layers


class SpikeMeter(HookMeter):
    """Attach to ``model``; while ``enabled`` every neuron forward adds to the counts.

    Args:
        model: any network containing :class:`ilif.neurons.SpikingNeuron` layers (LIF, ILIF, PLIF; multi-step).
        occupancy: also count support occupancy (asks the neurons to keep their membrane potential).
        enabled: start enabled; when disabled a hook returns at once (cheap during training).
    """

    def __init__(self, model: nn.Module, occupancy: bool = True, enabled: bool = True):
        super().__init__(enabled)
        self.occupancy = occupancy
        self.neurons = neuron_layers(model)
        self.counts: dict[str, dict[str, torch.Tensor]] = {}
        for name, module in self.neurons.items():
            self.attach(name, module, self._count)
        self.set_enabled(enabled)

    def set_enabled(self, enabled: bool) -> None:
        super().set_enabled(enabled)
        if self.occupancy:  # otherwise leave the membrane setting to a meter that needs it
            for module in self.neurons.values():
                module.store_membrane = enabled

    def reset(self) -> None:
        self.counts = {}

    def _count(self, name: str, module: SpikingNeuron, inputs, spikes: torch.Tensor) -> None:
        if module.step_mode != "m":
            raise ValueError(f"SpikeMeter counts multi-step neurons; layer {name} is in step_mode={module.step_mode!r}")
        s = spikes.detach().to(torch.float64)
        T, B = s.shape[:2]
        new = {
            "spikes": s.sum(),
            "neuron_steps": torch.full((), float(s.numel()), dtype=torch.float64, device=s.device),
            "samples": torch.full((), float(B), dtype=torch.float64, device=s.device),
            "per_step_spikes": s.flatten(1).sum(1),
            "neuron_spikes": s.sum((0, 1)),
        }
        if self.occupancy and module.h_seq is not None:
            z = (module.h_seq - module.v_threshold).abs()
            new["in_support"] = (z <= module.surrogate.half_width).sum().to(torch.float64)
            new["potentials"] = torch.full((), float(z.numel()), dtype=torch.float64, device=s.device)
        layer = self.counts.get(name)
        if layer is None:
            self.counts[name] = new
            return
        if layer["per_step_spikes"].shape != new["per_step_spikes"].shape:
            raise ValueError(f"layer {name}: T changed between batches ({layer['per_step_spikes'].numel()} -> {T})")
        for key, value in new.items():
            layer[key] = layer[key] + value

    def all_reduce(self) -> None:
        """Sum the counts over all DDP ranks (call on every rank, in the same layer order)."""
        import torch.distributed as dist

        for name in sorted(self.counts):
            for key in sorted(self.counts[name]):
                tensor = self.counts[name][key].clone()
                dist.all_reduce(tensor)
                self.counts[name][key] = tensor

    def layer_table(self) -> list[dict]:
        """One row per neuron layer: name, neurons, firing_rate, silent, saturated, occupancy."""
        rows = []
        for name, c in self.counts.items():
            neurons = c["neuron_spikes"].numel()
            steps = c["per_step_spikes"].numel()
            rows.append({
                "layer": name,
                "neurons": neurons,
                "firing_rate": (c["spikes"] / c["neuron_steps"]).item(),
                "silent": (c["neuron_spikes"] == 0).double().mean().item(),
                "saturated": (c["neuron_spikes"] == steps * c["samples"]).double().mean().item(),
                "occupancy": (c["in_support"] / c["potentials"]).item() if "in_support" in c else None,
            })
        return rows

    def summary(self) -> dict:
        """Network-level figures derived from the counts (see the module docstring)."""
        if not self.counts:
            return {}
        layers = list(self.counts.values())
        spikes = sum(c["spikes"] for c in layers)
        neuron_steps = sum(c["neuron_steps"] for c in layers)
        neurons = sum(c["neuron_spikes"].numel() for c in layers)
        samples = layers[0]["samples"]
        per_step = sum(c["per_step_spikes"] for c in layers)
        silent = sum((c["neuron_spikes"] == 0).sum().double() for c in layers)
        saturated = sum((c["neuron_spikes"] == c["per_step_spikes"].numel() * c["samples"]).sum().double()
                        for c in layers)
        result = {
            "firing_rate": (spikes / neuron_steps).item(),
            "rate_per_step": (per_step / (neurons * samples)).tolist(),
            "silent": (silent / neurons).item(),
            "saturated": (saturated / neurons).item(),
            "samples": int(samples.item()),
        }
        if all("in_support" in c for c in layers):
            result["occupancy"] = (sum(c["in_support"] for c in layers) / sum(c["potentials"] for c in layers)).item()
        return result
