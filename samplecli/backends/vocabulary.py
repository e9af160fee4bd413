"""A tokenizer as a vocabulary: ids <-> text, and each token's own text and bytes (byte-level BPE,
SentencePiece byte fallback and plain pieces)."""

from __future__ import annotations

from functools import lru_cache


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (byte-level BPE writes each byte as one character)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER = _byte_decoder()


class HFVocabulary:
    """A Hugging Face tokenizer as the backends' `Vocabulary`: encode and decode, and per-token facts the
    renderers show, cached by id: its text on its own, and its bytes."""

    def __init__(self, tokenizer, size: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.size = size if size is not None else len(tokenizer)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel" or "ByteLevel" in repr(decoder)
        # the control tokens (BOS, EOS, padding, chat markers): never text, so a constraint never emits one as text
        self.special = frozenset(tokenizer.all_special_ids) | frozenset(
            i for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items() if added.special)
        self.text = lru_cache(maxsize=None)(self._text)
        self.bytes = lru_cache(maxsize=None)(self._bytes)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def piece_id(self, piece: str) -> int | None:
        """The id of a token written as the vocabulary spells it ("Ġthe"), or None."""
        return self.tokenizer.get_vocab().get(piece)

    def _text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _bytes(self, token_id: int) -> tuple[int, ...]:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if token_id in self.tokenizer.all_special_ids:
            return tuple(self._text(token_id).encode("utf-8"))
        if self.byte_level and piece is not None and all(ch in BYTE_DECODER for ch in piece):
            return tuple(BYTE_DECODER[ch] for ch in piece)
        if piece is not None and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return (int(piece[3:5], 16),)  # SentencePiece byte fallback
        if piece is not None:
            return tuple(piece.replace("\u2581", " ").encode("utf-8"))
        return tuple(self._text(token_id).encode("utf-8"))
