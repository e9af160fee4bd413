"""The Textual app of `samplecli explore`: lays out the renderers of `views/explore.py` and maps keys to the
`Session` of `analysis/exploration.py`. The only forward pass (`Session.forward`) runs in a thread worker, so
drawing and keys never wait for the model; everything else works on cached logits.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from samplecli.analysis.exploration import END_NOTES, Session
from samplecli.analysis.explore_document import save
from samplecli.analysis.explore_settings import KNOBS
from samplecli.errors import SampleCliError
from samplecli.views import explore as render
from samplecli.views.tokens import quoted

AUTO_STEPS = 20
NARROW = 96  # below this many columns the strategy panel goes and the distribution sits under the text
SHORT = 26  # below this many rows, likewise
TINY = 18  # below this many rows only the text (two lines) and the distribution's rows stay
RIGHT_WIDTH = 66  # the distribution column in the wide layout
STEP_ACTIONS = {"sample", "argmax", "take", "undo", "branches", "greedy"}  # keys that stop an automatic run


class HelpScreen(ModalScreen[None]):
    """`?`: the key table and how to read the screen."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        body = Text.assemble(
            ("samplecli explore", "bold"), " — step through generation by hand (escape closes)\n",
            "Next token: the raw model's most probable tokens, each with its probability under the model (blue) "
            "and the strategy (green); — and struck through: the strategy filters it out. KL s‖m: "
            "KL(strategy ‖ model) in nats; removed: the model's mass the strategy filters out.\n",
            render.colour_key(), "\n",
        )
        with VerticalScroll(id="help-box"):
            yield Static(body)
            yield Static(render.help_table())


