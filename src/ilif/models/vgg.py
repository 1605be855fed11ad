"""Spiking VGG-11 with BatchNorm for event data (docs/recipes.md).

Stages [64, M] [128, M] [256, 256, M] [512, 512, M] [512, 512, M]; each conv3×3 -> BN -> neuron ->
dropout (one mask per sample for all T steps); M = average pooling 2; head adaptive-avg-pool 7×7 ->
linear. 8 neuron layers. The first conv is the encoder: it sees event frames at every step.
"""

from __future__ import annotations

from torch import nn

from .layers import TemporalDropout, TimeBatchNorm2d, TimeDistributed, encode_input
from .registry import register_model, spiking

CONFIG_11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class SpikingVGG(nn.Module):
    def __init__(self, config, neuron, num_classes, in_channels, T, dropout=0.0, bn_per_step=False):
        super().__init__()
        self.T = T
        widths = [c for c in config if c != "M"]
        self.encoder = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        layers, c_in, first = [], widths[0], True
        for item in config:
            if item == "M":
                layers.append(TimeDistributed(nn.AvgPool2d(2)))
                continue
            if not first:
                layers.append(TimeDistributed(nn.Conv2d(c_in, item, 3, 1, 1)))
            first = False
            layers += [TimeBatchNorm2d(item, per_step=bn_per_step), spiking(neuron), TemporalDropout(dropout)]
            c_in = item
        self.features = nn.Sequential(*layers)
        self.pool = TimeDistributed(nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten()))
        self.classifier = TimeDistributed(nn.Linear(c_in * 49, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.module.weight, 0.0, 0.01)  # the release's classifier init
        nn.init.zeros_(self.classifier.module.bias)

    def forward(self, x):
        """x: [B, T, C, H, W] (events) or [B, C, H, W] -> logits [T, B, num_classes]."""
        return self.classifier(self.pool(self.features(encode_input(x, self.T, self.encoder))))


@register_model
def vgg11_bn(neuron, num_classes=10, in_channels=2, T=10, dropout=0.0, bn_per_step=False):
    """VGG-11-BN: 8 neuron layers (CIFAR10-DVS at 48×48, DVS128 Gesture at 128×128)."""
    return SpikingVGG(CONFIG_11, neuron, num_classes, in_channels, T, dropout, bn_per_step)
