"""Tables that fit a terminal without cutting a number short: a number shown as "1.00…" is a wrong number.

Each column says what it holds. A column of numbers is never narrower than its widest cell (its header is
stacked onto several lines instead); text folds, down to its longest word that holds a digit; a bar is cropped.
When even that is too wide, the columns that matter least are dropped (the caller says which, in one dim line:
`dropped_note`), or the columns are split over several tables that repeat the key columns (`split_table`).
Widths are computed here and fixed on each column, so Rich never shrinks one on its own.

    table, dropped = fit_table([Col("T"), Col("token", kind=TEXT), Col("", kind=BAR, drop=1)], rows, width=80)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box as boxes
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

NUMBER, TEXT, BAR = "number", "text", "bar"
_DIGITS = re.compile(r"\S*\d\S*")


@dataclass(frozen=True)
class Col:
    """A column: its header, what its cells are (NUMBER, TEXT or BAR), and `drop` (0: always shown; among the
    others the highest goes first when the table is too wide, the rightmost of equals first)."""

    header: str | Text
    kind: str = NUMBER
    justify: str = "right"
    drop: int = 0
    fold_to: int = 8  # a text column's narrowest, unless a word holding a digit needs more
    style: str = ""
    no_wrap: bool = False  # a text column kept on one line (cropped with an ellipsis: never used for numbers)
    words: bool = False  # a text column never narrower than its longest word: it wraps between words only


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _lines_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _words(header: str) -> list[str]:
    """A header's words, a chain's elements ("top-p=0.9,temperature=0.8") counting as words of their own."""
    return [part for word in header.split() for part in re.findall(r"[^,]+,?|,", word)]


def _stack(header: str, width: int) -> str:
    """The header's words on as few lines as fit `width` (a word longer than that keeps its own line)."""
    lines: list[str] = []
    for word in _words(header):
        joiner = "" if lines and lines[-1].endswith(",") else " "
        if lines and cell_len(lines[-1]) + len(joiner) + cell_len(word) <= width:
            lines[-1] += joiner + word
        else:
            lines.append(word)
    return "\n".join(lines) or header


@dataclass
class _Measured:
    col: Col
    index: int  # in the caller's order (rows are indexed by it)
    natural: int
    minimum: int

    def header(self, width: int) -> str | Text:
        """The header, its words stacked on several lines where `width` is narrower than it."""
        header = self.col.header
        text = _plain(header)
        if self.col.kind != NUMBER or _lines_width(text) <= width:
            return header
        stacked = _stack(text, width)
        return Text(stacked, style=header.style) if isinstance(header, Text) else stacked


def _measure(col: Col, index: int, cells: list[Any]) -> _Measured:
    texts = [_plain(c) for c in cells]
    header_text = _plain(col.header)
    widest_cell = max((_lines_width(t) for t in texts), default=0)
    natural = max(widest_cell, _lines_width(header_text), 1)
    if col.kind == NUMBER:  # never narrower than a number; the header may stack to the longest of its words
        longest_word = max((cell_len(w) for w in _words(header_text)), default=0)
        return _Measured(col, index, natural, max(widest_cell, longest_word, 1))
    if col.kind == BAR:
        return _Measured(col, index, natural, 1)
    numbers = max((cell_len(w) for t in texts for w in _DIGITS.findall(t)), default=0)
    minimum = natural if col.no_wrap else min(natural, max(col.fold_to, numbers))
    if col.words:
        minimum = max(minimum, max((cell_len(w) for t in texts for w in t.split()), default=0))
    return _Measured(col, index, natural, minimum)


def _overhead(count: int, box: Any, show_edge: bool, padding: int, pad_edge: bool) -> int:
    """Borders and padding of a table of `count` columns, as Rich lays it out."""
    extra = (2 if box and show_edge else 0) + (count - 1 if box else 0)
    pads = padding * 2 * count - (0 if pad_edge else 2 * padding)
    return extra + max(pads, 0)


def _layout(measured: list[_Measured], width: int, overhead: int) -> list[int] | None:
    """Each column's width: numbers whole, text and bars shrunk (widest first) toward their minimum; None when
    even the minimum does not fit."""
    room = width - overhead
    if sum(m.minimum for m in measured) > room:
        return None
    widths = [m.natural for m in measured]
    excess = sum(widths) - room
    while excess > 0:
        shrinkable = [i for i, m in enumerate(measured) if widths[i] > m.minimum]
        widest = max(widths[i] for i in shrinkable)
        for i in shrinkable:
            if excess > 0 and widths[i] == widest:
                widths[i] -= 1
                excess -= 1
    return widths


