"""The `logprobs` of an OpenAI-compatible `/v1/completions` answer, in either shape, as plain per-token records.

Two shapes are in use:

- the legacy one (OpenAI's completions; vLLM, SGLang): parallel lists `tokens`, `token_logprobs`, `top_logprobs`
  (one `{token string: logprob}` object per token, or null), `text_offset`;
- the `content` one (OpenAI's chat shape, which llama.cpp's server and Ollama use for completions too):
  `[{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]`, with llama.cpp adding each token's `id`.

A token is named by its id wherever the engine gives one: llama.cpp's `id`, or vLLM's `"token_id:123"` strings
(`return_tokens_as_token_ids`). Otherwise it is named by its text, which is ambiguous: two tokens that decode
alike (two partial UTF-8 byte tokens both shown as "\ufffd", say) are one key. A legacy `top_logprobs` object
has then already merged them on the server, and lost one's probability; the `content` shape keeps both entries.
Either way the record says how many returned candidates were merged, so that no mass sum goes silently wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from samplecli.backends.remote.http import RemoteError, checked_logprob

TOKEN_ID_PREFIX = "token_id:"
FLOOR = -9999.0  # vLLM writes a log-probability of -inf as -9999.0; llama.cpp as the lowest float


@dataclass(frozen=True)
class Candidate:
    """One returned token: `key` is its id (int) where the engine named it by id, else its text (str)."""

    key: int | str
    logprob: float
    text: str | None = None
    bytes: bytes | None = None


@dataclass
class TokenRecord:
    """One generated (or, with echo, prompt) token as the engine described it."""

    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    merged: int = 0  # returned candidates that share another's key (their mass is summed under it)
    short: int = 0  # how many fewer candidates than asked for came back (a legacy object merged them)


def key_of(token: Any, token_id: Any = None) -> int | str:
    """A token's key: its id where the engine gave one (`id`, or a "token_id:N" string), else its text."""
    if isinstance(token_id, int):
        return token_id
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX) and token[len(TOKEN_ID_PREFIX):].isdigit():
        return int(token[len(TOKEN_ID_PREFIX):])
    if not isinstance(token, str):
        raise ValueError(f"a token is {token!r}, neither a string nor an id")
    return token


def finite(value: Any) -> float:
    """A log-probability; the engines' stand-ins for -inf (vLLM's -9999, llama.cpp's lowest float) become -inf."""
    value = checked_logprob(value)  # a string, NaN or +3 is refused
    return -math.inf if value <= FLOOR else value


def _candidate(entry: dict[str, Any]) -> Candidate:
    raw = entry.get("bytes")
    text = entry.get("token")
    key = key_of(text, entry.get("id"))
    if isinstance(key, str) and isinstance(raw, list) and (not text or "\ufffd" in text):
        key = f"bytes:{bytes(raw).hex()}"  # the bytes tell apart what the text cannot
    return Candidate(key, finite(entry.get("logprob")), None if isinstance(key, int) and text is None else text,
                     bytes(raw) if isinstance(raw, list) else None)


def _merge(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
    """Candidates under one key summed in probability (the mass is kept); returns them and how many merged."""
    seen: dict[int | str, Candidate] = {}
    merged = 0
    for c in candidates:
        if c.key in seen:
            merged += 1
            old = seen[c.key]
            seen[c.key] = Candidate(c.key, math.log(math.exp(old.logprob) + math.exp(c.logprob)), old.text, old.bytes)
        else:
            seen[c.key] = c
    return sorted(seen.values(), key=lambda c: -c.logprob), merged


def parse(logprobs: Any, asked: int, where: str) -> list[TokenRecord]:
    """The token records of one choice's `logprobs` (either shape). `asked`: the `logprobs` N requested, to tell
    a legacy object that came back short (tokens merged on the server). RemoteError names `where` when the
    answer has no log-probabilities."""
    if not isinstance(logprobs, dict):
        raise RemoteError(f"{where}: the answer has no log-probabilities (`logprobs` was {asked}); the engine may "
                          "have been started without them, or with a lower limit (vLLM: --max-logprobs)")
    if isinstance(logprobs.get("content"), list):
        records = []
        for entry in logprobs["content"]:
            chosen = _candidate(entry)
            candidates, merged = _merge([_candidate(e) for e in entry.get("top_logprobs") or []])
            records.append(TokenRecord(chosen, candidates, merged))
        return records
    tokens, values, tops = (logprobs.get(k) for k in ("tokens", "token_logprobs", "top_logprobs"))
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise RemoteError(f"{where}: the `logprobs` object has neither `content` nor `tokens`/`token_logprobs`; "
                          "is this an OpenAI-compatible completions endpoint?")
    tops = tops if isinstance(tops, list) else [None] * len(tokens)
    records = []
    for token, value, top in zip(tokens, values, tops, strict=False):
        key = key_of(token)
        chosen = Candidate(key, finite(value), None if isinstance(key, int) else token)
        candidates = [Candidate(key_of(t), finite(lp), None if isinstance(key_of(t), int) else t)
                      for t, lp in (top or {}).items()]
        candidates.sort(key=lambda c: -c.logprob)
        if len(candidates) > asked:  # the chosen token, ranked below the top N: not part of the top-N answer
            candidates = [c for c in candidates if c.key != key][:asked]
        # vLLM returns the chosen token and the top N: N + 1 entries, or N where the chosen one is among them.
        # Fewer than N distinct strings means some decoded alike and the server merged them under one key (one
        # merge is missed where the chosen token ranked below the top N: N + 1 became N)
        short = 0 if top is None or all(isinstance(c.key, int) for c in candidates) else \
            max(0, asked - len(candidates))
        records.append(TokenRecord(chosen, candidates, 0, short))
    return records


def served(vocab, record: TokenRecord, text: str, alone: bool):
    """The ServerToken of one streamed token record, named in `vocab` (an OpenAIVocabulary: tokens by id where the
    engine gives ids, else by text); `alone`: the event held this token only, so its streamed text is its own."""
    from samplecli.backends.base import ServerToken

    token_id = vocab.id_of(record.chosen)
    if alone:
        vocab.learn_text(token_id, text)
    candidates = tuple((vocab.id_of(c), c.logprob) for c in record.candidates if c.logprob > -math.inf)
    return ServerToken(token_id, record.chosen.logprob, candidates, "raw", text=text,
                       merged=record.merged + record.short)

