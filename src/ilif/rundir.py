"""The run directory's files, free of torch: ``summary.json`` and ``metrics.jsonl`` written atomically or
appended line by line, and read back by the trainer (to skip a finished run), the study runner and the
report. The run directory is the truth; wandb only mirrors it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_plain(obj), indent=2, sort_keys=True))
    os.replace(tmp, path)


def finished_summary(run_dir: Path) -> Optional[dict]:
    """The run's summary.json if the run finished, else None (no summary, or a failed one)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "finished" else None


class MetricsFile:
    """``metrics.jsonl``: one JSON object per epoch. On resume, lines after the checkpoint's epoch
    (written by the killed run) are dropped so the file matches the restored state."""

    def __init__(self, path: Path, keep_epochs_below: int):
        self.path = path
        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by a kill
                if record.get("epoch", math.inf) < keep_epochs_below:
                    kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(_plain(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def discard_untrained(run_dir: Path, runs_root: Path) -> None:
    """Remove a run directory that holds no checkpoint (nothing was trained), then every parent left
    empty up to ``runs_root``: a failed command leaves no empty directories behind."""
    import shutil

    run_dir, runs_root = Path(run_dir).resolve(), Path(runs_root).resolve()
    if (run_dir / "last.pt").exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in [*run_dir.parents]:
        if parent == runs_root.parent or not parent.is_relative_to(runs_root) or any(parent.iterdir()):
            break
        parent.rmdir()


def read_history(run_dir: Path) -> list[dict]:
    """The epochs of ``metrics.jsonl`` (empty if there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
