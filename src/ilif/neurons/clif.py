"""CLIF: the Complementary LIF neuron (Huang et al., ICML 2024), the neuron whose code ILIF's descends
from (the release's unused ``ILIFSpike`` class is CLIF). A baseline for the γ dilemma: its
complementary potential m remembers recent spikes and lowers the membrane after each one.

With H_t = λ·V_{t−1} + X_t (λ = 1 − 1/τ, the input not divided by τ, as our LIF):

    m ← m · σ(H_t / τ)            the complementary potential decays with the membrane
    s_t = Θ(H_t − V_th)
    m ← m + s_t
    V_t = H_t − s_t · V_th        soft reset (hard: H_t · (1 − s_t))
    V_t ← V_t − s_t · σ(m)        the complementary reset

It is a :class:`~ilif.neurons.base.StepNeuron`: one step of torch ops (autograd through the surrogate),
run over T by the base, any device; no fused kernel.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import StepNeuron
from .functional import LIFParams
from .surrogate import Surrogate


class CLIF(StepNeuron):
    """Complementary LIF (see the module). State: the membrane ``v`` and the complementary potential ``m``.

    Args:
        tau: membrane time constant (float > 1); λ = 1 − 1/τ, and m decays by σ(H/τ).
        v_threshold: firing threshold V_th.
        reset: "soft" (subtract V_th, CLIF's) or "hard" (to 0); the complementary reset follows either.
        detach_reset: detach the spike where it updates the state (v and m).
        surrogate: the :class:`Surrogate` used in the backward (default rectangle, γ = 1, unit area).
        step_mode: "s" or "m".
        store_membrane: keep the pre-spike potential H of the last call in ``self.h_seq`` (detached).
    """

    memory_names = ("v", "m")

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        reset: str = "soft",
        detach_reset: bool = False,
        surrogate: Optional[Surrogate] = None,
        step_mode: str = "s",
        store_membrane: bool = False,
    ):
        super().__init__(step_mode, store_membrane)
        self.params = LIFParams(tau=tau, v_threshold=v_threshold, reset=reset, detach_reset=detach_reset,
                                   surrogate=Surrogate() if surrogate is None else surrogate).validated()

    def state_ops(self) -> tuple[int, int]:
        """Charge λ·v + x (1 mul, 1 add); H/τ, σ (2 mul, 1 add: exp and reciprocal), m·σ (1 mul);
        compare (1 add); m + s (1 add); soft reset s·V_th, H − (1 mul, 1 add); σ(m) (2 mul, 1 add);
        s·σ(m), V − (1 mul, 1 add)."""
        return 9, 7

    def extra_repr(self) -> str:
        p, sg = self.params, self.params.surrogate
        return (f"tau={p.tau}, v_threshold={p.v_threshold}, reset={p.reset}, detach_reset={p.detach_reset}, "
                f"surrogate={sg.family}(gamma={sg.gamma}, normalize={sg.normalize}), step_mode={self.step_mode}")

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Charge, the complementary decay, fire, the two resets (the module's equations); [B, ...] each."""
        p = self.params
        h = p.decay * state["v"] + x
        m = state["m"] * torch.sigmoid(h / p.tau)
        s = p.surrogate(h - p.v_threshold)
        s_reset = s.detach() if p.detach_reset else s
        m = m + s_reset
        v = h - s_reset * p.v_threshold if p.reset == "soft" else h * (1.0 - s_reset)
        v = v - s_reset * torch.sigmoid(m)
        return s, h, {"v": v, "m": m}
