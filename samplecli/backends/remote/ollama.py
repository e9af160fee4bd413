"""Ollama's native API as a backend that samples on the server: `/api/generate` (a plain prompt, `raw`: no template)
and `/api/chat` (messages, the model's template), streamed as JSON lines, with the sampler settings in `options`
and `logprobs` + `top_logprobs` N for each token's raw log-probabilities (Ollama 0.12.11 and later; api/types.go
`Logprob`: token, logprob, bytes, top_logprobs).

Its `/v1` endpoints take `temperature` and `top_p` only; the native API takes every setting below. Ollama fills an
option the request leaves out from the model's Modelfile (`top_k 40`, `top_p 0.9`, ...), which would run a sampler
the chain does not have: every option is sent, at its off value where the chain has no such stage.

The order: Ollama's engine (sample/samplers.go) applies top_k, then the temperature, then top_p and min_p; the
penalties and typical_p, where the model's runner has them, come before. A chain is accepted where that order gives
the same distribution (top-k commutes with temperature; nothing else moves), else refused in one line that says
how to reorder it. Tokens are named by their text (Ollama returns no ids), so nothing here samples locally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from samplecli.backends.base import (
    CHAT,
    POST_SAMPLING,
    SAMPLE_LOCALLY,
    SCORE,
    SERVER_SAMPLING,
    Backend,
    ServerToken,
    TokenStream,
)
from samplecli.backends.remote.http import Http, RemoteError, checked_vocab
from samplecli.backends.remote.llama_cpp_sampling import ServerChain
from samplecli.backends.remote.openai import ASSUMED_VOCAB, PROMPT_ID_BASE, OpenAIVocabulary
from samplecli.backends.remote.openai_logprobs import TokenRecord, parse
from samplecli.errors import UsageError

ENGINE = "Ollama"
DEFAULT_TOP = 20
# samplecli's stage -> (Ollama's option, samplecli's parameter, the option's off value), in the order Ollama runs them
OPTIONS: dict[str, tuple[str, str, float]] = {
    "repetition-penalty": ("repeat_penalty", "repetition_penalty", 1.0),
    "presence-penalty": ("presence_penalty", "presence_penalty", 0.0),
    "frequency-penalty": ("frequency_penalty", "frequency_penalty", 0.0),
    "top-k": ("top_k", "top_k", 0),
    "typical": ("typical_p", "typical_p", 1.0),
    "temperature": ("temperature", "temperature", 1.0),
    "top-p": ("top_p", "top_p", 1.0),
    "min-p": ("min_p", "min_p", 0.0),
}
ORDER = tuple(OPTIONS)
PENALTY_WINDOW = "repeat_last_n"  # the window of all three penalties: one option, as samplecli's --penalty-last-n
COMMUTE = {frozenset({"temperature", "top-k"}), frozenset({"top-k", "min-p"})}
OLLAMA_OUT = "run the model's GGUF file in process instead (-m FILE.gguf: Ollama keeps it in ~/.ollama/models/blobs)"


def refuse(what: str) -> UsageError:
    return UsageError(f"{ENGINE} {what}")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def translate(stages: Sequence[tuple[str, dict[str, Any]]], selector: tuple[str, dict[str, Any]]) -> ServerChain:
    """The `options` that make Ollama run `stages` then `selector`; UsageError (one line, with the way out) for
    what it cannot run as given. The chain's `fields` hold the `options` object."""
    name, _ = selector
    if name not in ("greedy", "sample"):
        raise refuse(f"has no `{name}` selector (its mirostat is off in its current engine); {OLLAMA_OUT}")
    stages = [(n, v) for n, v in stages if not (name == "greedy" and n == "temperature")]
    options: dict[str, Any] = {}
    shown: list[tuple[int, str]] = []
    window = None
    for stage, values in stages:
        if stage not in OPTIONS:
            wanted = next(iter(values), stage)
            raise refuse(f"has no `{wanted}` ({stage}); drop it from the chain, or {OLLAMA_OUT}")
        option, parameter, _ = OPTIONS[stage]
        if option in options:
            raise refuse(f"runs each sampler once; `{option}` is in the chain twice")
        options[option] = values[parameter]
        shown.append((ORDER.index(stage), f"{option}({_fmt(values[parameter])})"))
        # samplecli's repetition penalty reads the whole sequence (as transformers'); presence and frequency the
        # last --penalty-last-n tokens. Ollama counts all three over one window, `repeat_last_n` (-1: all)
        here = -1 if stage == "repetition-penalty" else values.get("penalty_last_n")
        if here is not None:
            if window is not None and window != here:
                raise refuse("counts every penalty over one window (`repeat_last_n`), and this chain has two (the "
                             "repetition penalty reads the whole sequence); give presence and frequency "
                             "--penalty-last-n -1, or drop one")
            window = here
    names = [stage for stage, _ in stages]
    for i, first in enumerate(names):
        for later in names[i + 1:]:
            if ORDER.index(first) > ORDER.index(later) and frozenset({first, later}) not in COMMUTE:
                order = ", ".join(option for option, _, _ in OPTIONS.values())
                raise refuse(f"runs `{OPTIONS[later][0]}` before `{OPTIONS[first][0]}`; the chain has them the other "
                             f"way round: put {later} first (Ollama's order: {order})")
    if window is not None:
        options[PENALTY_WINDOW] = window
    if name == "greedy":
        options["temperature"] = 0.0
    for option, _, off in OPTIONS.values():
        options.setdefault(option, off)
    shown.sort()
    stages_shown = [text for _, text in shown]
    return ServerChain({"options": options}, [*stages_shown, "temperature(0: the argmax)" if name == "greedy"
                                              else "sample"], engine=ENGINE)


