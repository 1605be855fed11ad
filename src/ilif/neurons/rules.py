"""What a neuron's parameters may be, free of torch: the choices of the surrogate and of the reset,
and a rule for every parameter of the package's neurons. The neurons check their arguments with
:func:`check_parameter`, and the config check (:mod:`ilif.checks`) applies the same rules before
torch is imported, so a bad ``neuron.*`` or ``surrogate.*`` value is one line in well under a second.
"""

from __future__ import annotations

from typing import Any, Callable

from ilif.errors import finite_number

#: the surrogate families, in the order every kernel numbers them (``ilif.neurons.surrogate.Family``)
FAMILIES = ("rectangle", "triangle", "sigmoid", "atan")
NORMALIZATIONS = ("area", "peak")
RESETS = ("soft", "hard")
#: d max(i, 0)/di at i = 0: 1.0 as the release trained, or 0.0
CLAMP_GRADS = (0.0, 1.0)
#: the fused op's implementations (``auto``: C on CPU tensors, Triton on CUDA ones), and the per-step oracle
FUSED_BACKENDS = ("auto", "c", "torch", "triton")
BACKENDS = (*FUSED_BACKENDS, "reference")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: it must be true or false")


def _above(bound: float, strict: bool = True) -> Callable[[str, Any], None]:
    def rule(name: str, value: Any) -> None:
        ok = finite_number(value) and (value > bound if strict else value >= bound)
        if not ok:
            raise ValueError(f"{name}={value!r} is not allowed: it must be a finite float {'>' if strict else '>='} "
                             f"{bound:g}")
    return rule


def _reset(name: str, value: Any) -> None:
    if value not in RESETS:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {RESETS}")


def _backend(name: str, value: Any) -> None:
    if value not in BACKENDS:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {BACKENDS}")


def _clamp_grad(name: str, value: Any) -> None:
    if value not in CLAMP_GRADS or isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: choose 1.0 (the release's gradient of max(i, 0) at "
                         "i = 0) or 0.0")


#: the package's neurons whose arguments these rules alone check (their config values are checked before
#: torch is imported); any other neuron class checks its own values when it is built
RULED = ("ilif.neurons.LIF", "ilif.neurons.ILIF", "ilif.neurons.PLIF", "ilif.neurons.CLIF")

#: parameter name -> its rule, for every parameter a neuron of :data:`RULED` takes from its config
RULES: dict[str, Callable[[str, Any], None]] = {
    "tau": _above(1.0),
    "v_threshold": _above(0.0),
    "reset": _reset,
    "detach_reset": _flag,
    "current_inhibition": _flag,
    "membrane_inhibition": _flag,
    "kappa_current": _above(0.0, strict=False),
    "kappa_membrane": _above(0.0, strict=False),
    "clamp_grad_at_zero": _clamp_grad,
    "decay_input": _flag,
    "store_membrane": _flag,
    "recompute": _flag,
    "backend": _backend,
}


def check_parameter(name: str, value: Any) -> None:
    """Raise ValueError (``<name>=<value> is not allowed: ...``) unless ``value`` keeps the rule of
    the neuron parameter ``name`` (one of :data:`RULES`)."""
    RULES[name](name, value)
