"""The built-in optimisers, learning-rate schedules and losses: functions whose keyword parameters are
their config keys (``configs/optim/``, ``configs/schedule/``, ``configs/loss/``), found by a group's
``name`` in :data:`PARTS` or by its ``_target_`` (a dotted path to a function of the same form outside
the package, as for backbones and neurons). The trainer gives what is not a config key (the parameters,
the optimiser, the epochs, the logits and targets) by name. torch is imported inside the functions, so
a config is checked against their signatures before torch is imported (:mod:`ilif.checks`).
"""

from __future__ import annotations


def sgd(params, lr: float, momentum: float, weight_decay: float):
    """SGD with (heavy-ball) momentum and L2 weight decay."""
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adamw(params, lr: float, weight_decay: float):
    """AdamW (decoupled weight decay), torch's default betas."""
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def cosine(optimizer, epochs: int, eta_min: float):
    """Cosine annealing per epoch over the run's epochs, down to ``eta_min``."""
    import torch

    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=eta_min)


def step(optimizer, step_size: int, gamma: float):
    """The learning rate times ``gamma`` every ``step_size`` epochs."""
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def ce(logits, target, label_smoothing: float):
    """CE(mean_t o_t, y); logits [T, B, C] (float32), target [B]."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.mean(0), target, label_smoothing=label_smoothing)


def tet(logits, target, lam: float, mse_target: str, phi: float, label_smoothing: float):
    """(1 − λ)·mean_t CE(o_t, y) + λ·MSE(o_t, φ), φ a constant (``mse_target: constant``) or the one-hot
    label (``onehot``; docs/recipes.md); logits [T, B, C] (float32), target [B]."""
    import torch
    import torch.nn.functional as F

    T = logits.shape[0]
    cross = F.cross_entropy(logits.flatten(0, 1), target.repeat(T), label_smoothing=label_smoothing)
    if mse_target == "onehot":
        goal = F.one_hot(target, logits.shape[-1]).to(logits.dtype).expand_as(logits)
    else:
        goal = torch.full_like(logits, phi)
    return (1.0 - lam) * cross + lam * F.mse_loss(logits, goal)


#: group -> (name -> function, what the trainer gives each function by name besides the config's keys)
PARTS = {
    "optim": ({"sgd": sgd, "adamw": adamw}, ("params",)),
    "schedule": ({"cosine": cosine, "step": step}, ("optimizer", "epochs")),
    "loss": ({"ce": ce, "tet": tet}, ("logits", "target")),
}
