import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("ILIF_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels on CPU tensors (before ilif is imported)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
