"""The checks of a composed trainer config that need no torch: every key is a known key (in every group,
whether it came from a file, an override or a ``+key``), and every range and choice of
:data:`CHECKS`. ``ilif-train`` runs them before it imports torch, so a misspelt key or a bad value ends
in about a second; :func:`ilif.train.config.validate` runs them first, then the checks that need the
components themselves (their signatures, the neuron's own checks).

A bad key or value raises :class:`ilif.errors.ConfigError`: one line naming the key, the value and what
is allowed (for an unknown key, the nearest known keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Callable, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from ilif.conf import COMPONENTS, TrainConfig, component_function, group_schema, keyword_parameters
from ilif.errors import ConfigError, finite_number


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(key, value, allowed) unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, allowed)


def nearest(key: str, known: Iterable[str]) -> list[str]:
    """The known keys closest to ``key`` in spelling (at most three, closest first)."""
    return difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``"did you mean a or b? "`` for the keys of ``known`` nearest ``key`` (``key`` itself left out),
    or "" when none is near."""
    close = nearest(key, [k for k in known if k != key])
    return f"did you mean {' or '.join(close)}? " if close else ""


def unknown_key(key: str, value: Any, owner: str, known: Iterable[str], near: Iterable[str] = ()) -> ConfigError:
    """The error for ``key`` (dotted) that ``owner`` (``trainer``, ``LIF``, ...) does not take: it names
    the nearest of ``known`` and ``near`` (keys without their group) and lists ``known``, in their order."""
    known = list(known)
    hint = did_you_mean(key.rpartition(".")[2], [*known, *(k for k in near if k not in known)])
    return ConfigError(key, value, f"{hint}{owner} takes {known}")


def key_hint(key: str) -> str:
    """For a dotted ``key`` that the schema lacks: the nearest keys of its group and the group's keys
    ("" for a group without a schema of its own)."""
    group, _, name = key.rpartition(".")
    schema = TrainConfig
    for step in [p for p in group.split(".") if p]:
        below = {f.name: f for f in dataclasses.fields(schema)}.get(step)
        schema = group_schema(schema, below) if below is not None else None
        if schema is None:
            return ""
    known = [f.name for f in dataclasses.fields(schema) if f.name not in ("name", "_target_")]
    return did_you_mean(name, known) + f"{group or 'the config'} has {known}"


def choice(options: tuple | str):
    """A check: the value is one of ``options``, a tuple or the ``"module:attribute"`` of one (imported
    when the check runs, so a registry that needs torch is read only then)."""
    def check(key: str, value: Any) -> None:
        allowed = options if isinstance(options, tuple) else _attribute(options)
        require(value in allowed, key, value, f"choose one of {list(allowed)}")

    check.lazy = isinstance(options, str)
    return check


def _attribute(path: str):
    module, _, name = path.partition(":")
    return tuple(getattr(importlib.import_module(module), name))


def positive(minimum: float = 0.0, strict: bool = True, integer: bool = False, maximum: Optional[float] = None):
    """A check: a finite number (an integer when ``integer``) above ``minimum`` (or equal, not
    ``strict``), and at most ``maximum`` where one is given."""
    def check(key: str, value: Any) -> None:
        ok = finite_number(value) and (not integer or float(value).is_integer())
        ok = ok and (value > minimum if strict else value >= minimum) and (maximum is None or value <= maximum)
        kind = "an integer" if integer else "a finite number"
        bound = f" and <= {maximum:g}" if maximum is not None else ""
        require(ok, key, value, f"{kind} {'>' if strict else '>='} {minimum:g}{bound}")

    return check


def within(low: float, high: float, high_inclusive: bool = False):
    """A check: a finite number in [low, high) (or [low, high])."""
    def check(key: str, value: Any) -> None:
        ok = finite_number(value) and low <= value and (value <= high if high_inclusive else value < high)
        require(ok, key, value, f"a number in [{low:g}, {high:g}{']' if high_inclusive else ')'}")

    return check


def path_segment(key: str, value: Any) -> None:
    """A check: one folder name (no separator, not '.' or '..', not empty), so the run directory stays
    under ``runs_root``."""
    ok = isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value \
        and "\0" not in value
    require(ok, key, value, "one folder name (no '/', not '.' or '..')")


#: the surrogate widths γ that train: outside them the float32 surrogate gradient vanishes (a support too
#: narrow to hold a potential, or a bump too flat to leave a nonzero gradient)
GAMMA_RANGE = (1e-3, 1e3)


def gamma_width(key: str, value: Any) -> None:
    """A check: a surrogate width γ within :data:`GAMMA_RANGE`."""
    low, high = GAMMA_RANGE
    require(finite_number(value) and low <= value <= high, key, value,
            f"a width in [{low:g}, {high:g}] (outside it the surrogate gradient vanishes in float32)")


