"""Gradient diagnostics: per-layer weight-gradient norms and the temporal gradient ratio.

The temporal gradient ratio of a neuron layer is mean |∂L/∂x_1| / mean |∂L/∂x_T|, with x_t the
layer's input current at step t, averaged over neurons and samples. For LIF ∂L/∂x_t = ∂L/∂h_t exactly;
for ILIF it also carries the current unit's path (x_t enters i_{t+1}). A ratio far below 1 means the
gradient dies on its way back in time (the small-γ side of the γ dilemma).
"""

from __future__ import annotations

import torch
from torch import nn

from ilif.models.layers import display_name

from .base import HookMeter, neuron_layers


def weight_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of every conv/linear weight, by layer name (after ``backward``)."""
    return {
        display_name(name): module.weight.grad.norm().item()
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.grad is not None
    }


class TemporalGradientMeter(HookMeter):
    """Accumulates Σ_t |∂L/∂x_t| per neuron layer through tensor hooks; off unless ``enabled``."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        super().__init__(enabled)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        for name, module in neuron_layers(model).items():
            self.attach(name, module, self._watch_input)

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def _watch_input(self, name: str, module: nn.Module, inputs, out) -> None:
        x = inputs[0]
        if not x.requires_grad:
            return

        def grad_hook(grad: torch.Tensor) -> None:
            per_step = grad.detach().abs().flatten(1).sum(1).to(torch.float64).cpu()
            self.sums[name] = self.sums.get(name, 0) + per_step
            self.counts[name] = self.counts.get(name, 0) + grad[0].numel()

        x.register_hook(grad_hook)

    def ratios(self) -> dict[str, float]:
        """mean |∂L/∂x_1| / mean |∂L/∂x_T| per layer (nan where the last step got no gradient)."""
        return {name: (s[0] / s[-1]).item() if s[-1] > 0 else float("nan") for name, s in self.sums.items()}

    def network_ratio(self) -> float:
        """The same ratio over all layers' summed gradients."""
        total = sum(self.sums.values())
        return (total[0] / total[-1]).item() if self.sums and total[-1] > 0 else float("nan")
