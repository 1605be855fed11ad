"""``ilif-train`` / ``python -m ilif.train``: the Hydra 1.3 app.

Before Hydra starts (and creates any run directory), every combination of the command line's
overrides is composed and validated; a bad value ends with one line naming the key, the value and
what is allowed, and exit code 2.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ilif.conf import CONFIG_DIR, compose_config, group_options, register, sweep_axes
from ilif.data import DatasetError

from .config import ConfigError, validate
from .loop import TrainingDiverged, train

MAX_PRECHECK = 2000
log = logging.getLogger("ilif.train")


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _combinations(overrides: list[str]) -> list[list[str]]:
    """The basic sweeps of the command line (``key=a,b,c``) expanded; other sweep syntax is checked per job."""
    axes = sweep_axes([tuple(item.partition("=")[::2]) for item in overrides])
    return [[f"{k}={v}" for k, v in combo] for combo in itertools.islice(itertools.product(*axes), MAX_PRECHECK)]


def precheck(argv: list[str]) -> None:
    """Compose and validate each combination of ``argv``'s overrides; exit 2 with one line on the first error."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if (CONFIG_DIR / key).is_dir():
            options = group_options(key)
            for option in value.split(","):
                if option not in options and option != "null":
                    _fail(f"{key}={option!r} is not allowed: choose one of {options}")
    for combo in _combinations(overrides):
        try:
            validate(compose_config(combo))
        except ConfigError as err:
            _fail(str(err))
        except (HydraException, OmegaConfBaseException) as err:
            cause = err.__cause__
            detail = f": {str(cause).splitlines()[0]}" if cause is not None and str(cause) else ""
            _fail(" ".join(str(err).split()) + detail)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)
    except ConfigError as err:  # sweep syntax the precheck could not expand
        shutil.rmtree(run_dir, ignore_errors=True)
        _fail(str(err))
    try:
        summary = train(cfg, run_dir)
    except DatasetError as err:
        if not (run_dir / "last.pt").exists():  # nothing was trained: leave no empty run directory
            shutil.rmtree(run_dir, ignore_errors=True)
        _fail(str(err))
    except TrainingDiverged as err:
        log.error("%s", err)
        _fail(str(err), code=3)
    return summary["final"]["test/acc1"]


def main() -> None:
    register()
    precheck(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
