"""The terminal views of a run: the live panel, the per-step table and the summary lines (`TerminalSink`). They
compute nothing about the model; each view is a pure function of the state accumulated from the events. The
payload sinks are in views/sinks.py, `score`'s views in views/score_view.py."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from samplecli.engine.events import Alternative, Done, Step, cut_short
from samplecli.engine.measure import NOT_RETURNED
from samplecli.views import speculative
from samplecli.views.fit import BAR, TEXT, Col, dropped_note, fit_table, flow
from samplecli.views.sinks import Sink
from samplecli.views.tokens import quoted

if TYPE_CHECKING:
    pass

# Chosen-token probability under the raw model -> colour (green: the model was sure; red: a long shot).
PROB_COLOURS = ((0.5, "green"), (0.2, "yellow"), (0.05, "dark_orange"), (0.0, "red"))


def prob_style(prob: float) -> str:
    return next((colour for floor, colour in PROB_COLOURS if prob >= floor), "")  # NaN: not returned


def num(value: float, spec: str = ".3f") -> str:
    """A number as shown, or "–" where it is not known (NaN: a remote engine did not return it)."""
    return "–" if value != value else format(value, spec)


def print_flowed(console: Console, parts: list[str], separator: str = " · ", style: str = "dim") -> None:
    """One line of `parts` (a header, a summary): on a terminal laid out to its width breaking only between parts
    (`flow`), elsewhere one line whatever its length, so a log or a pipe reads one record per line."""
    if console.is_terminal:
        console.print(flow(parts, console.width, separator, style), highlight=False, overflow="fold")
    else:
        console.print(Text(separator.join(parts), style=style), highlight=False, soft_wrap=True)


def header_parts(model: str, chain: str, seed: int | None = None) -> list[str]:
    """A run's header ("bundled · logits -> top-p(0.95) -> sample · seed 1") as parts to flow with " " (no seed
    where the run draws nothing)."""
    parts = [f"{model} ·", *chain_parts(chain)]
    if seed is not None:
        parts[-1] += " ·"
        parts.append(f"seed {seed}")
    return parts


def chain_parts(chain: str) -> list[str]:
    """A printed chain's elements, each but the last ending in " ->", to be flowed with a " " separator."""
    elements = chain.split(" -> ")
    return [element + " ->" for element in elements[:-1]] + elements[-1:]


@dataclass
class RunState:
    """What the terminal views show, accumulated from the events. Every step is kept only for the per-step table
    (`keep_steps`); the summaries need each sample's entropy sums, so a run of many samples holds its texts and
    sums, not its steps."""

    texts: dict[int, Text] = field(default_factory=dict)
    last: Step | None = None
    steps: list[Step] = field(default_factory=list)
    dones: list[Done] = field(default_factory=list)
    keep_steps: bool = True
    entropy: dict[int, list[float]] = field(default_factory=dict)  # sample: [sum, count, strategy sum, count]
    # each sample's tokens and their log-probabilities, for the summary of one a signal cuts short
    tokens: dict[int, tuple[list[int], list[float | None]]] = field(default_factory=dict)
    # each sample's sums of the raw entropy's bounds where a top-N answer gives only an interval: [low, high, count]
    bounds: dict[int, list[float]] = field(default_factory=dict)
    unreturned: dict[int, int] = field(default_factory=dict)  # each sample's tokens the engine gave no numbers for
    # under a constraint, each sample's [total cost in nats, the worst step's cost, that step, steps counted]
    costs: dict[int, list[float]] = field(default_factory=dict)

    def add(self, step: Step) -> None:
        self.texts.setdefault(step.sample, Text()).append(step.text, style=prob_style(step.prob))
        ids, logprobs = self.tokens.setdefault(step.sample, ([], []))
        ids.append(step.token_id)
        logprobs.append(step.logprob)
        self.last = step
        if self.keep_steps:
            self.steps.append(step)
        sums = self.entropy.setdefault(step.sample, [0.0, 0, 0.0, 0])
        if step.distribution == NOT_RETURNED:
            self.unreturned[step.sample] = self.unreturned.get(step.sample, 0) + 1
        if step.entropy_bounds is not None:
            interval = self.bounds.setdefault(step.sample, [0.0, 0.0, 0])
            interval[0] += step.entropy_bounds[0]
            interval[1] += step.entropy_bounds[1]
            interval[2] += 1
        if step.constraint is not None:
            costs = self.costs.setdefault(step.sample, [0.0, -1.0, -1, 0])
            costs[0] += step.constraint.cost
            costs[3] += 1
            if step.constraint.cost > costs[1]:
                costs[1], costs[2] = step.constraint.cost, step.step
        if math.isfinite(step.entropy):
            sums[0] += step.entropy
            sums[1] += 1
        if math.isfinite(step.sampled_entropy):
            sums[2] += step.sampled_entropy
            sums[3] += 1


