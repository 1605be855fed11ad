"""The losses of the ``loss`` config group (``configs/loss/``): ``loss.name`` picks one of :data:`LOSSES`;
each takes logits [T, B, C] and targets [B]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """CE(mean_t o_t, y); logits [T, B, C] (float32), target [B]."""
    return F.cross_entropy(logits.mean(0), target, label_smoothing=loss_cfg.label_smoothing)


def tet_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """(1 − λ)·mean_t CE(o_t, y) + λ·MSE(o_t, φ), φ a constant or the one-hot label (docs/recipes.md);
    logits [T, B, C] (float32), target [B]."""
    T = logits.shape[0]
    ce = F.cross_entropy(logits.flatten(0, 1), target.repeat(T), label_smoothing=loss_cfg.label_smoothing)
    if loss_cfg.mse_target == "onehot":
        goal = F.one_hot(target, logits.shape[-1]).to(logits.dtype).expand_as(logits)
    else:
        goal = torch.full_like(logits, loss_cfg.phi)
    return (1.0 - loss_cfg.lam) * ce + loss_cfg.lam * F.mse_loss(logits, goal)


#: loss.name -> loss function (the config check reads its names)
LOSSES = {"ce": ce_loss, "tet": tet_loss}


def compute_loss(logits: torch.Tensor, target: torch.Tensor, loss_cfg) -> torch.Tensor:
    """The configured loss of logits [T, B, C] (computed in float32) and target [B]."""
    return LOSSES[loss_cfg.name](logits.float(), target, loss_cfg)
