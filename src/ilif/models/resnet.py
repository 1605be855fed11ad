"""Pre-activation spiking ResNets: ResNet-18 for CIFAR (docs/recipes.md) and ResNet-34 for ImageNet.

Block: neuron(BN(x)) -> conv3×3(stride) -> neuron(BN) -> dropout -> conv3×3, plus a shortcut fed by the
first neuron's spikes (identity, or a 1×1 conv when the shape changes); block convs have a bias, as
in the release. The stem conv (no bias) is the encoder and has no neuron after it; the head is
BN -> neuron -> global average pool -> dropout -> linear (at 32×32 input the global pool equals the
release's avg-pool 4). Init as in the release: kaiming-normal (fan_out) conv weights, BN weight 1 and
bias 0, linear bias 0.
"""

from __future__ import annotations

from torch import nn

from .layers import TemporalDropout, TimeBatchNorm2d, TimeDistributed, encode_input
from .registry import register_model, spiking


def _conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)


class PreActBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, neuron, dropout, bn_per_step):
        super().__init__()
        self.bn1 = TimeBatchNorm2d(c_in, per_step=bn_per_step)
        self.neuron1 = spiking(neuron)
        self.conv1 = TimeDistributed(_conv3x3(c_in, c_out, stride))
        self.bn2 = TimeBatchNorm2d(c_out, per_step=bn_per_step)
        self.neuron2 = spiking(neuron)
        self.dropout = TemporalDropout(dropout)
        self.conv2 = TimeDistributed(_conv3x3(c_out, c_out))
        self.shortcut = (
            TimeDistributed(nn.Conv2d(c_in, c_out, 1, stride)) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x):
        """x: [T, B, C_in, H, W] -> [T, B, C_out, H/stride, W/stride]."""
        spikes = self.neuron1(self.bn1(x))
        out = self.conv1(spikes)
        out = self.conv2(self.dropout(self.neuron2(self.bn2(out))))
        return out + self.shortcut(spikes)


class PreActResNet(nn.Module):
    def __init__(self, blocks, neuron, num_classes, in_channels, T, dropout=0.0, bn_per_step=False, stem="cifar"):
        super().__init__()
        self.T = T
        if stem == "cifar":
            self.encoder = _conv3x3(in_channels, 64, bias=False)
        else:  # ImageNet: 7×7/2 conv and 3×3/2 max-pool, both run once on the static image
            self.encoder = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        layers, c_in = [], 64
        for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(PreActBlock(c_in, width, stride, neuron, dropout, bn_per_step))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.bn = TimeBatchNorm2d(512, per_step=bn_per_step)
        self.neuron = spiking(neuron)
        self.pool = TimeDistributed(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.dropout = TemporalDropout(dropout)
        self.classifier = TimeDistributed(nn.Linear(512, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x):
        """x: [B, C, H, W] or [B, T, C, H, W] -> logits [T, B, num_classes]."""
        out = self.layers(encode_input(x, self.T, self.encoder))
        return self.classifier(self.dropout(self.pool(self.neuron(self.bn(out)))))


@register_model
def preact_resnet18(neuron, num_classes=10, in_channels=3, T=6, dropout=0.0, bn_per_step=False):
    """PreAct ResNet-18 for 32×32 input: 17 neuron layers, about 11.2 M parameters."""
    return PreActResNet((2, 2, 2, 2), neuron, num_classes, in_channels, T, dropout, bn_per_step, stem="cifar")


@register_model
def resnet34(neuron, num_classes=1000, in_channels=3, T=4, dropout=0.0, bn_per_step=False):
    """Spiking ResNet-34 for 224×224 ImageNet: the pre-activation blocks above in stages of 3/4/6/3,
    with the standard ImageNet stem (7×7/2 conv, 3×3/2 max-pool) as the encoder."""
    return PreActResNet((3, 4, 6, 3), neuron, num_classes, in_channels, T, dropout, bn_per_step, stem="imagenet")
