"""Step a model through a prefill and fed columns twice: through `model(...)` with transformers' DynamicCache, and
through a lean forward (`GPT2Forward`, `LlamaForward`), for the tests that hold the two equal."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def beam_schedule(vocab_size: int, seed: int = 3):
    """A prompt, then columns fed to 4 rows with beam-style parents before each: rows swap, one row is copied
    twice, and the batch shrinks to 3 and 2 at the end. Returns (prompt, feeds, reorders)."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab_size, (1, 5), generator=generator)
    feeds = [torch.randint(0, vocab_size, (4, 1), generator=generator) for _ in range(6)]
    reorders = [torch.tensor(r) for r in ([0, 1, 2, 3], [3, 3, 0, 1], [1, 0, 2, 2], [2, 0, 1, 3], [0, 0, 0, 1],
                                          [3, 2, 1, 0])]
    feeds += [torch.randint(0, vocab_size, (rows, 1), generator=generator) for rows in (3, 2)]
    reorders += [torch.tensor([0, 2, 3]), torch.tensor([2, 0])]
    return prompt, feeds, reorders


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
