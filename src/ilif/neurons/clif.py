"""CLIF: the Complementary LIF neuron (Huang et al., ICML 2024), the neuron whose code ILIF's descends
from (the release's unused ``ILIFSpike`` class is CLIF). A baseline for the γ dilemma: its
complementary potential m remembers recent spikes and lowers the membrane after each one.

With H_t = λ·V_{t−1} + X_t (λ = 1 − 1/τ, the input not divided by τ, as our LIF):

    m ← m · σ(H_t / τ)            the complementary potential decays with the membrane
    s_t = Θ(H_t − V_th)
    m ← m + s_t
    V_t = H_t − s_t · V_th        soft reset (hard: H_t · (1 − s_t))
    V_t ← V_t − s_t · σ(m)        the complementary reset

It runs as a loop over T of torch ops (autograd through the surrogate), any device; no fused kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
from spikingjelly.activation_based import base

from .base import SpikingNeuron
from .functional import NeuronParams
from .surrogate import Surrogate


class CLIF(base.MemoryModule, SpikingNeuron):
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
        super().__init__()
        self.params = NeuronParams(tau=tau, v_threshold=v_threshold, reset=reset, detach_reset=detach_reset,
                                   surrogate=Surrogate() if surrogate is None else surrogate).validated()
        self.step_mode = step_mode
        self.store_membrane = store_membrane
        self.h_seq: Optional[torch.Tensor] = None
        self.register_memory("v", 0.0)
        self.register_memory("m", 0.0)

    @property
    def v_threshold(self) -> float:
        return self.params.v_threshold

    def state_ops(self) -> tuple[int, int]:
        """Charge λ·v + x (1 mul, 1 add); H/τ, σ (2 mul, 1 add: exp and reciprocal), m·σ (1 mul);
        compare (1 add); m + s (1 add); soft reset s·V_th, H − (1 mul, 1 add); σ(m) (2 mul, 1 add);
        s·σ(m), V − (1 mul, 1 add)."""
        return 9, 7

    def extra_repr(self) -> str:
        p, sg = self.params, self.params.surrogate
        return (f"tau={p.tau}, v_threshold={p.v_threshold}, reset={p.reset}, detach_reset={p.detach_reset}, "
                f"surrogate={sg.family}(gamma={sg.gamma}, normalize={sg.normalize}), step_mode={self.step_mode}")

    def _run(self, x_seq: torch.Tensor) -> torch.Tensor:
        """x_seq [T, B, ...] -> spikes [T, B, ...]; updates ``v`` and ``m``."""
        p = self.params
        if isinstance(self.v, float):
            self.v = torch.zeros_like(x_seq[0])
            self.m = torch.zeros_like(x_seq[0])
        v, m, spikes, potentials = self.v, self.m, [], []
        for x in x_seq:
            h = p.decay * v + x
            m = m * torch.sigmoid(h / p.tau)
            s = p.surrogate(h - p.v_threshold)
            s_reset = s.detach() if p.detach_reset else s
            m = m + s_reset
            v = h - s_reset * p.v_threshold if p.reset == "soft" else h * (1.0 - s_reset)
            v = v - s_reset * torch.sigmoid(m)
            spikes.append(s)
            potentials.append(h)
        self.v, self.m = v, m
        self.h_seq = torch.stack(potentials).detach() if self.store_membrane else None
        return torch.stack(spikes)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.unsqueeze(0))[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"multi-step input must have shape [T, B, ...] (at least 2 dims); got shape "
                             f"{tuple(x_seq.shape)}")
        return self._run(x_seq)
