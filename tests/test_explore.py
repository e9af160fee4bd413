"""`samplecli explore`: the Textual app driven headless by Pilot on the bundled model (every number on screen
against the registry's `distribution()` for the same logits), the session's undo, branches and save/load, a
snapshot of the screen at 100x30, one real run of the command in a pseudo-terminal, and the refusal without one.

The model sits behind `ProtocolOnly`, which offers the Backend protocol and nothing else (no `.model`) and
counts the forward passes and the threads they ran on.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samplecli.analysis.exploration import Session
from samplecli.analysis.explore_document import document, read_document, restore
from samplecli.analysis.explore_settings import adjusted, build, starting_settings
from samplecli.backends.base import Backend
from samplecli.cli import app as cli_app
from samplecli.engine.decode import DecodeConfig, Done, decode
from samplecli.errors import SampleCliError, UsageError
from samplecli.stats import entropy_nats, kl_nats
from samplecli.strategies import SELECTORS, Strategy
from samplecli.views import explore as render
from samplecli.views.explore_app import AUTO_STEPS, ExploreApp
from tests.conftest import controlling_terminal

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "snapshots" / "explore_100x30.txt"
PROMPT = "ROMEO:"
SEED = 7
# a candidate row on screen: the selection mark, raw rank, token, model probability, its bar, strategy probability
ROW = re.compile(r"""([› ])\s*(\d+) (?:'.*?'|".*?")\s+(\d\.\d{4}) [^\d—]*(\d\.\d{4}|—)""")


class ProtocolOnly(Backend):
    """A backend with only the contract's facts and verbs; `top_n` keeps each step's N best scores (-inf elsewhere),
    as a backend that returns top-N only."""

    def __init__(self, lm, top_n: int | None = None) -> None:
        self._lm = lm
        self.name, self.vocab, self.capabilities, self.top_n = lm.name, lm.vocab, lm.capabilities, top_n
        self.vocab_size, self.eos_token_ids, self.bos_token_id = lm.vocab_size, lm.eos_token_ids, lm.bos_token_id
        self.context_length, self.device = lm.context_length, lm.device
        self.calls: list[tuple[str, bool]] = []  # (verb, on the main thread)

    def _cut(self, logits: torch.Tensor) -> torch.Tensor:
        if self.top_n is None:
            return logits
        kept = logits.topk(self.top_n, dim=-1).indices
        return torch.full_like(logits, float("-inf")).scatter(-1, kept, logits.gather(-1, kept))

    def _note(self, verb: str) -> None:
        self.calls.append((verb, threading.current_thread() is threading.main_thread()))

    def start(self, prompt_ids, rows=1):
        self._note("start")
        batch, logits = self._lm.start(prompt_ids, rows)
        backend = self

        class Batch:
            def advance(self, token_ids):
                backend._note("advance")
                return backend._cut(batch.advance(token_ids))

        return Batch(), self._cut(logits)

    def logits(self, ids, keep=0):
        raise AssertionError("explore steps with start/advance; it never teacher-forces")


@pytest.fixture(scope="module")
def lm():
    from samplecli.backends.torch_lm import load

    return load(None, device="cpu")


def new_session(lm, top_n: int | None = None, **settings) -> Session:
    return Session(ProtocolOnly(lm, top_n), PROMPT, starting_settings(settings), SEED)


async def settle(pilot) -> None:
    """Wait until no forward pass runs and no automatic run is under way."""
    for _ in range(2000):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not pilot.app.busy and not pilot.app.auto:
            return
    raise AssertionError("the app did not settle")


def play(session: Session, script, size=(100, 30), save_path: Path | None = None):
    """Run the app headless on `session` and `await script(pilot)` once the first distribution is drawn."""
    app = ExploreApp(session, save_path=save_path)

    async def main():
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            return await script(pilot)

    return asyncio.run(main())


async def press(pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def registry(session: Session) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw model's and the strategy's distributions at the cursor, straight from the registry."""
    logits, ids = session.node.logits, torch.tensor([session.ids()])
    model, strategy = Strategy([], SELECTORS["sample"]()), build(session.settings)
    strategy.bind(tuple(session.backend.eos_token_ids), SEED)
    strategy.reset(1)
    return model.distribution(logits, ids)[0].double(), strategy.distribution(logits, ids)[0].double()


