"""The functional core of LIF and ILIF: explicit parameters, explicit state, pure step functions.

ILIF (ILIF_REFERENCE §2, the authors' released code), per step t with λ = 1 − 1/τ:

    (1) i_t = κ_I · (i_{t−1} + x_{t−1}·s_{t−1})       current inhibition (x_0 = s_0 = 0)
    (2) h_t = λ·v_{t−1} + x_t − max(i_t, 0)
    (3) s_t = Θ(h_t − V_th)                            surrogate gradient here only
    (4) u_t = h_t − s_t·V_th   (soft)  |  h_t·(1 − s_t)   (hard, reset to 0)
    (5) m_t = κ_M · (m_{t−1} + s_t·u_t)                membrane inhibitory memory
    (6) v_t = u_t − s_t·σ(m_t)

With ``current_inhibition=False`` (1) is dropped (i ≡ 0); with ``membrane_inhibition=False`` (5, 6)
are dropped (v_t = u_t). Both off is LIF. The state carried between steps is (v, i, m, xs) with
xs_t = x_t·s_t. ``detach_reset=True`` detaches s_t wherever it updates the state (1, 4, 5, 6), so the
spike's gradient flows only through the layer output. max(i, 0) has derivative 1[i > 0], as torch's
clamp has (the release uses ``torch.clamp(min=0)``).

Two implementations of the same equations:
- :func:`step`: one step, op by op, autograd on every op. It is the oracle for the tests and the way
  the authors' release runs (a per-step Python loop).
- :func:`multistep`: the whole [T, ...] sequence in one autograd Function with a hand-written BPTT
  backward (``ilif.neurons._fused``). The modules use it in both step modes.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .surrogate import Surrogate

RESETS = ("soft", "hard")


class NeuronParams(NamedTuple):
    """Constants of one neuron layer (nothing here is learnable)."""

    tau: float = 2.0
    v_threshold: float = 1.0
    reset: str = "soft"
    detach_reset: bool = False
    surrogate: Surrogate = Surrogate()
    current_inhibition: bool = False
    membrane_inhibition: bool = False
    kappa_current: float = 0.03
    kappa_membrane: float = 1.0

    @property
    def decay(self) -> float:
        """λ = 1 − 1/τ."""
        return 1.0 - 1.0 / self.tau

    def validated(self) -> "NeuronParams":
        """Return ``self`` after checking every value; raises ValueError naming the bad parameter."""
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not math.isfinite(self.tau) or self.tau <= 1.0:
            raise ValueError(f"tau={self.tau!r} is not allowed: it must be a finite float > 1")
        if not math.isfinite(self.v_threshold) or self.v_threshold <= 0.0:
            raise ValueError(f"v_threshold={self.v_threshold!r} is not allowed: it must be a finite float > 0")
        if self.reset not in RESETS:
            raise ValueError(f"reset={self.reset!r} is not allowed: choose one of {RESETS}")
        if not isinstance(self.surrogate, Surrogate):
            raise ValueError(f"surrogate={self.surrogate!r} is not allowed: it must be an ilif.neurons.Surrogate")
        for name in ("kappa_current", "kappa_membrane"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0.0:
                raise ValueError(f"{name}={value!r} is not allowed: it must be a finite float >= 0")
        return self._replace(tau=float(self.tau), v_threshold=float(self.v_threshold),
                             kappa_current=float(self.kappa_current), kappa_membrane=float(self.kappa_membrane))


class NeuronState(NamedTuple):
    """State between steps, each [B, ...] (the shape of one step's input): membrane v, current
    inhibition i (unclamped), membrane memory m, and xs = x·s of the last step. Unused units stay 0."""

    v: torch.Tensor
    i: torch.Tensor
    m: torch.Tensor
    xs: torch.Tensor


def zero_state(like: torch.Tensor) -> NeuronState:
    """All-zero state shaped like one step of input ``like`` [B, ...]."""
    return NeuronState(*(torch.zeros_like(like) for _ in range(4)))


def step(x: torch.Tensor, state: Optional[NeuronState], params: NeuronParams) -> tuple[torch.Tensor, NeuronState]:
    """One step of equations (1)–(6), op by op with autograd.

    Args:
        x: input current [B, ...].
        state: previous state (None: all zeros).
        params: neuron constants.
    Returns:
        spikes [B, ...] and the new state.
    """
    p = params
    v, i, m, xs = zero_state(x) if state is None else state
    h = p.decay * v + x
    if p.current_inhibition:
        i = p.kappa_current * (i + xs)
        h = h - torch.clamp(i, min=0.0)
    s = p.surrogate(h - p.v_threshold)
    s_state = s.detach() if p.detach_reset else s
    u = h - s_state * p.v_threshold if p.reset == "soft" else h * (1.0 - s_state)
    if p.membrane_inhibition:
        m = p.kappa_membrane * (m + s_state * u)
        v = u - s_state * torch.sigmoid(m)
    else:
        v = u
    if p.current_inhibition:
        xs = x * s_state
    return s, NeuronState(v, i, m, xs)


def multistep(
    x_seq: torch.Tensor,
    state: Optional[NeuronState],
    params: NeuronParams,
    backend: str = "auto",
) -> tuple[torch.Tensor, NeuronState, torch.Tensor]:
    """All T steps of equations (1)–(6) in one fused autograd Function.

    Args:
        x_seq: input currents [T, B, ...] (at least 2 dims).
        state: state before the first step, each [B, ...] (None: all zeros).
        params: neuron constants.
        backend: ``auto`` (compiled C kernel for float32/float64 CPU tensors when it builds, else
            torch), ``c``, ``torch``, or ``reference``: :func:`step` in a Python loop with autograd
            on every op, the way the authors' release runs (slow; for checks and benchmarks).
    Returns:
        spikes [T, B, ...], the state after the last step, and the pre-spike membrane potential
        h [T, B, ...] (no gradient; kept by the backward anyway; None for ``reference``).
    """
    from ._fused import fused_multistep

    if x_seq.dim() < 2:
        raise ValueError(
            f"multi-step input must have shape [T, B, ...] (at least 2 dims); got shape {tuple(x_seq.shape)}"
        )
    if backend == "reference":
        spikes = []
        for x in x_seq:
            s, state = step(x, state, params)
            spikes.append(s)
        return torch.stack(spikes), state, None
    return fused_multistep(x_seq, state, params, backend)
