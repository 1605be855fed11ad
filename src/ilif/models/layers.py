"""Building blocks for multi-step networks: tensors flow as [T, B, ...]."""

from __future__ import annotations

import torch
from torch import nn


def display_name(qualified_name: str) -> str:
    """A module's name without the ``.module`` that :class:`TimeDistributed` inserts ("" -> "<model>")."""
    return qualified_name.replace(".module", "") or "<model>"


def merge_time(x: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T·B, ...]."""
    return x.flatten(0, 1)


def split_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """[T·B, ...] -> [T, B, ...]."""
    return x.unflatten(0, (T, -1))


class TimeDistributed(nn.Module):
    """Apply a stateless layer to every step at once: [T, B, ...] -> [T, B, ...] over T·B rows."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_time(self.module(merge_time(x)), x.shape[0])


class TimeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d on [T, B, C, H, W].

    ``per_step=False`` (default, fast) normalises over all T·B samples at once. ``per_step=True``
    reproduces the authors' release, which runs the network one step at a time: each step is
    normalised with its own B-sample statistics and the running statistics are updated T times.
    In eval mode both use the running statistics and agree. The state_dict is BatchNorm2d's.
    """

    def __init__(self, num_features: int, per_step: bool = False, **kwargs):
        super().__init__(num_features, **kwargs)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_step:
            return torch.stack([super(TimeBatchNorm2d, self).forward(x_t) for x_t in x])
        return split_time(super().forward(merge_time(x)), x.shape[0])


class TemporalDropout(nn.Module):
    """Dropout on [T, B, ...] with one mask per sample, shared by all T steps (as in the release)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout={p!r} is not allowed: it must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x[0]).bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def encode_input(x: torch.Tensor, T: int, encoder: nn.Module) -> torch.Tensor:
    """Run the first (encoding) layer and return [T, B, ...].

    Static images [B, C, H, W] are encoded directly: the encoder sees the same image at every step,
    so it runs once and its output is repeated over T. Event frames [B, T, C, H, W] are moved to
    [T, B, C, H, W] and encoded at every step over T·B rows.
    """
    if x.dim() == 5:
        if x.shape[1] != T:
            raise ValueError(f"event input has {x.shape[1]} frames but the model runs T={T} steps")
        x = x.transpose(0, 1)
        return split_time(encoder(merge_time(x)), T)
    out = encoder(x)
    return out.unsqueeze(0).expand(T, *out.shape)
