"""The checks of a composed trainer config that need no torch: every key is a known key (in every group,
whether it came from a file, an override or a ``+key``), every range and choice of :data:`CHECKS`,
and the components' keys against their callables' signatures, read from their source
(:mod:`ilif.sources`) where they are not imported yet; the package's neurons' values by their rules
(:mod:`ilif.neurons.rules`), the remedy built (its module needs no torch) with its rules, the frames a
dataset needs. ``ilif-train`` runs them before it imports torch, so a misspelt key or a bad value ends
in well under a second; :func:`ilif.train.config.validate` runs them first, then the same component
checks on the imported callables (what the source could not tell: a component made at run time) and
builds one neuron.

A bad key or value raises :class:`ilif.errors.ConfigError`: one line naming the key, the value and what
is allowed (for an unknown key, the nearest known keys).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from ilif import sources
from ilif.conf import (COMPONENTS, DatasetConfig, TrainConfig, component_function, group_schema, import_dotted,
                       keyword_parameters)
from ilif.errors import ConfigError, finite_number
from ilif.neurons.rules import FAMILIES, NORMALIZATIONS, RULED, RULES, check_parameter


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


def choice(options: tuple | Callable[[], tuple]):
    """A check: the value is one of ``options``, a tuple or a function that gives one (called when the
    check runs: a registry read from source)."""
    def check(key: str, value: Any) -> None:
        allowed = options if isinstance(options, tuple) else options()
        require(value in allowed, key, value, f"choose one of {list(allowed)}")

    return check


#: the package's registries, read from their source: {name: a shadow of the callable, or None}
REGISTRIES = {"dataset": lambda: sources.mapping("ilif.data", "BUILTIN") or {},
              "model": lambda: sources.decorated("ilif.models", "register_model")}


def dataset_names() -> tuple:
    """The built-in datasets (``ilif.data.BUILTIN``)."""
    return tuple(REGISTRIES["dataset"]())


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


def folder_path(key: str, value: Any) -> None:
    """A check: a folder's path, any characters but ``${`` (Hydra's sweep would read it as an
    interpolation when it makes the job's directory) and NUL."""
    require(isinstance(value, str) and value != "" and "${" not in value and "\0" not in value, key, value,
            "a folder's path without '${'")


#: the surrogate widths γ that train: outside them the float32 surrogate gradient vanishes (a support too
#: narrow to hold a potential, or a bump too flat to leave a nonzero gradient)
GAMMA_RANGE = (1e-3, 1e3)


def gamma_width(key: str, value: Any) -> None:
    """A check: a surrogate width γ within :data:`GAMMA_RANGE`."""
    low, high = GAMMA_RANGE
    require(finite_number(value) and low <= value <= high, key, value,
            f"a width in [{low:g}, {high:g}] (outside it the surrogate gradient vanishes in float32)")


#: the most time steps a run or a dataset's frames may have (beyond it one sample's frames of an event
#: dataset alone take megabytes, and a dataset of them more memory than a machine has)
MAX_T = 1024

#: the own keys of the package's datasets and their checks (a function of one's own checks its own)
DATASET_RULES: dict[str, Callable[[str, Any], None]] = {
    "T": positive(integer=True, maximum=MAX_T),
    "split_seed": within(0, 2**32),
    "test_fraction": within(0.01, 0.99, high_inclusive=True),  # both parts keep every class of the digits
    "size": positive(minimum=8, strict=False, integer=True, maximum=1024),
}

