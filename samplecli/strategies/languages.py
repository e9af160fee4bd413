"""Languages for the constraint stages: a JSON schema, a regular expression, a grammar (GBNF or Lark) or a list of
choices compiled to llguidance's grammar and checked before any model loads (it compiles; its language is not
empty), and a model's vocabulary as llguidance's tokenizer reads it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from samplecli.errors import UsageError

INSTALL = "pip install 'samplecli[constrain]'"


def library():
    try:
        import llguidance
        import llguidance.gbnf_to_lark  # noqa: F401
    except ImportError:
        raise UsageError(f"constraints need the llguidance library: {INSTALL}") from None
    return llguidance


def first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return (reason or lines or ["not accepted"])[0]


def _read(text: str, what: str) -> str:
    path = Path(text).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file: {text}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {text} cannot be read: {exc}") from None


def schema_text(value: str) -> str:
    """The JSON schema a `--json-schema` value gives: inline JSON, or the file it names."""
    text = value if value.lstrip().startswith(("{", "[")) or value.strip() in ("true", "false") else \
        _read(value, "schema")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise ValueError("a JSON schema is an object (or true / false)")
    return json.dumps(schema)


JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def grammar_of(kind: str, value: Any) -> str:
    """llguidance's grammar for a constraint `kind` ("json_schema", "regex", "grammar", "choice") and its value."""
    llg = library()
    if kind == "json_schema":
        try:
            # compact separators, no free whitespace: a free-whitespace grammar lets a small model write newlines
            # for ever (each step keeping ~1e-4 of its mass), the failure the per-step cost is there to show
            return llg.LLMatcher.grammar_from_json_schema(schema_text(value), defaults=JSON_LAYOUT)
        except ValueError as exc:
            raise ValueError(first_line(str(exc))) from None
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(value)
    if kind == "grammar":
        text = _read(value, "grammar")
        if Path(value).suffix != ".lark":  # GBNF, as llama.cpp writes it
            try:
                text = llg.gbnf_to_lark.gbnf_to_lark(text)
            except Exception as exc:  # the converter raises plain exceptions on bad GBNF
                raise ValueError(f"not a GBNF grammar: {first_line(str(exc))}") from None
        return llg.LLMatcher.grammar_from_lark(text)
    if kind == "choice":
        return llg.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    raise ValueError(f"unknown constraint kind {kind!r}")


def llama_cpp_value(kind: str, value: Any) -> Any:
    """What llama.cpp's `/completion` field for a constraint carries: the schema as JSON (`json_schema`), or a GBNF
    grammar's text (`grammar`: a `--grammar` file, or `--choice`'s strings as one alternation); None where the
    server cannot take it (a regular expression, a Lark grammar)."""
    if kind == "json_schema":
        return json.loads(schema_text(value))
    if kind == "grammar":
        return None if Path(value).suffix == ".lark" else _read(value, "grammar")
    if kind == "choice":  # a GBNF string literal escapes as a JSON string does
        return "root ::= " + " | ".join(json.dumps(choice) for choice in value) + "\n"
    return None


