"""Typed schemas for the trainer's Hydra config, range checks, and the run's identity (name, hash).

The dataclasses are registered in Hydra's ConfigStore as ``train_schema``; ``configs/train.yaml``
extends it, so a wrong type or an unknown key fails at composition. :func:`validate` then checks
ranges and choices and raises :class:`ConfigError` with one line naming the key, the value and what
is allowed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from ilif.data import NAMES as DATASETS
from ilif.models import model_names
from ilif.neurons import FAMILIES, NORMALIZATIONS

from .build import neuron_factory


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: Optional[str] = None  # None: $ILIF_DATA, else ./data
    split: str = "reference"  # cifar10_dvs: reference | random
    split_seed: int = 0
    preprocess: str = "clean"  # event frames: clean | reference
    download: bool = True
    augment: bool = True
    val_fraction: float = 0.0  # held out of train for model selection (0: select on test, as the release)
    stand_in: bool = False  # smoke scale: tiny random data of this dataset's kind
    stand_in_size: int = 16
    stand_in_samples: int = 16


@dataclass
class ModelConfig:
    name: str = MISSING
    dropout: float = 0.0
    bn_per_step: bool = False


@dataclass
class SurrogateConfig:
    family: str = "rectangle"
    gamma: float = 1.0
    normalize: str = "area"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine (per epoch, to eta_min) | step
    eta_min: float = 0.0
    step_size: int = 100
    gamma: float = 0.1


@dataclass
class LossConfig:
    name: str = "ce"  # ce on the time-averaged logits | tet
    lam: float = 0.05  # tet: weight of the MSE regulariser
    mse_target: str = "constant"  # tet: constant (phi) | onehot
    phi: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class TrainerConfig:
    T: int = 4
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    pin_memory: bool = False
    drop_last: bool = False  # drop the last incomplete training batch (the release does on DVS Gesture)
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | fp16 | bf16
    compile: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    deterministic: bool = False
    resume: bool = True  # continue from last.pt when the run directory has one
    grad_diagnostics: bool = False
    train_meter: bool = True  # count spikes during training (cheap) for the training firing rate
    progress: bool = True
    limit_train_batches: int = 0  # 0: all
    limit_eval_batches: int = 0


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "ilif"
    entity: Optional[str] = None
    tags: list = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    neuron: Any = MISSING  # _target_ (a neuron class), name, and the class's own arguments
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    experiment_name: str = "default"
    runs_root: str = "runs"


def register_schema() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


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


def sweep_axes(items: list[tuple[str, Any]]) -> list[list[tuple[str, str]]]:
    """Hydra's basic sweep syntax ``key=a,b,c`` as one axis of (key, value) pairs per key; a value with
    other sweep syntax (brackets, quotes, ranges) stays a single value."""
    axes = []
    for key, value in items:
        text = str(value)
        if "," in text and not any(c in text for c in "[]{}()'\""):
            axes.append([(key, v) for v in text.split(",")])
        else:
            axes.append([(key, text)])
    return axes


IDENTITY_EXCLUDED = ("hydra", "logger", "runs_root")
TRAINER_EXCLUDED = ("resume", "progress", "num_workers", "pin_memory")


def identity(cfg: DictConfig) -> dict:
    """The resolved config without the keys that do not change what a run computes (logging, paths,
    resume, progress bars, loader workers), plus the number of DDP processes (it changes the batches)."""
    container = OmegaConf.to_container(cfg, resolve=False)
    for key in IDENTITY_EXCLUDED:
        container.pop(key, None)
    for key in TRAINER_EXCLUDED:
        container.get("trainer", {}).pop(key, None)
    resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        resolved["world_size"] = world
    return resolved


def config_hash(cfg: DictConfig) -> str:
    """Eight hex digits identifying a run's config (see :func:`identity`)."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """``{dataset}-{neuron}-g{gamma}-s{seed}``: the wandb run name and the start of the run directory."""
    return f"{cfg.dataset.name}-{cfg.neuron.name}-g{cfg.surrogate.gamma:g}-s{cfg.seed}"


def register_resolvers() -> None:
    """``${ilif_run_leaf:}``: run_name-hash. Single runs and sweeps both write to
    runs_root/experiment/run_name-hash, so a repeated sweep finds its finished runs."""
    if not OmegaConf.has_resolver("ilif_run_leaf"):
        OmegaConf.register_new_resolver("ilif_run_leaf", lambda *, _root_: f"{run_name(_root_)}-{config_hash(_root_)}")
