"""Tokens named on the command line (`--logit-bias TOKEN=BIAS`, `--logprob-of TOKEN`): ids or strings.

A TOKEN made of digits only is a token id; anything else is text that the model's tokenizer must turn into
exactly one token (leading spaces count: with GPT-2's tokenizer " the" is one token and "the" another).
Parsing happens before the model loads, resolving strings after; both raise one-line UsageErrors.
"""

from __future__ import annotations

from typing import Any

from samplecli.errors import UsageError
from samplecli.strategies.values import parse_bias


def parse_token(text: str, flag: str | None = None) -> int | str:
    """An id for "123", the text itself otherwise; empty text and a negative id ("-1", which no vocabulary has,
    and which would otherwise be looked up as text after the model loads) are refused, naming `flag` and the
    value where given."""
    where = f"{flag} {text!r}: " if flag else ""
    if text.isascii() and text.isdigit():
        return int(text)
    if text == "":
        raise UsageError(f"{where}a token may not be empty; give an id or the token's text")
    if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
        raise UsageError(f"{where}{text} is no token id (ids are 0 or more); to name the text {text!r}, give "
                         "its id instead")
    return text


def parse_token_bias(entry: str, flag: str = "--logit-bias") -> tuple[int | str, float]:
    """ "TOKEN=BIAS" (split at the last `=`, so a token may contain `=`) -> (token, bias)."""
    token, eq, bias = entry.rpartition("=")
    if not eq:
        raise UsageError(f"{flag} {entry!r}: expected TOKEN=BIAS, e.g. 15=-inf or ' the=2.5'")
    try:
        value = parse_bias(bias)
    except ValueError as exc:
        raise UsageError(f"{flag} {entry!r}: {exc}") from None
    try:
        return parse_token(token), value
    except UsageError as exc:
        raise UsageError(f"{flag} {entry!r}: {exc}") from None


def resolve_token(token: int | str, tokenizer: Any, vocab_size: int, flag: str) -> int:
    """The id of `token`: an id is checked against the vocabulary, text must be exactly one token."""
    if isinstance(token, int):
        if token >= vocab_size:
            raise UsageError(f"{flag}: token id {token} is outside the model's vocabulary ({vocab_size} tokens)")
        return token
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) == 1:
        return int(ids[0])
    piece = tokenizer.piece_id(token) if hasattr(tokenizer, "piece_id") else tokenizer.get_vocab().get(token)
    if piece is not None:  # a token written as the vocabulary spells it, e.g. "Ġthe"
        return int(piece)
    shown = " ".join(str(i) for i in ids)
    raise UsageError(f"{flag} {token!r}: the tokenizer makes {len(ids)} tokens of it ({shown}); "
                     "give text that is one token, or a token id")


def bias_table(entries: list[str], vocab: Any = None) -> dict[int, float]:
    """`--logit-bias` entries as {token id: bias}; tokens given as text are looked up in `vocab`."""
    pairs = [parse_token_bias(entry) for entry in entries]
    if vocab is None and needs_tokenizer(token for token, _ in pairs):
        raise UsageError("--logit-bias: a token given as text needs the model's tokenizer here; give its id")
    size = getattr(vocab, "size", 2**63)  # ids without a vocabulary: checked against the model's when it runs
    return {resolve_token(token, vocab, size, "--logit-bias"): bias for token, bias in pairs}


def needs_tokenizer(tokens) -> bool:
    return any(isinstance(t, str) for t in tokens)
