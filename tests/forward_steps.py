"""Step a model through a prefill and fed columns twice: through `model(...)` with transformers' DynamicCache, and
through a lean forward (`GPT2Forward`, `LlamaForward`), for the tests that hold the two equal."""

from __future__ import annotations

from transformers import DynamicCache


def reference_steps(model, prompt, feeds, repeat: int = 1, reorders=()):
    """Logits of the prompt's last position, then of each fed column, through `model(...)` and DynamicCache."""
    cache = DynamicCache(config=model.config)
    out = [model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]]
    if repeat > 1:
        cache.batch_repeat_interleave(repeat)
    for i, feed in enumerate(feeds):
        if i < len(reorders):
            cache.reorder_cache(reorders[i])
        out.append(model(input_ids=feed, cache=cache, use_cache=True).logits[:, -1])
    return out


def lean_steps(forward_class, model, prompt, feeds, repeat: int = 1, reorders=()):
    """The same steps through `forward_class(model)` and its own cache."""
    forward = forward_class(model)
    cache = forward.new_cache()
    out = [forward(input_ids=prompt, cache=cache, logits_to_keep=1).logits[:, -1]]
    if repeat > 1:
        cache.batch_repeat_interleave(repeat)
    for i, feed in enumerate(feeds):
        if i < len(reorders):
            cache.reorder_cache(reorders[i])
        out.append(forward(input_ids=feed, cache=cache).logits[:, -1])
    return out
