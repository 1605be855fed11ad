"""The configuration layer, free of torch: where the configs live, their typed schema, composition, and
the identity of a run (its name and hash). The report reads run directories with this module alone.

Configs ship inside the package (``ilif/configs``; ``$ILIF_CONFIGS`` points elsewhere). :func:`register`
puts the schema (``train_schema``) into Hydra's ConfigStore and the ``ilif_run_leaf`` resolver into
OmegaConf; everything that composes a config calls it first (it is idempotent).
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict, read_write
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

CONFIG_DIR = Path(os.environ.get("ILIF_CONFIGS") or Path(__file__).resolve().parent / "configs")


# The defaults of every key are the dataclasses below (the one place they are defined); a group's YAML
# file holds its choice and only what differs from them. The dataset, model and neuron groups are open:
# DatasetConfig and ModelConfig hold the keys every dataset and every backbone has, and a component's
# YAML adds its own keys (checked against what the component takes, ilif/train/config.py), which enter
# the config hash of its runs only. A component's ``name`` defaults to its config choice (the file name).


# What a run computes is its identity (:func:`identity`, hashed into its directory's name). Each key of the
# schema says how it enters: by default with its value; ``outside()`` never (where the data lives, the
# device, logging: they do not change the numbers); ``neutral(v)`` only where its value is not ``v``, the
# value at which the key changes nothing; ``renamed(v, old)`` under its old name. A key added later is
# declared ``neutral``, and a key renamed ``renamed``, so the runs made before keep their names, and a
# run that sets a new key gets a new one (tests/test_identity.py).


def outside(default: Any = MISSING_FIELD, default_factory: Any = MISSING_FIELD) -> Any:
    """A schema field not in any run's identity (its value does not change what the run computes)."""
    return field(default=default, default_factory=default_factory, metadata={"identity": False})


def neutral(default: Any) -> Any:
    """A schema field in a run's identity only where its value is not ``default``, the value at which
    it changes nothing (so adding it renames no existing run)."""
    return field(default=default, metadata={"neutral": default})


def renamed(default: Any, old: str) -> Any:
    """A schema field that enters a run's identity under its ``old`` name (so renaming it renames no run)."""
    return field(default=default, metadata={"identity_as": old})


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: Optional[str] = outside(None)  # None: $ILIF_DATA, else ./data
    split: str = "reference"  # cifar10_dvs: reference | random
    split_seed: int = 0
    preprocess: str = "clean"  # event frames: clean | reference
    download: bool = outside(True)
    augment: bool = True
    val_fraction: float = 0.0  # held out of train for model selection (0: select on test, as the release)
    stand_in: bool = False  # smoke scale: tiny random data of this dataset's kind
    stand_in_size: int = 16
    stand_in_samples: int = 16
    _target_: Optional[str] = renamed(None, "builder")  # a dataset function outside the package (docs: Extending)


@dataclass
class ModelConfig:
    name: str = MISSING  # the config choice unless set; a registered backbone (ilif.models), or any with _target_
    dropout: float = 0.0
    bn_per_step: bool = False  # true: per-time-step BatchNorm statistics, as the release
    # _target_ (optional): the dotted path of a backbone function outside the package (docs: Extending)


#: a component's ``name`` where no file sets it: its config choice (``ilif-train --cfg job`` shows this)
CHOICE = "${ilif_choice:%s}"


_NODES = {bool: BooleanNode, int: IntegerNode, float: FloatNode, str: StringNode}


def _typed_defaults(schema) -> dict:
    """``schema``'s keys and defaults as typed OmegaConf nodes: inside an open dict, a value given for
    one of them (a YAML file, an override, a sweep) is converted and checked as in a structured config."""
    hints, nodes = typing.get_type_hints(schema), {}
    for f in fields(schema):
        kinds = [k for k in typing.get_args(hints[f.name]) or [hints[f.name]] if k is not type(None)]
        nodes[f.name] = _NODES[kinds[0]](f.default, is_optional=len(kinds) < len(typing.get_args(hints[f.name])))
    return nodes


