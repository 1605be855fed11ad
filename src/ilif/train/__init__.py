"""The single trainer: ``ilif-train`` (Hydra app) over :func:`ilif.train.loop.train`."""