def screen_rows(screen: str) -> list[tuple[bool, int, float, float | None]]:
    """(selected, raw rank, model probability, strategy probability or None) of each candidate row on screen."""
    return [(m[1] == "›", int(m[2]), float(m[3]), None if m[4] == "—" else float(m[4]))
            for m in map(ROW.search, screen.splitlines()) if m]


def shows_chain(screen: str, chain: str) -> bool:
    """Whether the strategy panel (the left column, where a long chain wraps) shows `chain`."""
    left = " ".join(line[:34].strip("│╭╮╰╯─ ") for line in screen.splitlines())
    return chain in " ".join(left.split())


def check_against_registry(session: Session, screen: str) -> None:
    """Every number of the distribution panel: the position's to 1e-6 against the registry, the screen's to its
    four printed places."""
    raw, strategy = registry(session)
    position = session.position()
    for c in position.candidates:
        assert abs(c.raw_prob - raw[c.token_id]) < 1e-6
        assert abs(c.strategy_prob - strategy[c.token_id]) < 1e-6
        assert c.kept == bool(strategy[c.token_id] > 0)
        assert c.raw_rank == 1 + int((raw > raw[c.token_id]).sum())
    assert abs(position.entropy_nats - float(entropy_nats(raw, is_log=False))) < 1e-6
    assert abs(position.strategy_entropy_nats - float(entropy_nats(strategy, is_log=False))) < 1e-6
    assert abs(position.kl_nats - float(kl_nats(strategy, raw.log()))) < 1e-6
    assert position.kept == int((strategy > 0).sum())
    assert abs(position.mass_removed - float(raw[strategy == 0].sum())) < 1e-6
    rows = screen_rows(screen)
    assert len(rows) == len(position.candidates) == 20
    for (selected, rank, p_model, p_strategy), c, i in zip(rows, position.candidates, range(20), strict=True):
        assert rank == c.raw_rank and selected == (i == session.selected)
        assert abs(p_model - c.raw_prob) <= 5e-5
        assert (p_strategy is None) == (not c.kept)
        if p_strategy is not None:
            assert abs(p_strategy - c.strategy_prob) <= 5e-5
    assert f"{position.strategy_entropy_nats:.3f}" in screen and f"{position.kl_nats:.4f}" in screen


# --- a real run in a pseudo-terminal, started first so that its model loads while the other tests run ----------


class Terminal:
    """The command in a pseudo-terminal of 100x30, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.modes = termios.tcgetattr(self.slave)
        self.output = b""

        self.process = subprocess.Popen([sys.executable, "-m", "samplecli", *args], stdin=self.slave,
                                        stdout=self.slave, stderr=self.slave, cwd=ROOT, close_fds=True,
                                        env={**os.environ, "TERM": "xterm-256color"},
                                        preexec_fn=controlling_terminal)

    def read(self, quiet: float, timeout: float, until: bytes | None = None) -> None:
        """Read until `until` has come (or, without it, until nothing came for `quiet` seconds)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if until is not None and until in self.output:
                return
            ready, _, _ = select.select([self.master], [], [], quiet)
            if not ready:
                if until is None:
                    return
                continue
            try:
                self.output += os.read(self.master, 1 << 16)
            except OSError:  # the process closed its end
                return
        if until is not None:
            raise AssertionError(f"{until!r} did not come in {timeout} s; the last output: {self.output[-400:]!r}")

    def type(self, key: bytes) -> None:
        os.write(self.master, key)
        self.read(quiet=0.5, timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture(scope="module", autouse=True)
def terminal():
    run = Terminal("explore", PROMPT, "--seed", str(SEED))
    yield run
    run.close()


# --- the app, headless ------------------------------------------------------------------------------------------


def test_the_distribution_on_screen_is_the_registrys_for_the_same_logits(lm):
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "space", "space")
        check_against_registry(session, pilot.app.export_text())
        assert session.chain == "logits -> temperature(0.8) -> top-p(0.95) -> sample"
        assert shows_chain(pilot.app.export_text(), "logits -> temperature(0.8) -> top-p(0.95) -> sample")
        assert f"seed {SEED}" in pilot.app.export_text()

    play(session, script)


