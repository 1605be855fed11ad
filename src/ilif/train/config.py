"""Range and choice checks of a composed trainer config (the schema itself is :mod:`ilif.conf`).

:func:`validate` raises :class:`ConfigError` with one line naming the key, the value and what is
allowed; neuron values are checked by the neuron's own class.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any, Callable, Optional

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ilif.conf import COMPONENTS, TrainConfig
from ilif.errors import ConfigError, finite_number
from ilif.data import GIVEN as DATASET_GIVEN, NAMES as DATASETS, dataset_arguments, dataset_function
from ilif.models import backbone
from ilif.neurons import FAMILIES, NORMALIZATIONS

from .build import OPTIMIZERS, SCHEDULES, model_arguments, neuron_factory
from .losses import LOSSES
from .remedies import FORMS, NAMES as REMEDIES, SHAPES


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def choice(options: Callable[[], tuple] | tuple):
    """A check: the value is one of ``options`` (or of what the callable returns)."""
    def check(key: str, value: Any) -> None:
        allowed = options() if callable(options) else options
        _require(value in allowed, key, value, f"choose one of {list(allowed)}")

    return check


def positive(minimum: float = 0.0, strict: bool = True, integer: bool = False):
    """A check: a finite number (an integer when ``integer``) above ``minimum`` (or equal, not ``strict``)."""
    def check(key: str, value: Any) -> None:
        ok = finite_number(value) and (not integer or float(value).is_integer())
        ok = ok and (value > minimum if strict else value >= minimum)
        kind = "an integer" if integer else "a finite number"
        _require(ok, key, value, f"{kind} {'>' if strict else '>='} {minimum:g}")

    return check


def within(low: float, high: float, high_inclusive: bool = False):
    """A check: a finite number in [low, high) (or [low, high])."""
    def check(key: str, value: Any) -> None:
        ok = finite_number(value) and low <= value and (value <= high if high_inclusive else value < high)
        _require(ok, key, value, f"a number in [{low:g}, {high:g}{']' if high_inclusive else ')'}")

    return check


def path_segment(key: str, value: Any) -> None:
    """A check: one folder name (no separator, not '.' or '..', not empty), so the run directory stays
    under ``runs_root``."""
    ok = isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value \
        and "\0" not in value
    _require(ok, key, value, "one folder name (no '/', not '.' or '..')")


#: every checked key and its check (neuron keys are checked by the neuron's class: check_neuron)
CHECKS: dict[str, Callable[[str, Any], None]] = {
    "seed": within(0, 2**32),
    "experiment_name": path_segment,
    "dataset.name": choice(lambda: DATASETS),
    "dataset.split": choice(("reference", "random")),
    "dataset.preprocess": choice(("clean", "reference")),
    "dataset.val_fraction": within(0.0, 1.0),
    "dataset.stand_in_size": positive(integer=True),
    "dataset.stand_in_samples": positive(integer=True),
    "model.dropout": within(0.0, 1.0),
    "surrogate.family": choice(FAMILIES),
    "surrogate.gamma": positive(),
    "surrogate.normalize": choice(NORMALIZATIONS),
    "optim.name": choice(tuple(OPTIMIZERS)),
    "optim.lr": positive(),
    "optim.momentum": within(0.0, 1.0),
    "optim.weight_decay": positive(strict=False),
    "schedule.name": choice(tuple(SCHEDULES)),
    "schedule.eta_min": positive(strict=False),
    "schedule.step_size": positive(integer=True),
    "schedule.gamma": positive(),
    "loss.name": choice(tuple(LOSSES)),
    "loss.lam": within(0.0, 1.0, high_inclusive=True),
    "loss.mse_target": choice(("constant", "onehot")),
    "loss.phi": within(-1e6, 1e6, high_inclusive=True),
    "loss.label_smoothing": within(0.0, 1.0),
    "trainer.T": positive(integer=True),
    "trainer.epochs": positive(integer=True),
    "trainer.timeout_s": positive(integer=True),
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


def validate(cfg: DictConfig, keys: Optional[list[str]] = None) -> None:
    """Check every range and choice of a composed config, or only ``keys`` (dotted; the ones a sweep
    changes); raises ConfigError on the first bad value."""
    if keys is None:
        known = {f.name for f in fields(TrainConfig)} | {"hydra"}
        unknown = sorted(set(cfg.keys()) - known)
        if unknown:
            raise ConfigError(unknown[0], cfg[unknown[0]],
                              f"it is not a config key (the keys: {sorted(known - {'hydra'})})")
    for key in CHECKS if keys is None else [k for k in keys if k in CHECKS]:
        if key == "dataset.name" and cfg.dataset.builder is not None:
            continue
        CHECKS[key](key, OmegaConf.select(cfg, key))
    if keys is None or any(k.startswith(("dataset.", "model.")) for k in keys):
        check_components(cfg)
    if keys is None or any(k.startswith("neuron.") or k.startswith("surrogate.") for k in keys):
        check_neuron(cfg)
    if keys is None or any(k in ("trainer.T", "dataset.name") for k in keys):
        check_frames(cfg)
    if keys is None or any(k in ("remedy", "trainer.compile") or k.startswith("remedy.") for k in keys):
        check_remedy(cfg)


#: each remedy's own keys and their checks (the files of configs/remedy/ give their values)
REMEDY_KEYS: dict[str, dict[str, Callable[[str, Any], None]]] = {
    "none": {},
    "rate_reg": {"target": within(0.0, 1.0, high_inclusive=True), "weight": positive(strict=False),
                 "form": choice(FORMS)},
    "learnable_gamma": {"init": positive(), "lr": positive(), "min": positive(), "max": positive()},
    "anneal_gamma": {"start": positive(), "end": positive(), "shape": choice(SHAPES)},
    "adaptive_gamma": {"target": within(0.0, 1.0), "every": positive(integer=True), "min": positive(),
                       "max": positive()},
}


def check_remedy(cfg: DictConfig) -> None:
    """The remedy's name, its keys (no other) and their values; ConfigError naming the ``remedy.*`` key."""
    spec = OmegaConf.to_container(cfg.remedy, resolve=True)
    name = spec.get("name")
    _require(name in REMEDIES, "remedy.name", name, f"choose one of {list(REMEDIES)}")
    for key in spec:
        if key != "name" and key not in REMEDY_KEYS[name]:
            raise ConfigError(f"remedy.{key}", spec[key], f"remedy {name} takes {sorted(REMEDY_KEYS[name])}")
    for key, check in REMEDY_KEYS[name].items():
        _require(key in spec, f"remedy.{key}", None, f"remedy {name} needs it")
        check(f"remedy.{key}", spec[key])
    if name in ("adaptive_gamma", "learnable_gamma"):
        _require(spec["min"] < spec["max"], "remedy.min", spec["min"], f"below remedy.max={spec['max']!r}")
    if name == "learnable_gamma":
        _require(spec["min"] <= spec["init"] <= spec["max"], "remedy.init", spec["init"],
                 f"within [remedy.min, remedy.max] = [{spec['min']!r}, {spec['max']!r}]")
        _require(not cfg.trainer.compile, "trainer.compile", cfg.trainer.compile,
                 "false with remedy=learnable_gamma (γ changes at every step, and torch.compile would recompile "
                 "the network at each)")


