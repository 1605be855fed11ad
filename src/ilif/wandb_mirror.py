"""The wandb mirror of a run directory, free of torch: live logging during training and upload of
finished runs afterwards. Any wandb failure becomes a warning and turns the mirror off; the local
files stay complete.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Optional

log = logging.getLogger("ilif.train")


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


class WandbLogger:
    """Mirror of the run directory in wandb. Any wandb failure becomes a warning and turns it off;
    the local files stay complete."""

    def __init__(self, cfg, run_dir: Path, name: str, config: dict, resume_id: Optional[str]):
        self.run = None
        mode = cfg.mode
        if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
            return
        if mode == "auto":
            mode = "online" if _has_wandb_key() else "offline"
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=config.get("experiment_name"), name=name,
                tags=list(cfg.tags), config=config, dir=str(run_dir), mode=mode, id=resume_id,
                resume="allow" if resume_id else None, reinit="finish_previous",
            )
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
            for key in ("test/acc1", "val/acc1", "test/acc5"):
                self.run.define_metric(key, summary="max")
            if mode == "offline":
                log.info("wandb is offline; send this run to your dashboard with: wandb sync %s", self.run.dir.rsplit("/files", 1)[0])
        except Exception as err:  # noqa: BLE001 - wandb must never stop training
            self._disable(err)

    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    def _disable(self, err: Exception) -> None:
        warnings.warn(f"wandb disabled after an error ({type(err).__name__}: {err}); local files are complete")
        self.run = None

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        try:
            flat = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.run.log(flat)
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
            for key, value in summary.get("final", {}).items():
                if isinstance(value, (int, float)):
                    self.run.summary[f"final/{key}"] = value
            self.run.finish()
        except Exception as err:  # noqa: BLE001
            self._disable(err)


def upload_runs(run_dirs: list[Path], mode: str = "auto", project: str = "ilif") -> int:
    """Send finished run directories to wandb after the fact: config, every epoch of metrics.jsonl and
    the summary tables, as if the run had logged them live. Returns the number of runs sent."""
    from types import SimpleNamespace

    sent = 0
    for run_dir in run_dirs:
        summary_path = Path(run_dir) / "summary.json"
        if not summary_path.exists():
            continue
        summary = json.loads(summary_path.read_text())
        config = {**summary.get("config", {}), "experiment_name": summary.get("experiment_name")}
        cfg = SimpleNamespace(mode=mode, project=project, entity=None, tags=[])
        logger = WandbLogger(cfg, Path(run_dir), summary["run_name"], config, resume_id=None)
        if logger.run is None:
            continue
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
            logger.log(json.loads(line))
        logger.finish(summary)
        sent += 1
    return sent