class OllamaBackend(Backend):
    """An Ollama server at `url` (its root) that samples every token itself, over its native API."""

    templates_chats = True  # `chat` hands the messages to Ollama, which applies the model's template
    eos_token_ids: list[int] = []
    bos_token_id = None
    context_length = None  # Ollama's `num_ctx`, set per request; samplecli leaves it to the server

    def __init__(self, url: str, http: Http, top_logprobs: int | None = None, model: str | None = None) -> None:
        self.name, self.http = url, http
        self.engine = ENGINE
        tags = http.get("/api/tags")
        listed = [m.get("name") or m.get("model") for m in (tags.get("models") or []) if isinstance(m, dict)]
        listed = [name for name in listed if isinstance(name, str) and name]
        if not listed:
            raise RemoteError(f"{url}/api/tags: Ollama lists no model; pull one (`ollama pull NAME`)")
        self.model = model or listed[0]
        info = http.post("/api/show", {"model": self.model}).get("model_info") or {}
        arch = info.get("general.architecture")
        size = info.get(f"{arch}.vocab_size") or info.get("tokenizer.ggml.tokens_count")
        self.vocab_size = checked_vocab(size or ASSUMED_VOCAB)
        self.top_n = top_logprobs or DEFAULT_TOP
        self.capabilities = frozenset({SERVER_SAMPLING, CHAT})
        self.vocab = OpenAIVocabulary(http, "ollama", self.model, self.vocab_size)

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def why_not(self, capability: str, prompt_ids: Sequence[int] = ()) -> str | None:
        if capability == SAMPLE_LOCALLY:
            return ("--sample-locally: Ollama names its tokens by their text and takes no prompt of token ids, so "
                    "samplecli could not append the token it draws; drop --sample-locally (Ollama samples with "
                    f"every setting its native API takes), or {OLLAMA_OUT}")
        if capability == POST_SAMPLING:
            return "--post-sampling-probs: Ollama returns the raw model's log-probabilities only"
        if capability == SCORE:
            return (f"Ollama returns no log-probabilities of a given text (no `echo`, no prompt log-probabilities); "
                    f"score with a local model: {OLLAMA_OUT}")
        return super().why_not(capability, prompt_ids)

    def start(self, prompt_ids: list[int], rows: int = 1):
        raise UsageError(self.why_not(SAMPLE_LOCALLY) or "")

    def chat(self, messages: Sequence[dict[str, str]], template: str | None = None) -> list[int]:
        """A conversation as one pseudo-token standing for its messages, which go to `/api/chat` (Ollama applies
        the model's template); its text, shown by `--chat`, is the messages as lines."""
        if template is not None:
            raise UsageError("--chat-template: Ollama applies the model's own template to the messages; drop "
                             "--chat-template here (or give the model a TEMPLATE in its Modelfile)")
        pseudo = PROMPT_ID_BASE + len(self.vocab.prompts)
        self.vocab.prompts[(pseudo,)] = "".join(f"[{m['role']}] {m['content']}\n" for m in messages)
        self.vocab.chats[pseudo] = [dict(m) for m in messages]
        return [pseudo]

    def server_chain(self, stages, selector):
        return translate(stages, selector)

    def sample_stream(self, prompt_ids: Sequence[int], chain, *, max_new_tokens: int, seed: int,
                      post_sampling: bool = False) -> TokenStream:
        """Ollama draws up to `max_new_tokens` tokens after the prompt with `chain`, streamed: each token with its
        top `top_n` raw log-probabilities and its text."""
        if post_sampling:
            raise UsageError("Ollama returns the raw model's log-probabilities only; drop --post-sampling-probs")
        options = {**chain.fields["options"], "seed": seed, "num_predict": max_new_tokens}
        body: dict[str, Any] = {"model": self.model, "options": options, "stream": True, "logprobs": True,
                                "top_logprobs": self.top_n}
        messages = self.vocab.chats.get(prompt_ids[0]) if len(prompt_ids) == 1 else None
        if messages is not None:
            path, body["messages"] = "/api/chat", messages
        else:
            prompt = self.vocab.prompts.get(tuple(prompt_ids))
            if prompt is None:
                raise UsageError("Ollama takes the prompt as text only, and samplecli no longer has it")
            path, body["prompt"], body["raw"] = "/api/generate", prompt, True
        stream = TokenStream(iter(()))
        stream.tokens = self._tokens(path, body, stream, lambda e: (e.get("message") or {}).get("content")
                                     if messages is not None else e.get("response"))
        return stream

    def _tokens(self, path: str, body: dict[str, Any], stream: TokenStream,
                text_of: Callable[[dict[str, Any]], Any]) -> Iterator[ServerToken]:
        where = f"{self.name}{path}"
        for event in self.http.stream(path, body):
            if event.get("error"):
                message = " ".join(str(event["error"]).split())[:300]
                raise RemoteError(f"{where}: Ollama stopped with an error: {message}")
            text = text_of(event) or ""
            entries = event.get("logprobs")
            records: list[TokenRecord] = parse({"content": entries}, self.top_n, where) if entries else []
            if text and not records:
                raise RemoteError(f"{where}: the answer has text but no log-probabilities (`logprobs` with "
                                  f"`top_logprobs` {self.top_n}); Ollama returns them from version 0.12.11 on")
            for i, record in enumerate(records):
                yield self._server_token(record, text if i == len(records) - 1 else "", len(records) == 1)
            if event.get("done"):
                stream.finish_reason = event.get("done_reason") or "stop"
                return
        raise RemoteError(f"{where}: the stream ended before its last line (the server stopped or the connection "
                          "was cut); what was generated so far is kept; check that Ollama is still running")

    def _server_token(self, record: TokenRecord, text: str, alone: bool) -> ServerToken:
        vocab = self.vocab
        token_id = vocab.id_of(record.chosen)
        if alone:
            vocab.learn_text(token_id, text)
        candidates = tuple((vocab.id_of(c), c.logprob) for c in record.candidates if c.logprob > -math.inf)
        return ServerToken(token_id, record.chosen.logprob, candidates, "raw", text=text,
                           merged=record.merged + record.short)


def is_ollama(http: Http) -> bool:
    """Whether Ollama answers at the server's root: GET /api/version gives {"version": "..."}."""
    if http.status("/api/version") != 200:
        return False
    try:
        return isinstance(http.get("/api/version").get("version"), str)
    except (RemoteError, AttributeError):
        return False


def open_ollama(url: str, http: Http, top_logprobs: int | None = None) -> OllamaBackend:
    return OllamaBackend(url, http, top_logprobs)
