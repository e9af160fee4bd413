"""Turning token ids into text as they stream: decoded deltas that never split a UTF-8 character,
stop strings that are never printed, and the bytes behind each token."""

from __future__ import annotations

from functools import lru_cache


class Detokenizer:
    """Incremental decoding of one sequence (the prefix/read-offset scheme of vLLM and TextStreamer).

    `push(id)` returns the new text that is safe to show: complete characters only, and nothing that
    could be the start of a stop string. The concatenation of everything returned by `push` and
    `finish` equals `tokenizer.decode(ids, skip_special_tokens=True)`, cut before the first stop string.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # complete text decoded so far
        self.emitted = 0  # characters of self.text already returned
        self.prefix_offset = 0
        self.read_offset = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Flush what was held back (an incomplete character at the very end is shown as U+FFFD)."""
        if not self.stopped:
            tail = self._decode(self.ids[self.prefix_offset :])
            head = self._decode(self.ids[self.prefix_offset : self.read_offset])
            self.text += tail[len(head) :]
            self.read_offset = self.prefix_offset = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        longest = max((len(s) for s in self.stop), default=0)
        search_from = max(0, self.emitted - longest + 1)
        hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            self.text = self.text[: min(hits)]
            end = len(self.text)
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - _held_back(self.text, self.stop)
        end = max(end, self.emitted)
        delta, self.emitted = self.text[self.emitted : end], end
        return delta


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


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


class TokenTable:
    """Per-token facts the renderers show, cached by id: its text on its own, and its bytes."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel" or "ByteLevel" in repr(decoder)
        self.text = lru_cache(maxsize=None)(self._text)
        self.bytes = lru_cache(maxsize=None)(self._bytes)

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
