"""The rows of a remote engine sampled in samplecli (`--sample-locally`): each row is its token ids so far, and
each step asks the engine for every row's next-token distribution (with the prompt cache on, the engine computes
only the new token). The same for llama.cpp's native API and the OpenAI protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ContextBatch:
    def __init__(self, distributions: Callable[[list[list[int]]], torch.Tensor], contexts: list[list[int]]) -> None:
        self.distributions, self.contexts = distributions, contexts

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        for context, token in zip(self.contexts, token_ids.tolist(), strict=True):
            context.append(token)
        return self.distributions(self.contexts)

    def reorder(self, parents: torch.Tensor) -> None:
        self.contexts = [list(self.contexts[p]) for p in parents.tolist()]
