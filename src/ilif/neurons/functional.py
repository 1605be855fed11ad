"""The functional core of LIF and ILIF: explicit parameters, explicit state, pure step functions.

ILIF as the authors' released code defines it (the equations and every switch: docs/neuron.md), per
step t with λ = 1 − 1/τ:

    (1) i_t = κ_I · (i_{t−1} + x_{t−1}·s_{t−1})       current inhibition (x_0 = s_0 = 0)
    (2) h_t = λ·v_{t−1} + x_t − max(i_t, 0)
    (3) s_t = Θ(h_t − V_th)                            surrogate gradient here only
    (4) u_t = h_t − s_t·V_th   (soft)  |  h_t·(1 − s_t)   (hard, reset to 0)
    (5) m_t = κ_M · (m_{t−1} + s_t·u_t)                membrane inhibitory memory
    (6) v_t = u_t − s_t·σ(m_t)

With ``current_inhibition=False`` (1) is dropped (i ≡ 0); with ``membrane_inhibition=False`` (5, 6)
are dropped (v_t = u_t). Both off is LIF. The state carried between steps is (v, i, m, xs) with
xs_t = x_t·s_t. ``detach_reset=True`` detaches s_t wherever it updates the state (1, 4, 5, 6), so the
spike's gradient flows only through the layer output. The derivative of max(i, 0) is 1[i > 0] plus
``clamp_grad_at_zero`` at i = 0 exactly (every step before a neuron's first spike): 1.0, the default,
is how the release trained (its ``torch.clamp`` passed the gradient at the bound on the torch versions
it ran on); 0.0 drops that path. Both are written out here and in every kernel, whatever the
installed torch's clamp does.

Two implementations of the same equations:
- :func:`step`: one step, op by op, autograd on every op. It is the oracle for the tests and the way
  the authors' release runs (a per-step Python loop).
- :func:`multistep`: the whole [T, ...] sequence through the fused custom op (``ilif.neurons._ops``)
  with a hand-written BPTT backward. The modules use it in both step modes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch

from ._contract import SURROGATE_CONSTANTS, KernelFlags, check_dtype, compute_dtype
from ._ops import neuron_forward
from .rules import check_parameter
from .surrogate import Surrogate


class LIFParams(NamedTuple):
    """Constants of a LIF layer, and of the neurons built on its charge (CLIF, PLIF, a
    :class:`~ilif.neurons.base.StepNeuron`); nothing here is learnable."""

    tau: float = 2.0
    v_threshold: float = 1.0
    reset: str = "soft"
    detach_reset: bool = False
    surrogate: Surrogate = Surrogate()

    @property
    def decay(self) -> float:
        """λ = 1 − 1/τ."""
        return 1.0 - 1.0 / self.tau

    def validated(self) -> "LIFParams":
        """Return ``self`` after checking every value; raises ValueError naming the bad parameter."""
        for name in ("tau", "v_threshold", "detach_reset", "reset"):
            check_parameter(name, getattr(self, name))
        if not isinstance(self.surrogate, Surrogate):
            raise ValueError(f"surrogate={self.surrogate!r} is not allowed: it must be an ilif.neurons.Surrogate")
        return self._replace(tau=float(self.tau), v_threshold=float(self.v_threshold))

    def core(self) -> "NeuronParams":
        """These constants as the fused core's: ILIF with both inhibitory units off."""
        return NeuronParams(*self)

    def kernel_flags(self) -> KernelFlags:
        """What the fused kernels are specialised on."""
        return self.core().kernel_flags()

    def constant_values(self) -> tuple[float, ...]:
        """The fused kernels' constants (:data:`ilif.neurons._contract.CONSTANTS`)."""
        return self.core().constant_values()


