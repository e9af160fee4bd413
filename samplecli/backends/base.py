"""The backend seam: what the engine and the analyses may ask of a model, and nothing more.

A backend is a source of next-token distributions: a subclass of `Backend`, the one contract. It declares the
facts the loop needs (vocabulary, EOS/BOS ids, context length) and its capabilities, implements `start`, and
overrides the optional verbs its capabilities name (their default bodies refuse in one line); `why_not` answers
whether it can do a thing, for a command to refuse before any request:

- `start(prompt_ids, rows)` (required): prefill the prompt once and return a `Batch` of `rows` copies with the
  scores for each row's next token;
- `Batch.advance(token_ids)`: feed every row its chosen token, get the next scores;
- `Batch.reorder(parents)` (capability `reorder`): row i continues from old row `parents[i]`, the batch may
  grow or shrink (beam search);
- `Batch.extend(token_ids)` and `Batch.rewind(count)` (capability `verify`): feed every row several tokens in one
  forward and get the scores after each; forget the last `count` positions (speculative decoding);
- `logits(ids)` (capability `teacher-force`): the scores after every position of a given text in one
  call (score, inspect, compare's human-text metrics); `logit_chunks(ids, first, stop, rows)` the same scores a
  few positions at a time, so that a long text never holds them all (score);
- `prompt_logprobs(ids, first)` (capability `prompt-logprobs`): each given token's log-probability and the top
  N after its prefix, where an engine returns only those (vLLM's `prompt_logprobs`, llama-server's own top N):
  `score` from top N;
- `chat(messages, template)` (capability `chat`): the prompt ids of a conversation through the model's chat
  template (or the given one), ready for the assistant's reply; from then on `eos_token_ids` also holds the
  template's end-of-turn tokens;
- `server_chain(stages, selector)` and `sample_stream(...)` (capability `server-sampling`): the engine itself
  runs the strategy and draws each token (a remote server).

Scores are logits over the whole vocabulary, a float32 tensor of shape (rows, vocab_size). A backend whose
`top_n` is None returns every token's logit (a **full** distribution); one that knows only N tokens per
step sets `top_n` to N and leaves the rest at -inf (filtered, for every strategy), and the events say so.

A backend knows nothing of strategies, events or views; the engine knows nothing of how scores are made.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from samplecli.errors import UsageError


def inference_steps(function):
    """A generator function whose steps run in torch's inference mode and whose yields do not. A `with
    torch.inference_mode()` around a `yield` leaves the mode on in the caller's thread while the generator waits,
    and two generators closed out of the order they were entered (`zip` over `score --against`'s streams) leave
    it on for good: the thread's later autograd fails ("element 0 of tensors does not require grad")."""

    @functools.wraps(function)
    def steps(*args, **kwargs):
        import torch

        inner = function(*args, **kwargs)
        try:
            while True:
                with torch.inference_mode():
                    try:
                        item = next(inner)
                    except StopIteration as stop:
                        return stop.value
                yield item
                del item  # the caller's, not held while the next step runs (score's pieces: tens of MB each)
        finally:
            inner.close()

    return steps


if TYPE_CHECKING:
    import torch

REORDER = "reorder"  # Batch.reorder: beam search and stochastic beam search
TEACHER_FORCE = "teacher-force"  # Backend.logits over a whole given text: score, inspect, --reference metrics
CHAT = "chat"  # Backend.chat(messages, template) -> prompt ids through a chat template: --chat, `samplecli chat`
SERVER_SAMPLING = "server-sampling"  # server_chain + sample_stream: the engine itself draws each token
PROMPT_LOGPROBS = "prompt-logprobs"  # Backend.prompt_logprobs: a given text's tokens with the top N: score
POST_SAMPLING = "post-sampling-probs"  # sample_stream(post_sampling=True): the drawn-from distribution's numbers
VERIFY = "verify"  # Batch.extend + Batch.rewind: several tokens in one forward, the rejected ones forgotten
# questions a command asks of `why_not` besides the declared capabilities (see Backend.why_not)
SCORE = "score"  # a given text's log-probabilities: TEACHER_FORCE or PROMPT_LOGPROBS
DISTRIBUTION = "distribution"  # the next-token distribution after given prompt ids, by token id: inspect
SAMPLE_LOCALLY = "sample-locally"  # samplecli draws each token from those distributions: --sample-locally
CAPABILITY_USES = {
    PROMPT_LOGPROBS: "scoring a given text from the engine's top-N prompt log-probabilities",
    CHAT: "a chat prompt (--chat, --system, --messages, `samplecli chat`)",
    REORDER: "beam search (it reorders rows every step)",
    TEACHER_FORCE: "scoring a given text (the scores after every position of it)",
    SERVER_SAMPLING: "sampling on the server",
    POST_SAMPLING: "--post-sampling-probs",
    VERIFY: "speculative decoding (--draft-model: several drafted tokens scored in one forward, the rejected ones "
            "forgotten)",
}


@dataclass(frozen=True)
class ServerToken:
    """One token a remote engine drew itself (capability `server-sampling`), with what it said about it.

    `kind` says whose probabilities these are: "raw" (the model's, before any sampler) or "post-sampling" (the
    distribution the engine's chain drew from). `logprob` is the drawn token's, `candidates` the most probable
    (id, log-probability) pairs returned, most probable first (all of them where the engine gave every token).
    `text` is the engine's own text for this token where it streams text rather than token bytes (the OpenAI
    protocol); `merged` counts returned candidates that were merged with another one that decodes alike (the
    engine named them by text, not id): their numbers are then not exact. `held`: see below.
    """

    token_id: int
    logprob: float | None
    candidates: tuple[tuple[int, float], ...]
    kind: str
    text: str | None = None
    merged: int = 0
    # the engine generated this token but returned no probabilities for it (llama-server holds back a token that
    # ends inside a UTF-8 character and sends only the completing token's); `logprob` is then None
    held: bool = False


class TokenStream:
    """What `sample_stream` returns: the tokens an engine draws, one at a time; `finish_reason` is the engine's own
    once the stream has ended (an OpenAI "stop" or "length"; None where it gives none); `close()` ends the request
    (and the engine's task)."""

    def __init__(self, tokens: Iterator[ServerToken]) -> None:
        self.tokens, self.finish_reason = tokens, None

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> ServerToken:
        return next(self.tokens)

    def close(self) -> None:
        self.tokens.close()


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

    def extend(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed row i the tokens `token_ids[i, :]` in one forward (only where the backend has VERIFY); return the
        scores after each of them, shape (rows, count, vocab_size)."""
        ...

    def rewind(self, count: int) -> None:
        """Forget every row's last `count` positions (only where the backend has VERIFY): the next token fed
        follows the position before them."""
        ...


class Backend(ABC):
    """The contract every backend subclasses: the facts it declares, one required verb, and optional ones.

    Facts (class attributes, properties or set in `__init__`): `name`, `vocab`, `vocab_size`, `eos_token_ids`,
    `bos_token_id`, `context_length`, `device`. Declared with their defaults below: `capabilities` (which
    optional verbs work, and so which commands and flags), `top_n`, and what a remote engine says of itself.

    `start` is the one verb every backend implements. Each optional verb's default body refuses in one line
    (`why_not` says why), so a caller asks the contract, never `getattr(backend, "maybe", default)`.
    """

    name: str
    vocab: Vocabulary
    vocab_size: int
    eos_token_ids: list[int]
    bos_token_id: int | None
    context_length: int | None
    device: torch.device

    capabilities: frozenset[str] = frozenset()  # of REORDER, TEACHER_FORCE, CHAT, SERVER_SAMPLING, ...
    top_n: int | None = None  # None: every token's logit is known (a full distribution); N: only the top N
    engine: str | None = None  # the engine named in messages where it is not this process ("vLLM", "llama.cpp")
    concurrency: int = 4  # requests in flight at once where the engine samples (server-sampling)
    templates_chats: bool = False  # `chat` hands the messages to the engine, which applies its own template
    # what a top-N answer leaves inexact and how to ask for more, for the run's header (None: nothing to say)
    distribution_note: str | None = None
    chat_warning: str | None = None  # what `chat` noticed about the template it applied, for one warning line

    @abstractmethod
    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[Batch, torch.Tensor]:
        """Prefill `prompt_ids` once; return `rows` copies of it and their next scores, shape (rows, vocab)."""

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        """Teacher forcing (capability `teacher-force`): the scores after each position of `ids` (shape
        (len(ids), vocab)), or after the last `keep` positions only."""
        raise self._refusal(TEACHER_FORCE)

    def logit_chunks(self, ids: Sequence[int], first: int = 0, stop: int | None = None,
                     rows: int = 128) -> Iterator[torch.Tensor]:
        """Teacher forcing in pieces (capability `teacher-force`): the rows `first..stop-1` of `logits(ids)`
        (stop None: to the end), at most `rows` of them at a time, in order, equal to those rows to float
        rounding. A backend that can run its model a piece at a time overrides this (torch: through its KV cache;
        GGUF: llama.cpp's batches, asking only those positions' scores), so a window of thousands of positions at
        a 152k vocabulary never holds its [n, V] scores, nor its [n, hidden] activations, at once; this default
        slices `logits(ids)`."""
        scores = self.logits(ids)
        stop = scores.shape[0] if stop is None else stop
        for begin in range(first, stop, rows):
            yield scores[begin:min(begin + rows, stop)]

    def prompt_logprobs(self, ids: Sequence[int], first: int = 1) -> list[PromptToken]:
        """Tokens `first`.. of `ids` (at least 1), each with its log-probability after its prefix and the engine's
        top N (capability `prompt-logprobs`)."""
        raise self._refusal(PROMPT_LOGPROBS)

    def chat(self, messages: Sequence[dict[str, str]], template: str | None = None) -> list[int]:
        """The prompt ids of `messages` through the chat template (the model's, or `template`), ending where the
        assistant's reply begins (capability `chat`); the template's end-of-turn tokens then join
        `eos_token_ids`."""
        raise self._refusal(CHAT)

    def local_chat_template(self) -> tuple[str, str, str] | None:
        """(Jinja source, BOS text, EOS text) of the model's chat template where this process renders it (a
        command checks what it renders before tokenizing it); None where the engine templates chats or the
        model has no template."""
        return None

    def server_chain(self, stages: Sequence[tuple[str, dict[str, Any]]], selector: tuple[str, dict[str, Any]]):
        """The request fields that run this chain on the engine, printable (capability `server-sampling`);
        UsageError for a stage it cannot run."""
        raise self._refusal(SERVER_SAMPLING)

    def sample_stream(self, prompt_ids: Sequence[int], chain: Any, *, max_new_tokens: int, seed: int,
                      post_sampling: bool = False) -> TokenStream:
        """The engine draws up to `max_new_tokens` tokens after `prompt_ids` with `chain` (from `server_chain`),
        streamed one `ServerToken` at a time (capability `server-sampling`); with `post_sampling` (capability
        `post-sampling-probs`) their numbers are those of the distribution the engine drew from."""
        raise self._refusal(SERVER_SAMPLING)

    def encode_for_scoring(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The text's tokens as this backend scores them: its vocabulary's, unless the engine tells its
        tokenization only in its answer (SGLang's `echo`)."""
        return self.vocab.encode(text, add_special_tokens=add_special_tokens)

    def why_not(self, capability: str, prompt_ids: Sequence[int] = ()) -> str | None:
        """None where this backend can do `capability` (after `prompt_ids`, where that matters), else one line
        naming the backend and what it lacks, for a command to raise before any request for tokens.

        Besides the capabilities a backend declares, it answers three questions a command asks: SCORE (a given
        text's log-probabilities: teacher forcing, or the engine's prompt log-probabilities), DISTRIBUTION (the
        next-token distribution after `prompt_ids`, by token id: `start`'s first row) and SAMPLE_LOCALLY
        (samplecli draws each token from those distributions); every backend's `start` gives the last two.
        """
        if capability in (DISTRIBUTION, SAMPLE_LOCALLY):
            return None
        if capability == SCORE:
            if PROMPT_LOGPROBS in self.capabilities:
                return None
            capability = TEACHER_FORCE
        if capability in self.capabilities:
            return None
        return (f"backend `{self.name}` cannot {capability}, which {CAPABILITY_USES[capability]} needs; use a "
                "backend that can (a local model)")

    def _refusal(self, capability: str) -> UsageError:
        return UsageError(self.why_not(capability) or f"backend `{self.name}` does not implement {capability}")


def distribution_label(backend: Backend) -> str:
    """"full" where the backend returns every token's logit (entropies and KL are then exact), else "top-N"."""
    return "full" if backend.top_n is None else f"top-{backend.top_n}"


def search_on_server(backend: Backend, search: str, prompt_ids: Sequence[int] = ()) -> str:
    """Why a beam search cannot run as the server samples, and the way out that this backend can take: samplecli
    runs the search on the server's distributions (--sample-locally) where it can read them by token id, else on a
    model in process (never advising a flag that is then refused)."""
    if backend.why_not(SAMPLE_LOCALLY, prompt_ids) is None:
        return (f"{search} search runs in samplecli, not on {backend.engine}; add --sample-locally (the server then "
                "gives the distributions)")
    return (f"{search} search runs in samplecli, not on {backend.engine}, and {backend.engine} cannot give it the "
            "next-token distributions by token id; run the model in process (-m DIR, or -m FILE.gguf)")
