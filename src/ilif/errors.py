"""How every command-line entry point ends on an error: one line on stderr and an exit code, the
traceback only with ``ILIF_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``).

Exit codes: 0 done; 1 a failed job of a sweep or study, or an unexpected error; 2 bad input (a value,
a file, the environment); 3 training diverged; 75 SIGTERM (resumable); 130 SIGINT.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable


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
    return f"{text} (key {keys[0]})" if keys and keys[0] and keys[0] not in text else text


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
    """Wrap a CLI ``main``: a closed output pipe ends quietly, a file-system error (read-only or full
    disk, a path that is a file, a symlink loop) ends with one line and exit 2, Ctrl-C with 130, anything
    else with one line and exit 1, unless :func:`debugging`."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SystemExit:
            raise
        except BrokenPipeError:  # `ilif-report ... | head`: the reader has all it wanted
            _quiet_stdout()
            return 0
        except KeyboardInterrupt:
            print("error: interrupted by SIGINT", file=sys.stderr)
            return 130
        except OSError as err:
            if debugging():
                raise
            where = f": {err.filename}" if err.filename else ""
            _say(f"error: {err.strerror or one_line(err)}{where}")
            return 2
        except Exception as err:  # noqa: BLE001 - the one place an unexpected error becomes one line
            if debugging():
                raise
            _say(f"error: {one_line(err)} (ILIF_DEBUG=1 shows the traceback)")
            return 1

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