BAR_CELLS = 20


def prob_bar(model: float, strategy: float) -> Text:
    """Both probabilities in one bar of BAR_CELLS cells: `█` up to the strategy's, `░` on to the model's where the
    model's is larger (a token the strategy cut or flattened); either may be unknown (NaN) over a remote engine."""
    solid = round(strategy * BAR_CELLS) if strategy == strategy else 0
    shade = max(round(model * BAR_CELLS) - solid, 0) if model == model else 0
    if solid + shade == 0:
        return Text("·", style="dim")
    return Text.assemble(("█" * solid, prob_style(model)), ("░" * shade, "dim"))


def alternatives_table(step: Step, width: int = 100, rows: int | None = None) -> Table:
    """The current step's most probable tokens (the first `rows`, the chosen one always among them): their
    probability under the model and the strategy, and a bar of both."""
    columns = [Col("token", kind=TEXT, justify="left"), Col("p model"), Col("p strategy"),
               Col("█ strategy ░ model", kind=BAR, justify="left")]
    shown = list(step.top) if rows is None else list(step.top[:rows])
    if shown and all(alt.token_id != step.token_id for alt in shown):  # a long shot was drawn: its row comes last
        shown[-1] = Alternative(step.token_id, step.token, step.prob, step.logprob, step.sampled_prob)
    cells = []
    for alt in shown:
        mark = "▶ " if alt.token_id == step.token_id else "  "
        cells.append([Text(mark + quoted(alt.token), style="bold" if mark.strip() else ""),
                      num(alt.prob), num(alt.sampled_prob), prob_bar(alt.prob, alt.sampled_prob)])
    return fit_table(columns, cells, width, box=None, pad_edge=False).table


def tail(text: Text, lines: int) -> Text:
    """The last `lines` lines of `text` (the live panel keeps the newest text in view)."""
    parts = text.split("\n", allow_blank=True)
    return Text("\n").join(parts[-lines:]) if len(parts) > lines else text


def screen_tail(text: Text, console: Console, width: int, lines: int) -> Text:
    """The last `lines` lines of `text` as a terminal `width` cells wide shows them (a paragraph wraps onto many):
    the newest text, never cut to "...". Only the end is wrapped, so a long run costs the same per redraw."""
    if lines <= 0:
        return Text("")
    text = tail(text, lines)
    budget = lines * width * 2  # more characters than `lines` wrapped lines can hold
    if len(text) > budget:
        start = len(text) - budget
        space = text.plain.find(" ", start)  # from a word's start, so the first kept line is not half a word
        text = text[space + 1 if 0 <= space < start + width else start:]
    wrapped = text.wrap(console, width, overflow="fold")
    return Text("\n").join(wrapped[-lines:])


def model_entropy(step: Step) -> str:
    """The raw model's entropy as known: exact ("2.31"), or an interval from a top-N backend ("∈ [2.10, 2.64]")."""
    if step.entropy_bounds is not None:
        low, high = step.entropy_bounds
        return f"∈ [{low:.2f}, {high:.2f}]"
    return num(step.entropy, ".2f")


def kept(step: Step) -> str:
    return str(step.kept) if step.kept >= 0 else "–"