def _open(group: str, schema=None) -> Any:
    """A field whose value is a dict of ``schema``'s keys and defaults, typed (none: the neuron's), open
    to a component's own keys, and named after the group's config choice unless a file sets ``name``."""
    return field(default_factory=lambda: {**(_typed_defaults(schema) if schema else {}), "name": CHOICE % group})


@dataclass
class SurrogateConfig:
    family: str = "rectangle"  # rectangle | triangle | sigmoid | atan
    gamma: float = 1.0  # support width (rectangle, triangle) or full width at half maximum (sigmoid, atan)
    normalize: str = "area"  # area (integral 1) | peak (height 1)


@dataclass
class OptimConfig:
    """The keys every optimiser config has; a function of ilif.train.factories, or one at ``_target_``,
    takes those it names and its file's own keys."""

    name: str = MISSING  # the config choice unless set: sgd | adamw, or any with _target_
    _target_: Optional[str] = neutral(None)  # the dotted path of an optimiser function outside the package
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass
class ScheduleConfig:
    name: str = MISSING  # the config choice unless set: cosine (per epoch, to eta_min) | step
    _target_: Optional[str] = neutral(None)  # the dotted path of a schedule function outside the package
    eta_min: float = 0.0
    step_size: int = 100
    gamma: float = 0.1


@dataclass
class LossConfig:
    name: str = MISSING  # the config choice unless set: ce on the time-averaged logits | tet
    _target_: Optional[str] = neutral(None)  # the dotted path of a loss function outside the package
    lam: float = 0.05  # tet: (1 - lam) * mean_t CE(o_t, y) + lam * MSE(o_t, target)
    mse_target: str = "constant"  # tet: constant (phi) | onehot
    phi: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class TrainerConfig:
    T: int = 4
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = outside(256)
    num_workers: int = outside(0)
    pin_memory: bool = outside(False)
    drop_last: bool = False  # drop the last incomplete training batch (the release does on DVS Gesture)
    device: str = outside("auto")  # auto | cpu | cuda
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | fp16 | bf16
    compile: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    deterministic: bool = False
    resume: bool = outside(True)  # continue from last.pt when the run directory has one
    grad_diagnostics: bool = False
    train_meter: bool = True  # count spikes during training (cheap) for the training firing rate
    progress: bool = outside(True)
    limit_train_batches: int = 0  # 0: all
    limit_eval_batches: int = 0
    threads: int = outside(1)  # torch intra-op threads (results are bit-reproducible per count); 0: all cores
    timeout_s: int = outside(1800)  # the longest wait for DDP peers (rendezvous, collectives) and for one loader batch
    checkpoint_every_min: float = outside(0.0)  # also write last.pt inside an epoch this often (exact resume); 0: off
    memory: str = outside("standard")  # what a step keeps for its backward: standard | lean (the same numbers)
    keep_checkpoints: str = outside("all")  # what a finished run keeps: all (last.pt and best.pt) | best | none


#: the open groups (their YAML files may add keys) and the keys every option of the group has (None: no
#: key in common)
COMPONENTS = {"dataset": DatasetConfig, "model": ModelConfig, "neuron": None, "optim": OptimConfig,
              "schedule": ScheduleConfig, "loss": LossConfig, "remedy": None}


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto: online with an API key, else offline (wandb sync later) | online | offline | disabled
    project: str = "ilif"
    entity: Optional[str] = None
    tags: list = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CompareConfig:
    """What an experiment's tables compare; read by the report, never by the trainer (so in no run's hash)."""

    baseline: str = "lif"  # the neuron every other row is compared with (Δ columns, rate ratios)
    subject: str = "ilif"  # the neuron the experiment is about (Table 4's columns beside the baseline, Table 5's
    # reference row, the demo's ratio)


