"""Renderers for `samplecli explore`: the text, the distribution table, its statistics, the strategy panel,
the branch list and the key table, as Rich renderables. Pure functions of `analysis.exploration`'s plain data
(the Textual app in `explore_app.py` places them); they format and draw, and compute nothing about the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from samplecli.analysis.explore_settings import KNOBS, knob_value
from samplecli.analysis.explore_tree import Branch, Position, Segment
from samplecli.views.inspect import bar
from samplecli.views.render import PROB_COLOURS, prob_style
from samplecli.views.tokens import printable, quoted

TOKEN_WIDTH = 14  # characters of a token's text in the distribution table (fewer on a narrow screen)
NUMBERS_WIDTH = 4 + 1 + 1 + 6 + 1 + 6 + 1 + 3  # rank, both probabilities and the strategy's rank, with spaces
RAW_STYLE, STRATEGY_STYLE = "steel_blue1", "green3"


@dataclass(frozen=True)
class Key:
    """One line of the key table: the keys as shown, the Textual bindings (key, action), a short label for
    the footer and what it does. The bindings, the footer, the help screen and docs/explore.md all read it."""

    shown: str
    bindings: tuple[tuple[str, str], ...]
    label: str
    help: str


KEYS: tuple[Key, ...] = (
    Key("space", (("space", "sample"),), "sample",
        "sample the next token from the strategy (a torch.Generator seeded with the seed shown)"),
    Key("g", (("g", "argmax"),), "argmax", "take the strategy's most probable token"),
    Key("↑ ↓", (("up", "move(-1)"), ("down", "move(1)")), "select", "select a candidate in the distribution"),
    Key("enter", (("enter", "take"),), "take", "take the selected candidate, whatever the strategy gives it"),
    Key("backspace", (("backspace", "undo"),), "undo",
        "undo one token; what followed stays in the tree (shown dim): take it again to return"),
    Key("t T", (("t", "knob('temperature', 0)"), ("T", "knob('temperature', 1)")), "temp",
        "temperature ×0.8 / ×1.25 (from 0, T returns to the temperature before it)"),
    Key("0", (("0", "greedy"),), "greedy", "temperature 0: greedy, the one-hot at the most probable token"),
    Key("k K", (("k", "knob('top_k', 0)"), ("K", "knob('top_k', 1)")), "top-k",
        "top-k down / up: 1 2 3 5 10 20 40 100 1000 (below the vocabulary size), then off"),
    Key("p P", (("p", "knob('top_p', 0)"), ("P", "knob('top_p', 1)")), "top-p", "top-p -0.05 / +0.05 (1 is off)"),
    Key("m M", (("m", "knob('min_p', 0)"), ("M", "knob('min_p', 1)")), "min-p",
        "min-p down / up: 0 (off) .01 .02 .05 .1 .15 .2 .3 .5 .75"),
    Key("r", (("r", "reset"),), "reset", "reset the strategy to where it started"),
    Key("a", (("a", "auto"),), "auto", "sample 20 tokens one by one (a, escape or any step key stops it)"),
    Key("b", (("b", "branches"),), "tree", "the branch tree: each continuation, its log-probability and perplexity; "
        "enter switches"),
    Key("s", (("s", "save"),), "save", "save the tree and the current text as JSON (--save FILE)"),
    Key("?", (("question_mark", "help"),), "help", "the key table and how to read the screen"),
    Key("q", (("q", "quit"),), "quit", "quit (the current text is printed on stdout)"),
)


def _p(prob: float) -> str:
    return f"{prob:.4f}"


def token_cell(token: str, width: int = TOKEN_WIDTH) -> str:
    """A token quoted, whitespace escaped, cut to `width` characters (with … where cut)."""
    shown = f"{quoted(token)}"
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def columns(width: int) -> tuple[int, int]:
    """(token width, each bar's width) for a distribution table `width` characters wide: the bars go first
    when it narrows (0: none), then the token column shrinks."""
    bars = (width - NUMBERS_WIDTH - TOKEN_WIDTH - 2) // 2
    if bars >= 3:
        return TOKEN_WIDTH, bars
    return max(6, min(TOKEN_WIDTH, width - NUMBERS_WIDTH)), 0


def distribution_table(position: Position, selected: int, width: int, rows: int | None = None) -> Text:
    """The candidates ranked by the raw model: rank, token, model probability and bar, strategy probability
    and bar, rank under the strategy. A token the strategy filters out is struck through, its strategy cells
    "—"; the selected row is marked › and reversed. The bars of both columns share one scale, from 0 to the
    largest probability shown (the header says it). `rows` limits the rows."""
    tokens, bars = columns(width)
    gap = " " if bars else ""
    shown = position.candidates if rows is None else position.candidates[: max(0, rows)]
    # both columns' bars on one scale, the largest probability shown filling a bar
    scale = max((max(c.raw_prob, c.strategy_prob) for c in shown), default=1.0) or 1.0
    legend = f"0…{scale:.3g}" if len(f"0…{scale:.3g}") <= bars else ""
    text = Text(no_wrap=True, overflow="crop")
    header = (f"{'rank':>4} {'token':<{tokens}} {'model':>6}{gap}{legend:<{bars}} {'strat.':>6}{gap}{legend:<{bars}} "
              f"{'#':>3}")
    text.append(header + "\n", style="bold")
    for i, c in enumerate(shown):
        line = Text(no_wrap=True)
        line.append(f"{'›' if i == selected else ' '}{c.raw_rank:>3} ")
        line.append(f"{token_cell(c.token, tokens):<{tokens}}", style="" if c.kept else "strike dim")
        line.append(f" {_p(c.raw_prob):>6}{gap}")
        line.append(f"{bar(c.raw_prob / scale, bars) if bars else '':<{bars}}", style=RAW_STYLE)
        if c.kept:
            line.append(f" {_p(c.strategy_prob):>6}{gap}")
            line.append(f"{bar(c.strategy_prob / scale, bars) if bars else '':<{bars}}", style=STRATEGY_STYLE)
            line.append(f" {c.strategy_rank:>3}")
        else:
            line.append(f" {'—':>6}{gap}{'':<{bars}} {'—':>3}", style="dim")
        if i == selected:
            line.stylize("reverse")
        text.append_text(line)
        text.append("\n")
    text.rstrip()
    return text


def statistics(position: Position) -> Text:
    """Entropy of both distributions (nats, bits, exp(H) effective candidates), the kept count, the raw mass
    the strategy removes and KL(strategy || model); a top-N backend's numbers say so."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{'':<9}{'H nats':>7}{'H bits':>8}{'exp(H)':>8}{'kept':>7}{'removed':>9}{'KL s‖m':>9}\n", style="bold")
    text.append(f"{'model':<9}", style=f"bold {RAW_STYLE}")
    vocab = position.vocab_size if position.distribution == "full" else position.distribution
    text.append(f"{position.entropy_nats:>7.3f}{position.entropy_bits:>8.3f}{position.effective:>8.1f}{vocab:>7}\n")
    text.append(f"{'strategy':<9}", style=f"bold {STRATEGY_STYLE}")
    text.append(f"{position.strategy_entropy_nats:>7.3f}{position.strategy_entropy_bits:>8.3f}"
                f"{position.strategy_effective:>8.1f}{position.kept:>7}{_p(position.mass_removed):>9}"
                f"{position.kl_nats:>9.4f}")
    if position.distribution != "full":
        text.append(f"\n{position.distribution} only: entropies and KL are over those tokens", style="yellow")
    for flag in position.flags:
        text.append(f"\n⚠ {flag}", style="yellow")
    if position.outside:
        text.append("\nthe strategy also keeps: " + ", ".join(f"{quoted(t)} {_p(p)}" for t, p in position.outside),
                    style="dim")
    return text


def text_view(segments: Sequence[Segment], ended: str | None = None) -> Text:
    """The prompt (bold), each generated token coloured by its raw probability (a newline token shows as ↵),
    the cursor ▌ after the current token, and the continuation backed out of, dim."""
    text = Text()
    cursor_done = False
    for i, segment in enumerate(segments):
        if segment.ghost and not cursor_done:
            text.append("▌", style="bold reverse")
            cursor_done = True
        piece = segment.text.replace("\n", "↵\n")
        if segment.prob is None:
            text.append(piece, style="bold")
        elif segment.ghost:
            text.append(piece, style="dim italic")
        else:
            last = i == len(segments) - 1 or segments[i + 1].ghost
            text.append(piece, style=prob_style(segment.prob) + (" underline" if last else ""))
    if not cursor_done:
        text.append("▌", style="bold reverse")
    if ended == "eos":
        text.append(" [end of text]", style="dim")
    elif ended == "context":
        text.append(" [context full]", style="dim")
    return text


def colour_key() -> Text:
    text = Text("token colour = its model probability: ", style="dim")
    floors = [floor for floor, _ in PROB_COLOURS]
    for (floor, colour), upper in zip(PROB_COLOURS, [1.0, *floors[:-1]], strict=True):
        text.append(f"{floor:g}–{upper:g} ", style=colour)
    return text


def strategy_panel(chain: str, settings: dict, initial: dict, seed: int, draws: int) -> Text:
    """The chain as it prints, each adjustable setting with its keys, the other settings, and the seed."""
    text = Text()
    text.append(chain + "\n", style="bold")
    greedy = settings.get("temperature") == 0
    keys = {"temperature": "t T 0", "top_k": "k K", "top_p": "p P", "min_p": "m M"}
    for knob in KNOBS:
        value = knob_value(settings, knob)
        shown = ("1" if knob == "temperature" else "off") if value is None else f"{value:g}"
        if knob == "temperature" and value == 0:
            shown = "0 (greedy)"
        waiting = greedy and knob != "temperature" and value is not None
        text.append(f"{knob.replace('_', '-'):<12}", style="dim" if waiting else "")
        text.append(f"{shown:<11}", style="dim" if waiting else "bold")
        text.append(f"{keys[knob]}\n", style="dim")
    others = {k: v for k, v in settings.items() if k not in KNOBS}
    if others:
        text.append("also: " + ", ".join(f"{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in others.items()) + "\n", style="dim")
    if greedy:
        text.append("greedy: the truncations wait for a temperature > 0\n", style="dim")
    text.append(f"seed {seed} · draws {draws}", style="dim")
    if settings != initial:
        text.append(" · r resets", style="dim")
    return text


def branch_line(branch: Branch, width: int) -> Text:
    """One branch in the tree view: number, length, log-probability, perplexity, where it forks, its text."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("● " if branch.current else "  ", style="bold green")
    ppl = f"{branch.perplexity:.2f}" if branch.perplexity is not None else "—"
    text.append(f"#{branch.number:<3} {branch.tokens:>4} tok  log p {branch.logprob:>9.3f}  ppl {ppl:>7}  ")
    fork = f"forks at {branch.shared}" if branch.number > 1 else "first"
    text.append(f"{fork:<13}", style="dim")
    body = printable(branch.text)
    room = max(8, width - text.cell_len)
    if len(body) > room:
        body = "…" + body[-(room - 1):]
    text.append(body)
    return text


# The footer's keys, most wanted first; the strategy's keys come after them (the strategy panel lists those
# beside each setting), and only where the width has room.
FOOTER_FIRST = ("sample", "argmax", "select", "take", "undo", "auto", "tree", "save", "help", "quit")


def footer(width: int) -> Text:
    """The keys that fit in `width`, most wanted first, shown in the key table's order."""
    glyphs = {"space": "␣", "backspace": "⌫", "enter": "⏎"}
    items = {k.label: f"{glyphs.get(k.shown, k.shown.replace(' ', '/'))} {k.label}" for k in KEYS}
    order = [*FOOTER_FIRST, *(label for label in items if label not in FOOTER_FIRST)]
    chosen, used = set(), -2
    for label in order:
        if used + 2 + len(items[label]) > width:
            continue
        chosen.add(label)
        used += 2 + len(items[label])
    text = Text(no_wrap=True, overflow="crop")
    for label, item in items.items():
        if label in chosen:
            keys, _, name = item.rpartition(" ")
            if text:
                text.append("  ")
            text.append(keys, style="bold")
            text.append(f" {name}")
    return text


def help_table() -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key in KEYS:
        table.add_row(key.shown, key.help)
    return table


def key_rows() -> list[tuple[str, str]]:
    """(keys, what they do), for docs/explore.md's table."""
    return [(key.shown, key.help) for key in KEYS]
