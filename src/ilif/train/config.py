"""Range and choice checks of a composed trainer config (the schema itself is :mod:`ilif.conf`).

:func:`validate` raises :class:`ConfigError` with one line naming the key, the value and what is
allowed; neuron values are checked by the neuron's own class.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ilif.data import NAMES as DATASETS
from ilif.models import model_names
from ilif.neurons import FAMILIES, NORMALIZATIONS

from .build import neuron_factory


class ConfigError(ValueError):
    """A config value out of range; ``str()`` is one line: key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    @classmethod
    def from_message(cls, message: str) -> "ConfigError":
        """A ConfigError with a message already in the one-line form (from a class's own check)."""
        err = cls.__new__(cls)
        ValueError.__init__(err, message)
        return err


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _choice(cfg: DictConfig, key: str, choices) -> None:
    value = OmegaConf.select(cfg, key)
    _require(value in choices, key, value, f"choose one of {list(choices)}")


def _positive(cfg: DictConfig, key: str, minimum: float = 0.0, strict: bool = True, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = finite and (value > minimum if strict else value >= minimum)
    _require(ok, key, value, f"{'an integer' if integer else 'a finite number'} {'>' if strict else '>='} {minimum:g}")


def validate(cfg: DictConfig) -> None:
    """Check every range and choice of a composed config; raises ConfigError on the first bad value."""
    if cfg.dataset.builder is None:
        _choice(cfg, "dataset.name", DATASETS)
    _choice(cfg, "dataset.split", ("reference", "random"))
    _choice(cfg, "dataset.preprocess", ("clean", "reference"))
    val = cfg.dataset.val_fraction
    _require(0.0 <= val < 1.0, "dataset.val_fraction", val, "a number in [0, 1)")
    _choice(cfg, "model.name", model_names())
    _require(0.0 <= cfg.model.dropout < 1.0, "model.dropout", cfg.model.dropout, "a number in [0, 1)")
    _choice(cfg, "surrogate.family", FAMILIES)
    _positive(cfg, "surrogate.gamma")
    _choice(cfg, "surrogate.normalize", NORMALIZATIONS)
    _choice(cfg, "optim.name", ("sgd", "adamw"))
    _positive(cfg, "optim.lr")
    _positive(cfg, "optim.weight_decay", strict=False)
    _choice(cfg, "schedule.name", ("cosine", "step"))
    _positive(cfg, "schedule.step_size", integer=True)
    _choice(cfg, "loss.name", ("ce", "tet"))
    _require(0.0 <= cfg.loss.lam <= 1.0, "loss.lam", cfg.loss.lam, "a number in [0, 1]")
    _choice(cfg, "loss.mse_target", ("constant", "onehot"))
    _positive(cfg, "trainer.T", integer=True)
    _positive(cfg, "trainer.epochs", strict=False, integer=True)
    _positive(cfg, "trainer.batch_size", integer=True)
    _positive(cfg, "trainer.eval_batch_size", integer=True)
    _positive(cfg, "trainer.num_workers", strict=False, integer=True)
    _choice(cfg, "trainer.device", ("auto", "cpu", "cuda"))
    _choice(cfg, "trainer.amp", ("auto", "off", "fp16", "bf16"))
    _positive(cfg, "trainer.grad_clip", strict=False)
    _positive(cfg, "trainer.limit_train_batches", strict=False, integer=True)
    _positive(cfg, "trainer.limit_eval_batches", strict=False, integer=True)
    _choice(cfg, "logger.wandb.mode", ("auto", "online", "offline", "disabled"))
    check_neuron(cfg)


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
