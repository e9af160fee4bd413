"""A backend that holds its model in a table: the next token's logits are a fixed function of the last
token (a bigram table), over a character vocabulary. It implements the whole seam (start, advance, reorder,
teacher forcing) with no torch model behind it, so the engine's and the commands' own logic can be tested
against numbers a reader can check by hand.

Registered as a backend kind for `--model memory:NAME`, so the real CLI can be driven through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplecli.backends import KINDS, BackendKind, register_backend
from samplecli.backends.base import REORDER, TEACHER_FORCE, Backend

EOS = 0
ALPHABET = ["<eos>", "a", "b", "c", " ", "\n", "R", "O", "M", "E", ":"]


class CharVocabulary:
    """One character per token; id 0 is EOS (a special token: decoded as nothing)."""

    def __init__(self, alphabet: list[str]) -> None:
        self.alphabet = alphabet
        self.index = {ch: i for i, ch in enumerate(alphabet)}
        self.size = len(alphabet)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.index[ch] for ch in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join("" if (i == EOS and skip_special_tokens) else self.alphabet[i] for i in ids)

    def text(self, token_id: int) -> str:
        return self.alphabet[token_id]

    def bytes(self, token_id: int) -> tuple[int, ...]:
        return tuple(self.alphabet[token_id].encode("utf-8")) if token_id != EOS else ()


def default_table(size: int) -> dict[int, list[float]]:
    """After token t, the logits favour t+1 (mod the letters a-c), then the space, with EOS unlikely:
    a row of known, distinct values for every previous token."""
    table = {}
    for prev in range(size):
        row = [-4.0] + [-2.0] * (size - 1)
        nxt = 1 + (prev % 3)  # a -> b -> c -> a ...
        row[nxt] = 2.0
        row[ALPHABET.index(" ")] = 1.0
        row[1 + ((prev + 1) % 3)] = 0.5
        table[prev] = row
    return table


class TableBatch:
    def __init__(self, backend: TableBackend, contexts: list[list[int]]) -> None:
        self.backend, self.contexts = backend, contexts

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        for context, token in zip(self.contexts, token_ids.tolist(), strict=True):
            context.append(token)
        return self.backend.next_logits(self.contexts)

    def reorder(self, parents: torch.Tensor) -> None:
        self.contexts = [list(self.contexts[p]) for p in parents.tolist()]


class TableBackend(Backend):
    """The seam over a bigram table. `calls` counts the verbs used, so tests can see what a command asked."""

    name = "memory"
    capabilities = frozenset({REORDER, TEACHER_FORCE})
    top_n = None

    def __init__(self, table: dict[int, list[float]] | None = None, context_length: int = 64,
                 alphabet: list[str] | None = None) -> None:
        self.vocab = CharVocabulary(alphabet or ALPHABET)
        self.table = table or default_table(self.vocab.size)
        self._context_length = context_length
        self.calls: dict[str, int] = {"start": 0, "advance": 0, "reorder": 0, "logits": 0}

    vocab_size = property(lambda self: self.vocab.size)
    eos_token_ids = property(lambda self: [EOS])
    bos_token_id = property(lambda self: None)
    context_length = property(lambda self: self._context_length)
    device = property(lambda self: torch.device("cpu"))

    def row(self, context: Sequence[int]) -> list[float]:
        return self.table[context[-1]]

    def next_logits(self, contexts: list[list[int]]) -> torch.Tensor:
        return torch.tensor([self.row(c) for c in contexts], dtype=torch.float32)

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[TableBatch, torch.Tensor]:
        self.calls["start"] += 1
        batch = CountingBatch(self, [list(prompt_ids) for _ in range(rows)])
        return batch, self.next_logits(batch.contexts)

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        self.calls["logits"] += 1
        rows = torch.tensor([self.row(list(ids)[: i + 1]) for i in range(len(ids))], dtype=torch.float32)
        return rows[-keep:] if keep else rows


class CountingBatch(TableBatch):
    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        self.backend.calls["advance"] += 1
        return super().advance(token_ids)

    def reorder(self, parents: torch.Tensor) -> None:
        self.backend.calls["reorder"] += 1
        super().reorder(parents)


OPENED: list[TableBackend] = []  # what the CLI opened, for the tests to look at


def _open(reference: str, **options) -> TableBackend:
    backend = TableBackend()
    OPENED.append(backend)
    return backend


if not any(kind.name == "memory" for kind in KINDS):
    register_backend(BackendKind("memory", lambda ref: ref.startswith("memory:"), _open))
