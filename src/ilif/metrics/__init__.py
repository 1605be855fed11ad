"""Meters that read a model through hooks: spikes, operations/energy, gradients."""

from .energy import E_AC_PJ, E_MAC_PJ, OpsMeter, synaptic_ops
from .gradients import TemporalGradientMeter, weight_grad_norms
from .spikes import SpikeMeter

__all__ = ["E_AC_PJ", "E_MAC_PJ", "OpsMeter", "SpikeMeter", "TemporalGradientMeter", "synaptic_ops",
           "weight_grad_norms"]
