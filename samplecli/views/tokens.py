"""How every view shows a token or a piece of generated text: one function each, so a newline, a leading space
or a quote reads the same in the live panel, the step table, `inspect`, `explore` and beam views."""

from __future__ import annotations


def quoted(token: str) -> str:
    """A token as views show it: quoted, so leading and trailing spaces are visible, with each escape shown
    once (`'\\n'`, `' the'`, `"'ll"`, `'\\x12'`): Python's own literal, which every reader of this tool knows."""
    return repr(token)


def printable(text: str) -> str:
    """Generated text on one line, unquoted: whitespace other than the space and control characters escaped as
    `quoted` escapes them (`a\\nb`, `\\x12`)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


__all__ = ["printable", "quoted"]
