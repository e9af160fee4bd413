"""Every table reads whole at 80 and 100 columns: a number cut short is a wrong number, so a table never shows one
as "1.00…". Each table goes through `views.fit.fit_table`; the tests record what it was asked to lay out and check
that every number of every column it kept appears whole in what was printed, and that every column it left out is
named in one dim line (or shown in a continuation table).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from samplecli.views import fit

WIDTHS = (80, 100)
CUT = re.compile(r"\d…|…\d|\.…")


@dataclass
class Recorder:
    calls: list = field(default_factory=list)

    def check(self, output: str, width: int) -> None:
        """Every number cell of a kept column appears whole on one line; every dropped column is named."""
        lines = output.splitlines()
        assert all(len(line) <= width for line in lines), max(lines, key=len)
        assert not CUT.search(output), CUT.search(output)
        assert self.calls, "no table was laid out"
        for columns, rows, fitted in self.calls:
            if not fitted.fits:
                continue
            for index, column in enumerate(columns):
                name = " ".join(fit._plain(column.header).split())
                if column.kind != fit.NUMBER:
                    continue
                if name in fitted.dropped:
                    assert f"`{name}`" in " ".join(output.split()) or "--format json" in output, (name, output)
                    continue
                for row in rows:
                    cell = fit._plain(row[index])
                    assert any(cell in line for line in lines), (name, cell, output)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """Record every call of fit_table, in every module that calls it."""
    import samplecli.views.beam
    import samplecli.views.compare
    import samplecli.views.inspect
    import samplecli.views.render
    import samplecli.views.score_view

    record = Recorder()
    real = fit.fit_table

    def recording(columns, rows, width, **options):
        fitted = real(columns, rows, width, **options)
        record.calls.append((list(columns), [list(r) for r in rows], fitted))
        return fitted

    monkeypatch.setattr(fit, "fit_table", recording)
    for module in (samplecli.views.beam, samplecli.views.compare, samplecli.views.inspect, samplecli.views.render,
                   samplecli.views.score_view):
        if hasattr(module, "fit_table"):
            monkeypatch.setattr(module, "fit_table", recording)
    return record


def rendered(width: int, *renderables) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None, highlight=False)
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()


# --- the layout itself ---------------------------------------------------------------------------------------------


numbers = st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.4f}"),
                    st.integers(0, 10**9).map(str), st.floats(1e-9, 1e-3).map(lambda v: f"{v:.1e}"))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 9), st.integers(1, 6), st.integers(20, 160), st.data())
def test_a_fitted_table_never_cuts_a_number(columns, rows, width, data):
    cols = [fit.Col(data.draw(st.text("abcdefgh ", min_size=1, max_size=14)).strip() or "x",
                    drop=data.draw(st.integers(0, 3))) for _ in range(columns)]
    cols.insert(0, fit.Col("label", kind=fit.TEXT, justify="left"))
    cells = [[data.draw(st.text("abc xyz-", min_size=0, max_size=30))] + [data.draw(numbers) for _ in range(columns)]
             for _ in range(rows)]
    fitted = fit.fit_table(cols, cells, width)
    output = rendered(width, fitted.table)
    if not fitted.fits:  # even the columns that are never dropped are too wide: the caller picks another layout
        return
    lines = output.splitlines()
    assert all(len(line) <= width for line in lines)
    kept = [i for i, c in enumerate(cols) if c.kind == fit.NUMBER and " ".join(c.header.split()) not in fitted.dropped]
    for row in cells:
        for i in kept:
            assert any(row[i] in line for line in lines), (row[i], output)
    assert "…" not in output


def test_columns_are_dropped_in_their_order_and_named():
    cols = [fit.Col("T"), fit.Col("first", drop=2), fit.Col("second", drop=1), fit.Col("third", drop=1)]
    fitted = fit.fit_table(cols, [["0.5", "1.234567", "2.345678", "3.456789"]], 24)
    assert fitted.fits and fitted.dropped == ["first", "third"]
    note = fit.dropped_note(fitted.dropped, 24)
    assert "`first`, `third`" in note.plain and note.style == "dim"


def test_split_tables_repeat_the_key_columns_and_keep_every_column():
    key = [fit.Col("metric", kind=fit.TEXT, justify="left", no_wrap=True)]
    cols = [fit.Col(f"strategy number {i}") for i in range(9)]
    rows = [["perplexity", *(f"{100 + i}.{i}5" for i in range(9))]]
    tables = fit.split_table(key, cols, rows, 60)
    output = rendered(60, *tables)
    assert len(tables) > 1 and output.count("perplexity") == len(tables)
    assert all(f"{100 + i}.{i}5" in output for i in range(9))


# --- every table of samplecli, at 80 and 100 columns -------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_inspect_report_reads_whole(recorder, width):
    from samplecli.views.inspect import sections
    from tests.test_inspect import full_report, random_context, report_for

    output = rendered(width, *sections(full_report(), width))
    recorder.check(output, width)
    assert "temperature sweep" in output
    long_chain = report_for(random_context(vocab=60, seed=2), chain="temperature=0.7,top-k=30,top-p=0.9,min-p=0.05,"
                            "typical=0.95,epsilon=0.0003,eta=0.002", top_n=5)
    recorder.calls.clear()
    output = rendered(width, *sections(long_chain, width))
    recorder.check(output, width)
    assert "eta(0.002)" in output


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_metrics_read_whole_with_metrics_as_rows(recorder, width):
    from samplecli.analysis.compare import HOLTZMAN
    from samplecli.views.compare import HOLTZMAN_METRICS, METRICS, metrics_table

    values = {key: (i + 1) * 12.3456789 for i, (key, _, _) in enumerate(METRICS)}
    rows = [(label, values) for label, _ in HOLTZMAN] + [("human", {**values, "tokens_per_second": None})]
    for columns in (METRICS, HOLTZMAN_METRICS):
        recorder.calls.clear()
        output = rendered(width, metrics_table(rows, columns, title="t", width=width))
        recorder.check(output, width)
        assert all(header in output for _, header, _ in columns)  # metrics are rows: every name whole
        assert all(label.split()[0] in output for label, _ in HOLTZMAN)


@pytest.mark.parametrize("width", (20, *WIDTHS))
def test_the_steps_view_reads_whole(recorder, width):
    from samplecli.views.render import steps_table
    from tests.test_render import make_step

    steps = [make_step(s, i, f"tok{i}", prob=0.123456 * (i + 1)) for s in range(2) for i in range(4)]
    output = rendered(width, steps_table(steps, width))
    assert not CUT.search(output)
    assert all(len(line) <= width for line in output.splitlines())
    for step in steps:
        assert f"{step.prob:.3f}" in output and f"{step.entropy:.2f}" in output
    if width == 20:  # too narrow for the table: one line per step, never nine empty columns
        assert "│ │" not in output and output.count("sample ") == len(steps)
    else:
        recorder.check(output, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_live_panel_reads_whole(recorder, width):
    from samplecli.views.render import RunState, live_view
    from tests.test_render import make_step

    state = RunState()
    for i in range(3):
        state.add(make_step(0, i, f"t{i}", prob=0.31 + i / 10))
    screen = Console(file=io.StringIO(), width=width, height=24, color_system=None)
    output = rendered(width, live_view(state, "logits -> top-p(0.95) -> sample", screen))
    recorder.check(output, width)
    assert "kept 2" in output


@pytest.mark.parametrize("width", WIDTHS)
def test_score_tables_read_whole(recorder, width):
    from samplecli.analysis.scoring import Score, TokenScore
    from samplecli.views.score_view import show_score

    tokens = [TokenScore(i, 100 + i, f"word{i}", 1.2345 * i, math.exp(-1.2345 * i), i + 1, 0.5 / (i + 1))
              for i in range(6)]
    score = Score(tokens=6, characters=30, nats=7.4070, context=64, stride=32, per_token=tokens,
                  strategy="logits -> top-k(40) -> sample", strategy_nats=8.25, kl_strategy_model=0.1234)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    show_score(console, score, "a-model-with-a-long-name/that-is-here")
    recorder.check(console.file.getvalue(), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_beam_tables_read_whole(recorder, width):
    from samplecli.views.beam import hypotheses_table, ranked_table
    from tests.test_beam import STEP1, hyp
    from tests.test_render import make_done

    live = [hyp(i, [5] * (i + 3), "a long hypothesis text " * 3, -0.123456 * i, -1.23456 * i) for i in range(1, 5)]
    dones = [make_done(i, "returned text that is fairly long " * 2, n=10 + i) for i in range(3)]
    output = rendered(width, hypotheses_table(live, "live", groups=True, width=width),
                      hypotheses_table(STEP1.finished, "finished", width=width),
                      ranked_table(dones, "the token limit ended every hypothesis", width))
    recorder.check(output, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_settings_table_reads_whole(recorder, width):
    from samplecli.cli.app import show_settings
    from samplecli.config.settings import resolve
    from samplecli.strategies import build_strategy

    settings = resolve({"top_p": 0.9123, "temperature": 0.7, "stop_strings": ["\n\nJULIET:", "END"], "seed": 12345})
    built = build_strategy(settings.sampling(), strategy=None, chain=None)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    show_settings(settings, built, console=console)
    recorder.check(console.file.getvalue(), width)
    assert "0.9123" in console.file.getvalue() and "12345" in console.file.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_strategies_tables_read_whole(recorder, width):
    from samplecli.cli import app

    result = CliRunner().invoke(app, ["strategies"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0
    recorder.check(result.stdout, width)
    assert "epsilon(0.0003)" in result.stdout and "top-p(0.95)" in result.stdout


def test_inspect_on_an_80_column_terminal_shows_no_cut_number(tiny_model_dir):
    from samplecli.cli import app

    result = CliRunner().invoke(app, ["inspect", "ROMEO:", "--model", str(tiny_model_dir), "--temps", "0.5,1,2",
                                      "--top-n", "4"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert not CUT.search(result.stdout)
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
