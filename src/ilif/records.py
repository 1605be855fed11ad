"""The one reader of every file the package reads back (free of torch): a run's ``summary.json``,
``metrics.jsonl`` and checkpoint counters, the report's ``expected.yaml`` and ``figures.json`` and the
tables it keeps, the wandb mirror's marker.

Reading a file here means: a regular file only (a FIFO, a device or a folder where a record should be is
refused at once, never waited on), at most :data:`MAX_BYTES`, UTF-8, JSON without ``NaN`` or
``Infinity`` and YAML nested at most :data:`MAX_DEPTH` deep. Checking a value means a :data:`Check`
(``number``, ``text``, ``one_of``, ``optional``, ``list_of``, ``mapping_of``, ``record``): the types,
ranges and finiteness every reader relies on. Every refusal is a :class:`RecordError`, one line naming
the file, the key and what is allowed; each caller decides what a bad file means for it (a run counted
as unfinished, a command refused).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable, Optional

from ilif.errors import Invalid, RecordError

#: the largest record read (a summary of a large network is a few MB)
MAX_BYTES = 64 * 2**20
#: the deepest nesting of lists and objects a record may have
MAX_DEPTH = 32
#: the most lists, objects and values a record may hold
MAX_NODES = 10**6
#: the largest magnitude a number in a record may have (a larger integer is no measurement, and no float)
LARGEST = 1e308


#: a check: (value, its dotted key) -> the value, or raises :class:`Invalid`
Check = Callable[[Any, str], Any]


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The content of the regular file ``path`` (opened without blocking, so a FIFO is refused, not
    waited on). Raises RecordError for anything else, or a file over ``limit`` bytes; FileNotFoundError
    when there is nothing at ``path``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise RecordError(path, f"cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(path, "is not a regular file")
        if info.st_size > limit:
            raise RecordError(path, f"is {info.st_size} bytes, more than the {limit} a record may have")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise RecordError(path, f"is more than the {limit} bytes a record may have")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise RecordError(path, f"cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`read_bytes`)."""
    try:
        return read_bytes(path, limit).decode()
    except UnicodeDecodeError:
        raise RecordError(path, "is not UTF-8 text") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def parse_json(text: str) -> Any:
    """The value of a JSON text with finite numbers only and at most :data:`MAX_DEPTH` levels; raises
    ValueError otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    check_depth(value)
    return value


def check_depth(value: Any) -> None:
    """Raise ValueError when lists and mappings in ``value`` nest deeper than :data:`MAX_DEPTH` or hold
    more than :data:`MAX_NODES` items."""
    level, seen = [value], 1
    for _ in range(MAX_DEPTH + 1):
        level = [child for node in level if isinstance(node, (dict, list))
                 for child in (node.values() if isinstance(node, dict) else node)]
        seen += len(level)
        if seen > MAX_NODES:
            raise ValueError(f"holds more than {MAX_NODES} items")
        if not level:
            return
    raise ValueError(f"nested more than {MAX_DEPTH} levels deep")


def read_json(path: Path, check: Optional[Check] = None, limit: int = MAX_BYTES) -> Any:
    """The JSON value in ``path``, passed through ``check``; RecordError naming the file and the key."""
    text = read_text(path, limit)
    try:
        value = parse_json(text)
    except ValueError as err:
        raise RecordError(path, f"is not readable JSON ({err})") from None
    return validated(path, value, check)


def read_json_lines(path: Path, check: Optional[Check] = None) -> tuple[list, Optional[str]]:
    """The values of a file of one JSON value a line, up to the first line that is not one that passes
    ``check`` (a line cut by a kill ends the file): (values, the problem that stopped it or None)."""
    return json_lines(path, read_text(path).splitlines(), check)


def json_lines(path: Path, lines: list[str], check: Optional[Check] = None) -> tuple[list, Optional[str]]:
    """The values of ``lines`` (read from ``path``), one JSON value each, up to the first that is not
    one that passes ``check``: (values, the problem that stopped them or None)."""
    values = []
    for number, line in enumerate(lines, 1):
        try:
            values.append(validated(path, parse_json(line), check))
        except (ValueError, RecordError) as err:
            return values, f"line {number}: {err.problem if isinstance(err, RecordError) else err}"
    return values, None


def read_yaml(path: Path, check: Optional[Check] = None) -> Any:
    """The YAML value in ``path`` (plain data only: no tags, no aliases, no key given twice), passed
    through ``check``."""
    import yaml

    text = read_text(path)
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ValueError("uses YAML aliases (*name), which a record never needs")
        value = yaml.load(text, Loader=_loader())
        check_depth(value)
    except yaml.MarkedYAMLError as err:
        where = f", line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise RecordError(path, f"is not readable YAML ({err.problem or type(err).__name__}{where})") from None
    except (yaml.YAMLError, RecursionError) as err:
        raise RecordError(path, f"is not readable YAML ({type(err).__name__})") from None
    except ValueError as err:
        raise RecordError(path, str(err)) from None
    return validated(path, value, check)


def _loader():
    """PyYAML's safe loader, refusing a mapping that gives a key twice (the last would win unseen)."""
    import yaml

    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Strict


