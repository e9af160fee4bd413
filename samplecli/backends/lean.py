"""The choice between the lean forward passes and the model's own forward.

`forward_for(model)` gives the decode and beam loops a forward function and a fresh cache: the lean GPT-2
forward (`gpt2_fast`) or the Llama-family one (`llama_fast`) where it computes exactly what the model does,
otherwise the model itself with transformers' `DynamicCache`. All three share one interface:
`forward(input_ids=..., cache=..., logits_to_keep=...)` returns an object with `.logits`, and the cache has
`batch_repeat_interleave` and `reorder_cache`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ENABLED = True  # tests switch it off to run the generic path on the same models


def forward_for(model: Any) -> tuple[Callable[..., Any], Any]:
    """The forward function the loops call, and a fresh cache for it."""
    if ENABLED:
        from samplecli.backends import gpt2_fast, llama_fast

        for module, forward in ((gpt2_fast, gpt2_fast.GPT2Forward), (llama_fast, llama_fast.LlamaForward)):
            if module.supports(model):
                fast = forward(model)
                return fast, fast.new_cache()
    from transformers import DynamicCache

    return model, DynamicCache(config=model.config)