@dataclass
class TrainConfig:
    dataset: Dict[str, Any] = _open("dataset", DatasetConfig)
    model: Dict[str, Any] = _open("model", ModelConfig)
    neuron: Dict[str, Any] = _open("neuron")  # _target_ (a neuron class) and the class's own arguments
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    optim: Dict[str, Any] = _open("optim", OptimConfig)
    schedule: Dict[str, Any] = _open("schedule", ScheduleConfig)
    loss: Dict[str, Any] = _open("loss", LossConfig)
    remedy: Any = MISSING  # name and the remedy's own keys (configs/remedy/; ilif/train/remedies.py)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = outside(default_factory=LoggerConfig)
    compare: CompareConfig = outside(default_factory=CompareConfig)
    seed: int = 0
    experiment_name: str = "default"
    scale_name: str = "none"  # set by the scale group: full | mini | smoke
    runs_root: str = outside("runs")


def register() -> None:
    """Register the schema and the run-directory resolver (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("ilif_run_leaf"):
        OmegaConf.register_new_resolver("ilif_run_leaf", lambda *, _root_: run_leaf(name_components(_root_.copy())))
    if not OmegaConf.has_resolver("ilif_choice"):
        OmegaConf.register_new_resolver("ilif_choice", _choice)


def _choice(group: str, *, _root_: DictConfig) -> str:
    """The config choice of ``group``: from the config's own ``hydra`` node, or from Hydra's job."""
    if "hydra" in _root_:
        return _root_.hydra.runtime.choices[group]
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices[group]


def name_components(cfg: DictConfig, choices: Optional[DictConfig] = None) -> DictConfig:
    """``cfg`` with the ``name`` of each open group (:data:`COMPONENTS`) that no file set (it is still
    :data:`CHOICE`) set to its config choice, from ``choices`` or ``cfg.hydra.runtime.choices``; in
    place, and returned. Copies of the result need no Hydra to resolve their names."""
    choices = cfg.hydra.runtime.choices if choices is None else choices
    with read_write(cfg):
        for group in COMPONENTS:
            if OmegaConf.to_container(cfg[group], resolve=False).get("name") == CHOICE % group and choices.get(group):
                cfg[group].name = choices[group]
    return cfg


#: config folders added to :data:`CONFIG_DIR` (``--config-dir`` of ilif-study and ilif-report), searched
#: after it as Hydra's search path is
EXTRA_CONFIG_DIRS: list[Path] = []


def quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar, read back as exactly ``value`` (a path
    with spaces, non-ASCII letters, brackets, commas, quotes or ``${`` is data, never grammar)."""
    import re

    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))  # a quote and the backslashes before it
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)  # backslashes before the closing quote
    return "'" + body.replace("${", "\\${") + "'"


def searchpath_override(folders: list[str]) -> list[str]:
    """The ``hydra.searchpath`` override of ``folders`` (none for no folders), each a quoted string."""
    return [f"hydra.searchpath=[{','.join(quoted(folder) for folder in folders)}]"] if folders else []


def check_config_dir(flag: str, directory: str) -> None:
    """Raise ValueError unless ``directory`` is an existing folder whose path Hydra's search path can
    hold (no ``${``: it would be read as an interpolation)."""
    if "${" in directory:
        raise ValueError(f"{flag}={directory!r} is not allowed: a folder whose path has no '${{'")
    if not Path(directory).is_dir():
        raise ValueError(f"{flag}={directory!r} is not allowed: an existing folder of config files")


def use_config_dirs(dirs: list) -> None:
    """Add ``dirs`` (a user's own experiment, model, ... files) to every composition that follows.
    Raises ValueError naming a folder that does not exist."""
    for directory in dirs:
        check_config_dir("--config-dir", str(directory))
    EXTRA_CONFIG_DIRS[:] = [Path(d).resolve() for d in dirs]