def test_temperature_keys_move_the_entropy_and_keep_the_ranking_without_a_forward_pass(lm):
    session = new_session(lm, top_p=1.0, temperature=1.0)

    async def script(pilot):
        await press(pilot, "space")
        calls = len(session.backend.calls)
        entropies, orders = [], []
        for key, chain in (("t", "temperature(0.8)"), ("t", "temperature(0.64)"), ("T", "temperature(0.8)"),
                           ("T", "temperature(1)"), ("T", "temperature(1.25)"), ("T", "temperature(1.562)")):
            await press(pilot, key)
            screen = pilot.app.export_text()
            assert chain in session.chain and shows_chain(screen, session.chain)
            check_against_registry(session, screen)
            position = session.position()
            entropies.append(position.strategy_entropy_nats)
            orders.append([c.strategy_rank for c in position.candidates])
        assert entropies[0] > entropies[1] < entropies[2] < entropies[3] < entropies[4] < entropies[5]
        assert all(order == list(range(1, 21)) for order in orders), "temperature never reorders the tokens"
        assert len(session.backend.calls) == calls, "a strategy change redraws from cached logits"

    play(session, script)


def test_zero_makes_the_strategy_one_hot_and_T_brings_the_temperature_back(lm):
    session = new_session(lm, temperature=0.7, top_k=40)

    async def script(pilot):
        await press(pilot, "0")
        _, strategy = registry(session)
        position = session.position()
        assert session.chain == "logits -> greedy" and shows_chain(pilot.app.export_text(), "logits -> greedy")
        assert position.kept == 1 and position.strategy_entropy_nats == 0
        assert [c.strategy_prob for c in position.candidates] == [1.0] + [0.0] * 19
        assert float(strategy.max()) == 1.0 and int((strategy > 0).sum()) == 1
        check_against_registry(session, pilot.app.export_text())
        await press(pilot, "space")  # greedy: no draw is made
        assert session.draws == 0 and session.node.token_id == int(strategy.argmax())
        await press(pilot, "T")
        assert session.chain == "logits -> temperature(0.7) -> top-k(40) -> sample"

    play(session, script)


def test_the_truncation_keys_step_and_r_resets(lm):
    session = new_session(lm)

    async def script(pilot):
        steps = []
        for key in ("k", "k", "k", "K", "p", "p", "P", "M", "M", "M", "m"):
            await press(pilot, key)
            steps.append(session.chain)
            check_against_registry(session, pilot.app.export_text())
            if session.settings.get("top_k"):
                assert session.position().kept <= session.settings["top_k"]
        assert steps[0] == "logits -> temperature(0.8) -> top-k(1000) -> top-p(0.95) -> sample"
        assert steps[2] == "logits -> temperature(0.8) -> top-k(40) -> top-p(0.95) -> sample"
        assert steps[3].count("top-k(100)") == 1
        assert "top-p(0.85)" in steps[5] and "top-p(0.9)" in steps[6]
        assert steps[-1] == "logits -> temperature(0.8) -> top-k(100) -> top-p(0.9) -> min-p(0.02) -> sample"
        await press(pilot, "r")
        assert session.chain == "logits -> temperature(0.8) -> top-p(0.95) -> sample"
        assert "r resets" not in pilot.app.export_text()

    play(session, script)


def test_the_knob_ladders_stay_inside_each_parameters_rule():
    settings = {}
    for _ in range(12):
        settings = adjusted(settings, "top_k", up=False, vocab_size=2048)
    assert settings["top_k"] == 1
    for _ in range(12):
        settings = adjusted(settings, "top_k", up=True, vocab_size=2048)
    assert settings["top_k"] == 0  # past 1000: off
    for _ in range(30):
        settings = adjusted(settings, "top_p", up=False)
    assert settings["top_p"] == 0.05
    settings = adjusted(adjusted({}, "min_p", up=True), "min_p", up=False)
    assert settings["min_p"] == 0.0
    assert adjusted({"temperature": 0.0}, "temperature", up=True, warm_temperature=0.7)["temperature"] == 0.7
    assert adjusted({"temperature": 0.0}, "temperature", up=False)["temperature"] == 0.0
    build({**settings, "top_k": 3, "temperature": 0.01})


