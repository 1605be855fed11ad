"""The one validation of a composed trainer config, which every runner calls (``ilif-train``, its
sweeps, ``ilif-study``): the torch-free checks of :mod:`ilif.checks` (every key known, ranges and
choices, the components' keys read from their source, the neurons' rules, the remedy), then the
same component checks on the imported callables (what the source could not tell) and one neuron
built, which lets its class check its values.

:func:`validate` raises :class:`ConfigError` with one line naming the key, the value and what is
allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ilif.checks import check_components, check_torch_free
from ilif.errors import ConfigError

from .build import neuron_factory


def validate(cfg: DictConfig) -> None:
    """Check a composed config, one job's, whole (see the module docstring); raises ConfigError on
    the first bad value."""
    check_torch_free(cfg)
    check_components(cfg, imported=True)
    try:
        neuron_factory(cfg)()
    except ValueError as err:
        raise ConfigError.from_message(f"neuron.{err}") from None
