"""Backends: the one place that turns token ids into next-token scores (torch in process; more behind the same seam)."""

from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR

__all__ = ["BUNDLED_MODEL_DIR"]