def test_space_draws_what_generate_draws_with_the_same_seed(lm):
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, *["space"] * 6)
        done = next(e for e in decode(lm, build(session.settings), session.prompt_ids,
                                      DecodeConfig(max_new_tokens=6, seed=SEED)) if isinstance(e, Done))
        assert session.generated == list(done.token_ids)
        assert session.text() == PROMPT + done.text
        assert [n.draw for n in session.path()[1:]] == [1, 2, 3, 4, 5, 6]
        assert all(not on_main for _, on_main in session.backend.calls), "forward passes run off the UI thread"
        assert [verb for verb, _ in session.backend.calls] == ["start"] + ["advance"] * 6

    play(session, script)


def test_undo_restores_the_previous_state_exactly(lm):
    session = new_session(lm)

    def state():
        return (session.text(), session.ids(), session.current, session.selected, dict(session.settings),
                session.position(), render.distribution_table(session.position(), session.selected, 64).plain)

    async def script(pilot):
        await press(pilot, "space", "down", "down")
        before, draws, calls = state(), session.draws, len(session.backend.calls)
        panel = pilot.app.export_text().splitlines()[3:24]
        await press(pilot, "space")
        assert session.text() != before[0]
        await press(pilot, "backspace")
        assert state() == before
        assert [line[34:] for line in pilot.app.export_text().splitlines()[3:24]] == [line[34:] for line in panel]
        assert session.draws == draws + 1, "the generator is not rewound: space after backspace draws anew"
        assert len(session.backend.calls) == calls + 1, "going back needs no forward pass"
        assert "▌" in pilot.app.export_text()
        await press(pilot, "backspace", "backspace")
        assert session.current == 0 and "nothing to undo" in pilot.app.export_text()

    play(session, script)


def test_a_branch_keeps_both_continuations_and_the_tree_switches_between_them(lm):
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "g", "g", "g")
        first = session.text()
        await press(pilot, "backspace", "down", "enter")  # the second candidate instead of the argmax
        assert "a new branch" in pilot.app.export_text()
        await press(pilot, "g")
        second = session.text()
        assert first != second and first[: len(PROMPT) + 1] == second[: len(PROMPT) + 1]
        branches = session.branches()
        assert [b.tokens for b in branches] == [3, 4] and [b.shared for b in branches] == [0, 2]
        assert [b.current for b in branches] == [False, True]
        assert [PROMPT + b.text for b in branches] == [first, second]
        for b in branches:
            path = session.path(b.leaf)[1:]
            assert b.logprob == pytest.approx(sum(n.logprob for n in path))
            assert b.perplexity == pytest.approx(math.exp(-b.logprob / b.tokens))
        await press(pilot, "b")
        tree = pilot.app.export_text()
        assert "2 branches" in tree and f"{branches[0].logprob:9.3f}".strip() in tree
        assert f"{branches[1].perplexity:.2f}" in tree
        await press(pilot, "up", "enter")
        assert session.text() == first and session.current == branches[0].leaf
        assert "switched to branch 1" in pilot.app.export_text()
        await press(pilot, "backspace", "enter")  # the selection there is where it was: back into branch 2
        assert len(session.branches()) == 2 and session.last_take == "again"

    play(session, script)


def test_save_then_load_round_trips(lm, tmp_path):
    path = tmp_path / "session.json"
    session = new_session(lm, top_k=40)

    async def script(pilot):
        await press(pilot, "space", "space", "t", "g", "backspace", "down", "enter", "p", "s")
        assert "saved 5 nodes, 2 branches to" in pilot.app.export_text() and path.is_file()
        return [line for line in pilot.app.export_text().splitlines()[:-2]]

    screen = play(session, script, save_path=path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == document(session) and saved["text"] == session.text()
    assert [n["token_id"] for n in saved["nodes"][1:]] == [n.token_id for n in session.nodes[1:]]
    picked = saved["nodes"][-1]
    assert picked["chosen_by"] == "pick" and picked["strategy"] == "logits -> temperature(0.8) -> top-k(40) -> sample"
    assert picked["entropy_bits"] == pytest.approx(picked["entropy_nats"] / math.log(2))
    assert {"prob", "logprob", "strategy_prob", "strategy_entropy_nats", "kl_nats", "kept", "settings"} <= set(picked)
    assert saved["strategy"]["chain"] == "logits -> temperature(0.8) -> top-k(40) -> top-p(0.95) -> sample"

    reopened = restore(ProtocolOnly(lm), read_document(path))
    assert document(reopened) == saved

    async def same(pilot):
        assert pilot.app.export_text().splitlines()[:-2] == screen
        await press(pilot, "space")
        assert reopened.draws == 3 and reopened.nodes[-1].draw == 3

    play(reopened, same)


def test_auto_runs_twenty_tokens_and_a_key_stops_it(lm):
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "a")
        assert len(session.generated) == AUTO_STEPS and session.draws == AUTO_STEPS
        pilot.app.action_auto()  # as `a` does, without waiting for the run to end
        await pilot.press("escape")
        await settle(pilot)
        assert AUTO_STEPS < len(session.generated) < 2 * AUTO_STEPS and pilot.app.auto == 0
        assert "stopped after" in pilot.app.export_text()

    play(session, script)


