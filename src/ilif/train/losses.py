"""The loss of the ``loss`` config group (``configs/loss/``): the function ``loss.name`` or
``loss._target_`` names (:mod:`ilif.train.factories`), called with logits [T, B, C] and targets [B]."""

from __future__ import annotations

from typing import Callable

import torch

from ilif.checks import part


def loss_function(loss_cfg) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The configured loss as ``loss(logits [T, B, C], target [B])`` (computed in float32), its function
    found and its keys read once (an epoch builds it once, not at every step)."""
    function, arguments = part("loss", loss_cfg)
    return lambda logits, target: function(logits=logits.float(), target=target, **arguments)