#: every checked key and its check (the open groups' own keys are checked by their components)
CHECKS: dict[str, Callable[[str, Any], None]] = {
    "seed": within(0, 2**32),
    "experiment_name": path_segment,
    "runs_root": folder_path,
    "dataset.name": choice(dataset_names),
    "dataset.split": choice(("reference", "random")),
    "dataset.preprocess": choice(("clean", "reference")),
    "dataset.val_fraction": within(0.0, 1.0),
    "dataset.stand_in_size": positive(integer=True, maximum=256),  # stand-in data is tiny: it proves a pipeline
    "dataset.stand_in_samples": positive(integer=True, maximum=4096),
    "model.dropout": within(0.0, 1.0),
    "surrogate.family": choice(FAMILIES),
    "surrogate.gamma": gamma_width,
    "surrogate.normalize": choice(NORMALIZATIONS),
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
    "trainer.T": positive(integer=True, maximum=MAX_T),
    "trainer.epochs": positive(integer=True),
    "trainer.timeout_s": positive(integer=True, maximum=10**7),  # 115 days; torch's waits overflow far above
    "trainer.checkpoint_every_min": positive(strict=False),
    "trainer.keep_checkpoints": choice(("all", "best", "none")),
    "trainer.memory": choice(("standard", "lean")),
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


def check_values(cfg: DictConfig) -> None:
    """Run the check of every key of :data:`CHECKS`. Raises ConfigError on the first bad value."""
    for key, check in CHECKS.items():
        if key == "dataset.name" and cfg.dataset.get("_target_") is not None:
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


NOUNS = {"optim": "optimiser", "schedule": "learning-rate schedule", "loss": "loss", "dataset": "dataset",
         "model": "backbone", "neuron": "neuron class"}


def part(group: str, spec: DictConfig | dict) -> tuple[Callable, dict]:
    """:func:`component` for the groups of :data:`ilif.train.factories.PARTS` (optim, schedule, loss)."""
    from ilif.train.factories import PARTS

    return component(group, spec, *PARTS[group], NOUNS[group])


#: the keys every dataset config has (:class:`ilif.conf.DatasetConfig`)
DATASET_COMMON = tuple(f.name for f in dataclasses.fields(DatasetConfig))
#: what the trainer adds to a dataset config (``T`` is trainer.T)
DATASET_GIVEN = ("T",)
#: what the trainer gives every backbone (besides its config file's keys, and ``input_size`` where asked)
MODEL_GIVEN = ("neuron", "num_classes", "in_channels", "T", "input_size")
#: what the trainer gives every neuron besides its config file's keys (``recompute``: trainer.memory)
NEURON_GIVEN = ("surrogate", "step_mode", "recompute")


def component_callable(group: str, spec: dict, imported: bool) -> Optional[Callable]:
    """The callable a dataset, model or neuron config ``spec`` names (``_target_``, else its registered
    ``name``): imported, or, not ``imported``, a :class:`ilif.sources.Shadow` read from its source
    (None where the source cannot tell). Raises ConfigError naming the key (a name not registered, a
    ``_target_`` that cannot be imported)."""
    target = spec.get("_target_")
    try:
        if group == "neuron" or target:
            if not isinstance(target, str) or "." not in target.strip("."):
                raise ValueError(f"{group}._target_={target!r} is not allowed: the dotted path of a {NOUNS[group]}")
            if not imported and sources.absent(target):
                module, _, name = target.rpartition(".")  # the line importing it would give
                raise ValueError(f"{group}._target_={target!r} is not allowed: it must name an importable function "
                                 f"(AttributeError: module {module!r} has no attribute {name!r})")
            found = import_dotted(f"{group}._target_", target) if imported else sources.shadow(target)
            return _with_signature(f"{group}._target_", target, found, NOUNS[group])
        if imported:
            from ilif.data import BUILTIN
            from ilif.models.registry import _MODELS

            registry = {"dataset": BUILTIN, "model": _MODELS}[group]
        else:
            registry = REGISTRIES[group]()
        return component_function(group, spec, registry, "_target_", NOUNS[group],
                                  name_key="dataset" if group == "dataset" else "")
    except ValueError as err:
        raise ConfigError.from_message(str(err)) from None


def _with_signature(key: str, target: str, found: Optional[Callable], noun: str) -> Optional[Callable]:
    """``found`` when its parameters can be read (None stays None: the source could not tell); raises
    ValueError naming ``key`` otherwise (a builtin such as ``dict`` has none to read)."""
    import inspect

    if found is None:
        return None
    try:
        inspect.signature(found)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={target!r} is not allowed: it must name a {noun} whose parameters can be read (a "
                         "Python function or class)") from None
    return found


def dataset_keys(cfg: dict, function: Callable) -> dict:
    """The keys of the dataset config ``cfg`` (with ``T``) that ``function`` (a dataset function) is
    called with: every key it names; a key of every dataset (:data:`DATASET_COMMON`) or one the trainer
    adds (:data:`DATASET_GIVEN`) is left out where it does not name it, except a true ``stand_in`` for
    a ``_target_`` function; any other key must be named, or taken by ``**kwargs``. Raises ValueError
    naming ``dataset.<key>``."""
    takes, takes_any = keyword_parameters(function)
    arguments = {}
    for key, value in cfg.items():
        if key in takes or (takes_any and key not in (*DATASET_COMMON, *DATASET_GIVEN)):
            arguments[key] = value
        elif key not in (*DATASET_COMMON, *DATASET_GIVEN):
            own = sorted(set(takes) - set(DATASET_COMMON))
            hint = did_you_mean(key, [*own, *DATASET_COMMON])
            raise ValueError(f"dataset.{key}={value!r} is not allowed: {hint}dataset {cfg['name']} takes {own} besides "
                             f"the keys every dataset has ({', '.join(sorted(DATASET_COMMON))})")
    if cfg.get("_target_") and cfg.get("stand_in") and "stand_in" not in takes:
        raise ValueError(f"dataset.stand_in=True is not allowed: {cfg['_target_']} makes no stand-in data (it "
                         "takes no stand_in)")
    if not cfg.get("_target_"):
        for key, value in arguments.items():
            if key in DATASET_RULES:
                DATASET_RULES[key](f"dataset.{key}", value)
    return arguments


def check_neuron_keys(spec: dict, cls: Callable) -> None:
    """Every key of the neuron config ``spec`` is a parameter of ``cls`` (the neuron's class, or its
    shadow), none of those the trainer gives; ConfigError naming ``neuron.<key>`` otherwise."""
    import inspect

    accepted = inspect.signature(cls).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    for key in spec:
        if key not in ("name", "_target_") and (key not in accepted and not takes_any or key in NEURON_GIVEN):
            allowed = [k for k in accepted if k not in (*NEURON_GIVEN, "store_membrane", "backend")]
            raise unknown_key(f"neuron.{key}", spec[key], cls.__name__, allowed)


def ruled_neuron(target: Any) -> bool:
    """Whether ``target`` is one of the package's neurons whose values :data:`ilif.neurons.rules.RULES`
    check (:data:`ilif.neurons.rules.RULED`)."""
    return isinstance(target, str) and any(sources.same(target, ruled) for ruled in RULED)


def check_neuron_values(spec: dict) -> None:
    """The values of a neuron of :data:`ilif.neurons.rules.RULED` by its parameters' rules; any other
    class checks its own values when it is built (:func:`ilif.train.config.check_imported`)."""
    if not ruled_neuron(spec.get("_target_")):
        return
    for key, value in spec.items():
        if key in RULES:
            try:
                check_parameter(key, value)
            except ValueError as err:
                raise ConfigError.from_message(f"neuron.{err}") from None


def check_components(cfg: DictConfig, imported: bool = False) -> bool:
    """The dataset's, model's and neuron's keys against their callables' signatures (read from source,
    or ``imported``; a component the source cannot tell about is left to the imported pass), the
    package's neurons' values, then the remedy (:func:`check_remedy`). Returns whether nothing is left
    for the imported pass: every callable one of the package's, told by its source, and the neuron one
    whose values its rules check (a module of one's own is imported to be checked, a neuron class of
    one's own builds one neuron to check its values)."""
    specs = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in COMPONENTS}
    dataset, model, neuron = specs["dataset"], specs["model"], specs["neuron"]
    for group, schema in COMPONENTS.items():
        for key in (f.name for f in dataclasses.fields(schema)) if schema is not None else ():
            require(key in specs[group], f"{group}.{key}", None, f"every {group} has it (it was removed)")
    require("builder" not in dataset, "dataset.builder", dataset.get("builder"),
            "it is dataset._target_ now (the dotted path of a dataset function outside the package)")
    for key in DATASET_GIVEN:
        require(key not in dataset, f"dataset.{key}", dataset.get(key), f"not a dataset key (trainer.{key} gives it)")
    data_function = component_callable("dataset", dataset, imported)
    try:
        if data_function is not None:
            dataset_keys({**dataset, "T": cfg.trainer.T}, data_function)
    except ValueError as err:
        raise ConfigError.from_message(str(err)) from None
    backbone = component_callable("model", model, imported)
    if backbone is not None:
        component_arguments("model", model, backbone, MODEL_GIVEN)
    cls = component_callable("neuron", neuron, imported)
    if cls is not None:
        check_neuron_keys(neuron, cls)
    check_neuron_values(neuron)
    check_remedy(cfg, cls)
    own = dataset.get("_target_") or model.get("_target_")  # a module of one's own: its import is checked too
    return None not in (data_function, backbone, cls) and ruled_neuron(neuron["_target_"]) and not own


