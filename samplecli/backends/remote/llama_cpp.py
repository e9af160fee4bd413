"""llama.cpp's `llama-server` as a backend: the server samples and streams each token with its top N raw
probabilities (`n_probs` N, 20 by default), or samplecli asks for the next-token distribution one token at a time
(`/completion` with `n_predict` 1; the server's prompt cache, on unless it was started with `--no-cache-prompt`,
evaluates only what a request adds) and runs its own registry on it.

The default asks for what streams at the server's speed: measured on a V = 128,256 model, `n_probs` 20 costs the
server 3% of its speed, every token's probability (`n_probs` = V, megabytes of JSON a token) 97%. With the top N
the raw entropy is an interval and the kept counts are over those N (the header says so);
`--full-distribution` asks for every token's probability, which makes every number exact. `score` asks one
request per token of the text, that token made the greedy choice by a logit bias: the server answers with its own
probability (exact, whatever its rank) and the top N (`prompt_logprobs`). Teacher forcing (inspect, a strategy's
score, --reference) asks for every token's probability, one request per position, unless `--top-logprobs N` asked
for the top N by name.

What the server answers is in docs/llama-server-notes.md: `n_probs` probabilities are pre-sampling (a softmax of
the raw logits), a zero probability comes as the lowest float, `/v1/models` gives `n_vocab` and the per-slot
context, `/props` the BOS/EOS tokens and the slots.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import (
    CHAT,
    POST_SAMPLING,
    PROMPT_LOGPROBS,
    REORDER,
    SERVER_SAMPLING,
    TEACHER_FORCE,
    Backend,
    PromptToken,
    ServerToken,
    TokenStream,
)
from samplecli.backends.remote import batch
from samplecli.backends.remote.batch import ContextBatch
from samplecli.backends.remote.http import Http, RemoteCut, RemoteError, checked_id, checked_logprob, checked_vocab
from samplecli.backends.remote.llama_cpp_sampling import ENGINE, ServerChain, translate
from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

LOWEST = -1e38  # the server writes a probability of 0 as the lowest float (-3.4e38)
HELD_RETRIES = 8  # a one-token request whose token the server held back is asked again, that token banned
UNKNOWN_ID = -1  # a held-back token whose id the server never sent (the generation ended inside a character)
STOP_TYPES = {"eos": "stop", "limit": "length", "word": "stop"}  # the last event's `stop_type`, as OpenAI's reasons
DEFAULT_TOP_N = 20  # probabilities per token by default: OpenAI's cap, and nearly free for the server (see above)
PIPELINE = 2  # a lane's requests in flight at once in `prompt_logprobs` (three gained nothing: BENCHMARKS.md)
FORCE = 1e4  # the logit bias that makes a given text's token the greedy choice (raw logits differ by tens at most)


class LlamaCppVocabulary:
    """Ids <-> text through the server's tokenizer; each token's bytes are learnt from the distributions it
    sends (every token's, at the first full answer), so decoding a sequence asks the server nothing."""

    def __init__(self, http: Http, size: int, special: set[int]) -> None:
        self.http, self.size, self.special = http, size, special
        self._bytes: dict[int, bytes] = {}

    def learn(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["id"] not in self._bytes and "bytes" in entry:
                self._bytes[entry["id"]] = bytes(entry["bytes"])

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        answer = self.http.post("/tokenize", {"content": text, "add_special": add_special_tokens,
                                              "parse_special": parse_special})
        return [t if isinstance(t, int) else t["id"] for t in answer["tokens"]]

    def token_bytes(self, token_id: int) -> bytes:
        if token_id == UNKNOWN_ID:
            return b""
        if token_id not in self._bytes:
            answer = self.http.post("/tokenize", {"content": self._detokenize([token_id]), "with_pieces": True,
                                                  "parse_special": True})
            pieces = answer.get("tokens", [])
            piece = pieces[0]["piece"] if len(pieces) == 1 and pieces[0]["id"] == token_id else None
            self._bytes[token_id] = bytes(piece) if isinstance(piece, list) else \
                (piece or self._detokenize([token_id])).encode("utf-8")
        return self._bytes[token_id]

    def _detokenize(self, ids: list[int]) -> str:
        return self.http.post("/detokenize", {"tokens": ids})["content"]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self.token_bytes(i) for i in ids if not (skip_special_tokens and i in self.special)) \
            .decode("utf-8", errors="replace")

    def text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def bytes(self, token_id: int) -> tuple[int, ...]:
        return tuple(self.token_bytes(token_id))


class LlamaCppBackend(Backend):
    """A `llama-server` at `url`: its top DEFAULT_TOP_N probabilities per token by default (`top_n`; the rest
    counted as filtered, the raw entropy bounded), every token's with `full_distribution` (exact), or the
    `top_logprobs` most probable ones asked for by name (then no teacher forcing: a text's token may be outside
    them)."""

    def __init__(self, url: str, http: Http, concurrency: int = 4, top_logprobs: int | None = None,
                 full_distribution: bool = False) -> None:
        self.name, self.http, self.concurrency = url, http, max(1, concurrency)
        models = http.get("/v1/models")
        meta = (models.get("data") or [{}])[0].get("meta") or {}
        if "n_vocab" not in meta:
            raise RemoteError(f"{url}/v1/models: the answer has no `meta.n_vocab`; is this llama.cpp's server? "
                              "(pass --api openai for an OpenAI-compatible one)")
        self._vocab_size = checked_vocab(meta["n_vocab"])
        asked = None if full_distribution else top_logprobs or DEFAULT_TOP_N
        self.top_n = asked if asked is not None and asked < self._vocab_size else None
        self.n_probs = self.top_n or self._vocab_size
        # a given text is scored from its tokens' own probabilities and the top N (`score`), unless every token's
        # was asked for
        self.capabilities = frozenset({REORDER, SERVER_SAMPLING, POST_SAMPLING, CHAT} |
                                      ({TEACHER_FORCE} if top_logprobs is None or self.top_n is None else set()) |
                                      ({PROMPT_LOGPROBS} if self.top_n is not None else set()))
        if self.top_n is not None and top_logprobs is None:
            self.distribution_note = (f"llama-server returns its top {self.top_n} probabilities per token: the raw "
                                      f"entropy is an interval and kept counts are over those {self.top_n}; "
                                      f"--full-distribution asks for all {self._vocab_size:,} (exact; each "
                                      f"token's answer then holds {self._vocab_size:,} probabilities)")
        self.end_of_turn_ids: tuple[int, ...] = ()  # the server's chat template's, once `chat` was asked
        self.engine = ENGINE
        self._context = int(meta["n_ctx"]) if meta.get("n_ctx") else None
        props = http.get("/props")
        self.slots = int(props.get("total_slots", 1))
        self._eos = self._special_id(props.get("eos_token"))
        self._bos = self._special_id(props.get("bos_token"))
        self.vocab = LlamaCppVocabulary(http, self._vocab_size, {i for i in (self._eos, self._bos) if i is not None})
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency)

    def _special_id(self, text: str | None) -> int | None:
        if not text:
            return None
        ids = self.http.post("/tokenize", {"content": text, "parse_special": True})["tokens"]
        return ids[0] if len(ids) == 1 else None

    vocab_size = property(lambda self: self._vocab_size)
    eos_token_ids = property(lambda self: ([self._eos] if self._eos is not None else []) +
                             [i for i in self.end_of_turn_ids if i != self._eos])
    bos_token_id = property(lambda self: self._bos)
    context_length = property(lambda self: self._context)

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def chat(self, messages: Sequence[dict[str, str]], template: str | None = None) -> list[int]:
        """The prompt ids of `messages` through the chat template the server was started with (`/apply-template`,
        what its `/v1/chat/completions` does), tokenized as it tokenizes a chat prompt (special tokens parsed);
        the template's end-of-turn tokens then count as EOS."""
        if template is not None:
            raise UsageError(f"--chat-template: {ENGINE} applies the chat template it was started with; start it "
                             "with --chat-template NAME or --chat-template-file FILE, and drop --chat-template here")
        prompt = self.http.post("/apply-template", {"messages": list(messages)}).get("prompt")
        if not isinstance(prompt, str):
            raise RemoteError(f"{self.name}/apply-template: the answer has no `prompt`; is this llama.cpp's server?")
        self.end_of_turn_ids = tuple(self._end_of_turn())
        self.chat_warning = self._chatml_fallback(prompt)
        return self.vocab.encode(prompt)

    def _chatml_fallback(self, prompt: str) -> str | None:
        """llama-server applies ChatML to a model that has no chat template of its own, and says so only in its
        log: ChatML's `<|im_start|>` that the model's vocabulary has no token for means the model never saw it."""
        marker = "<|im_start|>"
        if marker not in prompt or len(self.vocab.encode(marker, add_special_tokens=False)) == 1:
            return None
        return (f"{ENGINE} wrapped the messages in ChatML ({marker}...), which this model's vocabulary has no token "
                "for: the model most likely has no chat template and the server fell back to ChatML; start the server "
                "with --chat-template NAME, or drop --chat")

    def _end_of_turn(self) -> list[int]:
        """The special tokens the template writes after an assistant's message (`<|im_end|>`, `<|eot_id|>`): the
        tokens between a reply and the next user message that tokenize differently when special tokens are not
        parsed (a plain-text `<|im_end|>` of a vocabulary without it is no token to stop at)."""
        marker, again = "\u2063samplecli-reply\u2063", "\u2063samplecli-again\u2063"
        text = self.http.post("/apply-template", {"messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": marker},
            {"role": "user", "content": again}]}).get("prompt") or ""
        if marker not in text or again not in text.split(marker, 1)[1]:
            return []
        between = text.split(marker, 1)[1].split(again, 1)[0]
        found = []
        for token in self.vocab.encode(between, add_special_tokens=False):
            piece = self.vocab.decode([token], skip_special_tokens=False)
            if piece.strip() and self.vocab.encode(piece, add_special_tokens=False, parse_special=False) != [token]:
                found.append(token)
        return list(dict.fromkeys(found))

    def distribution(self, ids: Sequence[int], full: bool = False, slot: int | None = None) -> torch.Tensor:
        """The raw model's log-probabilities of the token after `ids`: the top `n_probs` (the rest -inf:
        filtered), or with `full` every token of the vocabulary; asked of server slot `slot` where given."""
        n_probs = self._vocab_size if full else self.n_probs
        banned: list[int] = []
        for _ in range(HELD_RETRIES):
            answer = self.http.post("/completion", {
                "prompt": list(ids), "n_predict": 1, "n_probs": n_probs, "temperature": 0, "return_tokens": True,
                "logit_bias": [[token, False] for token in banned],
                "response_fields": ["completion_probabilities", "tokens"], **pinned(slot)})
            steps = answer.get("completion_probabilities") or []
            drawn = answer.get("tokens") or []
            # a drawn token that ends inside a UTF-8 character is held back with its probabilities: draw another
            # (the probabilities are the raw model's, before any bias, so they are the same numbers)
            if steps or len(drawn) != 1 or not isinstance(drawn[0], int):
                break
            banned.append(drawn[0])
        if not steps or not steps[0].get("top_logprobs"):
            raise RemoteError(f"{self.name}/completion: the answer has no probabilities (`n_probs` was "
                              f"{n_probs}); is the server's `--n-probs` limit lower?")
        entries = steps[0]["top_logprobs"]
        self.vocab.learn(entries)
        ids, values = [], []
        for entry in entries:
            value = entry.get("logprob")
            if value is None and entry.get("prob") is not None:
                value = math.log(entry["prob"]) if entry["prob"] > 0 else -math.inf
            value = checked_logprob(value)
            ids.append(checked_id(entry["id"], self._vocab_size))
            values.append(value if value > LOWEST else -math.inf)
        if len(values) == self._vocab_size:  # every token's: renormalised as the model's distribution is
            shift = normaliser(values)
            values = [value - shift for value in values]
        return batch.row(self._vocab_size, ids, values)

    def prompt_logprobs(self, ids: Sequence[int], first: int = 1) -> list[PromptToken]:
        """Tokens `first`.. of `ids`, each after its prefix: one request per token, which the token itself, made the
        greedy choice by a logit bias, answers with its own raw log-probability (the server's softmax over the
        whole vocabulary, whatever its rank) and the top `n_probs`. The server has no prompt log-probabilities,
        so each request evaluates one new token past its slot's prompt cache: the text is cut into one lane per
        slot (up to --concurrency), a lane's requests pinned to its slot (`id_slot`) in the text's order, so each
        finds its prefix cached (unpinned, a request goes to the slot whose cache shares the longest prefix, a
        later lane's, and the lanes undo each other's caches); PIPELINE of a lane's requests are in flight at
        once, so the slot takes the next one as it finishes one rather than a round trip later, and the slots
        decode together. A token the server holds back (it ends inside a UTF-8 character: no probabilities come
        back) is read from the next-token distribution instead (`distribution`: its top N, or every token's where
        it is not among them)."""
        ids = list(ids)
        positions = range(max(first, 1), len(ids))
        lanes = max(1, min(self.concurrency, self.slots, len(positions)))
        cuts = [positions.start + len(positions) * lane // lanes for lane in range(lanes + 1)]
        out: list[PromptToken | None] = [None] * len(positions)
        stop = threading.Event()  # set when the call ends early (an error, Ctrl-C): the workers leave after the
        # request they are in

        def worker(lane: int, turn: int) -> None:  # the lane's every PIPELINE-th position, in order
            for end in range(cuts[lane] + turn, cuts[lane + 1], PIPELINE):
                if stop.is_set():
                    return
                out[end - positions.start] = self._forced(ids[:end], ids[end], slot=lane)

        pool = ThreadPoolExecutor(max_workers=lanes * PIPELINE)
        try:
            for done in [pool.submit(worker, lane, turn) for lane in range(lanes) for turn in range(PIPELINE)]:
                done.result()
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
        return out  # type: ignore[return-value]  # every position filled: the lanes' workers cover every cut

    def _forced(self, prefix: list[int], token: int, slot: int | None = None) -> PromptToken:
        answer = self.http.post("/completion", {
            "prompt": prefix, "n_predict": 1, "n_probs": self.n_probs, "temperature": 0, "return_tokens": True,
            "logit_bias": [[token, FORCE]], "response_fields": ["completion_probabilities", "tokens"],
            **pinned(slot)})
        steps = answer.get("completion_probabilities") or []
        if not steps:  # held back: the token's own probability never comes, the distribution has it
            row = self.distribution(prefix, slot=slot)
            if float(row[token]) == -math.inf and self.top_n is not None:
                row = self.distribution(prefix, full=True, slot=slot)
            return self._from_row(token, row)
        entry = steps[0]
        if entry.get("id") != token:
            raise RemoteError(f"{self.name}/completion: a logit bias of {FORCE:g} did not make token {token} the "
                              f"greedy choice (the server drew {entry.get('id')}); is this llama.cpp's server?")
        scored = self._server_token(entry, post_sampling=False)
        ranked = [candidate for candidate, _ in scored.candidates]
        rank = ranked.index(token) + 1 if token in ranked else None
        return PromptToken(token, scored.logprob, rank, scored.candidates)

    def _from_row(self, token: int, row: torch.Tensor) -> PromptToken:
        """A token's PromptToken from a next-token distribution that holds it."""
        import torch

        values, order = torch.topk(row, min(self.n_probs, row.numel()))
        top = tuple((int(i), float(v)) for i, v in zip(order, values, strict=True) if v > -math.inf)
        logprob = float(row[token])
        rank = 1 + int((row > row[token]).sum()) if logprob > -math.inf else None
        return PromptToken(token, logprob, rank, top)

    def distributions(self, contexts: list[list[int]], full: bool = False) -> torch.Tensor:
        """One distribution per context, asked concurrently (the server's slots decode them in parallel)."""
        return batch.distributions(lambda context: self.distribution(context, full), contexts, self.pool)

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[ContextBatch, torch.Tensor]:
        return ContextBatch.start(self.distributions, prompt_ids, rows)

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        """The distribution after each position, every token's probability (a given text's token may rank
        anywhere): one request each (the server has no prompt log-probabilities; the server's prompt cache keeps
        each one to a single new token)."""
        ids = list(ids)
        ends = range(len(ids) - keep, len(ids)) if keep else range(len(ids))
        return self.distributions([ids[: end + 1] for end in ends], full=True)

    def server_chain(self, stages: Sequence[tuple[str, dict[str, Any]]],
                     selector: tuple[str, dict[str, Any]]) -> ServerChain:
        """The request fields that run this chain on the server (UsageError for what it cannot run)."""
        return translate(stages, selector, context=self._context or 0, decode=self.vocab.decode)

    def sample_stream(self, prompt_ids: Sequence[int], chain: ServerChain, *, max_new_tokens: int, seed: int,
                      post_sampling: bool = False) -> TokenStream:
        """The server draws up to `max_new_tokens` tokens after `prompt_ids` with `chain`, streamed (SSE) one by
        one with the probabilities it returns: the raw model's (`n_probs` of them), or with `post_sampling`
        those of the distribution it drew from. Closing the stream closes the connection, which ends the
        server's task; a stream that ends before its last event is one line (what came stays with the caller).
        The stream's `finish_reason` is the last event's `stop_type`, as OpenAI's reasons."""
        stream = TokenStream(iter(()))
        stream.tokens = self._tokens(prompt_ids, chain, max_new_tokens, seed, post_sampling, stream)
        return stream

    def _tokens(self, prompt_ids: Sequence[int], chain: ServerChain, max_new_tokens: int, seed: int,
                post_sampling: bool, stream: TokenStream) -> Iterator[ServerToken]:
        body = {**chain.fields, "prompt": list(prompt_ids), "n_predict": max_new_tokens, "seed": seed,
                "n_probs": self.n_probs, "post_sampling_probs": post_sampling,
                "stream": True}
        produced = 0
        for event in self.http.stream("/completion", body):
            if isinstance(event.get("error"), dict):
                raise RemoteError(f"{self.name}/completion: the server stopped with an error: "
                                  f"{' '.join(str(event['error'].get('message', '')).split())[:300]}")
            entries = event.get("completion_probabilities") or []
            if event.get("tokens") and not entries:
                raise RemoteError(f"{self.name}/completion: the answer has no probabilities (`n_probs` was "
                                  f"{self.n_probs}); is the server's `--n-probs` limit lower?")
            predicted = event.get("tokens_predicted")
            held = predicted - produced - len(entries) if isinstance(predicted, int) else 0
            # the event's text is the server's own for its tokens: it goes with the last of them (the others "")
            content = event.get("content") if isinstance(event.get("content"), str) else ""
            tokens = [ServerToken(token_id, None, (), "raw", held=True)
                      for token_id in (self._held(event, entries, held) if held > 0 else ())]
            # after held ones, an entry's text and bytes are the whole character's: not learnt as its own
            tokens += [self._server_token(entry, post_sampling, learn=held <= 0) for entry in entries]
            for i, token in enumerate(tokens):
                yield replace(token, text=content if i == len(tokens) - 1 else "")
            produced += max(held, 0) + len(entries)
            if event.get("stop") is True:
                stream.finish_reason = STOP_TYPES.get(event.get("stop_type"))
                return
        raise RemoteCut(f"{self.name}/completion: the stream ended before its last event (the server stopped or "
                        "the connection was cut); check that the server is still running")

    def _held(self, event: dict[str, Any], entries: list[dict[str, Any]], held: int) -> list[int]:
        """The ids of the `held` tokens the server generated without streaming them: it holds back a token that
        leaves the text in the middle of a UTF-8 character, and sends the character's text with the token that
        completes it, whose probabilities alone come back, named by the whole character's text and bytes
        (tools/server's `process_token`). The server's own tokenization of the event's text gives the held ids
        where it ends on the completing tokens (a model writes its tokenizer's tokenization); its pieces are the
        tokens' own bytes. An id that cannot be known is UNKNOWN_ID (among them the tokens of a generation that
        ended inside a character: the server sends no text for them)."""
        content = event.get("content")
        if not isinstance(content, str) or not content:
            return [UNKNOWN_ID] * held
        answer = self.http.post("/tokenize", {"content": content, "with_pieces": True, "parse_special": False})
        pieces = [t for t in answer.get("tokens") or [] if isinstance(t, dict) and isinstance(t.get("id"), int)]
        if len(pieces) != held + len(entries) or [t["id"] for t in pieces[held:]] != [e.get("id") for e in entries]:
            return [UNKNOWN_ID] * held
        for piece in pieces:  # the tokens' own bytes (the entries' are the whole character's)
            raw = piece.get("piece")
            data = bytes(raw) if isinstance(raw, list) else raw.encode("utf-8") if isinstance(raw, str) else None
            if data is not None:
                self.vocab.learn([{"id": piece["id"], "bytes": list(data)}])
        return [checked_id(t["id"], self._vocab_size) for t in pieces[:held]]

    def _server_token(self, entry: dict[str, Any], post_sampling: bool, learn: bool = True) -> ServerToken:
        if learn:
            self.vocab.learn([entry])
        if post_sampling:
            candidates = entry.get("top_probs") or []
            self.vocab.learn(candidates)
            prob = entry.get("prob")
            return ServerToken(entry["id"], math.log(prob) if prob else -math.inf,
                               tuple((c["id"], math.log(c["prob"])) for c in candidates if c.get("prob")),
                               "post-sampling")
        candidates = entry.get("top_logprobs") or []
        self.vocab.learn(candidates)

        def finite(value: float | None) -> float:
            value = checked_logprob(value)
            return value if value > LOWEST else -math.inf

        size = self._vocab_size
        pairs = tuple((checked_id(c["id"], size), finite(c.get("logprob"))) for c in candidates)
        shift = normaliser([value for _, value in pairs]) if len(pairs) == size else 0.0
        return ServerToken(checked_id(entry["id"], size), finite(entry.get("logprob")) - shift,
                           tuple((token, value - shift) for token, value in pairs) if shift else pairs, "raw")


def pinned(slot: int | None) -> dict[str, int]:
    """The request field that asks for server slot `slot` (none where `slot` is None: the server chooses)."""
    return {"id_slot": slot} if slot is not None else {}


def normaliser(logprobs: list[float]) -> float:
    """The log of the sum of every token's probability as the server sent them: the server sums a softmax over the
    vocabulary in float32, and at 128k tokens that sum is off by ~1e-4 (an entropy by ~2e-3 nats); subtracting
    this from each log-probability makes the distribution sum to 1 again, as it does in the model."""
    import torch

    return float(torch.logsumexp(torch.tensor(logprobs, dtype=torch.float64), dim=0))


def open_llama_cpp(url: str, http: Http, concurrency: int = 4, top_logprobs: int | None = None,
                   full_distribution: bool = False) -> LlamaCppBackend:
    return LlamaCppBackend(url, http, concurrency, top_logprobs, full_distribution)
