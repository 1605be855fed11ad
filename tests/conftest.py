import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("ILIF_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels on CPU tensors (before ilif is imported)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def train_run(tmp_path):
    """``train_run(*overrides)``: compose, validate and train one run in this process under
    ``tmp_path/runs`` (for tests where a subprocess is not what is tested). Returns (run_dir, summary)."""
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.train.config import validate
    from ilif.train.loop import train

    def run(*overrides):
        cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *overrides])
        validate(cfg)
        run_dir = run_dir_of(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, train(cfg, run_dir)

    return run
