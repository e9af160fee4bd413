"""An OpenAI-compatible server (vLLM, SGLang, Ollama's `/v1`, llama.cpp's `/v1`) as a backend that samples on
the server: `/v1/completions` streamed, with `logprobs` N (the top N raw log-probabilities per token; 20 is
vLLM's and Ollama's default cap), the strategy as the engine's fields (openai_sampling), the answers in either
logprobs shape (openai_logprobs).

The engine is named from `/v1/models` (`owned_by`: "vllm", "llamacpp", "sglang"; Ollama's model namespaces,
"library") or its `Server` header, so that a refusal can say whose it is. The OpenAI protocol has no tokenizer:
the prompt is sent as text, and tokens are named by the ids the engine returns (llama.cpp's `id`, vLLM's
`return_tokens_as_token_ids`) or else by their text, numbered here in the order they appear.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import (
    CHAT,
    DISTRIBUTION,
    POST_SAMPLING,
    PROMPT_LOGPROBS,
    REORDER,
    SAMPLE_LOCALLY,
    SCORE,
    SERVER_SAMPLING,
    TEACHER_FORCE,
    Backend,
    PromptToken,
    ServerToken,
    TokenStream,
)
from samplecli.backends.remote import batch
from samplecli.backends.remote.batch import ContextBatch
from samplecli.backends.remote.http import Http, RemoteCut, RemoteError, checked_id, checked_vocab
from samplecli.backends.remote.openai_logprobs import Candidate, TokenRecord, finite, parse, served
from samplecli.backends.remote.openai_sampling import ENGINE_NAMES, ENGINES, LLAMA_CPP, translate
from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

ASSUMED_VOCAB = 262_144  # where the engine does not say: no common vocabulary is larger (Gemma 3's is this size)
DEFAULT_TOP = 20
PROMPT_ID_BASE = 1 << 40  # a prompt the engine cannot tokenize for us is one pseudo-token, sent back as its text
ECHO_KINDS = ("sglang", "openai")  # engines scored through `echo` (the prompt's tokens come back with logprobs)
ID_KINDS = (LLAMA_CPP, "vllm")  # engines that take a prompt of token ids and name their tokens by id


def engine_of(models: dict[str, Any], server_header: str, root_text: str) -> str:
    """The engine behind an OpenAI-compatible server: a key of openai_sampling.ENGINE_NAMES."""
    owned = str(((models.get("data") or [{}])[0] or {}).get("owned_by", "")).lower()
    if owned in ("vllm", "sglang", "llamacpp"):
        return owned
    if "llama.cpp" in server_header.lower():
        return LLAMA_CPP
    if owned in ("library", "ollama") or root_text.startswith("Ollama"):
        return "ollama"
    return "openai"


class OpenAIVocabulary:
    """Tokens as the engine names them: its ids where it gives them, else their text numbered here. Each token's
    text is learnt from the answers; what was never seen shows as `<id N>` (vLLM's `/detokenize` is asked first)."""

    def __init__(self, http: Http, engine: str, model: str, size: int) -> None:
        self.http, self.engine, self.model, self.size = http, engine, model, size
        self._text: dict[int, str] = {}
        self._bytes: dict[int, bytes] = {}
        self._ids: dict[str, int] = {}
        self.prompts: dict[tuple[int, ...], str] = {}
        self.chats: dict[int, list[dict[str, str]]] = {}  # a conversation's pseudo-token: its messages

    def id_of(self, candidate: Candidate) -> int:
        key = candidate.key
        if isinstance(key, int):
            checked_id(key, self.size)  # an id the engine gave: inside its vocabulary
        else:
            key = self._ids.setdefault(key, len(self._ids))
        if key not in self._text and candidate.text is not None:
            self._text[key] = candidate.text
        if key not in self._bytes and candidate.bytes is not None:
            self._bytes[key] = candidate.bytes
        return key

    def learn_text(self, token_id: int, text: str) -> None:
        if token_id not in self._text and text and "\ufffd" not in text:
            self._text[token_id] = text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The engine's ids where it has a tokenizer endpoint (llama.cpp's and vLLM's `/tokenize`); else one
        pseudo-token standing for the whole text (it is sent as text: the engine tokenizes it)."""
        ids = None
        if self.engine == LLAMA_CPP:
            ids = [t if isinstance(t, int) else t["id"] for t in self.http.post("/tokenize", {
                "content": text, "add_special": add_special_tokens})["tokens"]]
        elif self.engine == "vllm":
            ids = self.http.post("/tokenize", {"model": self.model, "prompt": text,
                                               "add_special_tokens": add_special_tokens})["tokens"]
        if not ids:
            ids = [PROMPT_ID_BASE + len(self.prompts)]
        self.prompts[tuple(ids)] = text
        return list(ids)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._bytes:
            return self._bytes[token_id]
        if token_id not in self._text and self.engine == "vllm" and 0 <= token_id < PROMPT_ID_BASE:
            try:
                self._text[token_id] = self.http.post("/detokenize", {"model": self.model,
                                                                      "tokens": [token_id]})["prompt"]
            except (RemoteError, KeyError, TypeError):
                self._text[token_id] = f"<id {token_id}>"
        if token_id >= PROMPT_ID_BASE:
            return next((t for ids, t in self.prompts.items() if token_id in ids), "").encode()
        return self._text.get(token_id, f"<id {token_id}>").encode("utf-8")

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def bytes(self, token_id: int) -> tuple[int, ...]:
        return tuple(self.token_bytes(token_id))


def _first_choice(answer: Any) -> dict[str, Any]:
    """The first choice of a non-streamed `/v1/completions` answer, {} where it has none."""
    return ((answer.get("choices") or [{}])[0] or {}) if isinstance(answer, dict) else {}


class OpenAIBackend(Backend):
    """An OpenAI-compatible server at `url` (its root, without `/v1`) that samples every token itself."""

    templates_chats = True  # `chat` hands the messages to the engine, which applies its own template
    eos_token_ids: list[int] = []
    bos_token_id = None

    def __init__(self, url: str, http: Http, concurrency: int = 4, top_logprobs: int | None = None) -> None:
        import httpx

        self.name, self.http, self.concurrency = url, http, max(1, concurrency)
        try:
            response = http.client.get("/v1/models")
        except httpx.HTTPError:
            response = None
        models = http.get("/v1/models") if response is None or response.status_code != 200 else response.json()
        data = models.get("data") or []
        if not data or not data[0].get("id"):
            raise RemoteError(f"{url}/v1/models: the server lists no model; load one (Ollama: `ollama pull NAME`)")
        root_text = ""
        if response is not None and "server" not in {k.lower() for k in response.headers}:
            root_text = http.status_text("/")
        self.kind = engine_of(models, response.headers.get("server", "") if response is not None else "", root_text)
        self.engine = ENGINE_NAMES[self.kind]
        self.model = data[0]["id"]
        meta = data[0].get("meta") or {}
        self.vocab_size = checked_vocab(meta.get("n_vocab") or ASSUMED_VOCAB)
        context = meta.get("n_ctx") or data[0].get("max_model_len")
        self.context_length = int(context) if context else None
        cap = self.vocab_size if self.kind == LLAMA_CPP else ENGINES[self.kind].logprobs_cap
        self.top_n = top_logprobs or min(DEFAULT_TOP, cap or DEFAULT_TOP)
        scores = self.kind in ("vllm", *ECHO_KINDS)  # vLLM's prompt_logprobs; SGLang's echo
        self.capabilities = frozenset({SERVER_SAMPLING, CHAT} | ({PROMPT_LOGPROBS} if scores else set()) |
                                      ({REORDER} if self.kind in ID_KINDS else set()))
        self.vocab = OpenAIVocabulary(http, self.kind, self.model, self.vocab_size)
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency)  # its threads start with the first rows

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def why_not(self, capability: str, prompt_ids: Sequence[int] = ()) -> str | None:
        """Besides the declared capabilities, this engine's own reasons (one line each, naming it and the way
        out): for SCORE, where it returns no prompt log-probabilities; for DISTRIBUTION (a clause, for a command
        to put in its own line) and SAMPLE_LOCALLY, where samplecli cannot read the next-token distribution after
        `prompt_ids` by token id: the engine must take a prompt of ids and name its tokens by id, and the prompt
        must be ids (not a chat it templates); for POST_SAMPLING, always (it returns the raw model's only)."""
        if capability == SCORE and PROMPT_LOGPROBS not in self.capabilities and \
                TEACHER_FORCE not in self.capabilities:
            if self.kind == LLAMA_CPP:
                return (f"{self.engine} ignores `echo` on /v1/completions and returns no prompt log-probabilities "
                        "there; score with --api llama.cpp (its native API: a request per token)")
            return (f"{self.engine} gives samplecli no log-probabilities of a given text over the OpenAI protocol "
                    "(vLLM's `prompt_logprobs`, SGLang's `echo`); score with a local model or a vLLM, SGLang or "
                    "llama.cpp server")
        if capability == POST_SAMPLING:
            return (f"--post-sampling-probs: {self.engine} over the OpenAI protocol returns the raw model's "
                    "log-probabilities only (llama-server gives both with --api llama.cpp)")
        if capability == DISTRIBUTION:
            return self._no_ids(prompt_ids)
        if capability == SAMPLE_LOCALLY:
            why = self._no_ids(prompt_ids)
            if why is None:
                return None
            if self.kind not in ID_KINDS:
                return (f"--sample-locally: {why}, so samplecli could not append the token it draws; drop "
                        "--sample-locally")
            if any(i in self.vocab.chats for i in prompt_ids):
                return (f"--sample-locally: {why}; drop --sample-locally (llama-server: --api llama.cpp templates "
                        "it into ids)")
            return f"--sample-locally: {why}"
        return super().why_not(capability, prompt_ids)

    def _no_ids(self, prompt_ids: Sequence[int]) -> str | None:
        if self.kind not in ID_KINDS:
            return f"{self.engine} over the OpenAI protocol names its tokens by their text, not their ids"
        if any(i in self.vocab.chats for i in prompt_ids):
            return f"a chat over the OpenAI protocol is templated by {self.engine}, so samplecli has no token ids of it"
        if any(i >= PROMPT_ID_BASE for i in prompt_ids):
            return f"{self.engine} could not tokenize the prompt, so samplecli has no token ids of it"
        return None

    def encode_for_scoring(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The text's tokens as the engine scores them. vLLM tokenizes (`/tokenize`); an engine scored through
        `echo` tells its tokens only in the echoed answer (with its BOS, where its tokenizer adds one), so the
        text is echoed once here and its tokens are numbered by their text."""
        if self.kind not in ECHO_KINDS:
            return self.vocab.encode(text, add_special_tokens)
        records = self._echo(text, logprobs=1)
        ids = [self.vocab.id_of(record.chosen) for record in records]
        self.vocab.prompts[tuple(ids)] = text
        return ids

    def _echo(self, text: str, logprobs: int) -> list[TokenRecord]:
        """The prompt's token records of a one-token `/v1/completions` with `echo` (its generated token dropped)."""
        where = f"{self.name}/v1/completions"
        answer = self.http.post("/v1/completions", {
            "model": self.model, "prompt": text, "echo": True, "logprobs": logprobs, "max_tokens": 1,
            "temperature": 0.0, "stream": False})
        choice = _first_choice(answer)
        records = parse(choice.get("logprobs"), logprobs, where)
        count = ((answer.get("usage") or {}) if isinstance(answer, dict) else {}).get("prompt_tokens")
        if not isinstance(count, int) or not 0 < count <= len(records) or \
                not str(choice.get("text", "")).startswith(text):
            raise RemoteError(f"{where}: the answer does not echo the text with its log-probabilities (`echo` with "
                              f"`logprobs` {logprobs}); this engine cannot score a given text")
        return records[:count]

    def distribution(self, ids: Sequence[int]) -> torch.Tensor:
        """The raw model's top `top_n` log-probabilities of the token after `ids` (the rest of the vocabulary at
        -inf: filtered): a one-token `/v1/completions` at temperature 0 on a prompt of token ids."""
        where = f"{self.name}/v1/completions"
        body: dict[str, Any] = {"model": self.model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0,
                                "logprobs": self.top_n, "stream": False}
        if self.kind == "vllm":
            body["return_tokens_as_token_ids"] = True
        answer = self.http.post("/v1/completions", body)
        choice = _first_choice(answer)
        records = parse(choice.get("logprobs"), self.top_n, where)
        if not records:
            raise RemoteError(f"{where}: the answer has no log-probabilities (`logprobs` was {self.top_n}); the "
                              "engine may cap them lower (vLLM: --max-logprobs)")
        found: dict[int, float] = {}
        for candidate in (records[0].chosen, *records[0].candidates):
            if not isinstance(candidate.key, int) or not 0 <= candidate.key < self.vocab_size:
                raise RemoteError(f"{where}: a token came back as {candidate.key!r}, not as an id of the "
                                  f"{self.vocab_size}-token vocabulary; drop --sample-locally")
            found[self.vocab.id_of(candidate)] = candidate.logprob
        return batch.row(self.vocab_size, list(found), list(found.values()))

    def distributions(self, contexts: list[list[int]]) -> torch.Tensor:
        """One distribution per context, asked concurrently (the engine batches them)."""
        return batch.distributions(self.distribution, contexts, self.pool)

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[ContextBatch, torch.Tensor]:
        """`--sample-locally`: samplecli draws each token from the engine's top-N distribution."""
        refusal = self.why_not(SAMPLE_LOCALLY, prompt_ids)
        if refusal is not None:
            raise UsageError(refusal)
        return ContextBatch.start(self.distributions, prompt_ids, rows)

    def prompt_logprobs(self, ids: Sequence[int], first: int = 1) -> list[PromptToken]:
        """Tokens `first`.. of `ids`, each scored after its prefix: vLLM's `prompt_logprobs` (the token's
        log-probability and rank, and the top `top_n`, keyed by id), from one `/v1/completions` request that
        generates one token; or, on an engine scored through `echo`, the echoed prompt's log-probabilities and top
        `top_n`."""
        if self.kind in ECHO_KINDS:
            return self._echoed_logprobs(ids)[max(first, 1) - 1 :]
        where = f"{self.name}/v1/completions"
        answer = self.http.post("/v1/completions", {
            "model": self.model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0,
            "prompt_logprobs": self.top_n, "stream": False})
        rows = _first_choice(answer).get("prompt_logprobs")
        if not isinstance(rows, list) or len(rows) != len(ids):
            raise RemoteError(f"{where}: the answer has no `prompt_logprobs` for the {len(ids)} prompt tokens "
                              f"(`prompt_logprobs` was {self.top_n}); the engine may cap them lower (vLLM: "
                              "--max-logprobs)")
        out = []
        for position, (token_id, row) in enumerate(zip(ids, rows, strict=True)):
            if position == 0:
                continue  # nothing precedes the first token: vLLM sends null
            entries = {int(k): v for k, v in row.items()} if isinstance(row, dict) else {}
            if token_id not in entries:
                raise RemoteError(f"{where}: `prompt_logprobs` at position {position} does not hold the prompt's "
                                  f"token {token_id}; is this vLLM's answer?")
            for key, entry in entries.items():
                if isinstance(entry.get("decoded_token"), str):
                    self.vocab.learn_text(key, entry["decoded_token"])
            # the token itself, and the top N (ranks 1..N); the token comes on top where it ranked below them
            ranked = sorted(entries.items(), key=lambda item: -finite(item[1].get("logprob")))
            top = [(key, finite(entry.get("logprob"))) for key, entry in ranked
                   if key != token_id or not isinstance(entry.get("rank"), int) or entry["rank"] <= self.top_n]
            rank = entries[token_id].get("rank")
            out.append(PromptToken(token_id, finite(entries[token_id].get("logprob")),
                                   rank if isinstance(rank, int) else None, tuple(top[: self.top_n])))
        return out[max(first, 1) - 1 :]

    def _echoed_logprobs(self, ids: Sequence[int]) -> list[PromptToken]:
        """`prompt_logprobs` through `echo`: the text of `ids` (what `encode_for_scoring` numbered, or a window of
        it) echoed with `logprobs` top_n; its tokens must come back as they were numbered. The engine says no rank
        (None: `score` counts the candidates above the token)."""
        text = self.vocab.prompts.get(tuple(ids)) or self.vocab.decode(ids)
        records = self._echo(text, self.top_n)
        if [self.vocab.id_of(r.chosen) for r in records] != list(ids):
            raise RemoteError(f"{self.name}/v1/completions: the engine tokenized a window of the text differently "
                              "when it came back; score a shorter text, or one within the context")
        out = []
        for token_id, record in zip(ids[1:], records[1:], strict=True):
            top = tuple((self.vocab.id_of(c), c.logprob) for c in record.candidates[: self.top_n])
            out.append(PromptToken(token_id, record.chosen.logprob, None, top))
        return out

    def chat(self, messages: Sequence[dict[str, str]], template: str | None = None) -> list[int]:
        """A conversation as one pseudo-token standing for its messages: they go to `/v1/chat/completions`, and
        the engine applies the chat template it was started with. Its text (what `--chat` shows) is the template's
        output where the engine renders it for us (llama.cpp's `/apply-template`), else the messages as lines."""
        if template is not None:
            raise UsageError(f"--chat-template: {self.engine} applies its own chat template to the messages over the "
                             "OpenAI protocol; drop --chat-template here (or start the engine with the template)")
        text = None
        if self.kind == LLAMA_CPP:
            text = self.http.post("/apply-template", {"messages": list(messages)}).get("prompt")
        if not isinstance(text, str):
            text = "".join(f"[{m['role']}] {m['content']}\n" for m in messages)
        pseudo = PROMPT_ID_BASE + len(self.vocab.prompts)
        self.vocab.prompts[(pseudo,)] = text
        self.vocab.chats[pseudo] = [dict(m) for m in messages]
        return [pseudo]

    def server_chain(self, stages, selector):
        """The request fields that run this chain on the engine (UsageError for what it cannot run)."""
        return translate(self.kind, stages, selector, context=self.context_length or 0, decode=self.vocab.decode)

    def sample_stream(self, prompt_ids: Sequence[int], chain, *, max_new_tokens: int, seed: int,
                      post_sampling: bool = False) -> TokenStream:
        """The engine draws up to `max_new_tokens` tokens after the prompt with `chain`, streamed: each token
        with its top `top_n` raw log-probabilities and the text the engine streamed for it."""
        if post_sampling:
            raise UsageError(f"{self.engine} over the OpenAI protocol returns the raw model's log-probabilities "
                             "only; drop --post-sampling-probs")
        messages = self.vocab.chats.get(prompt_ids[0]) if len(prompt_ids) == 1 else None
        if messages is not None:  # a chat: the engine's template, its chat endpoint (`logprobs` is a flag there)
            path = "/v1/chat/completions"
            body = {**chain.fields, "model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                    "logprobs": True, "top_logprobs": self.top_n, "seed": seed, "stream": True}
        else:
            prompt: Any = self.vocab.prompts.get(tuple(prompt_ids))
            if prompt is None:
                if any(i >= PROMPT_ID_BASE for i in prompt_ids) or self.kind == "ollama":
                    raise UsageError(f"{self.engine} takes the prompt as text only, and samplecli no longer has it")
                prompt = list(prompt_ids)
            path = "/v1/completions"
            body = {**chain.fields, "model": self.model, "prompt": prompt, "max_tokens": max_new_tokens,
                    "logprobs": self.top_n, "seed": seed, "stream": True}
        if self.kind == "vllm":
            body["return_tokens_as_token_ids"] = True
        stream = TokenStream(iter(()))
        stream.tokens = self._tokens(path, body, stream)  # it sets the stream's finish_reason at the end
        return stream

    def _tokens(self, path: str, body: dict[str, Any], stream: TokenStream) -> Iterator[ServerToken]:
        where = f"{self.name}{path}"
        for event in self.http.stream(path, body):
            if isinstance(event.get("error"), dict | str):
                error = event["error"]
                message = error.get("message", "") if isinstance(error, dict) else error
                raise RemoteError(f"{where}: the server stopped with an error: {' '.join(str(message).split())[:300]}")
            choice = (event.get("choices") or [{}])[0]
            text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            logprobs = choice.get("logprobs")
            if logprobs is None and not text:  # the last event, or a chat's first (the assistant's role only)
                records: list[TokenRecord] = []
            else:
                records = parse(logprobs, self.top_n, where)
                if text and not records:
                    raise RemoteError(f"{where}: the answer has text but no log-probabilities (`logprobs` was "
                                      f"{self.top_n}); the engine may cap them lower (vLLM: --max-logprobs)")
            for i, record in enumerate(records):
                yield served(self.vocab, record, text if i == len(records) - 1 else "", len(records) == 1)
            if choice.get("finish_reason"):
                stream.finish_reason = choice["finish_reason"]
                return
        raise RemoteCut(f"{where}: the stream ended before its last event (the server stopped or the connection "
                        "was cut); check that the server is still running")



def open_openai(url: str, http: Http, concurrency: int = 4, top_logprobs: int | None = None) -> OpenAIBackend:
    return OpenAIBackend(url, http, concurrency, top_logprobs)
