"""The one validation of a composed trainer config, which every runner calls (``ilif-train``, its
sweeps, ``ilif-study``): the torch-free checks of :mod:`ilif.checks` (every key known, ranges and
choices, the components' keys read from their source, the neurons' rules, the remedy), then, only
where the source could not tell everything (a component of one's own), the same component checks on
the imported callables and one neuron built, which lets its class check its values.

:func:`validate` raises :class:`ConfigError` with one line naming the key, the value and what is
allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ilif.checks import check_components, check_torch_free
from ilif.errors import ConfigError


def validate(cfg: DictConfig) -> None:
    """Check a composed config, one job's, whole (see the module docstring); raises ConfigError on
    the first bad value."""
    if not check_torch_free(cfg):
        check_imported(cfg)


def check_imported(cfg: DictConfig) -> None:
    """The checks that need the components imported: their keys against their own signatures, and
    one neuron built (its class checks its values); ConfigError naming the key."""
    from .build import neuron_factory

    check_components(cfg, imported=True)
    try:
        neuron_factory(cfg)()
    except ValueError as err:
        raise ConfigError.from_message(f"neuron.{err}") from None