def _config_dirs() -> list[Path]:
    return [CONFIG_DIR, *EXTRA_CONFIG_DIRS]


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The trainer's config composed from :data:`CONFIG_DIR` (and :data:`EXTRA_CONFIG_DIRS`) with
    ``overrides`` (as on the command line)."""
    register()
    if EXTRA_CONFIG_DIRS and not any(o.startswith("hydra.searchpath=") for o in overrides):
        overrides = [*overrides, *searchpath_override([f"file://{d}" for d in EXTRA_CONFIG_DIRS])]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = name_components(compose(config_name="train", overrides=overrides, return_hydra_config=True))
    if not return_hydra_config:
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    return cfg


def is_group(key: str) -> bool:
    """Whether a command-line key (``neuron``, ``+scale``) chooses a config group rather than a value."""
    return any((d / key.lstrip("+~")).is_dir() for d in _config_dirs())


def group_options(group: str) -> list[str]:
    """The options of a config group (the YAML files in its folders)."""
    return sorted({p.stem for d in _config_dirs() for p in (d / group).glob("*.yaml")})


def sweep_axes(items: list[tuple[str, Any]]) -> list[list[tuple[str, str]]]:
    """Each ``key=value`` as one axis of (key, value) pairs, with Hydra's own sweep syntax expanded:
    ``a,b,c``, ``choice(...)``, ``range(...)`` and ``glob(...)`` over a config group's options.
    Raises ValueError for sweeps that cannot be listed (``interval``) or that do not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    axes = []
    for key, value in items:
        try:
            override = parser.parse_override(override_text(key, value))
            if not override.is_sweep_override():
                values = [str(value)]
            elif isinstance(override.value(), Glob):
                values = override.value().filter(group_options(override.key_or_group))
            else:
                values = list(override.sweep_string_iterator())
        except HydraException as err:
            raise ValueError(f"{key}={value!r} is not allowed: {str(err).splitlines()[0]}") from None
        axes.append([(key, v) for v in values])
    return axes


def override_text(key: str, value: str) -> str:
    """The command-line override of (key, value): ``key=value``, or ``~key`` alone to remove a key
    whatever its value (a bare ``~key`` has the value "")."""
    return key if key.startswith("~") and value == "" else f"{key}={value}"


def parse_value(text: str) -> Any:
    """A command-line value as Hydra reads it (``1e30`` is a float, ``[1,2]`` a list, ``abc`` a string)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(f"key={text}").value()
    return str(value) if type(value).__name__ == "QuotedString" else value


LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def distributed_env(environ=None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from a launcher's variables (torchrun sets all of
    :data:`LAUNCHER_VARIABLES`); (0, 1, 0) when none is set. Raises ValueError (one line) for a half-set
    group: RANK without WORLD_SIZE or the reverse, a value that is not an integer, a rank outside the
    world, or a world of several processes without MASTER_ADDR and a MASTER_PORT that is a port."""
    env = os.environ if environ is None else environ
    given = {name: env.get(name) for name in LAUNCHER_VARIABLES}
    together = "a launcher such as torchrun sets " + ", ".join(LAUNCHER_VARIABLES) + " together"
    if given["RANK"] is None and given["WORLD_SIZE"] is None:
        if given["LOCAL_RANK"] not in (None, "0"):
            raise ValueError(f"LOCAL_RANK={given['LOCAL_RANK']} is set without RANK and WORLD_SIZE: {together}")
        return 0, 1, 0
    for name, other in (("RANK", "WORLD_SIZE"), ("WORLD_SIZE", "RANK")):
        if given[name] is not None and given[other] is None:
            raise ValueError(f"{name}={given[name]} is set but {other} is not: {together}")
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = given[name] if given[name] is not None else "0"
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not allowed: an integer ({together})") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local} is not allowed: 0 <= RANK < WORLD_SIZE "
                         "and LOCAL_RANK >= 0")
    if world > 1 and not (given["MASTER_ADDR"] and given["MASTER_PORT"]):
        raise ValueError(f"WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT (where rank 0 listens): {together}")
    port = given["MASTER_PORT"]
    if world > 1 and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"MASTER_PORT={port!r} is not allowed: a TCP port number in [1, 65535] (where rank 0 "
                         "listens)")
    return rank, world, local


