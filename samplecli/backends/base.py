"""The backend seam: what the engine and the analyses may ask of a model, and nothing more.

A backend is a source of next-token distributions. It knows the facts the loop needs (vocabulary,
EOS/BOS ids, context length) and a few verbs:

- `start(prompt_ids, rows)`: prefill the prompt once and return a `Batch` of `rows` copies with the
  scores for each row's next token;
- `Batch.advance(token_ids)`: feed every row its chosen token, get the next scores;
- `Batch.reorder(parents)` (capability `reorder`): row i continues from old row `parents[i]`, the batch may
  grow or shrink (beam search);
- `logits(ids)` (capability `teacher-force`): the scores after every position of a given text in one
  call (score, inspect, compare's human-text metrics);
- `prompt_logprobs(ids)` (capability `prompt-logprobs`): each given token's log-probability and the top N
  after its prefix, where an engine returns only those (vLLM's `prompt_logprobs`): `score` from top N;
- `chat(messages, template)` (capability `chat`): the prompt ids of a conversation through the model's chat
  template (or the given one), ready for the assistant's reply; from then on `eos_token_ids` also holds the
  template's end-of-turn tokens.

Scores are logits over the whole vocabulary, a float32 tensor of shape (rows, vocab_size). A backend whose
`top_n` is None returns every token's logit (a **full** distribution); one that knows only N tokens per
step sets `top_n` to N and leaves the rest at -inf (filtered, for every strategy), and the events say so.

A backend knows nothing of strategies, events or views; the engine knows nothing of how scores are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

REORDER = "reorder"  # Batch.reorder: beam search and stochastic beam search
TEACHER_FORCE = "teacher-force"  # Backend.logits over a whole given text: score, inspect, --reference metrics
CHAT = "chat"  # Backend.chat(messages, template) -> prompt ids through a chat template: --chat, `samplecli chat`
SERVER_SAMPLING = "server-sampling"  # server_chain + sample_stream: the engine itself draws each token
PROMPT_LOGPROBS = "prompt-logprobs"  # Backend.prompt_logprobs: a given text's tokens with the top N: score
CAPABILITY_USES = {
    PROMPT_LOGPROBS: "scoring a given text from the engine's top-N prompt log-probabilities",
    CHAT: "a chat prompt (--chat, --system, --messages, `samplecli chat`)",
    REORDER: "beam search (it reorders rows every step)",
    TEACHER_FORCE: "scoring a given text (the scores after every position of it)",
    SERVER_SAMPLING: "sampling on the server",
}


@dataclass(frozen=True)
class ServerToken:
    """One token a remote engine drew itself (capability `server-sampling`), with what it said about it.

    `kind` says whose probabilities these are: "raw" (the model's, before any sampler) or "post-sampling" (the
    distribution the engine's chain drew from). `logprob` is the drawn token's, `candidates` the most probable
    (id, log-probability) pairs returned, most probable first (all of them where the engine gave every token).
    `text` is the engine's own text for this token where it streams text rather than token bytes (the OpenAI
    protocol); `merged` counts returned candidates that were merged with another one that decodes alike (the
    engine named them by text, not id): their numbers are then not exact.
    """

    token_id: int
    logprob: float | None
    candidates: tuple[tuple[int, float], ...]
    kind: str
    text: str | None = None
    merged: int = 0


@dataclass(frozen=True)
class PromptToken:
    """One token of a given text as an engine scored it after its prefix (capability `prompt-logprobs`): its
    log-probability, its rank in the vocabulary (None where the engine does not say) and the engine's top N
    (id, log-probability) pairs, most probable first."""

    token_id: int
    logprob: float
    rank: int | None
    candidates: tuple[tuple[int, float], ...]


@runtime_checkable
class Vocabulary(Protocol):
    """Token ids <-> text, and each token's own text and bytes (cached by the implementation)."""

    size: int

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def text(self, token_id: int) -> str: ...

    def bytes(self, token_id: int) -> tuple[int, ...]: ...


class Batch(Protocol):
    """Rows being decoded together, each with its own KV state."""

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed row i the token `token_ids[i]`; return the next scores, shape (rows, vocab_size)."""
        ...

    def reorder(self, parents: torch.Tensor) -> None:
        """Row i becomes old row `parents[i]` (only where the backend has REORDER)."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str
    vocab: Vocabulary
    capabilities: frozenset[str]
    top_n: int | None  # None: every token's logit is known (a full distribution)

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_token_ids(self) -> list[int]: ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def context_length(self) -> int | None: ...

    @property
    def device(self) -> torch.device: ...

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[Batch, torch.Tensor]:
        """Prefill `prompt_ids` once; return `rows` copies of it and their next scores, shape (rows, vocab)."""
        ...

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        """Teacher forcing: the scores after each position of `ids` (shape (len(ids), vocab)), or after
        the last `keep` positions only."""
        ...


def require(backend: Backend, capability: str) -> None:
    """Raise one line naming the backend and the capability a command needs and it lacks."""
    if capability not in backend.capabilities:
        raise UsageError(f"backend `{backend.name}` cannot {capability}, which {CAPABILITY_USES[capability]} "
                         "needs; use a backend that can (a local model)")


def distribution_label(backend: Backend) -> str:
    """"full" where the backend returns every token's logit (entropies and KL are then exact), else "top-N"."""
    return "full" if backend.top_n is None else f"top-{backend.top_n}"
