"""A small spiking ConvNet for the offline digits default (8×8 grey images), trainable on a CPU in seconds."""

from __future__ import annotations

from torch import nn

from .layers import TemporalDropout, TimeBatchNorm2d, TimeDistributed, encode_input
from .registry import register_model, spiking


class ConvNetSmall(nn.Module):
    """encoder conv3×3 (C -> 16) -> BN -> neuron -> conv3×3 (16 -> 32) -> BN -> neuron -> avg-pool 2 ->
    dropout -> linear. 2 neuron layers."""

    def __init__(self, neuron, num_classes, in_channels, T, dropout=0.0, bn_per_step=False, width=16, input_size=8):
        super().__init__()
        self.T = T
        self.encoder = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = TimeBatchNorm2d(width, per_step=bn_per_step)
        self.neuron1 = spiking(neuron)
        self.conv2 = TimeDistributed(nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False))
        self.bn2 = TimeBatchNorm2d(2 * width, per_step=bn_per_step)
        self.neuron2 = spiking(neuron)
        self.pool = TimeDistributed(nn.Sequential(nn.AvgPool2d(2), nn.Flatten()))
        self.dropout = TemporalDropout(dropout)
        self.classifier = TimeDistributed(nn.Linear(2 * width * (input_size // 2) ** 2, num_classes))

    def forward(self, x):
        """x: [B, C, H, W] or [B, T, C, H, W] -> logits [T, B, num_classes]."""
        out = self.neuron1(self.bn1(encode_input(x, self.T, self.encoder)))
        out = self.neuron2(self.bn2(self.conv2(out)))
        return self.classifier(self.dropout(self.pool(out)))


@register_model
def convnet_small(neuron, num_classes=10, in_channels=1, T=4, dropout=0.0, bn_per_step=False, input_size=8):
    return ConvNetSmall(neuron, num_classes, in_channels, T, dropout, bn_per_step, input_size=input_size)
