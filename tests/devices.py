"""Where the neuron and model tests run: ``ILIF_TEST_DEVICE`` (default ``cpu``; ``scripts/gpu_check.sh``
sets ``cuda``), and the fused backends that run there (Triton on CPU tensors through its interpreter)."""

import os

import torch

DEVICE = torch.device(os.environ.get("ILIF_TEST_DEVICE", "cpu"))
FUSED = ("c", "torch", "triton") if DEVICE.type == "cpu" else ("triton", "torch")
