"""Print per-layer firing rates and energy of an untrained spiking network on one random batch, LIF vs ILIF.

    python scripts/energy_table.py                       # preact_resnet18, CIFAR-shaped [32, 3, 32, 32], T = 6
    python scripts/energy_table.py --model vgg11_bn --events --size 48 --T 10 --in-channels 2

BatchNorm uses the batch's statistics (train mode, no gradient), as at the start of training.
"""

from __future__ import annotations

import argparse
import functools

import torch

from ilif.metrics import OpsMeter, SpikeMeter
from ilif.models import create_model, model_names
from ilif.neurons import ILIF, LIF, Surrogate


def measure(neuron_cls, args) -> tuple[list[dict], dict, dict]:
    torch.manual_seed(args.seed)
    factory = functools.partial(neuron_cls, tau=args.tau, surrogate=Surrogate(args.family, args.gamma))
    model = create_model(args.model, factory, num_classes=args.classes, in_channels=args.in_channels, T=args.T)
    shape = [args.batch, args.T, args.in_channels, args.size, args.size] if args.events else \
        [args.batch, args.in_channels, args.size, args.size]
    x = torch.rand(shape) if args.events else torch.randn(shape)
    spikes, ops = SpikeMeter(model), OpsMeter(model, events_input=args.events)
    with torch.no_grad():
        model(x)
    return spikes.layer_table(), spikes.summary(), ops.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="preact_resnet18", choices=model_names())
    parser.add_argument("--T", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--events", action="store_true", help="input [B, T, C, H, W] of event counts")
    parser.add_argument("--tau", type=float, default=1.1)
    parser.add_argument("--family", default="rectangle")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results = {name: measure(cls, args) for name, cls in (("LIF", LIF), ("ILIF", ILIF))}
    print(f"{args.model}, T={args.T}, batch {args.batch}, untrained, random input, seed {args.seed}\n")
    print("| neuron layer | LIF rate | ILIF rate | LIF silent | ILIF silent |")
    print("|---|---|---|---|---|")
    for lif_row, ilif_row in zip(results["LIF"][0], results["ILIF"][0]):
        print(f"| {lif_row['layer']} | {lif_row['firing_rate']:.4f} | {ilif_row['firing_rate']:.4f} | "
              f"{lif_row['silent']:.3f} | {ilif_row['silent']:.3f} |")
    print("\n| layer | kind | MACs/step | LIF in-rate | ILIF in-rate | LIF SOPs | ILIF SOPs | LIF pJ | ILIF pJ |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for a, b in zip(results["LIF"][2]["layers"], results["ILIF"][2]["layers"]):
        print(f"| {a['layer']} | {a['kind']} | {a['macs']:,} | {fmt(a['input_rate'])} | {fmt(b['input_rate'])} | "
              f"{a['sops']:,.0f} | {b['sops']:,.0f} | {a['energy_pj']:,.0f} | {b['energy_pj']:,.0f} |")
    print("\n| per sample | LIF | ILIF |")
    print("|---|---|---|")
    print(f"| network firing rate | {results['LIF'][1]['firing_rate']:.4f} | {results['ILIF'][1]['firing_rate']:.4f} |")
    for key, label in (("snn_energy_pj", "synaptic energy (µJ)"), ("ann_energy_pj", "ANN energy (µJ)"),
                       ("state_energy_pj", "neuron-state energy, apart (µJ)")):
        print(f"| {label} | {results['LIF'][2]['totals'][key] / 1e6:.3f} | "
              f"{results['ILIF'][2]['totals'][key] / 1e6:.3f} |")
    print(f"| SNN / ANN | {results['LIF'][2]['totals']['snn_ann_ratio']:.4f} | "
          f"{results['ILIF'][2]['totals']['snn_ann_ratio']:.4f} |")
    print(f"| neuron-state ops | {results['LIF'][2]['totals']['state_ops']:,.0f} | "
          f"{results['ILIF'][2]['totals']['state_ops']:,.0f} |")


if __name__ == "__main__":
    main()