class NeuronParams(NamedTuple):
    """Constants of an ILIF layer, the fused core's: LIF's (:class:`LIFParams`, the first five fields)
    and the two inhibitory units (both off: LIF). Nothing here is learnable."""

    tau: float = 2.0
    v_threshold: float = 1.0
    reset: str = "soft"
    detach_reset: bool = False
    surrogate: Surrogate = Surrogate()
    current_inhibition: bool = False
    membrane_inhibition: bool = False
    kappa_current: float = 0.03
    kappa_membrane: float = 1.0
    clamp_grad_at_zero: float = 1.0

    @property
    def decay(self) -> float:
        """λ = 1 − 1/τ."""
        return 1.0 - 1.0 / self.tau

    def core(self) -> "NeuronParams":
        """Itself: these are the fused core's constants."""
        return self

    def validated(self) -> "NeuronParams":
        """Return ``self`` after checking every value (LIF's first); raises ValueError naming the bad one."""
        lif = len(LIFParams._fields)
        p = NeuronParams(*LIFParams(*self[:lif]).validated(), *self[lif:])
        for name in NeuronParams._fields[lif:]:
            check_parameter(name, getattr(p, name))
        return p._replace(kappa_current=float(p.kappa_current), kappa_membrane=float(p.kappa_membrane),
                          clamp_grad_at_zero=float(p.clamp_grad_at_zero))

    def kernel_flags(self) -> KernelFlags:
        """What the fused kernels are specialised on."""
        return KernelFlags(
            current=self.current_inhibition, membrane=self.membrane_inhibition, hard=self.reset == "hard",
            detach=self.detach_reset, clamp_ge=self.clamp_grad_at_zero == 1.0, family=int(self.surrogate.family_id),
        )

    def constant_values(self) -> tuple[float, ...]:
        """The fused kernels' constants (:data:`ilif.neurons._contract.CONSTANTS`): the neuron's, then the
        surrogate's."""
        return (self.decay, self.v_threshold, self.kappa_current, self.kappa_membrane,
                *self.surrogate.constant_values())


class NeuronState(NamedTuple):
    """State between steps, each [B, ...] (the shape of one step's input): membrane v, current
    inhibition i (unclamped), membrane memory m, and xs = x·s of the last step. Unused units stay 0."""

    v: torch.Tensor
    i: torch.Tensor
    m: torch.Tensor
    xs: torch.Tensor


def zero_state(like: torch.Tensor) -> NeuronState:
    """All-zero state shaped like one step of input ``like`` [B, ...], in its compute dtype."""
    return NeuronState(*(torch.zeros_like(like, dtype=compute_dtype(like.dtype)) for _ in range(4)))


def positive_part(i: torch.Tensor, grad_at_zero: float) -> torch.Tensor:
    """max(i, 0) with derivative 1[i > 0] + grad_at_zero·1[i = 0], independent of torch's clamp."""
    keep = i >= 0 if grad_at_zero == 1.0 else i > 0
    return torch.where(keep, i, torch.zeros_like(i))


def step(x: torch.Tensor, state: Optional[NeuronState], params: NeuronParams) -> tuple[torch.Tensor, NeuronState]:
    """One step of equations (1)–(6), op by op with autograd.

    Args:
        x: input current [B, ...].
        state: previous state (None: all zeros).
        params: neuron constants (:class:`NeuronParams`, or :class:`LIFParams` for LIF).
    Returns:
        spikes [B, ...] and the new state.
    """
    p = params.core()
    v, i, m, xs = zero_state(x) if state is None else state
    h = p.decay * v + x
    if p.current_inhibition:
        i = p.kappa_current * (i + xs)
        h = h - positive_part(i, p.clamp_grad_at_zero)
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
    params: NeuronParams | LIFParams,
    backend: str = "auto",
) -> tuple[torch.Tensor, NeuronState, Optional[torch.Tensor]]:
    """All T steps of equations (1)–(6) in one fused custom op: :func:`multistep_with_count` without
    the count. Returns spikes [T, B, ...], the final state and h [T, B, ...] (see there)."""
    return multistep_with_count(x_seq, state, params, backend, count=False)[:3]


@functools.lru_cache(maxsize=64)
def _constants(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device)


def kernel_constants(params: NeuronParams | LIFParams, device: torch.device) -> torch.Tensor:
    """``params``' constants [8] float64 on ``device`` (:data:`ilif.neurons._contract.CONSTANTS`): made once
    per value and device and kept; with a learnable γ its part is computed on the device from the
    parameter (nothing read back to the host, nothing copied to the device)."""
    values = params.constant_values()
    sg = params.surrogate
    if sg.parameter is None:
        return _constants(values, torch.device(device))
    neuron = _constants(values[:SURROGATE_CONSTANTS], torch.device(device))
    return torch.cat((neuron, sg.constants_on_device().to(device)))


