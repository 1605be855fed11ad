"""The package as a user gets it: a wheel with its configs inside, installed away from the source
tree, training one digits run from another directory."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_with_its_configs_and_trains_from_anywhere(tmp_path):
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True,
                   timeout=300, capture_output=True)
    (wheel,) = dist.glob("ilif-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300,
                   capture_output=True)
    assert (target / "ilif" / "configs" / "experiment" / "table1.yaml").exists()
    assert (target / "ilif" / "py.typed").exists()  # type checkers read the package's annotations
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "ILIF_CONFIGS"))}
    env.update({"PYTHONPATH": str(target), "WANDB_MODE": "disabled"})
    where = subprocess.run([sys.executable, "-c", "import ilif, ilif.conf; print(ilif.__file__, ilif.conf.CONFIG_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.split() == [str(target / "ilif" / "__init__.py"), str(target / "ilif" / "configs")]
    proc = subprocess.run([sys.executable, "-m", "ilif.train", "trainer.epochs=1", "trainer.progress=false",
                           "trainer.limit_train_batches=2"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((elsewhere / "runs" / "default").glob("digits-ilif-g1-s0-*/summary.json"))) == 1


def test_every_cli_says_its_version_and_the_project_files_a_package_needs_exist():
    import ilif

    for module in ("ilif.train", "ilif.study", "ilif.report", "ilif.data"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith(f"ilif-{module.split('.')[1]} {ilif.__version__}")
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert (ROOT / name).read_text().strip()
    assert f"version: {ilif.__version__}" in (ROOT / "CITATION.cff").read_text()
