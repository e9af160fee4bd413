"""The rows of a remote engine sampled in samplecli (`--sample-locally`): each row is its token ids so far, and
each step asks the engine for every row's next-token distribution (with the engine's prompt cache on, it computes
only the new token). The same for llama.cpp's native API and the OpenAI protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def distributions(distribution: Callable[[list[int]], torch.Tensor], contexts: list[list[int]],
                  pool: Executor) -> torch.Tensor:
    """`distribution(context)` for every context, asked concurrently where there are several (the engine's slots
    batch them): a (len(contexts), V) float32 tensor."""
    import torch

    rows = list(pool.map(distribution, contexts)) if len(contexts) > 1 else [distribution(contexts[0])]
    return torch.stack(rows)


def row(size: int, ids: list[int], logprobs: list[float]) -> torch.Tensor:
    """A (size,) float32 row: `logprobs` at `ids`, -inf (filtered) elsewhere. Built as a tensor: a Python list of
    a 128k vocabulary's floats took 13 ms a row to make and convert, this 0.1 ms."""
    import torch

    out = torch.full((size,), float("-inf"), dtype=torch.float32)
    out[torch.tensor(ids, dtype=torch.long)] = torch.tensor(logprobs, dtype=torch.float64).float()
    return out


class ContextBatch:
    def __init__(self, distributions: Callable[[list[list[int]]], torch.Tensor], contexts: list[list[int]]) -> None:
        self.distributions, self.contexts = distributions, contexts

    @classmethod
    def start(cls, distributions: Callable[[list[list[int]]], torch.Tensor], prompt_ids: Sequence[int],
              rows: int) -> tuple[ContextBatch, torch.Tensor]:
        """`rows` copies of the prompt, and the one distribution after it (asked once) for each."""
        first = distributions([list(prompt_ids)])
        return cls(distributions, [list(prompt_ids) for _ in range(rows)]), first.expand(rows, -1)

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        for context, token in zip(self.contexts, token_ids.tolist(), strict=True):
            context.append(token)
        return self.distributions(self.contexts)

    def reorder(self, parents: torch.Tensor) -> None:
        self.contexts = [list(self.contexts[p]) for p in parents.tolist()]
