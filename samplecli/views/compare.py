"""Views of `compare`: live columns, the metrics table, and the piped, JSON and Markdown reports.
Pure functions of the plain data they are given."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from samplecli.views.fit import TEXT, Col, split_table
from samplecli.views.render import prob_style, screen_tail

# (key, header, format) for the metrics table, in the order shown.
METRICS = (
    ("tokens", "tokens", "{:.0f}"),
    ("tokens_per_second", "tok/s", "{:.1f}"),
    ("mean_entropy_model", "H model", "{:.2f}"),
    ("mean_entropy_strategy", "H strategy", "{:.2f}"),
    ("mean_kl_strategy_model", "KL(s‖m)", "{:.3f}"),
    ("logprob_sum", "logprob", "{:.1f}"),
    ("perplexity", "PPL", "{:.2f}"),
    ("looped_fraction", "in loops", "{:.0%}"),
    ("repeated_4gram_fraction", "rep. 4-gram", "{:.1%}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("self_bleu_4", "Self-BLEU-4", "{:.3f}"),
    ("zipf", "Zipf", "{:.2f}"),
)
HOLTZMAN_METRICS = (("perplexity", "Perplexity", "{:.2f}"), ("self_bleu_4", "Self-BLEU4", "{:.3f}"),
                    ("zipf", "Zipf Coef.", "{:.2f}"), ("repetition", "Repetition %", "{:.2%}"))


def fmt(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


@dataclass
class CompareState:
    """What the live view shows: each column's label and sample-0 text so far, and where it diverged."""

    labels: list[str]
    texts: list[Text] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    diverged: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.texts = [Text() for _ in self.labels]
        self.tokens = [[] for _ in self.labels]
        self.diverged = [None for _ in self.labels]

    def add(self, column: int, token_id: int, text: str, prob: float) -> None:
        step = len(self.tokens[column])
        self.tokens[column].append(token_id)
        first = self.tokens[0]
        marked = False
        if column > 0 and self.diverged[column] is None and step < len(first) and first[step] != token_id:
            self.diverged[column] = step
            marked = True
        self.texts[column].append(text, style=prob_style(prob) + (" reverse" if marked else ""))


def compare_view(state: CompareState, console: Console, height: int | None = None) -> RenderableType:
    """The columns' texts side by side when each column gets at least 28 characters, stacked otherwise. With
    `height` (the live view: the terminal's lines), each text shows its newest lines as `console` wraps them, and
    the whole view fits in `height`; without it, every text whole (the final view)."""
    width, count = console.width, len(state.labels)
    titles = [label + (f"  (diverges at step {d})" if d is not None else "") for label, d in
              zip(state.labels, state.diverged, strict=True)]
    if width >= 28 * count:
        column = (width - 1) // count - 3  # each column: a border and a space either side

        def side_by_side(cells) -> Table:
            table = Table(show_lines=False, header_style="bold")
            for title in titles:
                table.add_column(title, width=column, overflow="fold")
            table.add_row(*cells)
            return table

        if height is None:
            return side_by_side(state.texts)
        frame = len(console.render_lines(side_by_side([""] * count), console.options, pad=False)) - 1
        return side_by_side([screen_tail(t, console, column, max(height - frame, 1)) for t in state.texts])
    if height is None:
        return Group(*(Panel(t, title=title, title_align="left") for t, title in zip(state.texts, titles, strict=True)))
    room = max(1, (height - 2 * count) // count)  # each panel: its text and two borders
    return Group(*(Panel(screen_tail(t, console, width - 4, room), title=title, title_align="left")
                   for t, title in zip(state.texts, titles, strict=True)))


def metrics_table(rows: list[tuple[str, dict[str, Any]]], columns=METRICS, title: str | None = None,
                  width: int = 100) -> Group:
    """The metrics with one row per metric and one column per strategy (a number is never cut short: the
    strategies that do not fit `width` continue in a second table below, with the metric names again)."""
    key = [Col("metric", kind=TEXT, justify="left", no_wrap=True)]
    strategies = [Col(label) for label, _ in rows]
    cells = [[header, *(fmt(values.get(k), pattern) for _, values in rows)] for k, header, pattern in columns]
    tables = split_table(key, strategies, cells, width, title=title)
    return Group(*tables)


def markdown_table(rows: list[tuple[str, dict[str, Any]]], columns=METRICS) -> str:
    lines = ["| strategy | " + " | ".join(header for _, header, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(values.get(k), p) for k, _, p in columns) + " |")
    return "\n".join(lines) + "\n"


def plain_report(prompt: str, seed: int, sections: list[dict[str, Any]], human: dict[str, Any] | None,
                 partial: bool = False) -> str:
    """The piped report: one section per strategy (its spec, chain, texts and metrics). `partial`: the run was
    interrupted, and the report covers the tokens generated until then."""
    out = [f"prompt: {prompt!r}", f"seed: {seed}",
           *(["interrupted: partial report, over the tokens generated so far"] if partial else []), ""]
    for section in sections:
        out.append(f"== {section['label']} ==")
        out.append(f"chain: {section['chain']}")
        if section.get("diverges_at") is not None:
            out.append(f"diverges from the first column at step {section['diverges_at']}")
        for i, text in enumerate(section["texts"]):
            out.append(f"-- sample {i} --" if len(section["texts"]) > 1 else "-- text --")
            out.append(text)
        out.append("-- metrics --")
        for key, header, pattern in METRICS:
            out.append(f"{header}: {fmt(section['metrics'].get(key), pattern)}")
        out.append("")
    if human is not None:
        out.append("== human (reference text) ==")
        for key, header, pattern in METRICS:
            out.append(f"{header}: {fmt(human.get(key), pattern)}")
    return "\n".join(out).rstrip() + "\n"


def json_report(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1) + "\n"
