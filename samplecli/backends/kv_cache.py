"""The KV cache and output of the lean forward passes (`gpt2_fast`, `llama_fast`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Output:
    logits: Any


class LeanForward:
    """What the lean forward passes share: `hidden_states` (the body and its final norm, the KV cache extended;
    each pass its own) and the output head `head` = (weight, bias) that turns them into logits, here, for the
    decode loops; `score`'s pieces apply the head themselves, a few rows at a time (`LM.logit_chunks`)."""

    head: tuple[Any, Any]

    def hidden_states(self, input_ids: Any, cache: KVCache, keep: int = 0) -> Any:
        """The new tokens' hidden states after the final norm (the last `keep` of them; 0: all), the KV cache
        extended: what the output head turns into their logits."""
        raise NotImplementedError

    def __call__(self, input_ids: Any, cache: KVCache, use_cache: bool = True,
                 logits_to_keep: int = 0) -> Output:
        import torch.nn.functional as F

        return Output(F.linear(self.hidden_states(input_ids, cache, logits_to_keep), *self.head))


class KVCache:
    """Keys and values per layer in tensors of shape (batch, heads, capacity, head_dim), filled up to
    `length`. Capacity starts at 64 positions and doubles when a step needs more, so the cache is copied
    only then, where `DynamicCache` concatenates (copies) every layer's keys and values at every step."""

    def __init__(self, n_layers: int, n_positions: int) -> None:
        self.keys: list[Any] = [None] * n_layers
        self.values: list[Any] = [None] * n_layers
        self.length = 0
        self.n_positions = n_positions

    def reserve(self, layer: int, new_length: int, like: Any) -> None:
        """Make room for positions up to `new_length` in `layer`, shaped like the new keys `like`."""
        current = self.keys[layer]
        if current is not None and current.shape[2] >= new_length:
            return
        capacity = min(max(new_length, 64, 2 * (current.shape[2] if current is not None else 0)),
                       max(self.n_positions, new_length))
        batch, heads, _, head_dim = like.shape
        keys = like.new_empty(batch, heads, capacity, head_dim)
        values = like.new_empty(batch, heads, capacity, head_dim)
        if current is not None:
            keys[:, :, : self.length] = current[:, :, : self.length]
            values[:, :, : self.length] = self.values[layer][:, :, : self.length]
        self.keys[layer], self.values[layer] = keys, values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row becomes `repeats` consecutive rows (one prefill shared by several samples)."""
        self.keys = [k.repeat_interleave(repeats, dim=0) if k is not None else None for k in self.keys]
        self.values = [v.repeat_interleave(repeats, dim=0) if v is not None else None for v in self.values]

    def reorder_cache(self, rows: Any) -> None:
        """Row i becomes old row `rows[i]` (beam search's parents); the batch may grow or shrink."""
        self.keys = [k.index_select(0, rows) if k is not None else None for k in self.keys]
        self.values = [v.index_select(0, rows) if v is not None else None for v in self.values]

    def get_seq_length(self) -> int:
        """Positions cached (as transformers' `DynamicCache.get_seq_length`)."""
        return self.length

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` positions (as `DynamicCache.crop`): speculative decoding forgets the
        drafted tokens the target rejected. Nothing is copied; the next tokens overwrite the rest."""
        if not 0 <= max_length <= self.length:
            raise ValueError(f"crop to {max_length} positions of {self.length}")
        self.length = max_length