def validated(path: Path, value: Any, check: Optional[Check]) -> Any:
    """``check(value)``, its :class:`Invalid` as a RecordError naming ``path``."""
    if check is None:
        return value
    try:
        return check(value, "")
    except Invalid as err:
        raise RecordError(path, str(err)) from None


def _at(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def number(low: float = -math.inf, high: float = math.inf, integer: bool = False, finite: bool = True) -> Check:
    """A finite int or float (an int when ``integer``; never a bool) in [``low``, ``high``]; with
    ``finite=False`` (and no bounds) also NaN and ±inf."""
    kind = "an integer" if integer else "a finite number" if finite else "a number"
    bounds = "" if (low, high) == (-math.inf, math.inf) else \
        f" ≥ {low:g}" if high == math.inf else f" in [{low:g}, {high:g}]"

    def check(value, where):
        ok = isinstance(value, int) and abs(value) <= LARGEST if integer else \
            isinstance(value, (int, float)) and (abs(value) <= LARGEST or not finite and isinstance(value, float))
        if isinstance(value, bool) or not ok or not (low <= value <= high or not finite and not math.isfinite(value)):
            raise Invalid(where, f"{value!r:.60} is not {kind}{bounds}")
        return value

    return check


def text(value, where):
    """A string."""
    if not isinstance(value, str):
        raise Invalid(where, f"{value!r:.60} is not a string")
    return value


def one_of(*choices) -> Check:
    """One of ``choices`` (compared by equality and type)."""

    def check(value, where):
        if not any(type(value) is type(c) and value == c for c in choices):
            raise Invalid(where, f"{value!r:.60} is not one of {list(choices)}")
        return value

    return check


def either(*checks: Check, what: str) -> Check:
    """A value that passes one of ``checks``; otherwise Invalid: not ``what`` (the choices in words)."""

    def check(value, where):
        for inner in checks:
            try:
                return inner(value, where)
            except Invalid:
                pass
        raise Invalid(where, f"{value!r:.60} is not {what}")

    return check


def optional(inner: Check) -> Check:
    """None, or a value that passes ``inner``."""
    return lambda value, where: None if value is None else inner(value, where)


def anything(value, where):
    return value


def list_of(inner: Check) -> Check:
    """A list whose every item passes ``inner``."""

    def check(value, where):
        if not isinstance(value, list):
            raise Invalid(where, f"{value!r:.60} is not a list")
        return [inner(item, _at(where, index)) for index, item in enumerate(value)]

    return check


def mapping_of(inner: Check, keys: Check = text) -> Check:
    """A mapping whose keys pass ``keys`` and values pass ``inner``."""

    def check(value, where):
        if not isinstance(value, dict):
            raise Invalid(where, f"{value!r:.60} is not a mapping")
        return {keys(k, where): inner(v, _at(where, k)) for k, v in value.items()}

    return check


def record(fields: dict[str, Check], required: tuple = (), others: Optional[Check] = anything) -> Check:
    """A mapping with the ``fields`` (each checked where present), ``required`` ones present; keys
    outside ``fields`` pass ``others`` (None: not allowed)."""

    def check(value, where):
        if not isinstance(value, dict):
            raise Invalid(where, f"{value!r:.60} is not a mapping")
        missing = [key for key in required if key not in value]
        if missing:
            raise Invalid(where, f"has no {missing[0]!r}")
        out = {}
        for key, item in value.items():
            inner = fields.get(key, others)
            if inner is None:
                raise Invalid(_at(where, key), f"is not a key of this record (allowed: {sorted(fields)})")
            out[key] = inner(item, _at(where, key))
        return out

    return check
