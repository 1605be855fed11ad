"""The wandb mirror of a run directory, free of torch: live logging during training and upload of
finished runs afterwards. The run directory stays the truth: any wandb failure becomes a warning and
turns the mirror off, and wandb never holds training up for more than a few seconds (an online
start that does not answer within ``INIT_TIMEOUT_S`` falls back to an offline run).

Every run has a wandb id derived from its identity (experiment and config hash), so a resumed run
continues its wandb run and uploading a directory twice never creates a second one. Per-epoch
records are flattened to scalars (``test/layer_rates/neuron1``, ``test/rate_per_step/0``, ...), and
runs carry tags (neuron, dataset, γ, normalisation, scale) and the job type ``train``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

from .rundir import finished_summary, read_history, write_json_atomic

log = logging.getLogger("ilif.train")

INIT_TIMEOUT_S = 10
UPLOADED = "wandb_uploaded.json"


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


def wandb_id(experiment_name: str, config_hash: str, run_name: str) -> str:
    """A stable wandb run id for one run directory (letters, digits and dashes, 32 characters)."""
    return hashlib.sha256(f"{experiment_name}/{run_name}-{config_hash}".encode()).hexdigest()[:32]


def describe_run(config: dict, config_hash: str) -> tuple[str, list[str]]:
    """The wandb run name (every commonly swept key, then the hash) and tags, from a resolved config."""
    neuron, surrogate = config["neuron"], config["surrogate"]
    parts = [config["dataset"]["name"], neuron["name"], f"{surrogate['family']}{surrogate['gamma']:g}",
             surrogate["normalize"]]
    if "kappa_current" in neuron:
        parts.append(f"kI{neuron['kappa_current']:g}")
    parts += [f"s{config['seed']}", config_hash]
    tags = [f"neuron:{neuron['name']}", f"dataset:{config['dataset']['name']}", f"gamma:{surrogate['gamma']:g}",
            f"normalize:{surrogate['normalize']}", f"scale:{config.get('scale_name', 'none')}"]
    return "-".join(parts), tags


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    """Nested dicts and lists of numbers as flat ``a/b/c`` scalars (non-finite and non-numeric left out)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            flat.update(flatten(dict(enumerate(value)), f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = value
    return flat


class WandbLogger:
    """Mirror of one run directory in wandb (see the module docstring)."""

    def __init__(self, cfg, run_dir: Path, config: dict, config_hash: str, run_name: str, job_type: str = "train"):
        self.run, self.run_dir, self.mode = None, Path(run_dir), None
        mode = cfg.mode
        if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
            return
        if mode == "auto":
            mode = "online" if _has_wandb_key() else "offline"
        name, tags = describe_run(config, config_hash)
        options = dict(project=cfg.project, entity=cfg.entity, group=config.get("experiment_name"), name=name,
                       tags=tags + list(cfg.tags), config=config, dir=str(run_dir), job_type=job_type,
                       id=wandb_id(config.get("experiment_name", ""), config_hash, run_name), resume="allow",
                       reinit="finish_previous")
        try:
            self.run = self._init(options, mode)
        except Exception as err:  # noqa: BLE001 - wandb must never stop training
            if mode != "online":
                self._disable(err)
                return
            warnings.warn(f"wandb could not start online ({type(err).__name__}); logging offline instead")
            try:
                self.run = self._init(options, "offline")
            except Exception as offline_err:  # noqa: BLE001
                self._disable(offline_err)

    def _init(self, options: dict, mode: str):
        import wandb

        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S), **options)
        self.mode = mode
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        for key in ("test/acc1", "val/acc1", "test/acc5"):
            run.define_metric(key, summary="max")
        if mode == "offline":
            log.info("wandb is offline; send this run to your dashboard with: wandb sync %s",
                     run.dir.rsplit("/files", 1)[0])
        return run

    def _disable(self, err: Exception) -> None:
        warnings.warn(f"wandb disabled after an error ({type(err).__name__}: {err}); local files are complete")
        self.run = None

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(flatten(record))
        except Exception as err:  # noqa: BLE001
            self._disable(err)

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            import wandb

            for key in ("layers", "energy_layers"):
                rows = summary.get(key) or []
                if rows:
                    columns = list(rows[0])
                    self.run.log({f"tables/{key}": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
            for key, value in flatten(summary.get("final", {})).items():
                self.run.summary[f"final/{key}"] = value
            marker = {"id": self.run.id, "mode": self.mode, "project": self.run.project}
            self.run.finish()
            write_json_atomic(marker, self.run_dir / UPLOADED)
        except Exception as err:  # noqa: BLE001
            self._disable(err)


def _already_sent(run_dir: Path, mode: str) -> bool:
    import json

    try:
        sent_mode = json.loads((run_dir / UPLOADED).read_text()).get("mode")
    except (OSError, ValueError, AttributeError):
        return False
    wanted = "online" if mode == "auto" and _has_wandb_key() else ("offline" if mode == "auto" else mode)
    return sent_mode in ("online", wanted)


def upload_runs(run_dirs: list[Path], mode: str = "auto", project: str = "ilif") -> tuple[int, int]:
    """Send finished run directories to wandb after the fact: config, every epoch of metrics.jsonl and
    the summary tables, as if the run had logged them live, under the run's stable id. A directory not
    finished, or already sent online or in the same mode (``wandb_uploaded.json``), is left out; one
    sent only offline before can still go online. Returns (sent, left out)."""
    from types import SimpleNamespace

    sent = skipped = 0
    for run_dir in map(Path, run_dirs):
        summary = finished_summary(run_dir)
        if summary is None or _already_sent(run_dir, mode):
            skipped += 1
            continue
        config: dict[str, Any] = summary.get("config", {})
        cfg = SimpleNamespace(mode=mode, project=project, entity=None, tags=[])
        logger = WandbLogger(cfg, run_dir, config, summary["config_hash"], summary["run_name"], job_type="upload")
        if logger.run is None:
            skipped += 1
            continue
        for record in read_history(run_dir):
            logger.log(record)
        logger.finish(summary)
        sent += 1
    return sent, skipped