@dataclass
class Fitted:
    """A table that fits, and the headers of the columns left out (for `dropped_note`)."""

    table: Table
    dropped: list[str]
    fits: bool = True


def fit_table(columns: Sequence[Col], rows: Sequence[Sequence[Any]], width: int, *, title: str | Text | None = None,
              box: Any = boxes.HEAVY_HEAD, show_edge: bool = True, padding: int = 1, pad_edge: bool = True,
              header_style: str = "bold", row_styles: Sequence[str] | None = None, **table_options: Any) -> Fitted:
    """A Rich table of `rows` under `columns` that is at most `width` cells wide and shows every number whole,
    dropping columns by their `drop` rank until it fits. `fits` is False when it cannot fit even so (then every
    column that may be dropped is gone, and the caller may choose another layout)."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    measured = [_measure(col, i, cells[i]) for i, col in enumerate(columns)]
    kept = list(measured)
    dropped: list[str] = []
    widths = _layout(kept, width, _overhead(len(kept), box, show_edge, padding, pad_edge))
    while widths is None:
        candidates = [m for m in kept if m.col.drop > 0]
        if not candidates:
            break
        worst = max(candidates, key=lambda m: (m.col.drop, m.index))
        kept.remove(worst)
        dropped.append(" ".join(_plain(worst.col.header).split()) or "bar")
        widths = _layout(kept, width, _overhead(len(kept), box, show_edge, padding, pad_edge))
    fits = widths is not None
    if widths is None:
        widths = [m.minimum for m in kept]
    table = Table(title=title, box=box, show_edge=show_edge, padding=(0, padding), pad_edge=pad_edge,
                  header_style=header_style, **{"title_justify": "left", **table_options})
    for m, w in zip(kept, widths, strict=True):
        kind = m.col.kind
        table.add_column(m.header(w), justify=m.col.justify, width=w, style=m.col.style or None,
                         no_wrap=kind != TEXT or m.col.no_wrap,
                         overflow="fold" if kind == TEXT and not m.col.no_wrap else "crop" if kind == BAR
                         else "ellipsis")
    for r, row in enumerate(rows):
        style = row_styles[r] if row_styles is not None else None
        table.add_row(*(row[m.index] for m in kept), style=style)
    return Fitted(table, dropped, fits)


def split_table(key_columns: Sequence[Col], columns: Sequence[Col], rows: Sequence[Sequence[Any]], width: int,
                **options: Any) -> list[Table]:
    """The columns over as many tables as it takes, each repeating the key columns (the first cells of each
    row): "wrap the row" for tables with one column per strategy or per stage."""
    keys = len(key_columns)
    tables: list[Table] = []
    start = 0
    while start < len(columns) or not tables:
        end = start + 1
        while end < len(columns):
            trial = fit_table([*key_columns, *columns[start:end + 1]],
                              [[*row[:keys], *row[keys + start:keys + end + 1]] for row in rows], width, **options)
            if not trial.fits:
                break
            end += 1
        part = columns[start:end]
        tables.append(fit_table([*key_columns, *part], [[*row[:keys], *row[keys + start:keys + end]] for row in rows],
                                width, **options).table)
        options = {**options, "title": None}
        start = end
    return tables


def flow(parts: Sequence[str | Text], width: int, separator: str = " · ", style: str = "") -> Text:
    """`parts` joined by `separator` on lines of at most `width` cells, a line breaking only between two parts
    (a number, a name or a chain element is never cut in two; a part wider than `width` alone folds)."""
    out = Text(style=style)
    line = 0
    for part in parts:
        piece = part if isinstance(part, Text) else Text(part)
        size = piece.cell_len
        if line and line + cell_len(separator) + size > width:
            out.append("\n")
            line = 0
        elif line:
            out.append(separator)
            line += cell_len(separator)
        out.append_text(piece)
        line += size
    return out


def dropped_note(dropped: Sequence[str], width: int) -> Text | None:
    """One dim line naming the columns left out, or None."""
    if not dropped:
        return None
    names = ", ".join(f"`{name}`" for name in dropped)
    return Text(f"not shown at {width} columns: {names} (a wider terminal shows them)", style="dim")


__all__ = ["BAR", "NUMBER", "TEXT", "Col", "Fitted", "dropped_note", "flow", "fit_table", "split_table"]