def test_a_distribution_worker_that_starts_late_computes_what_it_was_asked_and_never_fails_on_a_moved_cursor(lm):
    """During an automatic run the cursor moves on while a worker that a redraw started waits for a core (the
    failure a busy machine showed: the late worker read the new cursor, whose logits were not computed yet, and
    "the distribution failed" replaced the status line). The worker is played here late, by hand, on a thread."""
    session = new_session(lm)

    async def script(pilot):
        app = pilot.app
        at, where = session.snapshot(), (session.current, session.chain)
        asked = session.current
        session.sample()  # the cursor moves on to a node with no logits yet
        assert session.node.logits is None
        await asyncio.to_thread(app._position, at, where)
        assert app.failed_position is None and "failed" not in app.note
        assert [node for node, _ in session._positions] == [asked]  # the asked node's, under the asked settings
        assert session.position(at) is next(iter(session._positions.values()))
        session.nodes[asked].logits = None  # and once the asked node's logits were let go: nothing to say
        session._positions.clear()
        await asyncio.to_thread(app._position, at, where)
        assert app.failed_position is None and "failed" not in app.note

    play(session, script)


def test_a_small_terminal_shows_the_text_and_the_distribution_and_never_crashes(lm):
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "space")
        for width, height in ((70, 20), (40, 12), (8, 3), (1, 1), (100, 30)):
            await pilot.resize_terminal(width, height)
            await press(pilot, "g")
            screen = pilot.app.export_text()
            assert len(screen.splitlines()) <= height and all(len(line) <= width for line in screen.splitlines())
            if height >= 6 and width >= 40:
                rows = screen_rows(screen)
                assert "▌" in screen and rows and rows[0][1] == 1, screen  # the text and the distribution
                assert pilot.app.has_class("-compact") == (width < 96)

    play(session, script)


def test_a_top_n_backend_says_its_numbers_are_over_n_tokens(lm):
    session = new_session(lm, top_n=50)

    async def script(pilot):
        screen = pilot.app.export_text()
        assert "top-50 only" in screen
        check_against_registry(session, screen)
        assert session.position().distribution == "top-50"

    play(session, script)


def test_the_end_of_text_stops_the_steps_until_undone(lm):
    session = new_session(lm)
    session.forward()
    node = session.take(lm.eos_token_ids[0], "pick")
    assert node.end == "eos" and not session.needs_forward()
    with pytest.raises(SampleCliError, match="ended"):
        session.sample()

    async def script(pilot):
        await press(pilot, "space")
        assert "end-of-text" in pilot.app.export_text() and len(session.nodes) == 2
        await press(pilot, "backspace", "g")
        assert session.node.end is None

    play(session, script)


# --- snapshot -----------------------------------------------------------------------------------------------------