def sample_label(sample: int, num_samples: int) -> str:
    """How the terminal names a sample of several: "sample 2/3" (JSONL's `sample` 1)."""
    return f"sample {sample + 1}/{num_samples}"


def labelled_texts(texts: dict[int, Text], num_samples: int) -> Text:
    """The samples' texts one after another; with several, each under a "── sample 2/3 ──" line."""
    if num_samples <= 1:
        return Text("\n\n").join(texts[i] for i in sorted(texts))
    return Text("\n\n").join(Text(f"── {sample_label(i, num_samples)} ──\n", style="dim") + texts[i]
                              for i in sorted(texts))


MIN_TEXT_LINES = 3  # the text the panel keeps in view when the terminal is short: alternatives give way first


def step_panel(step: Step | None, strategy: str, width: int, rows: int | None, num_samples: int = 1) -> Panel:
    """The panel under the text: the chain (as its title where it fits, else flowed inside), the step's
    alternatives (the first `rows`), and a caption whose numbers are never cut at the panel's edge."""
    title = strategy if step is None or num_samples <= 1 else f"{strategy} · {sample_label(step.sample, num_samples)}"
    inner = width - 4
    body: list[RenderableType] = []
    if len(title) > width - 6:  # Rich would cut a long title with "…": the chain goes inside, whole
        body.append(flow(chain_parts(title), inner, " ", style="bold"))
        title = None
    if step is None:
        body.append(Text("prefill..."))
    else:
        if rows is None or rows > 0:
            body.append(alternatives_table(step, inner, rows))
        eq = "=" if step.entropy_bounds is None else " "
        body.append(flow([f"step {step.step}", f"token {quoted(step.token)}", f"p={num(step.prob)}",
                          f"H(model){eq}{model_entropy(step)}", f"H(strategy)={num(step.sampled_entropy, '.2f')} nats",
                          f"kept {kept(step)}", *constraint_parts(step), *speculative.caption_parts(step)], inner,
                         "  ", style="dim"))
    return Panel(Group(*body), title=title, title_align="left", width=width)


def constraint_parts(step: Step) -> list[str]:
    """A step's constraint as the panel shows it: the tokens its mask allowed, the mass inside, the cost."""
    c = step.constraint
    if c is None:
        return []
    same = "" if c.unmasked_same is None else " (same without it)" if c.unmasked_same else " (changed the token)"
    return [f"mask allows {c.allowed}", f"mass {c.mass:.3g}", f"cost {c.cost:.2f} nats{same}"]


def live_view(state: RunState, strategy: str, console: Console, num_samples: int = 1) -> RenderableType:
    """The live panel at the terminal's size: the step panel at the bottom, the newest text filling every line
    above it (wrapped as the terminal wraps it, so the whole view always fits and never freezes on "...").
    On a short terminal the alternatives give way (fewer rows, then none) before the text goes under
    MIN_TEXT_LINES. With several samples, the panel's title names the sample the step belongs to."""
    width, height = console.width, console.height - 1  # the line the cursor rests on after the view
    step = state.last
    options = console.options.update(width=width)
    rows = None if step is None else len(step.top)
    panel = step_panel(step, strategy, width, rows, num_samples)
    panel_lines = len(console.render_lines(panel, options, pad=False))
    while rows and height - panel_lines < MIN_TEXT_LINES:
        rows -= 1
        panel = step_panel(step, strategy, width, rows, num_samples)
        panel_lines = len(console.render_lines(panel, options, pad=False))
    text = labelled_texts(state.texts, num_samples) if state.texts else Text("")
    return Group(screen_tail(text, console, width, height - panel_lines), panel)


STEP_COLUMNS = (Col("sample"), Col("step"), Col("token", kind=TEXT, justify="left", fold_to=6), Col("p model"),
                Col("p strategy", drop=2), Col("H model"), Col("H strategy", drop=3), Col("kept", drop=1),
                Col("top alternatives", kind=TEXT, justify="left", drop=4, fold_to=16))


# under a constraint: the tokens its mask allowed, the mass inside, its cost in nats (-log mass)
CONSTRAINT_COLUMNS = (Col("allowed", drop=1), Col("mass in", drop=1), Col("cost"))


