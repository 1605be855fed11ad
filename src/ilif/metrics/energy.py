"""Energy accounting: dense MACs, synaptic operations (SOPs) and pJ per sample.

Convention (docs/energy.md; 45 nm figures of Horowitz 2014): E_MAC = 4.6 pJ, E_AC = 0.9 pJ.

- F_l, the dense MACs of a conv/linear layer per sample and time step, is read from the real shapes
  of a forward pass: conv k_h·k_w·(C_in/groups)·C_out·H_out·W_out, linear in·out.
- A layer whose input is real-valued (the encoding layer of static images) costs E_MAC per MAC, and
  it is counted for every row it really processes (once per sample when the encoder runs once).
- Every other layer reads spikes (possibly average-pooled, or event counts for the first layer of
  DVS models) and costs E_AC per synaptic operation. SOPs are computed exactly: for a conv, the input
  summed over the channels of each group is convolved with a ones-kernel of the layer's geometry
  (stride, padding, dilation), which gives the input mass inside every receptive field, times C_out
  per group; for a linear layer, Σ input × out_features. For binary spikes this is exactly
  spikes × fan-out with border effects; for pooled spikes it is the fr_in · F_l convention.
- The ANN of the same architecture costs E_MAC · Σ F_l per sample (one pass).
- Neuron-state operations (charge, compare, reset, and ILIF's inhibitory units) are reported apart,
  as counts and as an estimate (E_MAC per multiply-class op, E_AC per add-class op).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ilif.models.layers import display_name

from .base import HookMeter, neuron_layers

from ilif.units import E_AC_PJ, E_MAC_PJ

def dense_macs_per_row(layer: nn.Module, out: torch.Tensor) -> int:
    """F_l for one input row: conv k_h·k_w·(C_in/groups)·C_out·H_out·W_out; linear in·out."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return kh * kw * (layer.in_channels // layer.groups) * layer.out_channels * out.shape[-2] * out.shape[-1]
    return layer.in_features * layer.out_features


def synaptic_ops(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Exact accumulate count of ``layer`` on non-negative input ``x`` (all rows summed), float64."""
    x = x.detach().to(torch.float64)
    if isinstance(layer, nn.Linear):
        return x.sum() * layer.out_features
    groups = layer.groups
    mass = x.unflatten(1, (groups, -1)).sum(2)  # [N, groups, H, W]
    ones = torch.ones(groups, 1, *layer.kernel_size, dtype=torch.float64, device=x.device)
    fields = F.conv2d(mass, ones, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=groups)
    return fields.sum() * (layer.out_channels // groups)


class OpsMeter(HookMeter):
    """Counts MACs and SOPs of every Conv2d/Linear layer of ``model`` with forward hooks.

    Args:
        model: the network; its forward's first argument is the batch [B, ...] (used to count samples).
        events_input: True when the model's input is events (DVS): its first layer is then AC.
        enabled: start enabled.
    """

    def __init__(self, model: nn.Module, events_input: bool = False, enabled: bool = True):
        super().__init__(enabled)
        self.events_input = events_input
        self.layers = {display_name(name): m for name, m in model.named_modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear))}
        self.neurons = neuron_layers(model)
        self.counts: dict[str, dict] = {}
        self.samples = 0
        self.neuron_steps: dict[str, float] = {}
        self._order: list[str] = []
        self.attach_pre(model, self._count_samples)
        for name, layer in self.layers.items():
            self.attach(name, layer, self._count_layer)
        for name, neuron in self.neurons.items():
            self.attach(name, neuron, self._count_neuron)

    def reset(self) -> None:
        self.counts, self.samples, self.neuron_steps = {}, 0, {}

    def all_reduce(self) -> None:
        """Sum the counts over all DDP ranks (every rank must have seen the same layers)."""
        import torch.distributed as dist

        keys = [(name, key) for name in sorted(self.counts) for key in ("rows", "input_sum", "input_numel", "sops")]
        steps = sorted(self.neuron_steps)
        packed = torch.tensor([float(self.counts[n][k]) for n, k in keys] + [self.neuron_steps[n] for n in steps]
                              + [float(self.samples)], dtype=torch.float64)
        dist.all_reduce(packed)
        values = packed.tolist()
        for (name, key), value in zip(keys, values):
            self.counts[name][key] = value
        for name, value in zip(steps, values[len(keys):]):
            self.neuron_steps[name] = value
        self.samples = int(values[-1])

    def _count_samples(self, module, inputs) -> None:
        self.samples += inputs[0].shape[0]

    def _count_layer(self, name: str, layer: nn.Module, inputs, out) -> None:
        x = inputs[0]
        if name not in self._order:
            self._order.append(name)
        first = self._order[0] == name
        kind = "MAC" if first and not self.events_input else "AC"
        c = self.counts.setdefault(name, {"kind": kind, "macs_per_row": dense_macs_per_row(layer, out),
                                          "rows": 0, "input_sum": 0.0, "input_numel": 0, "sops": 0.0})
        c["rows"] += x.shape[0]
        if kind == "AC":
            c["input_sum"] += x.detach().sum().item()
            c["input_numel"] += x.numel()
            c["sops"] += synaptic_ops(layer, x).item()

    def _count_neuron(self, name: str, module: nn.Module, inputs, out) -> None:
        self.neuron_steps[name] = self.neuron_steps.get(name, 0.0) + out.numel()

    def report(self, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> dict:
        """Per-layer table and per-sample totals.

        Returns:
            {"layers": [{layer, kind, macs (F_l per step), input_rate, sops (per sample), energy_pj}],
             "neurons": [{layer, neuron_steps, mul_ops, add_ops, energy_pj} per sample],
             "totals": {snn_energy_pj, ann_energy_pj, snn_ann_ratio, macs_per_step, sops, mac_ops,
                        state_ops, state_energy_pj}}
        """
        n = max(self.samples, 1)
        rows = []
        for name in self._order:
            c = self.counts[name]
            if c["kind"] == "MAC":
                ops = c["macs_per_row"] * c["rows"] / n
                energy = e_mac_pj * ops
                rows.append({"layer": name, "kind": "MAC", "macs": c["macs_per_row"], "input_rate": None,
                             "sops": 0.0, "mac_ops": ops, "energy_pj": energy})
            else:
                sops = c["sops"] / n
                rows.append({"layer": name, "kind": "AC", "macs": c["macs_per_row"],
                             "input_rate": c["input_sum"] / max(c["input_numel"], 1), "sops": sops,
                             "mac_ops": 0.0, "energy_pj": e_ac_pj * sops})
        neurons = []
        for name, steps in self.neuron_steps.items():
            mul, add = self.neurons[name].state_ops()
            per_sample = steps / n
            neurons.append({"layer": name, "neuron_steps": per_sample, "mul_ops": mul * per_sample,
                            "add_ops": add * per_sample, "energy_pj": (mul * e_mac_pj + add * e_ac_pj) * per_sample})
        snn = sum(r["energy_pj"] for r in rows)
        ann = e_mac_pj * sum(r["macs"] for r in rows)
        totals = {
            "snn_energy_pj": snn,
            "ann_energy_pj": ann,
            "snn_ann_ratio": snn / ann if ann else float("nan"),
            "macs_per_step": sum(r["macs"] for r in rows),
            "sops": sum(r["sops"] for r in rows),
            "mac_ops": sum(r["mac_ops"] for r in rows),
            "state_ops": sum(r["mul_ops"] + r["add_ops"] for r in neurons),
            "state_energy_pj": sum(r["energy_pj"] for r in neurons),
        }
        return {"layers": rows, "neurons": neurons, "totals": totals}
