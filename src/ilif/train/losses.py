"""The loss of the ``loss`` config group (``configs/loss/``): the function ``loss.name`` or
``loss._target_`` names (:mod:`ilif.train.factories`), called with logits [T, B, C] and targets [B]."""

from __future__ import annotations

import torch

from ilif.checks import part


def compute_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """The configured loss of logits [T, B, C] (computed in float32) and target [B]."""
    function, arguments = part("loss", loss_cfg)
    return function(logits=logits.float(), target=target, **arguments)