#: every checked key and its check (the open groups' own keys are checked by their components)
CHECKS: dict[str, Callable[[str, Any], None]] = {
    "seed": within(0, 2**32),
    "experiment_name": path_segment,
    "dataset.name": choice("ilif.data:NAMES"),
    "dataset.split": choice(("reference", "random")),
    "dataset.preprocess": choice(("clean", "reference")),
    "dataset.val_fraction": within(0.0, 1.0),
    "dataset.stand_in_size": positive(integer=True),
    "dataset.stand_in_samples": positive(integer=True),
    "model.dropout": within(0.0, 1.0),
    "surrogate.family": choice("ilif.neurons:FAMILIES"),
    "surrogate.gamma": gamma_width,
    "surrogate.normalize": choice("ilif.neurons:NORMALIZATIONS"),
    "optim.lr": positive(),
    "optim.momentum": within(0.0, 1.0),
    "optim.weight_decay": positive(strict=False),
    "schedule.eta_min": positive(strict=False),
    "schedule.step_size": positive(integer=True),
    "schedule.gamma": positive(),
    "loss.lam": within(0.0, 1.0, high_inclusive=True),
    "loss.mse_target": choice(("constant", "onehot")),
    "loss.phi": within(-1e6, 1e6, high_inclusive=True),
    "loss.label_smoothing": within(0.0, 1.0),
    "trainer.T": positive(integer=True),
    "trainer.epochs": positive(integer=True),
    "trainer.timeout_s": positive(integer=True, maximum=10**7),  # 115 days; torch's waits overflow far above
    "trainer.checkpoint_every_min": positive(strict=False),
    "trainer.batch_size": positive(integer=True),
    "trainer.eval_batch_size": positive(integer=True),
    "trainer.num_workers": positive(strict=False, integer=True),
    "trainer.device": choice(("auto", "cpu", "cuda")),
    "trainer.amp": choice(("auto", "off", "fp16", "bf16")),
    "trainer.grad_clip": positive(strict=False),
    "trainer.limit_train_batches": positive(strict=False, integer=True),
    "trainer.limit_eval_batches": positive(strict=False, integer=True),
    "trainer.threads": positive(strict=False, integer=True),
    "logger.wandb.mode": choice(("auto", "online", "offline", "disabled")),
}


def check_keys(cfg: DictConfig) -> None:
    """Every key of ``cfg`` is one its schema has (:class:`ilif.conf.TrainConfig`, its groups and their
    groups), except inside the open groups, whose components check their own keys. Raises ConfigError
    naming the first unknown key and the nearest known ones."""
    _check_fields(cfg, TrainConfig, "", extra=("hydra",))


def _check_fields(node: DictConfig, schema, prefix: str, extra: tuple = ()) -> None:
    known = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        dotted = f"{prefix}{key}"
        if key in extra or dotted in COMPONENTS:  # an open group: its component checks its keys
            continue
        if key not in known:
            owner = prefix.rstrip(".") or "the config"
            raise unknown_key(dotted, OmegaConf.select(node, str(key), throw_on_missing=False), owner, known)
        kind = group_schema(schema, known[key])
        if kind is not None and isinstance(node[key], DictConfig):
            _check_fields(node[key], kind, f"{dotted}.")


def check_values(cfg: DictConfig, torch_free: bool = False) -> None:
    """Run the check of every key of :data:`CHECKS`; with ``torch_free``, only those that need no
    registry. Raises ConfigError on the first bad value."""
    for key, check in CHECKS.items():
        if key == "dataset.name" and cfg.dataset.get("_target_") is not None:
            continue
        if torch_free and getattr(check, "lazy", False):
            continue
        check(key, OmegaConf.select(cfg, key))


def component_arguments(group: str, spec: dict, function: Callable, given: tuple = ()) -> dict:
    """The keyword arguments ``function`` (a component: a backbone, an optimiser, ...) is called with
    from its config ``spec`` (a dict): every key but ``name`` and ``_target_``; a key every option of
    the group has (its schema in :data:`ilif.conf.COMPONENTS`) is left out, at its default, where the
    function does not name it; a function with ``**kwargs`` takes any other key. Raises ConfigError
    naming ``<group>.<key>`` that the function does not take, or that the trainer gives (``given``), or
    a parameter without a default that neither the config nor the trainer gives."""
    import inspect

    takes, takes_any = keyword_parameters(function)
    schema = COMPONENTS.get(group)
    common = {f.name: f.default for f in dataclasses.fields(schema)} if schema else {}
    arguments = {}
    for key, value in spec.items():
        if key in ("name", "_target_") or (key not in takes and key in common and value == common[key]):
            continue
        if (key not in takes and not takes_any) or key in given:
            name = getattr(function, "__name__", str(function))
            raise unknown_key(f"{group}.{key}", value, name, [k for k in takes if k not in given],
                              near=[k for k in common if k not in ("name", "_target_")])
        arguments[key] = value
    for p in inspect.signature(function).parameters.values():
        needed = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        require(not needed or p.name in given or p.name in arguments, f"{group}.{p.name}", None,
                f"{getattr(function, '__name__', function)} needs it")
    return arguments


def component(group: str, spec: DictConfig | dict, registry: dict, given: tuple, noun: str) -> tuple[Callable, dict]:
    """(callable, its keyword arguments) of ``spec``, the config of ``group``: the callable at
    ``<group>._target_``, else ``registry[<group>.name]``; ``given``: what the trainer passes it
    besides the config's keys; ``noun``: what it is, for the error. Raises ConfigError naming the key
    and what is allowed."""
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec
    try:
        function = component_function(group, spec, registry, "_target_", noun)
    except ValueError as err:
        raise ConfigError.from_message(str(err)) from None
    return function, component_arguments(group, spec, function, given)


NOUNS = {"optim": "optimiser", "schedule": "learning-rate schedule", "loss": "loss"}


def part(group: str, spec: DictConfig | dict) -> tuple[Callable, dict]:
    """:func:`component` for the groups of :data:`ilif.train.factories.PARTS` (optim, schedule, loss)."""
    from ilif.train.factories import PARTS

    return component(group, spec, *PARTS[group], NOUNS[group])


def check_torch_free(cfg: DictConfig, torch_free: bool = True) -> None:
    """What can be checked before torch is imported: every key known, every plain range and choice
    (also those read from a registry, not ``torch_free``), the optimiser's, schedule's and loss's keys
    against their functions."""
    check_keys(cfg)
    check_values(cfg, torch_free=torch_free)
    for group in ("optim", "schedule", "loss"):
        part(group, cfg[group])