def steps_table(steps: list[Step], width: int = 100) -> RenderableType:
    """--view steps: one row per generated token; on a terminal too narrow for the table's numbers, one line
    per token instead (a column cut to "0.1…" would show a wrong number)."""
    rows = []
    constrained = any(s.constraint is not None for s in steps)  # the mask's columns, where a constraint ran
    columns = (*STEP_COLUMNS[:-1], *CONSTRAINT_COLUMNS, STEP_COLUMNS[-1]) if constrained else STEP_COLUMNS
    for s in steps:
        top = "  ".join(f"{quoted(a.token)} {num(a.prob if a.prob == a.prob else a.sampled_prob, '.2f')}"
                        for a in s.top[:3])
        mask = [] if not constrained else ["–", "–", "–"] if s.constraint is None else \
            [str(s.constraint.allowed), f"{s.constraint.mass:.2g}", f"{s.constraint.cost:.2f}"]
        rows.append([str(s.sample), str(s.step), Text(quoted(s.token), style=prob_style(s.prob)),
                     num(s.prob), num(s.sampled_prob), model_entropy(s), num(s.sampled_entropy, ".2f"),
                     kept(s), *mask, top])
    fitted = fit_table(columns, rows, width, title="steps")
    if fitted.fits and len(fitted.dropped) <= 2:
        note = dropped_note(fitted.dropped, width)
        return Group(fitted.table, note) if note is not None else fitted.table
    lines = Text("steps\n", style="bold")
    for s in steps:
        lines.append(f"sample {s.sample} step {s.step} ", style="dim")
        lines.append(f"{quoted(s.token)}", style=prob_style(s.prob))
        lines.append(f" p {num(s.prob)} (strategy {num(s.sampled_prob)}) H {model_entropy(s)} "
                     f"(strategy {num(s.sampled_entropy, '.2f')}) kept {kept(s)}\n")
    lines.rstrip()
    return lines


def summary_line(done: Done, steps: list[Step] | RunState, num_samples: int = 1) -> str:
    """One sample's summary, from its steps or from a RunState's sums."""
    return " · ".join(summary_parts(done, steps, num_samples))


def summary_parts(done: Done, steps: list[Step] | RunState, num_samples: int = 1) -> list[str]:
    """The parts of one sample's summary line (a terminal flows them: `print_flowed`)."""
    state = steps if isinstance(steps, RunState) else None
    if state is None:
        state = RunState()
        for step in steps:
            state.add(step)
    total, count, sampled_total, sampled_count = state.entropy.get(done.sample, [0.0, 0, 0.0, 0])
    parts = [f"{done.n_tokens} tokens", f"{done.tokens_per_second:.1f} tok/s"]
    if count:
        parts.append(f"mean entropy {total / count:.2f} nats"
                     + (f" (strategy {sampled_total / sampled_count:.2f})" if sampled_count else ""))
    elif state.bounds.get(done.sample, [0, 0, 0])[2]:  # a top-N answer: the raw entropy's interval, said so
        low, high, known = state.bounds[done.sample]
        parts.append(f"mean entropy ∈ [{low / known:.2f}, {high / known:.2f}] nats (top-N bounds)"
                     + (f" (strategy {sampled_total / sampled_count:.2f})" if sampled_count else ""))
    elif sampled_count:  # a remote engine that returned only the strategy's probabilities
        parts.append(f"mean strategy entropy {sampled_total / sampled_count:.2f} nats")
    if math.isfinite(done.logprob_sum) or done.n_tokens == 0:
        parts.append(f"logprob {done.logprob_sum:.2f}")
    if done.perplexity is not None:
        parts.append(f"perplexity {done.perplexity:.2f}")
    if state.unreturned.get(done.sample):  # said once per sample, with the numbers it leaves unknown
        count = state.unreturned[done.sample]
        parts.append(f"{count} token{'s' if count > 1 else ''} without probabilities (not returned by the engine: "
                     "inside a UTF-8 character)")
    if done.sample in state.costs:  # what the constraint's mask cost the model's distribution, in total and at worst
        total_cost, worst, at, _ = state.costs[done.sample]
        parts.append(f"constraint cost {total_cost:.2f} nats (worst {worst:.2f} at step {int(at)})")
    parts += speculative.summary_parts(done)
    parts.append(f"finish: {done.finish_reason}" + (" (the mask left none of the tokens the chain before it kept)"
                                                    if done.finish_reason == "constraint" else ""))
    samples = max(num_samples, len(state.entropy))
    if done.sample or samples > 1:
        parts[0] = f"{sample_label(done.sample, samples)}: {parts[0]}"
    return parts


