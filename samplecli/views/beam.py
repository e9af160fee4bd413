"""Views of beam search: the live hypotheses and the finished list while it runs, the returned beams ranked
with why the search stopped, and the beam tree. Each view is a pure function of the state accumulated
from the events; the sinks only accumulate, refresh and print."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from samplecli.engine.beam import BeamStep, Hypothesis
from samplecli.engine.events import Done, Step
from samplecli.views.fit import TEXT, Col, fit_table
from samplecli.views.records import beam_step_record
from samplecli.views.render import ThrottledLive, prob_style, steps_table
from samplecli.views.sinks import JsonlSink, JsonSink, Sink
from samplecli.views.tokens import printable, quoted

STATUS_STYLE = {"kept": ("✓ kept", "green"), "finished": ("■ finished", "blue"), "pruned": ("✗ pruned", "red")}


@dataclass
class BeamState:
    """What the beam views show: every step of the search, and the returned sequences' events."""

    steps: list[BeamStep] = field(default_factory=list)
    returned: list[Step] = field(default_factory=list)
    dones: list[Done] = field(default_factory=list)

    @property
    def last(self) -> BeamStep | None:
        return self.steps[-1] if self.steps else None

    @property
    def stopped(self) -> str | None:
        return self.last.stopped if self.last is not None else None


def text_tail(text: str, chars: int = 48) -> str:
    """The end of a hypothesis' text, escaped to one line: where it is still changing."""
    shown = printable(text)
    return shown if len(shown) <= chars else "…" + shown[-(chars - 1):]


def hypotheses_table(hypotheses: tuple[Hypothesis, ...] | list[Hypothesis], title: str,
                     groups: bool = False, width: int = 100) -> Table:
    """One row per hypothesis: its node, length, log-prob under the model, normalised score and text."""
    columns = [Col("#"), *([Col("group")] if groups else []), Col("tokens"), Col("log p"), Col("score"),
               Col("end", kind=TEXT, justify="left", fold_to=3),
               Col("text", kind=TEXT, justify="left", fold_to=12, no_wrap=True, drop=1)]
    rows = []
    for h in hypotheses:
        cells = [str(h.node)] + ([str(h.group)] if groups else [])
        cells += [str(len(h.token_ids)), f"{h.logprob_sum:.2f}", f"{h.score:.3f}", h.finish_reason or ""]
        rows.append([*cells, Text(text_tail(h.text))])
    if not hypotheses:
        rows.append(["-"] * len(columns))
    return fit_table(columns, rows, width, title=title, box=None, pad_edge=False).table


def live_beam_view(state: BeamState, title: str, width: int = 100) -> RenderableType:
    """While searching: the live hypotheses (best first) and the finished list."""
    step = state.last
    if step is None:
        return Panel(Text("prefill..."), title=title, title_align="left")
    groups = len({h.group for h in (*step.live, *step.finished)}) > 1
    body = Group(hypotheses_table(step.live, f"live after step {step.step + 1}", groups, width - 4),
                 Text(""), hypotheses_table(step.finished, "finished", groups, width - 4))
    kept = sum(c.status == "kept" for c in step.candidates)
    pruned = sum(c.status == "pruned" for c in step.candidates)
    caption = f"step {step.step + 1}: {len(step.candidates)} candidates, {kept} kept, {pruned} pruned"
    return Panel(Group(body, Text(caption, style="dim")), title=title, title_align="left")


def ranked_table(dones: list[Done], stopped: str | None, width: int = 100) -> Table:
    """At the end: the returned sequences ranked, with scores, and why the search stopped."""
    columns = [Col("rank"), Col("score"), Col("log p"), Col("tokens"), Col("finish", kind=TEXT, justify="left"),
               Col("text", kind=TEXT, justify="left", fold_to=12)]
    rows = []
    for done in sorted(dones, key=lambda d: d.rank if d.rank is not None else d.sample):
        score = f"{done.score:.4f}" if done.score is not None else "-"
        rows.append([str(done.rank if done.rank is not None else done.sample), score, f"{done.logprob_sum:.2f}",
                     str(done.n_tokens), done.finish_reason, Text(printable(done.text))])
    return fit_table(columns, rows, width, title="returned beams", caption=f"stopped: {stopped}" if stopped else None,
                     caption_justify="left").table


