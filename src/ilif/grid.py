"""The reproduction grid, free of torch: which experiment files make each table, and every job of an
experiment's grid (composed config and run directory). The study runner trains the jobs; the report
reads what their run directories hold.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import re
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf, open_dict

from .conf import COMPONENTS, compose_config, group_options, is_group, override_text, parse_value, run_leaf, sweep_axes

SCALES = ("full", "mini", "smoke")
#: the tables that read the runs of another table's experiment (Table 4: Table 1's)
BORROWED = {4: ("table1",)}
#: the experiments behind the figures: Figures 1, 2 and 4 read Table 2's runs (γ), 3 and 5 Table 1's (neurons)
FIGURES = {"neurons": "table1", "gamma": "table2"}


def tables() -> dict[int, tuple[str, ...]]:
    """Table number -> the experiment files whose runs it reads: an experiment file ``table<N>`` or
    ``table<N>_<variant>`` (configs/experiment/) makes Table N, and :data:`BORROWED`."""
    found: dict[int, tuple[str, ...]] = dict(BORROWED)
    for name in group_options("experiment"):
        match = re.fullmatch(r"table(\d+)(_\w+)?", name)
        if match:
            found[int(match.group(1))] = (*found.get(int(match.group(1)), ()), name)
    return dict(sorted(found.items()))

Job = tuple[str, DictConfig, Path]


def experiment_names(patterns: list[str]) -> list[str]:
    """Experiment config names matching the glob ``patterns``, in sorted order."""
    available = group_options("experiment")
    names = sorted({n for pattern in patterns for n in fnmatch.filter(available, pattern)})
    if not names:
        raise ValueError(f"experiment={patterns!r} matches nothing: choose from {available}")
    return names


def table_numbers(values: list[str]) -> list[int]:
    """Table numbers as written on a command line (``1 3``, or ``all`` for every table of :func:`tables`).
    Raises ValueError naming the first value that is not a table."""
    known, numbers = tables(), []
    for value in values:
        if value != "all":
            if not (value.isascii() and value.isdigit()) or int(value) not in known:
                raise ValueError(f"table={value!r} is not allowed: choose from {sorted(known)} or all")
            numbers.append(int(value))
    return sorted(known) if "all" in values else numbers


def table_experiments(numbers: list[int], figures: bool = False) -> list[str]:
    """The experiment files behind tables ``numbers`` (and the figures), each once."""
    known = tables()
    unknown = [n for n in numbers if n not in known]
    if unknown:
        raise ValueError(f"table={unknown[0]!r} is not allowed: choose one of {sorted(known)}")
    return sorted({name for n in numbers for name in known[n]} | (set(FIGURES.values()) if figures else set()))


def run_dir_of(cfg: DictConfig) -> Path:
    """``runs_root/experiment_name/run_name-hash``, where the trainer writes the run."""
    return Path(cfg.runs_root) / cfg.experiment_name / run_leaf(cfg)


def grid_items(head: list[str], items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The sweep of the experiment that ``head`` composes (its ``hydra.sweeper.params``), with the
    command line's ``items`` added and replacing the axes they name, as on Hydra's command line."""
    first_values = [override_text(*axis[0]) for axis in sweep_axes(items)]
    base = compose_config([*head, *first_values], return_hydra_config=True)
    params = OmegaConf.to_container(base.hydra.sweeper.params) if base.hydra.sweeper.get("params") else {}
    return list({**params, **dict(items)}.items())


def job_configs(head: list[str], items: list[tuple[str, str]]) -> Iterator[DictConfig]:
    """The config of every job of the sweep ``items`` ((key, value) pairs in Hydra's sweep syntax) on
    top of the overrides ``head`` (an experiment, a search path), in Hydra's order.

    Hydra composes one config per combination of config-group choices (``neuron=lif``) and of keys
    added or removed (``+key``, ``~key``, composed as on ``ilif-train``'s command line); plain values
    (``seed=1``, ``surrogate.gamma=0.5``) are then set on a copy, which gives the same config as
    composing each job and is much faster for large grids. A plain key of an open group that its
    file lacks (``neuron.tauu=2``) is set too, as with ``+``, so its component's check names the
    nearest keys it takes (Hydra's error knows only the file's)."""
    composed = {}
    for combo in itertools.product(*sweep_axes(items)):
        choices = tuple(override_text(k, v) for k, v in combo if _composed(k))
        if choices not in composed:
            composed[choices] = compose_config([*head, *choices])
        cfg = composed[choices].copy()
        for key, value in combo:
            if not _composed(key):
                added = key.partition(".")[0] in COMPONENTS and "." in key and \
                    OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT
                with open_dict(cfg) if added else contextlib.nullcontext():
                    OmegaConf.update(cfg, key, parse_value(value), merge=False)
                if added:
                    _refuse_added(cfg, key, value)
        yield cfg


_ABSENT = object()


def _refuse_added(cfg: DictConfig, key: str, value: str) -> None:
    """A plain ``group.key=value`` of an open group whose file lacks the key: ConfigError naming the
    keys its component takes (a misspelling), or, for a key it takes, saying to add it with ``+``
    (as Hydra, which composes a run, requires)."""
    from ilif.checks import check_torch_free
    from ilif.errors import ConfigError

    check_torch_free(cfg)
    raise ConfigError(key, parse_value(value), f"it is not in the {key.partition('.')[0]} file: add it with +{key}")


def plan(names: list[str], overrides: list[str]) -> list[Job]:
    """Every job of the experiments' grids: (experiment, composed config, run directory). An override
    of a grid key replaces that axis, as on Hydra's command line (:func:`job_configs`)."""
    override_items = [tuple(item.partition("=")[::2]) for item in overrides]
    return [(name, cfg, run_dir_of(cfg)) for name in names
            for cfg in job_configs([f"experiment={name}"], grid_items([f"experiment={name}"], override_items))]


def _composed(key: str) -> bool:
    """Whether a grid key is composed by Hydra (a group choice, a key added or removed) rather than set."""
    return is_group(key) or key.startswith(("+", "~"))


def table_jobs(numbers: list[int], scale: str, overrides: list[str] = (), figures: bool = False) -> list[Job]:
    """The jobs of tables ``numbers`` (and of the figures) at ``scale`` (one of :data:`SCALES`)."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not allowed: choose one of {list(SCALES)}")
    return plan(table_experiments(numbers, figures), [f"scale={scale}", *overrides])
