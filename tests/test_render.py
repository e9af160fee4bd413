"""Renderers are pure functions of the events they were given: checked on hand-made events."""

from __future__ import annotations

import io
import json

from rich.console import Console

from samplecli.engine.events import Alternative, Done, Step
from samplecli.views.render import RunState, TerminalSink, live_view, prob_style, steps_table, summary_line
from samplecli.views.sinks import JsonlSink, JsonSink, TextSink


def make_step(sample: int, step: int, text: str, prob: float = 0.5, token_id: int = 7) -> Step:
    top = (Alternative(token_id, text, prob, -0.69, 0.8), Alternative(9, "[bold]x", 0.1, -2.3, 0.2))
    return Step(sample=sample, step=step, token_id=token_id, token=text, text=text, bytes=tuple(text.encode()),
                logprob=-0.69, prob=prob, sampled_prob=0.8, entropy=1.25, sampled_entropy=0.5, kept=2, top=top)


def make_done(sample: int, text: str, n: int = 2) -> Done:
    return Done(sample=sample, text=text, token_ids=(7,) * n, finish_reason="length", n_tokens=n,
                logprob_sum=-1.38, perplexity=2.0, seconds=0.5, tokens_per_second=4.0,
                strategy="logits -> sample", seed=1)


def console(width: int = 100, height: int = 25) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, height=height, force_terminal=True, color_system="truecolor"), buffer


def test_text_sink_streams_sample_zero_and_appends_the_others_in_order():
    out = io.StringIO()
    sink = TextSink(out, num_samples=3)
    sink.step(make_step(1, 0, "B1"))
    sink.step(make_step(0, 0, "A1"))
    sink.step(make_step(2, 0, "C1"))
    assert out.getvalue() == "A1"
    sink.done(make_done(2, "C1"))
    sink.done(make_done(1, "B1"))
    assert out.getvalue() == "A1"  # sample 0 still streaming
    sink.step(make_step(0, 1, "A2"))
    sink.done(make_done(0, "A1A2"))
    sink.close()
    assert out.getvalue() == "A1A2\n\nB1\n\nC1\n"


def test_text_sink_separates_a_sample_that_follows_one_which_ended_on_its_first_token():
    out = io.StringIO()
    sink = TextSink(out, num_samples=2)
    sink.step(make_step(0, 0, ""))
    sink.done(make_done(0, "", n=1))  # sample 0 hit EOS at once
    sink.step(make_step(1, 0, "B1"))
    sink.done(make_done(1, "B1", n=1))
    sink.close()
    assert out.getvalue() == "\n\nB1\n"


def test_jsonl_sink_writes_one_strict_json_object_per_event():
    out = io.StringIO()
    sink = JsonlSink(out)
    sink.step(make_step(0, 0, "hi"))
    sink.done(make_done(0, "hi"))
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["step", "done"]
    step = json.loads(lines[0])
    assert step["top"][1] == {"token_id": 9, "token": "[bold]x", "prob": 0.1, "logprob": -2.3, "sampled_prob": 0.2}


def test_json_sink_writes_one_document_with_each_sample_and_its_steps():
    out = io.StringIO()
    sink = JsonSink(out, {"prompt": "p"})
    sink.step(make_step(0, 0, "a"))
    sink.done(make_done(0, "a", n=1))
    sink.close()
    document = json.loads(out.getvalue())
    assert document["prompt"] == "p" and document["interrupted"] is False
    assert document["samples"][0]["text"] == "a" and len(document["samples"][0]["steps"]) == 1


def test_probability_colours_run_from_green_to_red():
    assert [prob_style(p) for p in (0.9, 0.3, 0.1, 0.01)] == ["green", "yellow", "dark_orange", "red"]


def test_live_view_shows_the_alternatives_entropy_and_never_reads_model_text_as_markup():
    state = RunState()
    state.add(make_step(0, 0, "[red]hello"))
    con, buffer = console()
    con.print(live_view(state, "logits -> sample", con))
    shown = buffer.getvalue()
    assert "[red]hello" in shown and "[bold]x" in shown
    assert "H(model)=1.25" in shown and "kept 2" in shown and "0.800" in shown


def test_live_view_keeps_only_the_newest_lines_of_text():
    state = RunState()
    for i in range(30):
        state.add(make_step(0, i, f"line{i}\n"))
    con, buffer = console(height=16)
    con.print(live_view(state, "s", con))
    shown = buffer.getvalue()
    assert "line29" in shown and "line0\n" not in shown


def test_steps_table_has_one_row_per_step():
    con, buffer = console(140)
    con.print(steps_table([make_step(0, i, f"t{i}") for i in range(3)]))
    shown = buffer.getvalue()
    assert all(f"t{i}" in shown for i in range(3))


def test_summary_line_reports_tokens_speed_entropy_logprob_and_perplexity():
    steps = [make_step(0, 0, "a"), make_step(0, 1, "b")]
    line = summary_line(make_done(0, "ab"), steps)
    for part in ("2 tokens", "4.0 tok/s", "mean entropy 1.25 nats (strategy 0.50)", "logprob -1.38",
                 "perplexity 2.00", "finish: length"):
        assert part in line


def test_terminal_sink_without_a_live_panel_streams_coloured_text_and_prints_the_table_and_summary():
    err, err_buffer = console(140)
    out, out_buffer = console()
    sink = TerminalSink(err, out, "logits -> sample", view="steps", summary=True)
    sink.step(make_step(0, 0, "[b]a", prob=0.9))
    sink.done(make_done(0, "[b]a", n=1))
    sink.close()
    assert "[b]a" in out_buffer.getvalue() and "\x1b[" in out_buffer.getvalue()
    assert "steps" in err_buffer.getvalue() and "1 tokens" in err_buffer.getvalue()


def test_after_ctrl_c_the_summary_sums_up_each_sample_as_far_as_it_got(tiny_lm):
    """A signal stops the run mid-sample: the summary lines still come, one per sample, over the tokens it has,
    with `finish: interrupted` (as a finished run's do at its end)."""
    import io
    import itertools

    from rich.console import Console

    from samplecli.engine.decode import DecodeConfig, Step, decode, encode_prompt
    from samplecli.strategies import build_strategy
    from samplecli.views.render import TerminalSink

    strategy = build_strategy({}, strategy="greedy").strategy
    events = decode(tiny_lm, strategy, encode_prompt(tiny_lm, "ROMEO:"), DecodeConfig(max_new_tokens=40,
                                                                                       num_samples=2, seed=1))
    err = io.StringIO()
    sink = TerminalSink(Console(file=err, width=200), None, str(strategy), "none", summary=True, num_samples=2)
    steps = [e for e in itertools.islice(events, 7) if isinstance(e, Step)]
    for step in steps:
        sink.step(step)
    sink.close(interrupted=True)
    lines = err.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["sample 1/2", "sample 2/2"]
    for sample, line in enumerate(lines):
        mine = [s for s in steps if s.sample == sample]
        assert f"{len(mine)} tokens" in line and line.endswith("finish: interrupted")
        assert f"logprob {sum(s.logprob for s in mine):.2f}" in line
