"""PLIF: spikingjelly 2.0.0's parametric LIF (learnable τ, Fang et al., ICCV 2021), the third neuron the
authors' release trains, offered as a baseline. It runs spikingjelly's own implementation (no kernel
of ours); our :class:`Surrogate` drives its backward, so γ means the same as for LIF and ILIF.
"""

from __future__ import annotations

from typing import Optional

from spikingjelly.activation_based.neuron import ParametricLIFNode

from .base import SpikingNeuron
from .functional import LIFParams
from .rules import check_parameter
from .surrogate import Surrogate


class PLIF(ParametricLIFNode, SpikingNeuron):
    """Parametric LIF: h_t = v_{t−1} + (x_t − (v_{t−1} − v_reset))/τ with 1/τ = sigmoid(w) learnable per
    layer (``decay_input=True``; False drops the 1/τ on x), s_t = Θ(h_t − V_th), then reset.

    Args:
        tau: initial τ (float > 1); spikingjelly's default 2.0.
        v_threshold: firing threshold V_th.
        reset: "hard" (to 0, spikingjelly's default) or "soft" (subtract V_th).
        detach_reset: detach the spike where it resets the state.
        surrogate: the :class:`Surrogate` of the backward (default rectangle, γ = 1, unit area).
        decay_input: divide the input by τ too (spikingjelly's default True).
        step_mode: "s" or "m".
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        reset: str = "hard",
        detach_reset: bool = False,
        surrogate: Optional[Surrogate] = None,
        decay_input: bool = True,
        step_mode: str = "s",
    ):
        params = LIFParams(tau=tau, v_threshold=v_threshold, reset=reset, detach_reset=detach_reset,
                              surrogate=Surrogate() if surrogate is None else surrogate).validated()
        check_parameter("decay_input", decay_input)
        super().__init__(init_tau=params.tau, decay_input=decay_input, v_threshold=params.v_threshold,
                         v_reset=0.0 if params.reset == "hard" else None, surrogate_function=params.surrogate,
                         detach_reset=params.detach_reset, step_mode=step_mode)

    @property
    def surrogate(self) -> Surrogate:
        return self.surrogate_function

    def set_surrogate(self, surrogate: Surrogate) -> None:
        self.surrogate_function = surrogate

    def state_ops(self) -> tuple[int, int]:
        """Charge: v − v_reset, x − that, × 1/τ, + v (1 mul, 3 add); compare (1 add); reset (1 mul,
        1 add: h·(1 − s) for hard, h − s·V_th for soft)."""
        return 2, 5
