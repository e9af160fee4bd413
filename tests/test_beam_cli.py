"""`samplecli generate` with beam search, as a user meets it: the payload on stdout (the best text, R texts,
or JSONL with per-step hypotheses and ranked `done` records), everything else on stderr, and every bad
combination of flags a one-line error before the model loads (the model path given here does not exist,
so an error about it would mean the flags were checked too late)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from samplecli.cli import app
from samplecli.engine.beam import beam_decode
from samplecli.engine.decode import DecodeConfig, encode_prompt
from samplecli.views.beam import BeamTerminalSink
from tests.conftest import one_line_error, strict_loads

runner = CliRunner()
PROMPT = "ROMEO:"
MISSING = "/nonexistent/samplecli-model"


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="samplecli")


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def generate(model_dir, *args: str):
    return ok("generate", PROMPT, "--model", str(model_dir), *args)


def records(stdout: str) -> list[dict]:
    return [strict_loads(line) for line in stdout.splitlines()]


# --- the payload -------------------------------------------------------------------------------------------------


def test_piped_stdout_is_only_the_best_beams_text(tiny_model_dir):
    result = generate(tiny_model_dir, "--num-beams", "4", "-n", "6")
    jsonl = records(generate(tiny_model_dir, "--num-beams", "4", "-n", "6", "-f", "jsonl", "-q").stdout)
    (best,) = [r for r in jsonl if r["type"] == "done"]
    assert result.stdout == best["text"] + "\n"
    assert "beam(num_beams=4, length_penalty=1, early_stopping=False)" in result.stderr
    assert "returned beams" in result.stderr and "stopped:" in result.stderr


def test_r_returned_sequences_are_separated_by_a_blank_line(tiny_model_dir):
    result = generate(tiny_model_dir, "--num-beams", "4", "--num-return-sequences", "3", "-n", "6", "-q")
    jsonl = records(generate(tiny_model_dir, "--num-beams", "4", "--num-return-sequences", "3", "-n", "6", "-f",
                             "jsonl", "-q").stdout)
    texts = [r["text"] for r in jsonl if r["type"] == "done"]
    assert len(texts) == 3
    assert result.stdout == "\n\n".join(texts) + "\n"
    assert result.stderr == ""


def test_jsonl_has_per_step_hypotheses_and_a_ranked_done_per_returned_sequence(tiny_model_dir):
    recs = records(generate(tiny_model_dir, "--num-beams", "4", "--num-return-sequences", "2", "-n", "5",
                            "--length-penalty", "2", "--early-stopping", "never", "-f", "jsonl", "-q").stdout)
    beam_steps = [r for r in recs if r["type"] == "beam_step"]
    assert beam_steps and [r["step"] for r in beam_steps] == list(range(len(beam_steps)))
    assert beam_steps[-1]["stopped"] and all(r["stopped"] is None for r in beam_steps[:-1])
    for r in beam_steps[:-1]:
        assert len(r["live"]) == 4
        assert {"node", "token_ids", "text", "cumulative", "score", "logprob_sum"} <= r["live"][0].keys()
        assert {c["status"] for c in r["candidates"]} <= {"kept", "finished", "pruned"}
    dones = [r for r in recs if r["type"] == "done"]
    assert [d["rank"] for d in dones] == [0, 1] and [d["sample"] for d in dones] == [0, 1]
    assert dones[0]["score"] >= dones[1]["score"]
    for d in dones:
        assert d["score"] == pytest.approx(d["logprob_sum"] / d["n_tokens"] ** 2, abs=1e-4)
        steps = [r for r in recs if r["type"] == "step" and r["sample"] == d["rank"]]
        assert [s["token_id"] for s in steps] == d["token_ids"]
    assert recs[-1]["type"] == "done"


def test_json_document_holds_the_beam_steps_and_the_samples(tiny_model_dir):
    document = strict_loads(generate(tiny_model_dir, "--num-beams", "2", "-n", "4", "-f", "json", "-q").stdout)
    assert document["beam_steps"] and document["strategy"].endswith("early_stopping=False)")
    assert document["samples"][0]["rank"] == 0 and "score" in document["samples"][0]


def test_one_beam_is_greedy_on_the_command_line(tiny_model_dir):
    greedy = generate(tiny_model_dir, "--temp", "0", "-n", "10", "-q")
    beam = generate(tiny_model_dir, "--strategy", "beam", "--num-beams", "1", "-n", "10", "-q")
    assert beam.stdout == greedy.stdout


def test_strategy_beam_defaults_to_four_beams_and_ignores_sampling_flags_aloud(tiny_model_dir):
    result = generate(tiny_model_dir, "--strategy", "beam", "--temp", "0.7", "-n", "3")
    assert "num_beams=4" in result.stderr
    assert "warning: beam ignores temperature=0.7" in result.stderr


def test_stochastic_beam_is_reproducible_with_a_seed(tiny_model_dir):
    args = ("--strategy", "stochastic-beam", "--num-return-sequences", "3", "-n", "6", "--seed", "5", "-q")
    first, again = generate(tiny_model_dir, *args), generate(tiny_model_dir, *args)
    assert first.stdout == again.stdout and first.stdout.count("\n\n") == 2
    recs = records(generate(tiny_model_dir, *args, "-f", "jsonl").stdout)
    dones = [r for r in recs if r["type"] == "done"]
    assert len({tuple(d["token_ids"]) for d in dones}) == 3 and {d["seed"] for d in dones} == {5}


def test_return_sequences_with_sampling_are_samples(tiny_model_dir):
    recs = records(generate(tiny_model_dir, "--temp", "0.9", "--num-return-sequences", "2", "--seed", "1", "-n", "4",
                            "-f", "jsonl", "-q").stdout)
    assert sorted(r["sample"] for r in recs if r["type"] == "done") == [0, 1]


def test_diverse_beam_search_runs_with_groups(tiny_model_dir):
    recs = records(generate(tiny_model_dir, "--num-beams", "4", "--num-beam-groups", "2", "--diversity-penalty",
                            "1.5", "--num-return-sequences", "4", "-n", "4", "-f", "jsonl", "-q").stdout)
    first = recs[0]
    assert {h["group"] for h in first["live"]} == {0, 1}
    assert len([r for r in recs if r["type"] == "done"]) == 4


# --- the terminal views --------------------------------------------------------------------------------------


def test_view_tree_prints_the_beam_tree_on_stderr(tiny_model_dir):
    result = generate(tiny_model_dir, "--num-beams", "2", "-n", "3", "--view", "tree")
    assert "beam tree" in result.stderr and "step 1: expanded #0" in result.stderr
    assert "kept" in result.stderr and "beam tree" not in result.stdout


def test_the_terminal_sink_shows_live_hypotheses_then_the_ranked_beams(tiny_lm):
    from samplecli.engine.beam import BeamSettings

    err = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    out = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    sink = BeamTerminalSink(err, out, "beam(num_beams=3)", "live", summary=True)
    ids = encode_prompt(tiny_lm, PROMPT)
    events = list(beam_decode(tiny_lm, None, ids, DecodeConfig(max_new_tokens=4),
                              BeamSettings(num_beams=3, num_return_sequences=2)))
    with sink:
        for event in events:
            sink.send(event)
    shown = err.file.getvalue()
    assert "live after step" in shown and "returned beams" in shown and "stopped:" in shown
    texts = [e.text for e in events if type(e).__name__ == "Done"]
    assert out.file.getvalue() == "\n\n".join(texts) + "\n"


# --- bad input: one line, before the model loads --------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["--num-beams", "0"], ["num_beams", "0"]),
    (["--num-beams", "2", "--num-return-sequences", "3"], ["--num-return-sequences (3)", "--num-beams (2)"]),
    (["--temp", "0", "--num-return-sequences", "2"], ["--num-return-sequences 2", "beam search"]),
    (["--strategy", "greedy", "--num-return-sequences", "2"], ["--num-return-sequences 2", "greedy"]),
    (["--num-beams", "3", "--early-stopping", "maybe"], ["early_stopping", "maybe"]),
    (["--num-beams", "4", "--num-beam-groups", "3"], ["--num-beam-groups (3)", "--num-beams (4)"]),
    (["--num-beams", "4", "--diversity-penalty", "0.5"], ["--diversity-penalty 0.5", "--num-beam-groups"]),
    (["--num-beams", "4", "--strategy", "top-k"], ["--num-beams 4", "--strategy top-k"]),
    (["--view", "tree"], ["--view tree", "--num-beams"]),
    (["--num-beams", "4", "--length-penalty", "nan"], ["length_penalty", "nan"]),
])
def test_bad_beam_flags_are_one_line_before_the_model_loads(args, fragments):
    line = one_line_error(invoke("generate", PROMPT, "--model", MISSING, *args), *fragments, code=2)
    assert "nonexistent" not in line  # the flags were checked before the model


def test_beam_only_flags_with_one_beam_warn_and_run(tiny_model_dir):
    result = generate(tiny_model_dir, "--num-beams", "1", "--length-penalty", "2", "--early-stopping", "true",
                      "--temp", "0", "-n", "3", "-q")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "--length-penalty has no effect without beam search" in warnings[0]
    assert "--early-stopping" in warnings[1]
    assert result.stdout.strip() != ""


def test_what_beam_search_cannot_do_is_refused_before_the_model_loads():
    for args, fragments in ((["--stop", "x"], ["--stop"]),
                            (["--num-samples", "3"], ["--num-samples 3", "--num-return-sequences"])):
        line = one_line_error(invoke("generate", PROMPT, "--model", MISSING, "--num-beams", "2", *args), *fragments,
                              code=2)
        assert "nonexistent" not in line  # refused before the model


# --- the registry ---------------------------------------------------------------------------------------------


def test_strategies_lists_beam_and_stochastic_beam():
    document = strict_loads(ok("strategies", "--format", "json").stdout)
    chains = {s["name"]: s["chain"] for s in document["strategies"]}
    assert chains["beam"] == "logits -> beam(num_beams=4, length_penalty=1, early_stopping=False)"
    assert chains["stochastic-beam"] == "logits -> stochastic-beam(num_beams=4)"
    table = ok("strategies").stdout
    assert "beam" in table and "Kool et al. 2019" in table