class ThrottledLive:
    """A transient Rich Live panel on `console`, redrawn at most every `interval` seconds (or when forced):
    tokens can arrive faster than a terminal needs redrawing. Inert when the console is not a terminal.

    The panel never takes over `sys.stdout`/`sys.stderr` (`redirect_*=False`): the payload written to stdout
    while it runs goes to stdout, whatever order the views and the sinks write in. `generate` and `compare`
    both draw through this one class."""

    def __init__(self, console: Console, view, interval: float = 0.05) -> None:
        self.view, self.interval, self.last = view, interval, 0.0
        self.live = Live(view(), console=console, auto_refresh=False, transient=True, redirect_stdout=False,
                         redirect_stderr=False) if console.is_terminal else None
        if self.live is not None:
            self.live.start()

    @property
    def active(self) -> bool:
        return self.live is not None

    def refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.live is not None and (force or now - self.last > self.interval):
            self.live.update(self.view(), refresh=True)
            self.last = now

    def stop(self) -> None:
        """The last frame shows the last event, however fast they came, and the view goes."""
        if self.live is not None:
            self.refresh(force=True)
            self.live.stop()


class TerminalSink(Sink):
    """The terminal views on stderr: a live panel (or a per-step table), then one summary line per sample.

    With `show_text`, the coloured text also goes to `out` (stdout on a terminal) when generation ends,
    having streamed inside the live panel.
    """

    def __init__(self, err: Console, out: Console | None, strategy: str, view: str, summary: bool,
                 num_samples: int = 1) -> None:
        self.err, self.out, self.strategy, self.view, self.summary = err, out, strategy, view, summary
        self.num_samples = num_samples
        self.state = RunState(keep_steps=view == "steps")
        self.started = time.perf_counter()
        self.live = ThrottledLive(err, lambda: live_view(self.state, strategy, err, num_samples)) \
            if view == "live" else None

    def step(self, step: Step) -> None:
        self.state.add(step)
        if self.live is not None and self.live.active:
            self.live.refresh()
        elif self.out is not None and self.num_samples == 1:  # several samples interleave: shown at the end
            self.out.print(Text(step.text, style=prob_style(step.prob)), end="")

    def done(self, done: Done) -> None:
        self.state.dones.append(done)

    def close(self, interrupted: bool = False) -> None:
        live = self.live is not None and self.live.active
        if live:
            self.live.stop()
        if self.out is not None and (live or self.num_samples > 1):
            self.out.print(labelled_texts(self.state.texts, self.num_samples))
        elif self.out is not None:
            self.out.print()
        if self.view == "steps":
            self.err.print(steps_table(self.state.steps, self.err.width))
            for parts in speculative.round_lines(self.state.steps):  # a speculative run: each round's verdicts
                print_flowed(self.err, parts, "  ")
        if self.summary:
            dones = self.state.dones
            if interrupted:  # the samples a signal cut short are summed up too, as far as they got
                finished = {d.sample for d in dones}
                seconds = time.perf_counter() - self.started
                dones = dones + [cut_short(sample, ids, self.state.texts[sample].plain, logprobs, seconds,
                                           self.strategy, 0) for sample, (ids, logprobs) in self.state.tokens.items()
                                 if sample not in finished]
            for done in sorted(dones, key=lambda d: d.sample):
                print_flowed(self.err, summary_parts(done, self.state, self.num_samples))


