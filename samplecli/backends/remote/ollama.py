"""Ollama's native API as a backend that samples on the server: `/api/generate` (a plain prompt, `raw`: no template)
and `/api/chat` (messages, the model's template), streamed as JSON lines, with the sampler settings in `options`
and `logprobs` + `top_logprobs` N for each token's raw log-probabilities (Ollama 0.12.11 and later; api/types.go
`Logprob`: token, logprob, bytes, top_logprobs).

Its `/v1` endpoints take `temperature` and `top_p` only; the native API takes every setting Ollama has
(ollama_sampling: the chain as `options`, in Ollama's order). Tokens are named by their text (Ollama returns no
ids), so nothing here samples locally.
"""

from __future__ import annotations

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
from samplecli.backends.remote.http import Http, RemoteCut, RemoteError, checked_vocab
from samplecli.backends.remote.ollama_sampling import ENGINE, OLLAMA_OUT, translate
from samplecli.backends.remote.openai import ASSUMED_VOCAB, PROMPT_ID_BASE, OpenAIVocabulary
from samplecli.backends.remote.openai_logprobs import TokenRecord, parse, served
from samplecli.errors import UsageError

DEFAULT_TOP = 20


class OllamaBackend(Backend):
    """An Ollama server at `url` (its root) that samples every token itself, over its native API."""

    templates_chats = True  # `chat` hands the messages to Ollama, which applies the model's template
    eos_token_ids: list[int] = []
    bos_token_id = None
    context_length = None  # Ollama's `num_ctx`, set per request; samplecli leaves it to the server

    def __init__(self, url: str, http: Http, top_logprobs: int | None = None) -> None:
        self.name, self.http = url, http
        self.engine = ENGINE
        tags = http.get("/api/tags")
        listed = [m.get("name") or m.get("model") for m in (tags.get("models") or []) if isinstance(m, dict)]
        listed = [name for name in listed if isinstance(name, str) and name]
        if not listed:
            raise RemoteError(f"{url}/api/tags: Ollama lists no model; pull one (`ollama pull NAME`)")
        self.model = listed[0]  # as the OpenAI backend takes the first model the server lists
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
                yield served(self.vocab, record, text if i == len(records) - 1 else "", len(records) == 1)
            if event.get("done"):
                stream.finish_reason = event.get("done_reason") or "stop"
                return
        raise RemoteCut(f"{where}: the stream ended before its last line (the server stopped or the connection "
                        "was cut); check that Ollama is still running")



def is_ollama(http: Http) -> bool:
    """Whether Ollama answers at the server's root: GET /api/version gives {"version": "..."}."""
    try:
        return isinstance(http.get("/api/version").get("version"), str)
    except (RemoteError, AttributeError):  # not found there, or not JSON of that shape: another engine
        return False


def open_ollama(url: str, http: Http, top_logprobs: int | None = None) -> OllamaBackend:
    return OllamaBackend(url, http, top_logprobs)
