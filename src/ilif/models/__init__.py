"""Spiking backbones, built through a registry with the neuron injected as a factory."""

from . import convnet, resnet, vgg  # noqa: F401  (registers the models)
from .registry import backbone, create_model, model_names, register_model

__all__ = ["backbone", "create_model", "model_names", "register_model"]
