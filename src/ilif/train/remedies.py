"""Remedies for the γ dilemma that the literature uses, as rivals of ILIF (``remedy=...``).

A remedy is a class whose constructor takes its config file's keys by name
(``configs/remedy/<name>.yaml``; found by ``remedy.name`` in :data:`REMEDIES`, or at
``remedy._target_``) and checks their values, without torch (the config check builds one before torch
is imported); :meth:`Remedy.attach` then binds it to the model and the training set. Each composes
with any neuron, surrogate family and normalisation; the trainer calls
:meth:`Remedy.start_epoch` before an epoch trains, adds :meth:`Remedy.penalty` to each step's loss,
and logs :meth:`Remedy.record` (the γ each neuron layer trains with) with the epoch's metrics.

- ``none``: the surrogate as configured.
- ``rate_reg``: activity regularisation (Zenke & Vogels, Neural Computation 33(4), 2021): a loss term
  pulling each layer's firing rate towards ``target`` (``form: l2``, weight · mean over layers of
  (rate − target)²) or an L1 penalty on spikes (``form: l1``, weight · mean over layers of the rate).
- ``learnable_gamma``: each layer's γ a trained scalar (after Dspike, Li et al., NeurIPS 2021, and LSG,
  Lian et al., IJCAI 2023), starting at ``init`` (default: the configured γ), trained by its own Adam
  with learning rate ``lr`` on dL/dγ (``ilif.neurons.surrogate``: dS/dγ = −(z/γ)·g(z)) after each step
  of the model's optimiser, averaged over processes like the weights' gradients, and kept within
  [``min``, ``max``] (so positive).
- ``anneal_gamma``: γ moved from ``start`` (default: the configured γ) to ``end`` over the epochs
  (``shape``: linear, cosine or geometric), every layer alike.
- ``adaptive_gamma``: γ fitted to the membrane-potential distribution (after MPD-AGL, Jiang et al.,
  IJCAI 2025): the first epoch trains with the configured γ; then every ``every`` epochs, before
  the epoch trains, each layer's γ is set so that a share
  ``target`` of its pre-spike potentials lies inside the support (|h − V_th| ≤ γ/2, the meters'
  support occupancy), measured on a fixed batch of training samples in evaluation mode, within
  [``min``, ``max``]. The forward pass does not depend on γ, so one pass fits every layer.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Optional

from omegaconf import DictConfig

from ilif.checks import choice, component, gamma_width, positive, require, within

if TYPE_CHECKING:
    import torch

SHAPES = ("linear", "cosine", "geometric")
FORMS = ("l2", "l1")
PROBE_SAMPLES = 256  # the fixed batch the adaptive rule measures on: the first samples of the training set


def annealed_gamma(start: float, end: float, shape: str, epoch: int, epochs: int) -> float:
    """γ at ``epoch`` (0-based) of ``epochs``: ``start`` at the first epoch, ``end`` at the last."""
    progress = epoch / (epochs - 1) if epochs > 1 else 0.0
    if shape == "linear":
        return start + (end - start) * progress
    if shape == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
    return start * (end / start) ** progress


def fitted_gamma(h: torch.Tensor, v_threshold: float, target: float, low: float, high: float) -> float:
    """The γ for which a share ``target`` of the potentials ``h`` (any shape) lies within γ/2 of the
    threshold: twice that quantile of |h − V_th|, kept within [low, high]."""
    import torch

    distance = (h.detach().double() - v_threshold).abs().flatten()
    return min(max(2.0 * torch.quantile(distance, target).item(), low), high)


def rate_penalty(rates: list[torch.Tensor], form: str, target: float, weight: float) -> torch.Tensor:
    """weight · mean over layers of (rate − target)² (``l2``) or of the rate (``l1``); rates: scalars."""
    import torch

    stacked = torch.stack(rates)
    return weight * ((stacked - target) ** 2 if form == "l2" else stacked).mean()


def _check_range(low: float, high: float) -> None:
    """remedy.min < remedy.max (ConfigError naming remedy.min otherwise)."""
    require(low < high, "remedy.min", low, f"below remedy.max={high!r}")


class Remedy:
    """``remedy=none``: every layer keeps the configured surrogate."""

    @classmethod
    def check_run(cls, cfg: DictConfig, neuron: type) -> None:
        """The remedy's rules on the rest of a run's config (``neuron``: the neuron's class); raises
        ConfigError naming the key. Called for every job before any trains."""

    def attach(self, model: torch.nn.Module, train_set) -> "Remedy":
        """Bind the remedy to ``model``'s neuron layers and the training set; itself."""
        from ilif.metrics.base import neuron_layers

        self.layers = neuron_layers(model)
        self.model, self.train_set = model, train_set
        return self

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before epoch ``epoch`` (0-based) of ``epochs`` trains (not when resumed inside it)."""

    def penalty(self) -> Optional[torch.Tensor]:
        """The term added to the loss of the step whose forward just ran (None: nothing)."""
        return None

    #: whether :meth:`after_step` does anything (the trainer reads the gradient scaler only then)
    steps = False

    def after_step(self, grad_scale: float, skipped: bool) -> None:
        """Called after each step of the model's optimiser; ``grad_scale``: the factor the loss was
        multiplied by before its backward (a float16 gradient scaler's, else 1); ``skipped``: the
        scaler found an infinity and the model's optimiser did not step."""

    def record(self) -> dict:
        """The γ of every neuron layer (and their mean, min and max): part of the epoch's metrics."""
        gammas = {name: module.surrogate.gamma for name, module in self.layers.items()}
        values = list(gammas.values()) or [float("nan")]
        return {"remedy/gamma": gammas, "remedy/gamma_mean": sum(values) / len(values),
                "remedy/gamma_min": min(values), "remedy/gamma_max": max(values)}

    def state(self) -> dict:
        """What a resume needs besides the model: each layer's γ."""
        return {name: module.surrogate.gamma for name, module in self.layers.items()}

    def load(self, state: dict) -> None:
        for name, gamma in (state or {}).items():
            self.set_gamma(name, gamma)

    def set_gamma(self, name: str, gamma: float) -> None:
        from ilif.neurons import Surrogate

        module = self.layers[name]
        sg = module.surrogate
        module.set_surrogate(Surrogate(sg.family, gamma=gamma, normalize=sg.normalize))


class RateRegularisation(Remedy):
    """``remedy=rate_reg``: the firing rate of every layer in the step's forward, with its gradient.
    The fused LIF and ILIF count their spikes in the op, whose backward adds the count's gradient to
    every spike's inside its own pass; other neurons' rates are means of their spikes."""

    def __init__(self, target: float, weight: float, form: str):
        within(0.0, 1.0, high_inclusive=True)("remedy.target", target)
        positive(strict=False)("remedy.weight", weight)
        choice(FORMS)("remedy.form", form)
        self.target, self.weight, self.form = target, weight, form

    def attach(self, model, train_set) -> "RateRegularisation":
        super().attach(model, train_set)
        self.rates: list[torch.Tensor] = []
        for module in self.layers.values():
            module.count_spikes = True
            module.register_forward_hook(self._keep)
        return self

    def _keep(self, module, inputs, spikes) -> None:
        if module.training:
            count = module.spike_count
            self.rates.append(spikes.float().mean() if count is None else (count / spikes.numel()).float())

    def penalty(self) -> Optional[torch.Tensor]:
        rates, self.rates = self.rates, []
        return rate_penalty(rates, self.form, self.target, self.weight) if rates else None


class LearnableGamma(Remedy):
    """``remedy=learnable_gamma``: one trained γ per neuron layer, the entries of one float64 vector
    outside the model's parameters (so the model's optimiser, weight decay and gradient clipping never
    see them); each layer's surrogate holds its entry as its ``parameter``, from which the fused neurons
    compute their kernel constants on the device (a compiled network is not recompiled as γ moves). A
    step reads the vector back to the host twice, whatever the number of layers: the finite check of its
    gradient and the new values (the surrogates' γ as numbers: the meters, the records)."""

    def __init__(self, init: float, lr: float, min: float, max: float):  # noqa: A002 - the keys
        positive()("remedy.lr", lr)
        for key, value in (("init", init), ("min", min), ("max", max)):
            gamma_width(f"remedy.{key}", value)
        _check_range(min, max)
        require(min <= init <= max, "remedy.init", init, f"within [remedy.min, remedy.max] = [{min!r}, {max!r}]")
        self.init, self.lr, self.min, self.max = init, lr, min, max

    def attach(self, model, train_set) -> "LearnableGamma":
        import torch

        super().attach(model, train_set)
        device = next(model.parameters(), torch.empty(0)).device
        self.gammas = torch.full((len(self.layers),), float(self.init), dtype=torch.float64, device=device,
                                 requires_grad=True)
        self.optimizer = torch.optim.Adam([self.gammas], lr=self.lr)
        self._publish()
        return self

    def _publish(self) -> None:
        """Every layer's surrogate takes its entry's value (one read from the device for all layers) and
        the entry itself, a view through which dL/dγ reaches the vector."""
        import torch

        from ilif.neurons import Surrogate

        with torch.enable_grad():
            for k, (module, value) in enumerate(zip(self.layers.values(), self.gammas.tolist())):
                sg = module.surrogate
                module.set_surrogate(Surrogate(sg.family, gamma=value, normalize=sg.normalize,
                                               parameter=self.gammas[k]))

    steps = True

    def after_step(self, grad_scale: float, skipped: bool) -> None:
        import torch
        import torch.distributed as dist

        if self.gammas.grad is None:
            return
        grads = self.gammas.grad
        grads /= grad_scale
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(grads)
            grads /= dist.get_world_size()
        if not skipped and bool(torch.isfinite(grads).all()):  # a step the scaler skipped moves no γ either
            self.optimizer.step()
            with torch.no_grad():
                self.gammas.clamp_(self.min, self.max)
        self.optimizer.zero_grad(set_to_none=True)
        self._publish()

    def state(self) -> dict:
        return {"gamma": super().state(), "optimizer": self.optimizer.state_dict()}

    def load(self, state: dict) -> None:
        if not state:
            return
        import torch

        with torch.no_grad():
            self.gammas.copy_(torch.tensor([state["gamma"][name] for name in self.layers], dtype=torch.float64))
        self.optimizer.load_state_dict(state["optimizer"])
        self._publish()


class AnnealedGamma(Remedy):
    def __init__(self, start: float, end: float, shape: str):
        gamma_width("remedy.start", start)
        gamma_width("remedy.end", end)
        choice(SHAPES)("remedy.shape", shape)
        self.start, self.end, self.shape = start, end, shape

    def start_epoch(self, epoch: int, epochs: int) -> None:
        gamma = annealed_gamma(self.start, self.end, self.shape, epoch, epochs)
        for name in self.layers:
            self.set_gamma(name, gamma)


class AdaptiveGamma(Remedy):
    probe: Optional[torch.Tensor] = None  # the fixed batch, gathered at the first refit

    @classmethod
    def check_run(cls, cfg: DictConfig, neuron: type) -> None:
        require(cfg.remedy.every < cfg.trainer.epochs, "remedy.every", cfg.remedy.every,
                f"below trainer.epochs={cfg.trainer.epochs} (the first refit is at epoch remedy.every)")
        require("store_membrane" in inspect.signature(neuron).parameters, "remedy", cfg.remedy.name,
                f"a neuron that records its membrane potentials for the fit (store_membrane); {neuron.__name__} "
                "does not")

    def __init__(self, target: float, every: int, min: float, max: float):  # noqa: A002 - the keys
        within(0.0, 1.0)("remedy.target", target)
        positive(integer=True)("remedy.every", every)
        gamma_width("remedy.min", min)
        gamma_width("remedy.max", max)
        _check_range(min, max)
        self.target, self.every, self.min, self.max = target, every, min, max

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if epoch == 0 or epoch % self.every:
            return
        import torch
        from spikingjelly.activation_based import functional as sj_functional

        if self.probe is None:
            self.probe = torch.stack([self.train_set[i][0] for i in range(min(PROBE_SAMPLES, len(self.train_set)))])
        probe = self.probe
        device = next(self.model.parameters()).device
        training = self.model.training
        stored = {name: module.store_membrane for name, module in self.layers.items()}
        self.model.eval()
        try:
            for module in self.layers.values():
                module.store_membrane = True
            with torch.no_grad():
                self.model(probe.to(device))
            for name, module in self.layers.items():
                self.set_gamma(name, fitted_gamma(module.h_seq, module.v_threshold, self.target, self.min, self.max))
        finally:
            for name, module in self.layers.items():
                module.store_membrane = stored[name]
                module.h_seq = None
            sj_functional.reset_net(self.model)
            self.model.train(training)


#: remedy.name -> the remedy's class
REMEDIES = {"none": Remedy, "rate_reg": RateRegularisation, "learnable_gamma": LearnableGamma,
            "anneal_gamma": AnnealedGamma, "adaptive_gamma": AdaptiveGamma}
def remedy_class(cfg: DictConfig) -> tuple[type, dict]:
    """(class, its keyword arguments from ``cfg.remedy``): the class at ``remedy._target_``, else the
    built-in ``remedy.name``. Raises ConfigError naming the key and what is allowed (a key the class
    does not take, or one it needs and the config lacks)."""
    return component("remedy", cfg.remedy, REMEDIES, (), "remedy")


def build_remedy(cfg: DictConfig, model: torch.nn.Module, train_set) -> Remedy:
    """The remedy ``cfg.remedy`` names, attached to ``model``'s neuron layers."""
    cls, arguments = remedy_class(cfg)
    return cls(**arguments).attach(model, train_set)