def check_remedy(cfg: DictConfig, neuron: Optional[Callable]) -> None:
    """The remedy's class, its keys (no other, none missing) and their values (checked by its
    constructor, which needs no torch), then its rules on the rest of the config (``check_run``, with
    ``neuron``: the neuron's class or shadow; skipped where it is unknown); ConfigError naming the key."""
    from ilif.train.remedies import remedy_class

    cls, arguments = remedy_class(cfg)
    try:
        cls(**arguments)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError.from_message(f"remedy.{err}") from None
    if neuron is not None:
        cls.check_run(cfg, neuron)


def check_frames(cfg: DictConfig) -> None:
    """A dataset whose samples have a fixed number of time steps (seqdigits: one per row) needs that T."""
    rows = sources.constant("ilif.data.temporal", "ROWS")
    if cfg.dataset.name == "seqdigits" and not cfg.dataset.stand_in and cfg.trainer.T != rows:
        raise ConfigError("trainer.T", cfg.trainer.T, f"{rows} with dataset=seqdigits (one time step per row of the "
                          f"{rows}×{rows} digits; recipe=mini_seqdigits sets it)")


def check_torch_free(cfg: DictConfig) -> bool:
    """What can be checked before torch is imported: every key known, every plain range and choice,
    the optimiser's, schedule's and loss's keys against their functions, the dataset's, model's and
    neuron's keys against their source, the package's neurons' values, the remedy, the frames. Raises
    ConfigError on the first bad key or value; returns whether nothing is left to check with the
    components imported (:func:`check_components`)."""
    check_keys(cfg)
    check_values(cfg)
    for group in ("optim", "schedule", "loss"):
        part(group, cfg[group])
    check_frames(cfg)
    return check_components(cfg)
