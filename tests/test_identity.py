"""A run's identity survives the code growing: a key added with a neutral value renames no run, a key
that changes what runs compute renames them, and every key of the schema says which it is."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ilif
from ilif.conf import TrainConfig, compose_config, config_hash, group_schema
from ilif.grid import plan, table_jobs

GOLDEN = Path(__file__).parent / "golden"


def identity_keys(schema=TrainConfig, prefix: str = "") -> list[str]:
    """The dotted keys of the schema that enter every run's identity with their value."""
    keys = []
    for f in dataclasses.fields(schema):
        if f.metadata.get("identity") is False or "neutral" in f.metadata:
            continue
        below = group_schema(schema, f)
        name = f.metadata.get("identity_as", f.name)
        keys += identity_keys(below, f"{prefix}{name}.") if below else [f"{prefix}{name}"]
    return keys


def test_every_schema_key_declares_how_it_enters_the_identity():
    """A key not in the golden list must be declared neutral(v) (or outside()): otherwise adding it
    would rename every finished run, which would look unfinished to the runner and missing to the report."""
    golden = [line for line in (GOLDEN / "identity_keys.txt").read_text().splitlines() if not line.startswith("#")]
    added = sorted(set(identity_keys()) - set(golden))
    assert not added, (f"{added} enter every run's identity with their value and so rename every run: declare "
                       "them ilif.conf.neutral(<value at which they change nothing>), or outside() if they do "
                       "not change what a run computes")
    assert sorted(golden) == sorted(identity_keys())


def test_a_neutral_key_enters_the_identity_only_away_from_its_value():
    cfg = compose_config([])
    before = config_hash(cfg)
    assert config_hash(compose_config(["trainer.resume=false", "trainer.threads=2", "runs_root=elsewhere",
                                       "logger.wandb.mode=offline", "compare.baseline=ilif"])) == before
    assert config_hash(compose_config(["trainer.epochs=3"])) != before


SCRATCH_PLAN = """
import json, sys
from ilif.grid import plan, table_jobs
jobs = plan(["demo"], sys.argv[1:]) + table_jobs([1], "mini", sys.argv[1:])
print(json.dumps(sorted(str(d) for _, _, d in jobs)))
"""


def _scratch_run_dirs(package: Path, *overrides: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    proc = subprocess.run([sys.executable, "-c", SCRATCH_PLAN, *overrides], capture_output=True, text=True, env=env,
                          cwd=package.parent, check=True)
    return json.loads(proc.stdout)


def test_a_key_added_with_its_neutral_value_renames_no_run_and_setting_it_does(tmp_path):
    """The package copied into a scratch tree gains trainer.warmup_epochs (declared neutral at 0): every
    planned run of the demo and of mini Table 1 keeps its golden name, and one that sets the key gets
    another."""
    package = tmp_path / "ilif"
    shutil.copytree(Path(ilif.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    conf = package / "conf.py"
    text = conf.read_text()
    anchor = "    T: int = 4\n"
    assert text.count(anchor) == 1
    conf.write_text(text.replace(anchor, anchor + "    warmup_epochs: int = neutral(0)\n"))
    golden = set((GOLDEN / "run_dirs.txt").read_text().splitlines())
    today = sorted(str(d) for _, _, d in plan(["demo"], []) + table_jobs([1], "mini"))
    scratch = _scratch_run_dirs(package)
    assert scratch == today and set(today) <= golden and len(today) > 18
    warmed = _scratch_run_dirs(package, "trainer.warmup_epochs=2")
    assert len(warmed) == len(today) and not set(warmed) & golden