def beam_tree(steps: list[BeamStep]) -> Tree:
    """--view tree: per step, each expanded hypothesis and what became of its best continuations
    (kept as a live hypothesis, finished, or pruned). Node numbers link a step to the next."""
    root = Tree(Text("beam tree (#node: hypothesis; #0 is the prompt)", style="bold"))
    previous: dict[int, Hypothesis] = {}
    expanded: list[int] = [0]
    for step in steps:
        by_parent: dict[int, list] = {}
        for candidate in step.candidates:
            by_parent.setdefault(candidate.parent, []).append(candidate)
        parents = list(dict.fromkeys([*expanded, *by_parent]))
        branch = root.add(Text(f"step {step.step + 1}: expanded {' '.join(f'#{p}' for p in parents)}",
                               style="bold"))
        for parent in parents:
            hyp = previous.get(parent)
            label = Text(f"#{parent} ")
            label.append(text_tail(hyp.text, 40) if hyp is not None else "(prompt)", style="dim")
            children = by_parent.get(parent, [])
            if not any(c.status != "pruned" for c in children):
                label.append("  dead end: no continuation kept", style="red")
            node = branch.add(label)
            for c in children:
                word, style = STATUS_STYLE[c.status]
                line = Text(f"{word} ", style=style)
                line.append(f"{quoted(c.token)}")
                if c.node > 0:
                    line.append(f" -> #{c.node}")
                line.append(f"  cum {c.cumulative:.2f}", style="dim")
                node.add(line)
        previous = {h.node: h for h in step.live}
        expanded = [h.node for h in step.live]
        if step.stopped:
            root.add(Text(f"stopped: {step.stopped}", style="bold"))
    return root


class BeamTerminalSink(Sink):
    """The terminal views of a beam search on stderr: a live panel while it runs (on a terminal), then
    the tree or the per-step table when asked for, and the ranked beams. With `out` (stdout on a
    terminal), the returned texts are printed there, coloured by probability."""

    def __init__(self, err: Console, out: Console | None, title: str, view: str, summary: bool) -> None:
        self.err, self.out, self.title, self.view, self.summary = err, out, title, view, summary
        self.state = BeamState()
        self.live = ThrottledLive(err, lambda: live_beam_view(self.state, title, err.width)) \
            if view == "live" else None

    def beam_step(self, step: BeamStep) -> None:
        self.state.steps.append(step)
        if self.live is not None:
            self.live.refresh(force=step.stopped)

    def step(self, step: Step) -> None:
        self.state.returned.append(step)

    def done(self, done: Done) -> None:
        self.state.dones.append(done)

    def close(self, interrupted: bool = False) -> None:
        if self.live is not None:
            self.live.stop()
        if self.out is not None:
            texts = []
            for rank in sorted({s.sample for s in self.state.returned}):
                text = Text()
                for s in self.state.returned:
                    if s.sample == rank:
                        text.append(s.text, style=prob_style(s.prob))
                texts.append(text)
            self.out.print(Text("\n\n").join(texts))
        if self.view == "tree":
            self.err.print(beam_tree(self.state.steps))
        elif self.view == "steps":
            self.err.print(steps_table(self.state.returned, self.err.width))
        if self.summary and self.state.dones:
            self.err.print(ranked_table(self.state.dones, self.state.stopped, self.err.width))


class BeamJsonlSink(JsonlSink):
    """JSONL with a `beam_step` record per step before the returned sequences' `step` and `done` records."""

    def beam_step(self, step: BeamStep) -> None:
        self._line(beam_step_record(step))


class BeamJsonSink(JsonSink):
    """One JSON document; the search's steps go under "beam_steps"."""

    def __init__(self, stream: IO[str], header: dict[str, Any]) -> None:
        super().__init__(stream, {**header, "beam_steps": []})

    def beam_step(self, step: BeamStep) -> None:
        self.header["beam_steps"].append(beam_step_record(step))

