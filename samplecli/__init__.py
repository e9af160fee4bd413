"""samplecli: generate text from a causal LM and see why a decoding strategy behaves as it does."""

__version__ = "0.1.0"
