"""Renderers for `samplecli inspect`: Rich tables and probability bars (on a terminal; the same layout as
plain text without colour codes when piped), and one strict JSON document with every number.

Pure functions of the Report's plain data: they format numbers and draw bars, and compute nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.text import Text

from samplecli.analysis.inspect_report import Draws, OrderDiff, Report, Stage, Sweep, TemperatureSweep
from samplecli.stats import LN2
from samplecli.views.fit import BAR, TEXT, Col, dropped_note, fit_table, split_table
from samplecli.views.tokens import quoted

BAR_WIDTH = 24
EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"
TOKEN_COLUMNS = 5  # tokens shown as columns of the temperature table
DRAW_TOKEN_COLUMNS = 3  # ... and of the draws table, which also has "all others"


# --- JSON -----------------------------------------------------------------------------------------------------


def _strict(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats become null (none are expected; strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


# only from a top-N backend, as a step's in generate's JSONL (docs/output.md)
TOP_N_ONLY = ("entropy_bounds", "tail_mass", "engine")


def inspect_document(report: Report) -> dict[str, Any]:
    """`inspect --format json`: the whole report, every number in it (null where a top-N backend leaves it
    unknown: the raw stage's entropy and KL, with `entropy_bounds` and `tail_mass` beside them)."""
    document = {"type": "inspect", **_strict(asdict(report))}
    if report.distribution == "full":
        for key in TOP_N_ONLY:
            del document[key]
    return document


def dumps_document(report: Report) -> str:
    return json.dumps(inspect_document(report), ensure_ascii=False, allow_nan=False, indent=1)


# --- pieces ---------------------------------------------------------------------------------------------------


def bar(prob: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar for a probability on an absolute scale (the full width is 1), in eighths of a
    character; any non-zero probability shows at least a sliver."""
    eighths = round(prob * width * 8)
    if prob > 0 and eighths == 0:
        eighths = 1
    full, part = divmod(min(eighths, width * 8), 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def sparkline(values: list[float], top: float) -> str:
    """One character per value, on the scale 0 .. top."""
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, max(0, round(v / top * (len(SPARKS) - 1))))] for v in values)


def token_text(token: str) -> Text:
    """A token quoted, with whitespace and control characters escaped, never read as Rich markup."""
    return Text(quoted(token))


def _p(prob: float) -> str:
    return f"{prob:.4f}" if prob >= 1e-4 or prob == 0 else f"{prob:.1e}"


def _nats(value: float | None, digits: int = 3) -> str:
    """A number that a top-N backend can leave unknown: "—" then."""
    return "—" if value is None else f"{value:.{digits}f}"


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def top_n_line(report: Report) -> Text:
    """The one line that says a top-N backend's other tokens count as filtered, and what is then an interval."""
    low, high = report.entropy_bounds
    n = report.stages[0].kept
    return Text(f"{report.distribution} from {report.engine}: the other tokens count as filtered, so every stage, "
                f"temperature and draw is over these {n}, renormalised; raw entropy ∈ {_interval(low, high)} nats, "
                f"tail mass {report.tail_mass:.4f}", style="yellow")


def _cell(prob: float, rank: int | None) -> Text:
    if rank is None:
        return Text("—", style="dim")
    return Text(f"{_p(prob)} #{rank}")


def _fit(columns: list[Col], rows: list[list[Any]], width: int) -> list[RenderableType]:
    """A section's table fitted to `width` (numbers whole; the columns that do not fit dropped, and named)."""
    fitted = fit_table(columns, rows, width, box=box.SIMPLE_HEAD, pad_edge=False)
    note = dropped_note(fitted.dropped, width)
    return [fitted.table] + ([note] if note is not None else [])


def _split(key: list[Col], columns: list[Col], rows: list[list[Any]], width: int) -> list[RenderableType]:
    """A table with one column per stage or order, continued in a second table when `width` is too narrow."""
    return list(split_table(key, columns, rows, width, box=box.SIMPLE_HEAD, pad_edge=False))


def _title(text: str) -> Text:
    """A section title on its own line (a table title would wrap to the table's width)."""
    return Text(text, style="bold")


def _note(text: str) -> Text:
    """A line under a table (a caption would wrap to the table's width)."""
    return Text(text, style="dim")


# --- sections -------------------------------------------------------------------------------------------------


def header(report: Report) -> Text:
    position = report.position
    text = Text(f"{report.model} · V = {report.vocab_size} tokens · seed {report.seed}\n", style="dim")
    if position.step == 0:
        text.append(f"the next token after the prompt ({position.prompt_tokens} tokens): ")
        text.append(f"{quoted(report.prompt)}", style="bold")
    else:
        text.append(f"step {position.step} of {position.generated_by} (seed {report.seed}): ")
        text.append(f"{quoted(report.prompt)}", style="bold")
        text.append(" + ")
        text.append(f"{quoted(position.generated_text)}", style="bold cyan")
    if position.drawn_token_id is not None:
        text.append(f"\ndrawn at step {position.step} by that generation: ")
        text.append(f"{quoted(position.drawn_token)}", style="bold")
        text.append(f" (id {position.drawn_token_id}")
        rank = next((i for i, t in enumerate(report.top, 1) if t.token_id == position.drawn_token_id), None)
        text.append(f", rank {rank} under the raw model)" if rank is not None else
                    f", not in the raw model's top {len(report.top)})")
    if report.distribution != "full":
        text.append("\n")
        text.append_text(top_n_line(report))
    return text


def raw_section(report: Report, width: int = 100) -> Group:
    raw = report.stages[0]
    columns = [Col("rank"), Col("token", kind=TEXT, justify="left"), Col("id"), Col("logit"), Col("p"),
               Col("", kind=BAR, justify="left")]
    rows = [[str(rank), token_text(token.token), str(token.token_id), f"{token.logit:.3f}", _p(token.prob),
             Text(bar(token.prob), style="green")] for token, rank in zip(report.top, raw.ranks, strict=True)]
    if report.entropy_bounds is None:
        caption = Text(f"entropy {raw.entropy_nats:.3f} nats ({raw.entropy_bits:.3f} bits) · "
                       f"exp(H) = {math.exp(raw.entropy_nats):.1f} effective candidates · p(argmax) {_p(raw.p_max)}")
    else:  # a top-N backend: the probabilities are the model's own, and the entropy only bounded
        low, high = report.entropy_bounds
        caption = Text(f"entropy ∈ {_interval(low, high)} nats ({_interval(low / LN2, high / LN2)} bits) · exp(H) ∈ "
                       f"{_interval(math.exp(low), math.exp(high), 1)} effective candidates · p(argmax) "
                       f"{_p(raw.p_max)} · the top {raw.kept} hold {raw.kept_mass_raw:.4f} of the mass")
    title = _title(f"next-token distribution, raw model (T = 1), top {len(report.top)}")
    return Group(title, *_fit(columns, rows, width), caption)


def trace_section(report: Report, width: int = 100) -> Group:
    stages = report.stages
    columns = [Col("stage", kind=TEXT, justify="left", fold_to=12), Col("kept"), Col("mass removed"),
               Col("raw mass kept"), Col("H nats"), Col("H bits", drop=1), Col("KL‖raw")]
    rows = [[Text(stage.name), str(stage.kept), f"{stage.mass_removed:.4f}", f"{stage.kept_mass_raw:.4f}",
             *_stage_entropy(report, stage), _nats(stage.kl_from_raw_nats, 4)] for stage in stages]
    key = [Col("token", kind=TEXT, justify="left"), Col("id")]
    per_stage = [Col(Text("raw" if stage.kind == "raw" else stage.name)) for stage in stages]
    token_rows = [[token_text(token.token), str(token.token_id), *(_cell(s.probs[i], s.ranks[i]) for s in stages),
                   Text(bar(stages[-1].probs[i]), style="green")] for i, token in enumerate(report.top)]
    notes = [_stage_notes(stage) for stage in stages if stage.flags or stage.outside_top]
    return Group(_title(f"stage by stage: {report.chain}"), *_fit(columns, rows, width),
                 _note("mass removed: of the stage before · H: entropy · KL‖raw: KL(stage ‖ raw model) in nats"),
                 *_split(key, [*per_stage, Col("final", kind=BAR, justify="left")], token_rows, width),
                 _note("p #rank at each stage (rank 1: the most probable; —: removed)"), *notes)


def _stage_entropy(report: Report, stage: Stage) -> list[str]:
    """H in nats and bits; the raw stage of a top-N backend has only the report's interval."""
    if stage.entropy_nats is None and report.entropy_bounds is not None:
        low, high = report.entropy_bounds
        return [_interval(low, high), _interval(low / LN2, high / LN2)]
    return [_nats(stage.entropy_nats), _nats(stage.entropy_bits)]


def _stage_notes(stage: Stage) -> Text:
    text = Text()
    for flag in stage.flags:
        text.append("⚠ ", style="yellow")
        text.append(f"{stage.name}: {flag}\n", style="yellow")
    if stage.outside_top:
        text.append(f"{stage.name}: its own most probable tokens include some outside the raw top: ")
        text.append(", ".join(f"{quoted(t.token)} {_p(t.prob)}" for t in stage.outside_top) + "\n")
    text.rstrip()
    return text


def temperature_section(report: Report, sweep: TemperatureSweep, width: int = 100) -> Group:
    shown = report.top[:TOKEN_COLUMNS]
    columns = [Col("T"), Col("H nats"), Col("H bits", drop=2), Col("exp(H)"), Col("p(argmax)"), Col("kept"),
               *(Col(Text(f"{quoted(token.token)} {token.token_id}"), drop=1) for token in shown)]
    rows = [[f"{row.temperature:g}", f"{row.entropy_nats:.3f}", f"{row.entropy_bits:.3f}",
             f"{row.effective_candidates:.1f}", _p(row.p_argmax), str(row.kept),
             *(_p(p) for p in row.probs[:TOKEN_COLUMNS])] for row in sweep.rows]
    limits = sweep.limits
    spark = sparkline([row.entropy_nats for row in sweep.rows], limits.hot_entropy_nats)
    lines = Text()
    lines.append(f"entropy against T ({sweep.rows[0].temperature:g} → {sweep.rows[-1].temperature:g}): ")
    lines.append(spark, style="cyan")
    # over a top-N backend the strategies see N tokens, not V: the hot limit is uniform over the N
    size, symbol = ((limits.vocab_size, "V") if report.distribution == "full" else (report.stages[0].kept, "N"))
    where = f"V = {size} tokens" if symbol == "V" else f"the top N = {size} tokens (the rest are filtered)"
    lines.append(f"   (scale 0 … log {symbol} = {limits.hot_entropy_nats:.3f} nats)\n")
    lines.append(f"T → 0: one-hot on {quoted(limits.cold_token)} (id {limits.cold_token_id}): p = 1, "
                 "H = 0, greedy decoding\n")
    lines.append(f"T → ∞: uniform over {where}, p = 1/{size} = "
                 f"{_p(limits.hot_prob)} each, H = log {symbol} = {limits.hot_entropy_nats:.3f} nats "
                 f"({limits.hot_entropy_bits:.3f} bits)\n")
    if sweep.truncated:
        lines.append("(these are the limits of temperature alone: the chain's other stages keep the entropy below "
                     f"log {symbol} as T grows)\n", style="dim")
    lines.append("softmax(z / T) keeps the ranking of the tokens at every T; what changes is how flat the "
                 "distribution is, so sampling from it grows more random as T rises.", style="dim")
    chain = _note(f"chain at T = {sweep.rows[-1].temperature:g}: {sweep.rows[-1].chain}")
    return Group(_title("temperature sweep"), *_fit(columns, rows, width), chain, lines)


def draws_section(report: Report, draws: list[Draws], width: int = 100) -> Group:
    """One row per distribution drawn from; the most probable tokens (and all the others together) as
    columns of "expected → observed" frequencies, so each row reads across like the temperature table."""
    title = _title(f"{draws[0].n:,} multinomial draws from each distribution (seeded from {report.seed}): "
                   "expected → observed frequency")
    shown = report.top[:DRAW_TOKEN_COLUMNS]
    columns = [Col("drawn from", kind=TEXT, justify="left", fold_to=12), Col("distinct"), Col("TV"),
               Col("χ² (dof)"), *(Col(Text(f"{quoted(token.token)} {token.token_id}"), drop=1) for token in shown),
               Col("all others")]
    rows = [[Text(d.label), str(d.distinct), f"{d.tv:.4f}", f"{d.chi2:.2f} ({d.dof})",
             *(f"{_p(e)} → {_p(f)}" for e, f in zip(d.expected, d.frequencies[: len(shown)], strict=False)),
             f"{_p(d.other_expected)} → {_p(d.other_frequency)}"] for d in draws]
    note = _note("distinct: tokens drawn at least once · TV (total variation) and χ² (Pearson): observed against "
                 f"expected, over the top {len(draws[0].counts)} tokens and the rest")
    return Group(title, *_fit(columns, rows, width), note)


def sweep_section(sweep: Sweep, width: int = 100) -> Group:
    columns = [Col(sweep.setting), Col("kept"), Col("raw mass kept"), Col("H nats"), Col("", kind=BAR, justify="left")]
    rows = [[f"{point.value:g}" if isinstance(point.value, float) else str(point.value), str(point.kept),
             f"{point.kept_mass_raw:.4f}", f"{point.entropy_nats:.3f}", Text(bar(point.kept_mass_raw), style="green")]
            for point in sweep.points]
    chain = _note(f"chain at {sweep.setting} = {sweep.points[0].value:g}: {sweep.points[0].chain}")
    return Group(_title(f"sweep {sweep.spec}: the kept set against {sweep.setting}"), *_fit(columns, rows, width),
                 chain)


def order_section(report: Report, diff: OrderDiff, width: int = 100) -> Group:
    first, second = diff.first, diff.second
    columns = [Col("order", kind=TEXT, justify="left"), Col("chain", kind=TEXT, justify="left", fold_to=16),
               Col("kept"), Col("raw mass kept"), Col("H nats")]
    rows = [[view.order, Text(view.chain), str(view.kept), f"{view.kept_mass_raw:.4f}", f"{view.entropy_nats:.3f}"]
            for view in (first, second)]
    token_columns = [Col("token", kind=TEXT, justify="left"), Col("id", drop=1), Col("raw"), Col(first.order),
                     Col(second.order), Col("Δp")]
    token_rows = []
    for i, token in enumerate(report.top):
        delta = first.probs[i] - second.probs[i]
        token_rows.append([token_text(token.token), str(token.token_id), _p(token.prob),
                           _cell(first.probs[i], first.ranks[i]), _cell(second.probs[i], second.ranks[i]),
                           Text(f"{delta:+.4f}", style="" if delta == 0 else "yellow")])
    text = Text()
    if diff.identical:
        text.append("both orders give the same distribution\n", style="green")
    else:
        text.append(f"total variation distance {diff.tv:.4f}; largest |Δp| {diff.max_abs_diff:.4f}; "
                    f"the kept sets are {'the same' if diff.same_kept_set else 'different'}\n")
    for view, count, only in ((first, diff.only_first_count, diff.only_first),
                              (second, diff.only_second_count, diff.only_second)):
        if count:
            text.append(f"only {view.order} keeps {count} token{'s' if count > 1 else ''}: ")
            text.append(", ".join(f"{quoted(t.token)} (raw {_p(t.prob)})" for t in only)
                        + (", ..." if count > len(only) else "") + "\n")
    text.rstrip()
    title = _title("order matters: temperature before truncation (transformers) or after it (llama.cpp)")
    return Group(title, *_fit(columns, rows, width), *_fit(token_columns, token_rows, width), text)


def sections(report: Report, width: int = 100) -> list[RenderableType]:
    """Every part of the report, its tables fitted to `width` (no number is ever cut short)."""
    parts: list[RenderableType] = [header(report), raw_section(report, width)]
    if report.chain is not None:
        parts.append(trace_section(report, width))
    if report.temperatures is not None:
        parts.append(temperature_section(report, report.temperatures, width))
    if report.draws:
        parts.append(draws_section(report, report.draws, width))
    parts += [sweep_section(sweep, width) for sweep in report.sweeps]
    if report.order_diff is not None:
        parts.append(order_section(report, report.order_diff, width))
    return parts


def show_report(console: Console, report: Report) -> None:
    """The report as Rich tables (colour on a terminal, plain text otherwise), one blank line between parts."""
    for i, part in enumerate(sections(report, console.width)):
        if i:
            console.print()
        console.print(part, soft_wrap=False)
