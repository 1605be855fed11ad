"""The package as a user gets it: a wheel with its configs inside, installed away from the source
tree, training one digits run from another directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path, dist: Path) -> Path:
    """The package's wheel, built from a copy of the sources (two tests building in the tree at once
    would share its build/ and egg-info folders)."""
    import shutil

    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = dist.glob("ilif-*.whl")
    return wheel


def test_wheel_installs_with_its_configs_and_trains_from_anywhere(tmp_path):
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel = _build_wheel(tmp_path, dist)
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


def _stub_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A metadata-only wheel: enough for pip's resolver, nothing to import."""
    import zipfile

    info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires)])
    files = {f"{info}/METADATA": meta, f"{info}/RECORD": "",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as whl:
        for arcname, text in files.items():
            whl.writestr(arcname, text)


def _stub_installed(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def _resolve(venv_python: Path, index: Path, *requirements: str) -> dict[str, str]:
    """What `pip install REQUIREMENTS` would install into venv_python, offline against index only."""
    import json

    report = index.parent / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", str(venv_python),
                    "install", "--dry-run", "--no-index", "--find-links", str(index), "--report", str(report),
                    *requirements], check=True, timeout=300, capture_output=True, env=env)
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def test_installing_into_an_environment_with_an_older_torch_keeps_it(tmp_path):
    """A world in which pip can reach torch 2.13 and newer releases (2.14, 2.15), each with its own
    torchvision and torchaudio pinned to it, and a user's venv that has torch 2.13 only. The package's
    real wheel is resolved there offline: the ranges never reach past the tested release, and the
    README's command keeps the user's torch."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

    index, venv = tmp_path / "index", tmp_path / "venv"
    index.mkdir()
    _build_wheel(tmp_path, index)
    for torch, vision in (("2.13.0", "0.28.0"), ("2.14.1", "0.29.1"), ("2.15.0", "0.30.0")):
        _stub_wheel(index, "torch", torch)
        _stub_wheel(index, "torchvision", vision, (f"torch=={torch}",))
        _stub_wheel(index, "torchaudio", torch, (f"torch=={torch}",))
    _stub_wheel(index, "spikingjelly", "2.0.0", ("torch>=2.6.0", "torchvision", "torchaudio"))
    pinned = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].strip()
        if name not in ("torch", "torchvision", "spikingjelly"):
            _stub_wheel(index, name, pinned.get(name, "1.0"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert _resolve(python, index, "ilif")["torch"] == "2.14.1"  # nothing installed: the newest tested torch
    _stub_installed(site, "torch", "2.13.0")
    assert _resolve(python, index, "ilif")["torch"] == "2.14.1"  # why the README names your torch
    keep = subprocess.run([str(python), str(ROOT / "scripts" / "keep_torch.py")], capture_output=True, text=True,
                          check=True).stdout.split()
    assert keep == ["torch==2.13.0"]
    chosen = _resolve(python, index, "ilif", *keep)
    assert "torch" not in chosen and (chosen["torchvision"], chosen["torchaudio"]) == ("0.28.0", "2.13.0")