def check_frames(cfg: DictConfig) -> None:
    """A dataset whose samples have a fixed number of time steps (seqdigits: one per row) needs that T."""
    from ilif.data.temporal import ROWS

    if cfg.dataset.name == "seqdigits" and not cfg.dataset.stand_in and cfg.trainer.T != ROWS:
        raise ConfigError("trainer.T", cfg.trainer.T, f"{ROWS} with dataset=seqdigits (one time step per row of the "
                          f"{ROWS}×{ROWS} digits; recipe=mini_seqdigits sets it)")


def check_components(cfg: DictConfig) -> None:
    """The open groups' keys: every dataset and model has those of its schema (their types are the
    schema's nodes, :mod:`ilif.conf`); a dataset function takes every other key of its dataset config
    (:func:`ilif.data.dataset_arguments`), a backbone every key of its model config
    (:func:`ilif.train.build.model_arguments`)."""
    for group, schema in COMPONENTS.items():
        if schema is None:
            continue
        spec = OmegaConf.to_container(cfg[group], resolve=True)
        for key in (f.name for f in fields(schema)):
            _require(key in spec, f"{group}.{key}", None, f"every {group} has it (it was removed)")
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    for key in DATASET_GIVEN:
        _require(key not in dataset, f"dataset.{key}", dataset.get(key), f"not a dataset key (trainer.{key} gives it)")
    try:
        dataset_arguments({**dataset, "T": cfg.trainer.T}, dataset_function(dataset))
        model_arguments(cfg, backbone(cfg.model))
    except ValueError as err:
        raise ConfigError.from_message(str(err)) from None


def check_neuron(cfg: DictConfig) -> None:
    """Build one neuron to let its class check the values; raises ConfigError naming the ``neuron.*`` key."""
    spec = OmegaConf.to_container(cfg.neuron, resolve=True)
    try:
        cls = get_class(spec["_target_"])
    except Exception as err:  # noqa: BLE001 - any import failure is a bad _target_
        raise ConfigError("neuron._target_", spec.get("_target_"), f"an importable neuron class ({err})") from None
    accepted = inspect.signature(cls).parameters
    for key in spec:
        if key not in ("name", "_target_") and key not in accepted:
            allowed = [k for k in accepted if k not in ("surrogate", "step_mode", "store_membrane", "backend")]
            raise ConfigError(f"neuron.{key}", spec[key], f"{cls.__name__} takes {allowed}")
    try:
        neuron_factory(cfg)()
    except ValueError as err:
        raise ConfigError.from_message(f"neuron.{err}") from None
