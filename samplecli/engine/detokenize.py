"""Turning token ids into text as they stream: decoded deltas that never split a UTF-8 character,
and stop strings that are never printed. Works on any vocabulary with `decode(ids, skip_special_tokens)`."""

from __future__ import annotations


class Detokenizer:
    """Incremental decoding of one sequence (the prefix/read-offset scheme of vLLM and TextStreamer).

    `push(id)` returns the new text that is safe to show: complete characters only, and nothing that
    could be the start of a stop string. The concatenation of everything returned by `push` and
    `finish` equals `tokenizer.decode(ids, skip_special_tokens=True)`, cut before the first stop string.
    """

    def __init__(self, vocab, stop: tuple[str, ...] = ()) -> None:
        self.vocab = vocab
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # complete text decoded so far
        self.emitted = 0  # characters of self.text already returned
        self.prefix_offset = 0
        self.read_offset = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.vocab.decode(ids, skip_special_tokens=True)

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


class ServerText(Detokenizer):
    """The text an engine streamed for each token, cut at the first stop string as `Detokenizer` cuts it."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        super().__init__(None, stop)

    def push_text(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
