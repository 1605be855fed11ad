"""LIF and ILIF as spikingjelly 2.0.0 ``MemoryModule``s.

They follow spikingjelly's conventions: ``step_mode`` "s" (input [B, ...]) or "m" (input [T, B, ...]),
state kept between calls and cleared by ``spikingjelly.activation_based.functional.reset_net``, and the
explicit-state ``*_functional_forward`` hooks. Both step modes run the fused kernel
(:func:`ilif.neurons.functional.multistep`; T = 1 in single-step mode), so a sequence fed step by step
gives bit for bit the spikes and gradients of the same sequence fed at once.
"""

from __future__ import annotations

from typing import Optional

import torch
from spikingjelly.activation_based import base

from ._contract import compute_dtype
from .base import SpikingNeuron
from .functional import LIFParams, NeuronParams, NeuronState, kernel_constants, multistep_with_count
from .rules import check_parameter
from .surrogate import Surrogate

# (multiply-class, add-class) operations per neuron-step: LIF charge (λ·v, +x), compare, soft reset;
# current unit: i + xs, ×κ_I, clamp, h − c, x·s; membrane unit: s·u, m +, ×κ_M, σ(m), s·σ, u −.
STATE_OPS = {"lif": (1, 3), "current": (2, 3), "membrane": (4, 2)}


class LIF(base.MemoryModule, SpikingNeuron):
    """Leaky integrate-and-fire neuron: h_t = λ·v_{t−1} + x_t, s_t = Θ(h_t − V_th), reset.

    Args:
        tau: membrane time constant (float > 1); λ = 1 − 1/τ, the input is not divided by τ.
        v_threshold: firing threshold V_th.
        reset: "soft" (subtract V_th) or "hard" (to 0).
        detach_reset: detach the spike where it updates the state.
        surrogate: the :class:`Surrogate` used in the backward (default rectangle, γ = 1, unit area).
        step_mode: "s" or "m".
        store_membrane: keep the pre-spike membrane potential of the last call in ``self.h_seq``
            ([T, B, ...], detached); off by default because it keeps a [T, B, ...] tensor alive.
        backend: "auto", "c", "triton", "torch" or "reference" (see :func:`ilif.neurons.functional.multistep`).
        recompute: keep only the input for the backward and run the neuron's forward again there (ILIF
            then keeps what LIF keeps; the same gradients, bit for bit; ``trainer.memory=lean``).
    """

    memory_names: tuple[str, ...] = ("v",)

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        reset: str = "soft",
        detach_reset: bool = False,
        surrogate: Optional[Surrogate] = None,
        step_mode: str = "s",
        store_membrane: bool = False,
        backend: str = "auto",
        recompute: bool = False,
    ):
        super().__init__()
        self.params = LIFParams(
            tau=tau,
            v_threshold=v_threshold,
            reset=reset,
            detach_reset=detach_reset,
            surrogate=Surrogate() if surrogate is None else surrogate,
        ).validated()
        check_parameter("store_membrane", store_membrane)
        check_parameter("recompute", recompute)
        check_parameter("backend", backend)
        self.step_mode = step_mode
        self.store_membrane = store_membrane
        self.recompute = recompute
        self.backend = backend
        self.h_seq: Optional[torch.Tensor] = None
        for name in self.memory_names:
            self.register_memory(name, 0.0)

    @property
    def params(self) -> LIFParams | NeuronParams:
        """The layer's constants. Setting them (a new surrogate, :meth:`set_surrogate`) also sets
        ``kernel_constants``, the kernels' float64 constants on the layer's device (a tensor, not a
        buffer: not in the state dict, not cast by ``model.half()``, not averaged by an EMA; it follows
        ``model.to(device)``), a new tensor each time (one that a step in flight saved is left as it was),
        so a new γ recompiles no compiled network and, for a learnable γ, nothing leaves the device."""
        return self._params

    @params.setter
    def params(self, params: LIFParams | NeuronParams) -> None:
        self._params = params
        device = self.kernel_constants.device if "kernel_constants" in self.__dict__ else torch.device("cpu")
        self.kernel_constants = kernel_constants(params, device)

    def _apply(self, fn, *args, **kwargs):
        """spikingjelly's and nn.Module's, and the constants follow the layer to another device (in
        float64 whatever the dtype the parameters are given)."""
        module = super()._apply(fn, *args, **kwargs)
        device = fn(torch.empty(0, dtype=torch.float64, device=self.kernel_constants.device)).device
        if device != self.kernel_constants.device:
            self.kernel_constants = kernel_constants(self.params, device)
        return module

    @property
    def v_threshold(self) -> float:
        return self.params.v_threshold

    def state_ops(self) -> tuple[int, int]:
        """(multiply-class, add-class) operations of one neuron-step."""
        return STATE_OPS["lif"]

    def extra_repr(self) -> str:
        p = self.params
        sg = p.surrogate
        return (
            f"tau={p.tau}, v_threshold={p.v_threshold}, reset={p.reset}, detach_reset={p.detach_reset}, "
            f"surrogate={sg.family}(gamma={sg.gamma}, normalize={sg.normalize}), step_mode={self.step_mode}"
        )

    def materialize_states(self, inputs, states, step_mode):
        x = inputs[0]
        if step_mode == "m":
            if x.dim() < 2:
                raise ValueError(
                    f"multi-step input must have shape [T, B, ...] (at least 2 dims); got shape {tuple(x.shape)}"
                )
        return states  # 0.0 after a reset: the op's zero state, made inside it

    def _full_state(self, states, x_seq: torch.Tensor) -> Optional[NeuronState]:
        """The fused core's state from this layer's (None for the zero state after a reset; [0], zero,
        for a unit this layer lacks)."""
        named = dict(zip(self.memory_names, states))
        if all(isinstance(s, float) for s in states):
            return None
        zero = x_seq.new_empty((0,), dtype=compute_dtype(x_seq.dtype))
        return NeuronState(*(zero if isinstance(named.get(k, 0.0), float) else named[k] for k in NeuronState._fields))

    def _run(self, x_seq: torch.Tensor, states):
        spikes, new_state, h_seq, self.spike_count = multistep_with_count(
            x_seq, self._full_state(states, x_seq), self.params, self.backend,
            count=self.count_spikes and self.training, constants=self.kernel_constants,
            recompute=self.recompute)
        self.h_seq = h_seq.detach() if self.store_membrane and h_seq is not None else None
        return spikes, tuple(getattr(new_state, k) for k in self.memory_names)

    def single_step_functional_forward(self, inputs, states, **kwargs):
        spikes, new_states = self._run(inputs[0].unsqueeze(0), states)
        return (spikes[0],), new_states

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        spikes, new_states = self._run(inputs[0], states)
        return (spikes,), new_states