def identity(cfg: DictConfig) -> dict:
    """The resolved config less what does not change what a run computes: the keys declared
    :func:`outside` (logging, paths, where the data lives, the device, resume, progress bars, loader
    workers, the evaluation batch size, threads, what the report compares), the keys declared
    :func:`neutral` at their neutral value, Hydra's own node, and a remedy that is ``none``. The number of
    processes is not part of it either: ``trainer.batch_size`` is the global batch, split over the
    processes, so a run trained on 1 or 4 GPUs is the same run."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    if container.get("remedy", {}).get("name") == "none":  # a component's keys count only where it is used
        container.pop("remedy")
    _drop_outside(container, TrainConfig)
    return OmegaConf.to_container(OmegaConf.create(container), resolve=True)


def _drop_outside(container: dict, schema) -> None:
    """Remove from ``container`` (one level of a config, in place) the keys of ``schema`` declared
    outside the identity or at their neutral value, and likewise in the groups below."""
    for f in fields(schema):
        if f.name not in container:
            continue
        at_neutral = "neutral" in f.metadata and container[f.name] == f.metadata["neutral"]
        if f.metadata.get("identity") is False or at_neutral:
            container.pop(f.name)
        elif "identity_as" in f.metadata:
            container[f.metadata["identity_as"]] = container.pop(f.name)
        elif isinstance(container[f.name], dict) and (below := group_schema(schema, f)) is not None:
            _drop_outside(container[f.name], below)


def group_schema(schema, f):
    """The schema of field ``f`` of ``schema`` when it is a group: its dataclass, or an open group's
    common keys (:data:`COMPONENTS`); None for a plain value or an open group without common keys."""
    if schema is TrainConfig and f.name in COMPONENTS:
        return COMPONENTS[f.name]
    if f.default_factory is not MISSING_FIELD:
        made = f.default_factory()
        return type(made) if is_dataclass(made) else None
    return None


def config_hash(cfg: DictConfig) -> str:
    """Eight hex digits identifying a run's config (see :func:`identity`)."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """``{dataset}-{neuron}-g{gamma}-s{seed}``: the wandb run name and the start of the run directory."""
    return f"{cfg.dataset.name}-{cfg.neuron.name}-g{cfg.surrogate.gamma:g}-s{cfg.seed}"


def run_leaf(cfg: DictConfig) -> str:
    """``{run name}-{config hash}``: the run directory's name under ``runs_root/experiment_name``."""
    return f"{run_name(cfg)}-{config_hash(cfg)}"


def import_dotted(key: str, path: str):
    """The function at dotted ``path`` (``package.module.function``) that config key ``key`` names;
    ValueError naming both when it cannot be imported (whatever the module raised) or is not callable."""
    import importlib

    module, _, attr = str(path).rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except Exception as err:  # noqa: BLE001 - importing user code can raise anything
        raise ValueError(f"{key}={path!r} is not allowed: it must name an importable function "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not callable(found):
        raise ValueError(f"{key}={path!r} is not allowed: {attr} is not a function")
    return found


def component_function(group: str, spec, registry: dict, path_key: str, noun: str, name_key: str = ""):
    """The function of a ``group`` component config ``spec`` (a dataset's, a model's): the one at dotted
    ``spec[path_key]``, else ``registry[spec["name"]]``. Raises ValueError naming the key
    (``<group>.<path_key>``, or ``name_key``: default ``<group>.name``) and what is allowed."""
    if spec.get(path_key):
        return import_dotted(f"{group}.{path_key}", spec[path_key])
    if not isinstance(spec["name"], str) or spec["name"] not in registry:
        article = "an" if noun[0] in "aeiou" else "a"
        raise ValueError(f"{name_key or group + '.name'}={spec['name']!r} is not allowed: choose one of "
                         f"{sorted(registry)}, or give {group}.{path_key} ({article} {noun} function outside the "
                         "package)")
    return registry[spec["name"]]


def keyword_parameters(function) -> tuple[list[str], bool]:
    """The parameter names ``function`` (a component's factory) takes by keyword, and whether it takes
    any other keyword (``**kwargs``)."""
    import inspect

    parameters = inspect.signature(function).parameters.values()
    return ([p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)],
            any(p.kind == p.VAR_KEYWORD for p in parameters))


def hash_of_run_dir(run_dir: Path) -> str:
    """The config hash a run directory's name ends with (the inverse of :func:`run_leaf`'s suffix)."""
    return Path(run_dir).name.rsplit("-", 1)[-1]