def multistep_with_count(
    x_seq: torch.Tensor,
    state: Optional[NeuronState],
    params: NeuronParams | LIFParams,
    backend: str = "auto",
    count: bool = True,
    constants: Optional[torch.Tensor] = None,
    recompute: bool = False,
) -> tuple[torch.Tensor, NeuronState, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """All T steps of equations (1)–(6) in one fused custom op, and the number of spikes.

    Args:
        x_seq: input currents [T, B, ...] (at least 2 dims), float16, bfloat16, float32 or float64.
        state: state before the first step, each [B, ...] (None: all zeros).
        params: neuron constants (:class:`NeuronParams`, or :class:`LIFParams` for LIF).
        backend: ``auto`` (the C kernel for CPU tensors, Triton for CUDA tensors, the torch loop where
            neither runs), ``c``, ``triton``, ``torch``, or ``reference``: :func:`step` in a Python loop
            with autograd on every op, the way the authors' release runs (slow; for checks and benchmarks).
        constants: ``params``' constants [8] float64 on x's device as a module keeps them (None: made
            by :func:`kernel_constants`).
        recompute: keep only x (and a given state) for the backward, which runs the forward again for
            the rest: ILIF then keeps what LIF keeps, at the cost of a second forward pass of the neuron
            (same numbers, bit for bit).
    Returns:
        spikes [T, B, ...] in x's dtype, the state after the last step (compute dtype: float64 for
        float64 input, else float32), the pre-spike membrane potential h [T, B, ...] (no
        gradient; kept by the backward anyway; None for ``reference``), and with ``count`` the number
        of spikes (0-dim float64, with a gradient: the fused backward adds it to every spike's at no
        extra pass, which is what makes an activity regulariser cheap), else None.
    """
    if x_seq.dim() < 2:
        raise ValueError(
            f"multi-step input must have shape [T, B, ...] (at least 2 dims); got shape {tuple(x_seq.shape)}"
        )
    check_parameter("backend", backend)
    check_dtype(x_seq)
    params = params.core()
    if backend == "reference":
        spikes, state, h_seq = _reference(x_seq, state, params)
        return spikes, state, h_seq, spikes.sum(dtype=torch.float64) if count else None
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], -1)
    if state is None:  # [0]: a zero state, made inside the op (nothing to keep for the backward)
        state_flat = (x.new_empty((0,), dtype=compute_dtype(x.dtype)),) * 4
    else:
        if state.v.shape != shape[1:]:
            raise ValueError(
                f"neuron state has shape {tuple(state.v.shape)} but one step of input has shape {tuple(shape[1:])}: "
                "reset the network (spikingjelly functional.reset_net) before a new batch"
            )
        state_flat = tuple(t.reshape(-1).to(compute_dtype(x.dtype)) for t in state)  # [0] stays [0]: zero
    gamma = params.surrogate.parameter
    gamma = x.new_empty((0,), dtype=compute_dtype(x.dtype)) if gamma is None else gamma
    constants = kernel_constants(params, x.device) if constants is None else constants
    spikes, h_seq, _m_seq, _i_grad, *final, spike_sum = neuron_forward(x, *state_flat, gamma, constants,
                                                                        *params.kernel_flags(), recompute, count,
                                                                        backend)
    new_state = NeuronState(*_final_state(final, state, x, shape[1:]))
    return spikes.view(shape), new_state, h_seq.view(shape), spike_sum if count else None


def _final_state(final, state: Optional[NeuronState], x: torch.Tensor, shape) -> list[torch.Tensor]:
    """The op's final (v, i, m, xs) [N] as [B, ...] each; a unit the neuron lacks ([0]) keeps its initial
    state unchanged (one zero, expanded, where it had none)."""
    out, zero = [], None
    for k, t in enumerate(final):
        if t.numel():
            out.append(t.view(shape))
        elif state is not None and state[k].numel():
            out.append(state[k])
        else:
            zero = x.new_zeros((), dtype=compute_dtype(x.dtype)) if zero is None else zero
            out.append(zero.expand(shape))
    return out


def _reference(x_seq: torch.Tensor, state: Optional[NeuronState], params: NeuronParams):
    """:func:`step` over T in the compute dtype; spikes cast back to x's dtype. Shapes as :func:`multistep`."""
    spikes = []
    for x in x_seq.to(compute_dtype(x_seq.dtype)):
        s, state = step(x, state, params)
        spikes.append(s)
    return torch.stack(spikes).to(x_seq.dtype), state, None
