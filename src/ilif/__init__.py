"""ilif: a reproduction framework for the ILIF spiking neuron (Sun et al., IJCAI 2025)."""

__version__ = "0.1.0"