def test_the_screen_at_100x30_matches_the_snapshot(lm):
    """Reviewed by eye; after a deliberate change of the layout, rewrite it with SAMPLECLI_UPDATE_SNAPSHOTS=1."""
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "space", "space", "g", "down", "down", "T", *["M"] * 7)
        return pilot.app.export_text() + "\n"

    screen = play(session, script)
    if os.environ.get("SAMPLECLI_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(screen, encoding="utf-8")
    assert screen == SNAPSHOT.read_text(encoding="utf-8")


@pytest.mark.parametrize("size", [(80, 16), (80, 24), (120, 40)], ids=["80x16", "80x24", "120x40"])
def test_the_screen_at_a_small_a_usual_and_a_large_terminal_matches_its_snapshot(lm, size):
    """The same keys at the sizes a user's terminal has (tests/snapshots/explore_WxH.txt, reviewed by eye): the
    text, the distribution and the key line are on screen at each, and nothing is cut mid-number."""
    session = new_session(lm)

    async def script(pilot):
        await press(pilot, "space", "space", "g", "down", "down")
        return pilot.app.export_text() + "\n"

    screen = play(session, script, size=size)
    path = SNAPSHOT.with_name(f"explore_{size[0]}x{size[1]}.txt")
    if os.environ.get("SAMPLECLI_UPDATE_SNAPSHOTS"):
        path.write_text(screen, encoding="utf-8")
    assert screen == path.read_text(encoding="utf-8")
    rows = screen.splitlines()
    assert len(rows) <= size[1] and all(len(row) <= size[0] for row in rows)
    assert screen_rows(screen), screen  # candidate rows with whole numbers


# --- the command ----------------------------------------------------------------------------------------------


def test_without_a_terminal_it_says_so_in_one_line_and_exits_2():
    result = CliRunner().invoke(cli_app, ["explore", PROMPT], prog_name="samplecli")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "`explore` needs an interactive terminal" in lines[0]
    assert "samplecli inspect" in lines[0] and "samplecli generate PROMPT --view steps" in lines[0]


def test_explore_help_imports_neither_torch_nor_textual():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "samplecli", "explore", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0 and "--load" in run.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "samplecli.cli" in modules  # (the command modules come in through importlib, which it does not time)
    assert not {m for m in modules if m.split(".")[0] in ("torch", "transformers", "textual")}


@pytest.mark.parametrize(("args", "fragment"), [
    (["--top-p", "2"], "top_p"),
    (["--chain", "top-k=3"], "No such option: --chain"),  # not in its help either: its keys adjust settings
    (["--strategy", "beam"], "explore steps through one sequence"),
    (["--strategy", "mirostat"], "keeps a state"),
    (["--load", "missing.json"], "--load missing.json"),
])
def test_flags_are_checked_before_anything_loads(args, fragment):
    result = CliRunner().invoke(cli_app, ["explore", *(["x"] if "--load" not in args else []), *args],
                                prog_name="samplecli")
    assert result.exit_code == 2 and result.stdout == ""
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_saved_file_that_is_not_a_session_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"type": "inspect"}', encoding="utf-8")
    with pytest.raises(UsageError, match="not a session saved by `samplecli explore`"):
        read_document(path)


def test_the_docs_list_every_key_and_a_capture():
    docs = (ROOT / "docs" / "explore.md").read_text(encoding="utf-8")
    for keys, help_text in render.key_rows():
        assert f"| {keys} | {help_text} |" in docs
    assert "```text\n samplecli explore · bundled" in docs


def test_a_real_run_in_a_terminal_takes_keys_exits_0_and_restores_the_terminal(lm, terminal):
    terminal.read(quiet=1.0, timeout=120, until=b"strat.")  # the first distribution is drawn
    for key in (b" ", b" ", b"g"):
        terminal.type(key)
    terminal.type(b"q")
    assert terminal.process.wait(timeout=30) == 0
    terminal.read(quiet=0.3, timeout=5)
    assert termios.tcgetattr(terminal.slave) == terminal.modes, "the terminal's modes are restored"
    after = terminal.output[terminal.output.rindex(b"\x1b[?1049l"):]  # left the alternate screen ...
    assert b"\x1b[?25h" in after  # ... and shows the cursor again

    session = new_session(lm)
    session.forward()
    for choose in (session.sample, session.sample, session.argmax):
        choose()
        session.forward()
    assert after.decode().replace("\r\n", "\n").endswith(session.text() + "\n"), "the text is printed on stdout"


def test_a_long_session_keeps_the_logits_of_a_few_nodes_and_computes_the_others_again(lm):
    """Memory per explored token bounded: only KEEP_LOGITS nodes hold their raw logits (a 152k row is 0.6 MB);
    a node returned to is computed again, to the same numbers."""
    from samplecli.analysis.exploration import KEEP_LOGITS

    session = new_session(lm)
    session.forward()
    first = session.node.logits.clone()
    for _ in range(3 * KEEP_LOGITS):
        session.sample()
        session.forward()
    assert sum(node.logits is not None for node in session.nodes) <= KEEP_LOGITS
    assert session.node.logits is not None  # the cursor's own
    while session.undo():
        pass
    assert session.needs_forward()  # the prompt's logits were dropped long ago
    session.forward()
    assert torch.equal(session.node.logits, first)
