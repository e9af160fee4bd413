"""Teacher-forced cross-entropy of a text under a causal LM, with a sliding window for long texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Window:
    """One forward pass of the sliding window: tokens [start, end) are fed, [score_from, end) are scored."""

    start: int
    end: int
    score_from: int


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Cover positions 1..n_tokens-1 (each predicted from what precedes it) with windows of at most
    `context` tokens that advance by `stride`; every position is scored exactly once, with at least
    `context - stride` tokens of left context once the first window is full.

    Position 0 is never scored: it is the BOS token the caller prepends (or the first token).
    """
    if context < 2:
        raise ValueError(f"`context` has to be an integer >= 2, but is {context}")
    if not 1 <= stride <= context - 1:
        raise ValueError(f"`stride` has to be in [1, context - 1] = [1, {context - 1}], but is {stride}")
    windows: list[Window] = []
    scored_until = 1  # next position that still needs a score
    start = 0
    while scored_until < n_tokens:
        end = min(start + context, n_tokens)
        windows.append(Window(start, end, scored_until))
        scored_until = end
        start += stride
        # keep windows full-length at the end of the text: the last one gets the most context
        if start + context > n_tokens:
            start = max(0, n_tokens - context)
    return windows


def token_nats(model, input_ids: "torch.Tensor", context: int, stride: int) -> "torch.Tensor":
    """Surprisal (nats) of tokens 1..N-1 of `input_ids` (1-D) given their prefix, as a float64 tensor.

    Long inputs are scored with `sliding_windows`; each window is one forward pass without a cache.
    """
    import torch

    ids = input_ids.to(model.device)
    out = torch.empty(max(ids.numel() - 1, 0), dtype=torch.float64)
    with torch.inference_mode():
        for w in sliding_windows(ids.numel(), context, stride):
            logits = model(ids[w.start : w.end].unsqueeze(0)).logits[0].double()
            logprobs = torch.log_softmax(logits[:-1], dim=-1)
            targets = ids[w.start + 1 : w.end]
            nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            keep = w.score_from - (w.start + 1)
            out[w.score_from - 1 : w.end - 1] = nll[keep:].cpu()
    return out
