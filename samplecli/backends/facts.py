"""What a transformers model's files say about it, read without loading its weights or importing torch: the
vocabulary size and context length (so that token ids, `--at` and `--stride` are checked before a model loads)
and the shapes a memory estimate needs.

    facts = read_facts(None)          # the bundled model
    facts.vocab_size, facts.context_length   # 2048, 256
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME

# bytes per parameter of the dtypes a checkpoint declares
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "int8": 1}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ModelFacts:
    """A model's config.json, as far as samplecli needs it (None where the config does not say)."""

    config: Path
    vocab_size: int | None = None
    context_length: int | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    dtype: str | None = None  # the dtype the weights were saved in
    weight_bytes: int | None = None  # the weight files' size on disk

    @property
    def kv_bytes_per_position(self) -> int | None:
        """Keys and values of one position of one row, over every layer, per byte of dtype."""
        if self.layers is None or self.kv_heads is None or self.head_dim is None:
            return None
        return 2 * self.layers * self.kv_heads * self.head_dim


def _int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def facts_from_config(config: dict[str, Any], path: Path, weight_bytes: int | None = None) -> ModelFacts:
    """ModelFacts from a parsed config.json (a multimodal model's text part where it has one)."""
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    heads = _int(config, "num_attention_heads", "n_head")
    head_dim = _int(config, "head_dim") or (hidden // heads if hidden and heads else None)
    dtype = config.get("torch_dtype") or config.get("dtype")
    return ModelFacts(
        config=path,
        vocab_size=_int(config, "vocab_size"),
        context_length=_int(config, "max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
        layers=_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden, heads=heads, kv_heads=_int(config, "num_key_value_heads") or heads, head_dim=head_dim,
        dtype=dtype if isinstance(dtype, str) else None, weight_bytes=weight_bytes,
    )


def _config_path(model: str | None) -> Path | None:
    """config.json of the bundled model, of a local model directory, or of a hub model in the local cache."""
    if model is None or model == BUNDLED_MODEL_NAME:
        return BUNDLED_MODEL_DIR / "config.json"
    try:
        local = Path(model).expanduser()
        if local.exists():
            return local / "config.json" if (local / "config.json").is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None
    if model.count("/") > 1 or model.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # an id the hub's rules refuse: loading says why
        return None
    return Path(found) if isinstance(found, str) else None


def read_facts(model: str | None) -> ModelFacts | None:
    """The facts of a transformers model (None: the bundled one), or None when its config cannot be found or read
    here without the network (loading it then says why)."""
    path = _config_path(model)
    if path is None:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    try:
        sizes = [os.path.getsize(p) for p in path.parent.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)]
    except OSError:
        sizes = []
    return facts_from_config(config, path, sum(sizes) if sizes else None)


__all__ = ["DTYPE_BYTES", "ModelFacts", "facts_from_config", "read_facts"]