class ILIF(LIF):
    """Temporal inhibitory LIF (docs/neuron.md): LIF plus a current inhibition unit (eq. 1, strength
    ``kappa_current``) and a membrane inhibition unit (eqs. 5–6, strength ``kappa_membrane``). Each can be
    switched off for ablations; both off is exactly :class:`LIF`. Nothing is learnable.
    ``clamp_grad_at_zero`` (1.0 or 0.0) is the derivative of max(i, 0) at i = 0 (1.0: as the release
    trained; see :mod:`ilif.neurons.functional`).
    """

    memory_names = ("v", "i", "m", "xs")

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        reset: str = "soft",
        detach_reset: bool = False,
        surrogate: Optional[Surrogate] = None,
        step_mode: str = "s",
        store_membrane: bool = False,
        backend: str = "auto",
        recompute: bool = False,
        kappa_current: float = 0.03,
        kappa_membrane: float = 1.0,
        current_inhibition: bool = True,
        membrane_inhibition: bool = True,
        clamp_grad_at_zero: float = 1.0,
    ):
        super().__init__(
            tau=tau,
            v_threshold=v_threshold,
            reset=reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            step_mode=step_mode,
            store_membrane=store_membrane,
            backend=backend,
            recompute=recompute,
        )
        self.params = NeuronParams(
            *self.params,
            kappa_current=kappa_current,
            kappa_membrane=kappa_membrane,
            current_inhibition=current_inhibition,
            membrane_inhibition=membrane_inhibition,
            clamp_grad_at_zero=clamp_grad_at_zero,
        ).validated()

    def state_ops(self) -> tuple[int, int]:
        """(multiply-class, add-class) operations of one neuron-step: LIF's plus each inhibitory unit's."""
        p = self.params
        parts = ["lif"] + ["current"] * p.current_inhibition + ["membrane"] * p.membrane_inhibition
        return tuple(sum(STATE_OPS[part][k] for part in parts) for k in range(2))

    def extra_repr(self) -> str:
        p = self.params
        text = super().extra_repr()
        if p.current_inhibition or p.membrane_inhibition:
            text += (
                f", current_inhibition={p.current_inhibition}, kappa_current={p.kappa_current}, "
                f"membrane_inhibition={p.membrane_inhibition}, kappa_membrane={p.kappa_membrane}, "
                f"clamp_grad_at_zero={p.clamp_grad_at_zero}"
            )
        return text