class BranchScreen(ModalScreen[int | None]):
    """`b`: every branch of the tree; enter switches to one, escape keeps the cursor where it is."""

    BINDINGS = [Binding("escape,b,q", "dismiss_none", "close")]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        branches = self.session.branches()
        width = max(40, self.app.size.width - 8)
        options = [Option(render.branch_line(b, width), id=str(b.leaf)) for b in branches]
        with Vertical(id="branch-box"):
            yield Static(Text(f"{len(branches)} branch{'es' if len(branches) != 1 else ''} · log p and perplexity "
                              "under the raw model · enter switches, escape closes", style="dim"))
            if options:
                yield OptionList(*options, id="branches")
            else:
                yield Static("no tokens taken yet")

    def on_mount(self) -> None:
        current = next((i for i, b in enumerate(self.session.branches()) if b.current), 0)
        for option_list in self.query(OptionList):
            option_list.highlighted = current
            option_list.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ExploreApp(App[None]):
    """Full screen: the text, the next-token distribution, the strategy, and the keys."""

    TITLE = "samplecli explore"
    CSS = """
    Screen { layout: vertical; }
    #title { height: 1; background: $primary-background; color: $text; }
    #main { height: 1fr; }
    #left { width: 1fr; }
    #right { width: RIGHT_WIDTH; border: round $secondary; }
    #text-box { height: 1fr; border: round $secondary; overflow-x: hidden; scrollbar-size-vertical: 1; }
    #strategy { height: auto; border: round $secondary; }
    #stats { height: auto; }
    #dist { height: 1fr; }
    #dist, #stats, #chain, #title, #status, #keys { text-wrap: nowrap; text-overflow: clip; }
    #status { height: 1; color: $warning; }
    #keys { height: 1; background: $primary-background; }
    .-compact #main { layout: vertical; }
    .-compact #left { height: 1fr; }
    .-compact #right { width: 1fr; height: 2fr; }
    .-compact #strategy { display: none; }
    HelpScreen, BranchScreen { align: center middle; }
    #help-box, #branch-box { width: 90%; height: auto; max-height: 90%; border: round $accent;
                             background: $surface; padding: 0 1; }
    #branches { height: auto; max-height: 20; border: none; padding: 0; }
    #chain { display: none; height: auto; }
    .-compact #chain { display: block; }
    .-tiny #text-box { border: none; height: 2; overflow-y: hidden; }
    .-tiny #right { border: none; height: 1fr; }
    .-tiny #stats, .-tiny #chain, .-tiny #status { display: none; }
    """.replace("RIGHT_WIDTH", str(RIGHT_WIDTH))
    BINDINGS = [Binding(key, action, k.label, show=False) for k in render.KEYS for key, action in k.bindings] + [
        Binding("escape", "stop", "stop", show=False)]

    def __init__(self, session: Session, save_path: Path | None = None) -> None:
        super().__init__()
        self.session = session
        self.save_path = Path(save_path) if save_path is not None else Path("explore.json")
        self.busy = False  # a forward pass is running
        self.auto = 0  # tokens left to sample automatically
        self.failed_position: tuple[int, str] | None = None  # (node, chain) whose distribution failed
        self.note = ""
        self.mounted = False

    # --- layout ---

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with VerticalScroll(id="text-box"):
                    yield Static(id="text")
                yield Static(id="strategy")
            with Vertical(id="right"):
                yield Static(id="chain")
                yield Static(id="stats")
                yield Static(id="dist")
        yield Static(id="status")
        yield Static(id="keys")

    def on_mount(self) -> None:
        self.query_one("#text-box").border_title = "text"
        self.query_one("#strategy").border_title = "strategy"
        self.mounted = True
        self._fit()
        self.redraw()
        self.ensure_forward()

    def on_resize(self, event: events.Resize) -> None:
        if self.mounted:  # a resize can come before the panels exist
            self._fit(event.size)
            self.call_after_refresh(self.redraw)  # the panels' widths follow the new size

    def _fit(self, size: Size | None = None) -> None:
        width, height = size or self.size
        self.set_class(width < NARROW or height < SHORT, "-compact")
        self.set_class(height < TINY, "-tiny")

    # --- drawing ---

    def redraw(self) -> None:
        """Every panel from the session's state (the distribution from cached logits)."""
        session = self.session
        width, _ = self.size
        branches = session.branches()
        current = next((b.number for b in branches if b.current), None)
        where = f"token {len(session.path()) - 1}"
        if len(branches) > 1 and current is not None:
            where += f" · branch {current} of {len(branches)}"
        compact = self.has_class("-compact")
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(" samplecli explore ", style="bold")
        title.append(f"· {session.backend.name} · seed {session.seed} · {where}")
        self.query_one("#title", Static).update(title)
        self.query_one("#chain", Static).update(Text(session.chain, style="bold", no_wrap=True, overflow="ellipsis"))
        label = session.position_label()
        self.query_one("#right").border_title = f"next token · {label}"
        self.query_one("#text", Static).update(render.text_view(session.segments(), session.ended()))
        self.query_one("#text-box", VerticalScroll).scroll_end(animate=False)
        self.query_one("#strategy", Static).update(render.strategy_panel(
            session.chain, session.settings, session.initial_settings, session.seed, session.draws))
        stats, dist = self.query_one("#stats", Static), self.query_one("#dist", Static)
        panel_width = (width - 2) if compact else RIGHT_WIDTH - 2
        if session.ended() is not None:
            stats.update(Text(END_NOTES[session.ended()], style="dim"))
            dist.update("")
        elif session.node.logits is None:
            stats.update(Text("computing the next-token distribution…", style="dim"))
            dist.update("")
        elif not session.position_ready():  # a new setting: its numbers come from a worker, the keys stay live
            failed = self.failed_position == (session.current, session.chain)
            stats.update(Text(self.note if failed else "recomputing the distribution for the new settings…",
                              style="dim"))
            if not failed:
                self.ensure_position()
        else:
            position = session.position()
            stats.update(render.statistics(position))
            dist.update(render.distribution_table(position, session.selected, panel_width))
        self.query_one("#status", Static).update(Text(self.note, no_wrap=True, overflow="ellipsis"))
        self.query_one("#keys", Static).update(render.footer(width))

    def say(self, note: str) -> None:
        self.note = note
        self.query_one("#status", Static).update(Text(note, no_wrap=True, overflow="ellipsis"))

    def export_text(self) -> str:
        """The screen as plain text (what `export_screenshot` draws, without styles), for tests and docs."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                          color_system="truecolor", legacy_windows=False, safe_box=False)
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())

    # --- a new setting's distribution, off the UI thread (a 152k vocabulary's takes ~0.15 s) ---

    def ensure_position(self) -> None:
        at, where = self.session.snapshot(), (self.session.current, self.session.chain)
        self.run_worker(lambda: self._position(at, where), thread=True, group="position", exit_on_error=False)

    def _position(self, at: tuple[int, dict], where: tuple[int, str]) -> None:
        try:
            self.session.position(at)
        except Exception as exc:  # said on the status line; not tried again for this position and chain
            if self.session.nodes[at[0]].logits is not None:  # else the cursor moved on and its logits were let go
                self.failed_position, self.note = where, f"the distribution failed: {exc}"
        try:
            self.call_from_thread(self.redraw)
        except RuntimeError:  # the app closed meanwhile
            pass

    # --- the forward pass, off the UI thread ---

    def ensure_forward(self) -> None:
        if self.busy or not self.session.needs_forward():
            return
        self.busy = True
        node_id = self.session.current
        self.run_worker(lambda: self._forward(node_id), thread=True, group="forward", exit_on_error=False)

    def _forward(self, node_id: int) -> None:
        error: Exception | None = None
        try:
            self.session.forward(node_id)
        except Exception as exc:  # shown on the status line; the session stays usable
            error = exc
        try:
            self.call_from_thread(self._forwarded, error)
        except RuntimeError:  # the app closed meanwhile
            pass

    def _forwarded(self, error: Exception | None) -> None:
        self.busy = False
        if error is not None:
            self.auto = 0
            message = str(error) if isinstance(error, SampleCliError) else f"{type(error).__name__}: {error}"
            self.say(f"the model failed: {message}")
        self.redraw()
        if self.session.needs_forward():  # the cursor moved on while this one ran
            self.ensure_forward()
        elif self.auto:
            self.call_later(self._auto_step)

    # --- actions ---

    def _can_choose(self) -> bool:
        """Whether a token can be chosen now (the distribution is here and the text has not ended)."""
        if self.session.ended() is not None:
            self.say(END_NOTES[self.session.ended()])
            return False
        if self.busy or self.session.node.logits is None:
            self.say("computing the next-token distribution…")
            self.ensure_forward()
            return False
        return True

    async def run_action(self, action, default_namespace=None) -> bool:
        """A step key during an automatic run stops it (and does nothing else)."""
        name = action if isinstance(action, str) else ""
        if self.auto and name.split("(")[0] in STEP_ACTIONS:
            self.action_stop()
            return True
        return await super().run_action(action, default_namespace)

    def _chosen(self, verb: str) -> None:
        node = self.session.node
        how = f"{verb} {quoted(node.token)} · p model {node.prob:.4f} · p strategy {node.strategy_prob:.4f}"
        after = {"branch": " · a new branch (b shows the tree)", "again": " · taken here before: its branch"}
        self.say(how + after.get(self.session.last_take, ""))
        self.redraw()
        self.ensure_forward()

    def action_sample(self) -> None:
        if self._can_choose():
            self.session.sample()
            node = self.session.node
            self._chosen(f"sampled (draw {node.draw})" if node.draw is not None else "greedy took")

    def action_argmax(self) -> None:
        if self._can_choose():
            self.session.argmax()
            self._chosen("argmax")

    def action_take(self) -> None:
        if self._can_choose():
            self.session.pick()
            self._chosen("took")

    def action_move(self, delta: int) -> None:
        if self.session.node.logits is not None:
            self.session.select(self.session.selected + delta)
            self.redraw()

    def action_undo(self) -> None:
        self.say("undone" if self.session.undo() else "at the prompt: nothing to undo")
        self.redraw()
        self.ensure_forward()

    def action_knob(self, knob: str, up: int) -> None:
        assert knob in KNOBS
        self.session.adjust(knob, bool(up))
        self.say(self.session.chain)
        self.redraw()

    def action_greedy(self) -> None:
        self.session.make_greedy()
        self.say(self.session.chain)
        self.redraw()

    def action_reset(self) -> None:
        self.session.reset_strategy()
        self.say(f"strategy reset: {self.session.chain}")
        self.redraw()

    def action_auto(self) -> None:
        if self.auto:
            self.action_stop()
            return
        self.auto = AUTO_STEPS
        self._auto_step()

    def _auto_step(self) -> None:
        if not self.auto:
            return
        if self.session.ended() is not None:
            self.auto = 0
            self.say(END_NOTES[self.session.ended()])
            return
        if self.busy or self.session.node.logits is None:
            self.ensure_forward()  # continues from _forwarded
            return
        self.session.sample()
        self.auto -= 1
        self.say(f"automatic: {AUTO_STEPS - self.auto} of {AUTO_STEPS} (any step key stops)")
        self.redraw()
        self.ensure_forward()

    def action_stop(self) -> None:
        if self.auto:
            self.say(f"stopped after {AUTO_STEPS - self.auto} of {AUTO_STEPS} tokens")
            self.auto = 0

    def action_branches(self) -> None:
        def switch(leaf: int | None) -> None:
            if leaf is not None:
                self.session.switch(leaf)
                self.say(f"switched to branch {next(b.number for b in self.session.branches() if b.leaf == leaf)}")
            self.redraw()
            self.ensure_forward()

        self.push_screen(BranchScreen(self.session), switch)

    def action_save(self) -> None:
        try:
            save(self.session, self.save_path)
        except SampleCliError as exc:
            self.say(str(exc))
            return
        count = len(self.session.branches())
        self.say(f"saved {len(self.session.nodes)} nodes, {count} branch{'es' if count != 1 else ''} to "
                 f"{self.save_path}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
