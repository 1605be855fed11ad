"""The one validation of a composed trainer config, which every runner calls (``ilif-train``, its
sweeps, ``ilif-study``): the torch-free checks of :mod:`ilif.checks` (every key known, ranges and
choices), then the components' own (each open group's keys against its function's signature, the
neuron's own checks), cross-key rules and the remedy's keys.

:func:`validate` raises :class:`ConfigError` with one line naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ilif.checks import check_torch_free, require, unknown_key
from ilif.conf import COMPONENTS
from ilif.errors import ConfigError
from ilif.data import GIVEN as DATASET_GIVEN, dataset_arguments, dataset_function
from ilif.models import backbone

from .build import model_arguments, neuron_factory
from .remedies import remedy_class


def validate(cfg: DictConfig) -> None:
    """Check a composed config, one job's, whole: its keys and plain values (:mod:`ilif.checks`), the
    components' keys and their own checks, the frames a dataset needs, the remedy and its rules;
    raises ConfigError on the first bad value."""
    check_torch_free(cfg, torch_free=False)
    check_components(cfg)
    check_neuron(cfg)
    check_frames(cfg)
    check_remedy(cfg)


def check_remedy(cfg: DictConfig) -> None:
    """The remedy's class, its keys (no other, none missing) and their values (checked by the class on
    a model without neuron layers), then its rules on the rest of the config (``check_run``: a neuron
    it can work with, the epochs it needs); ConfigError naming the key."""
    import torch

    cls, arguments = remedy_class(cfg)
    try:
        cls(model=torch.nn.Module(), train_set=None, **arguments)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError.from_message(f"remedy.{err}") from None
    cls.check_run(cfg, get_class(cfg.neuron._target_))


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
            require(key in spec, f"{group}.{key}", None, f"every {group} has it (it was removed)")
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    require("builder" not in dataset, "dataset.builder", dataset.get("builder"),
            "it is dataset._target_ now (the dotted path of a dataset function outside the package)")
    for key in DATASET_GIVEN:
        require(key not in dataset, f"dataset.{key}", dataset.get(key), f"not a dataset key (trainer.{key} gives it)")
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
            raise unknown_key(f"neuron.{key}", spec[key], cls.__name__, allowed)
    try:
        neuron_factory(cfg)()
    except ValueError as err:
        raise ConfigError.from_message(f"neuron.{err}") from None