class _ByteVocabulary:
    """256 one-byte tokens and an end token: the vocabulary a language is checked against before a model loads."""

    tokens = [bytes([b]) for b in range(256)] + [b"\xff<end>"]
    eos_token_id, bos_token_id, special_token_ids = 256, None, [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@functools.lru_cache(maxsize=1)
def _byte_tokenizer():
    llg = library()
    return llg.LLTokenizer(llg.TokenizerWrapper(_ByteVocabulary()), slices=[])


@functools.lru_cache(maxsize=64)
def _checked(kind: str, key: str) -> str:
    value = json.loads(key)
    grammar = grammar_of(kind, value)
    llg = library()
    error = llg.LLMatcher.validate_grammar(grammar)
    if error:
        raise ValueError(first_line(error))
    matcher = llg.LLMatcher(_byte_tokenizer(), grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(first_line(matcher.get_error()))
    allowed = unpack(matcher.compute_bitmask(), 256)
    if not allowed.any() and not matcher.is_accepting():
        raise ValueError("its language is empty: no text matches it")
    return grammar


def checked_grammar(kind: str, value: Any) -> str:
    """The compiled grammar of a constraint, checked against a byte vocabulary before any model loads: it compiles,
    and its language is not empty. Raises ValueError saying why not, in one line."""
    return _checked(kind, json.dumps(value))


def _convert(kind: str):
    def convert(value: Any) -> Any:
        if kind == "choice":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
                raise ValueError("each choice a non-empty string")
            value = list(value)
        elif not isinstance(value, str) or not value:
            raise ValueError("a non-empty string")
        checked_grammar(kind, value)
        return value

    return convert


CONVERT = {kind: _convert(kind) for kind in ("json_schema", "regex", "grammar", "choice")}


def unpack(bitmask: bytes, size: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(bitmask, dtype=np.uint8), bitorder="little")[:size].astype(bool)


class _TokenBytes:
    """A vocabulary as llguidance's tokenizer reads it: each id's bytes (special tokens marked with a leading 0xff, so
    that no grammar emits one as text), the end token, and a tokenizer for the grammar's own literals."""

    def __init__(self, vocab: Any, size: int, eos_ids: tuple[int, ...]) -> None:
        special = set(getattr(vocab, "special", ())) | set(eos_ids)
        real = getattr(vocab, "size", size)
        self.tokens = [b"\xff" + bytes(vocab.bytes(i)) if i in special else
                       bytes(vocab.bytes(i)) if i < real else b"\xff<unused %d>" % i for i in range(size)]
        self.eos_token_id = eos_ids[0] if eos_ids else size - 1
        self.bos_token_id = None
        self.special_token_ids = sorted(i for i in special if i < size)
        self._vocab = vocab
        self._by_bytes: dict[bytes, int] | None = None
        self._longest = 1

    def __call__(self, text: bytes) -> list[int]:
        """The tokens of `text` as it reads in the middle of a sequence (llguidance asks for the tokens of forced
        text): a SentencePiece tokenizer writes a `▁` before text at the start, so `text` is encoded after a newline
        and the newline's tokens dropped, wherever they come back unchanged and the rest spells `text`."""
        encode = self._vocab.encode
        decoded = text.decode("utf-8", errors="replace")
        lead = encode("\n", add_special_tokens=False)
        ids = encode("\n" + decoded, add_special_tokens=False)
        if ids[: len(lead)] == lead and self._spells(ids[len(lead):], text):
            return ids[len(lead):]
        ids = encode(decoded, add_special_tokens=False)
        return ids if self._spells(ids, text) else self._longest_first(text)

    def _spells(self, ids: list[int], text: bytes) -> bool:
        return all(0 <= i < len(self.tokens) for i in ids) and b"".join(self.tokens[i] for i in ids) == text

    def _longest_first(self, text: bytes) -> list[int]:
        """`text` in the longest tokens that spell it, left to right (where the tokenizer's own tokens do not spell
        it: a SentencePiece merge across the newline, an unknown piece)."""
        if self._by_bytes is None:
            self._by_bytes = {}
            for i, token in enumerate(self.tokens):
                if token and not token.startswith(b"\xff"):
                    self._by_bytes.setdefault(token, i)
            self._longest = max(map(len, self._by_bytes), default=1)
        ids, at = [], 0
        while at < len(text):
            for end in range(min(len(text), at + self._longest), at, -1):
                if text[at:end] in self._by_bytes:
                    ids.append(self._by_bytes[text[at:end]])
                    at = end
                    break
            else:
                return ids  # a byte no token spells: the tokens of the part before it
        return ids


@functools.lru_cache(maxsize=4)
def tokenizer_for(vocab: Any, size: int, eos_ids: tuple[int, ...]):
    """llguidance's tokenizer for a model's vocabulary of `size` ids (built once per vocabulary)."""
    llg = library()
    return llg.LLTokenizer(llg.TokenizerWrapper(_TokenBytes(vocab, size, eos_ids)), n_vocab=size,
                           eos_token=list(eos_ids) or None)
