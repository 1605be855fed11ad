"""The project's errors, and how every command-line entry point ends on one: one line on stderr and
an exit code, the traceback only with ``ILIF_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``).

Exit codes (:func:`exit_code` maps an error to its code, :func:`describe` to its line; every CLI ends
through them): 0 done; 1 a failed job of a sweep or study, or an unexpected error; 2 bad input (a
config value, a dataset, a run directory another process or config holds, the file system); 3 training
diverged; 75 SIGTERM (resumable, EX_TEMPFAIL, e.g. for a SLURM requeue); 130 SIGINT.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (a bool is not a number here)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class IlifError(Exception):
    """A failure the user can act on. ``str()`` is one line; a CLI that ends with it exits with
    ``exit_code`` and prints :meth:`advice`."""

    exit_code = 1

    def advice(self, run_dir: Path | None = None) -> str:
        """The line a CLI prints (``run_dir``: the run it ended, for errors that say how to go on)."""
        return str(self)


class ConfigError(IlifError, ValueError):
    """A config value out of range; ``str()`` is one line: key, value, what is allowed."""

    exit_code = 2

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    @classmethod
    def from_message(cls, message: str) -> "ConfigError":
        """A ConfigError with a message already in the one-line form (from a class's own check)."""
        err = cls.__new__(cls)
        ValueError.__init__(err, message)
        return err


class DatasetError(IlifError):
    """A dataset is missing or corrupt: one line naming the dataset, the path, the files expected and
    where to get them."""

    exit_code = 2

    def __init__(self, dataset: str, path: Path | str, problem: str, expected: str, source: str):
        self.dataset, self.path = dataset, str(path)
        super().__init__(f"dataset {dataset!r}: {problem} at {path}; expected {expected}; get it from {source}")


class RecordError(IlifError, ValueError):
    """A file read back that is not the record it should be (:mod:`ilif.records`): ``<file>: <key>: <what
    is wrong>``."""

    exit_code = 2

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class Invalid(ValueError):
    """A value that fails a check of :mod:`ilif.records`: ``where`` is its dotted key in the record."""

    def __init__(self, where: str, problem: str):
        self.where = where
        super().__init__(f"{where}: {problem}" if where else problem)


class RunBusy(IlifError, RuntimeError):
    """Another process holds the run directory."""

    exit_code = 2


class RunConflict(IlifError, RuntimeError):
    """The run directory holds another config's files, or an unreadable checkpoint."""

    exit_code = 2


class TrainingDiverged(IlifError, RuntimeError):
    """A loss, gradient or model state became NaN or infinite."""

    exit_code = 3

    def advice(self, run_dir: Path | None = None) -> str:
        where = f"; the last good checkpoint is {Path(run_dir) / 'last.pt'} (if any epoch finished)" if run_dir else ""
        return f"{self}{where}"


#: the exit code of a run stopped by each signal
SIGNAL_EXIT = {signal.SIGTERM: 75, signal.SIGINT: 130}


class Interrupted(IlifError, RuntimeError):
    """SIGTERM or SIGINT arrived; the step in progress was abandoned (``signum`` names which)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = SIGNAL_EXIT[signum]

    def advice(self, run_dir: Path | None = None) -> str:
        name = signal.Signals(self.signum).name
        if run_dir is None:
            return f"interrupted by {name} {self}"
        if not (Path(run_dir) / "last.pt").exists():
            return f"interrupted by {name} {self}, before its first checkpoint: run the same command again to start it"
        return (f"interrupted by {name} {self}; {Path(run_dir) / 'last.pt'} resumes it at the last finished epoch: "
                "run the same command again")


@contextmanager
def bad_input():
    """Inside, an error is the user's input and ends the command as a ConfigError (exit 2): a
    ValueError (a value out of range, an option that does not exist, a folder that is not there), a
    config that does not compose (Hydra's or OmegaConf's error, in one line with its cause) or a config
    file that is not YAML (named, with the line)."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except IlifError:
        raise
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError.from_message(composition_error(err)) from err
    except yaml.MarkedYAMLError as err:  # a config file that is not YAML: its name, line and column
        mark = err.problem_mark or err.context_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
        raise ConfigError.from_message(f"{where} is not valid YAML: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ConfigError.from_message(f"a config file is not valid YAML: {one_line(err)}") from err
    except UnicodeDecodeError as err:  # a config file that is not UTF-8 text (Hydra does not say which)
        raise ConfigError.from_message(f"a config file is not UTF-8 text ({err.reason} at byte {err.start}): "
                                       "save your config files as UTF-8") from err
    except ValueError as err:
        raise ConfigError.from_message(str(err)) from err


def exit_code(err: BaseException) -> int:
    """The exit code of a command that ends with ``err``: an IlifError's own; 2 for the file system
    (OSError); 130 for Ctrl-C; 1 for anything else."""
    if isinstance(err, IlifError):
        return err.exit_code
    if isinstance(err, OSError):
        return 2
    return SIGNAL_EXIT[signal.SIGINT] if isinstance(err, KeyboardInterrupt) else 1


def describe(err: BaseException, run_dir: Path | None = None) -> str:
    """The one line a command that ends with ``err`` prints (without ``error: ``)."""
    if isinstance(err, IlifError):
        return err.advice(run_dir)
    if isinstance(err, OSError):
        return f"{err.strerror or one_line(err)}: {err.filename or run_dir}" if err.filename or run_dir \
            else err.strerror or one_line(err)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted by SIGINT"
    return f"{one_line(err)} (ILIF_DEBUG=1 shows the traceback)"


def debugging() -> bool:
    """True when the user asked for tracebacks."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("ILIF_DEBUG", "HYDRA_FULL_ERROR"))


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (the type alone for an empty message)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def composition_error(err: BaseException) -> str:
    """One line for Hydra's or OmegaConf's error while composing a config, with its cause (where the key
    and the reason are), the key OmegaConf names, and the options Hydra lists."""
    parts = [_one_line(err)]
    cause = err.__cause__
    if cause is not None and str(cause) and _one_line(cause) not in parts[0]:
        parts.append(_one_line(cause))
    text = ": ".join(part.rstrip(":") for part in parts)
    keys = [line.split(":", 1)[1].strip() for e in (err, cause) if e is not None for line in str(e).splitlines()
            if line.strip().startswith("full_key:")]
    text = f"{text} (key {keys[0]})" if keys and keys[0] and keys[0] not in text else text
    if keys and keys[0] and any("not in" in str(e) for e in (err, cause) if e is not None):
        from ilif.checks import key_hint  # the schema's keys: a misspelt key's nearest ones

        hint = key_hint(keys[0])
        text = f"{text}: {hint}" if hint else text
    return text


def _one_line(err: BaseException) -> str:
    """An OmegaConf or Hydra message in one line: sentences joined, a list after a line ending in ':'
    joined by commas; OmegaConf's key and type lines and Hydra's search path left out."""
    lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    out, listing = "", False
    for line in lines:
        if line.startswith(("full_key:", "reference_type=", "object_type=")):
            continue
        if not out:
            out = line
        elif listing:
            out += (" " if out.endswith(":") else ", ") + line
        else:
            out += (" " if out.endswith((".", ":")) else "; ") + line
        listing = listing or line.endswith(":")
    return out


def entry_point(main: Callable[[], int | None]) -> Callable[[], int | None]:
    """Wrap a CLI ``main``: a closed output pipe ends quietly; any other error ends with the line of
    :func:`describe` and the code of :func:`exit_code` (Ctrl-C included), or with its traceback when
    :func:`debugging` and it is not one of the project's errors."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SystemExit:
            raise
        except BrokenPipeError:  # `ilif-report ... | head`: the reader has all it wanted
            _quiet_stdout()
            return 0
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - the one place an error becomes its line
            if debugging() and not isinstance(err, (IlifError, KeyboardInterrupt)):
                raise
            _say(f"error: {describe(err)}")
            return exit_code(err)

    return wrapped


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
