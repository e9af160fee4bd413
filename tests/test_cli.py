"""The command line as a user meets it: `samplecli generate`, `strategies`, `--help`, `--version`.

In-process runs go through typer's CliRunner, which keeps stdout and stderr apart, so each test says
what belongs on which: the payload (text, JSONL, JSON) on stdout, everything else on stderr. The
subprocess tests cover what only a real process shows: pipes closed early, Ctrl-C, import cost.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from samplecli.cli import app
from tests.conftest import build_tiny_model, interrupt_once_written, one_line_error, strict_loads

ANSI = "\x1b["
PROMPT = "JULIET:"
STEP_KEYS = {"type", "sample", "step", "token_id", "token", "text", "bytes", "logprob", "prob", "sampled_prob",
             "entropy", "sampled_entropy", "kept", "top"}
TOP_KEYS = {"token_id", "token", "prob", "logprob"}
DONE_KEYS = {"type", "sample", "text", "token_ids", "finish_reason", "n_tokens", "logprob_sum", "perplexity",
             "seconds", "tokens_per_second", "strategy"}
TINY_VOCAB = 300  # build_tiny_model's default vocabulary
EOS_ID = 0  # build_tiny_model's <|endoftext|>

runner = CliRunner()


# --- helpers -------------------------------------------------------------------------------------------------


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input=input, env=env, prog_name="samplecli")


def ok(*args: str, **kwargs):
    """Invoke and insist on success, showing stderr when it fails."""
    result = invoke(*args, **kwargs)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    assert "Traceback" not in result.stderr + result.stdout
    return result


def generate(model_dir, *args: str, prompt: str | None = PROMPT, **kwargs):
    """`samplecli generate [PROMPT] --model DIR ARGS...` (no prompt argument when `prompt` is None)."""
    return ok("generate", *([prompt] if prompt is not None else []), "--model", str(model_dir), *args, **kwargs)


def records(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines, "no JSONL on stdout"
    return [strict_loads(line) for line in lines]


def steps_of(recs: list[dict], sample: int = 0) -> list[dict]:
    return [r for r in recs if r["type"] == "step" and r["sample"] == sample]


def done_of(recs: list[dict], sample: int = 0) -> dict:
    (done,) = [r for r in recs if r["type"] == "done" and r["sample"] == sample]
    return done


def jsonl_run(model_dir, *args: str, **kwargs) -> list[dict]:
    return records(generate(model_dir, "--format", "jsonl", "-q", *args, **kwargs).stdout)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a real run: no colour overrides (so stdout's TTY-ness decides), UTF-8 pipes."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "PY_COLORS")}
    env.update({"PYTHONIOENCODING": "utf-8", "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                **extra})
    return env


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory):
    """A tiny model with a 4096-token context, so a run can stream for a while."""
    return build_tiny_model(tmp_path_factory.mktemp("long-context-model"), n_positions=4096)


# --- stdout is the payload, stderr everything else --------------------------------------------------------------


def test_text_stdout_is_only_the_generated_text_and_the_rest_goes_to_stderr(tiny_model_dir):
    text_run = generate(tiny_model_dir, "--seed", "7", "-n", "12")
    done = done_of(jsonl_run(tiny_model_dir, "--seed", "7", "-n", "12"))
    assert text_run.stdout == done["text"] + "\n"
    assert ANSI not in text_run.stdout and ANSI not in text_run.stderr
    header, *rest = text_run.stderr.splitlines()
    assert str(tiny_model_dir) in header and "seed 7" in header
    assert "logits -> temperature(0.8) -> top-p(0.95) -> sample" in header  # the default strategy
    assert any("12 tokens" in line and "finish: length" in line for line in rest)


def test_quiet_keeps_stderr_empty_and_stdout_unchanged(tiny_model_dir):
    loud = generate(tiny_model_dir, "--seed", "3", "-n", "6")
    for flag in ("--quiet", "-q"):
        quiet = generate(tiny_model_dir, "--seed", "3", "-n", "6", flag)
        assert quiet.stderr == ""
        assert quiet.stdout == loud.stdout


def test_the_same_seed_gives_the_same_output_and_another_seed_another(tiny_model_dir):
    first = generate(tiny_model_dir, "--seed", "11", "-n", "20", "-q")
    again = generate(tiny_model_dir, "--seed", "11", "-n", "20", "-q")
    other = generate(tiny_model_dir, "--seed", "12", "-n", "20", "-q")
    assert first.stdout == again.stdout
    assert first.stdout != other.stdout


def test_without_a_seed_the_chosen_seed_is_reported_and_reproduces_the_run(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "-n", "8")
    seed = done_of(recs)["seed"]
    assert done_of(jsonl_run(tiny_model_dir, "-n", "8", "--seed", str(seed)))["text"] == done_of(recs)["text"]


def test_temperature_zero_is_greedy(tiny_model_dir):
    greedy = jsonl_run(tiny_model_dir, "--strategy", "greedy", "-n", "10")
    for flag in ("--temp", "--temperature"):
        zero = jsonl_run(tiny_model_dir, flag, "0", "-n", "10", "--seed", "5")
        assert done_of(zero)["token_ids"] == done_of(greedy)["token_ids"]
        assert done_of(zero)["strategy"] == "logits -> greedy"
        assert all(s["sampled_prob"] == 1.0 and s["kept"] == 1 for s in steps_of(zero))
    assert generate(tiny_model_dir, "--temp", "0", "-n", "10", "-q").stdout == \
        generate(tiny_model_dir, "--strategy", "greedy", "-n", "10", "-q").stdout


def test_temp_and_temperature_are_one_flag(tiny_model_dir):
    short = jsonl_run(tiny_model_dir, "--temp", "0.7", "--seed", "2", "-n", "8")
    long = jsonl_run(tiny_model_dir, "--temperature", "0.7", "--seed", "2", "-n", "8")
    assert done_of(short)["token_ids"] == done_of(long)["token_ids"]
    assert done_of(short)["strategy"] == "logits -> temperature(0.7) -> sample"


def test_device_and_dtype_flags_give_the_same_run_as_auto_on_the_cpu(tiny_model_dir):
    auto = generate(tiny_model_dir, "--seed", "4", "-n", "8", "-q")
    explicit = generate(tiny_model_dir, "--seed", "4", "-n", "8", "-q", "--device", "cpu", "--dtype", "float32")
    assert explicit.stdout == auto.stdout


def test_the_prompt_can_come_from_stdin(tiny_model_dir):
    from_argument = generate(tiny_model_dir, "--seed", "9", "-n", "8", "-q")
    from_stdin = generate(tiny_model_dir, "--seed", "9", "-n", "8", "-q", prompt=None, input=PROMPT)
    with_newline = generate(tiny_model_dir, "--seed", "9", "-n", "8", "-q", prompt=None, input=PROMPT + "\n")
    assert from_stdin.stdout == from_argument.stdout == with_newline.stdout
    assert from_argument.stdout.strip()


def test_an_empty_prompt_starts_from_bos(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "--seed", "1", "-n", "4", prompt="")
    assert len(steps_of(recs)) == done_of(recs)["n_tokens"] >= 1


# --- the JSONL and JSON contracts ------------------------------------------------------------------------------


@pytest.mark.parametrize("top_n", [0, 1, 3], ids=lambda n: f"top-n={n}")
def test_every_jsonl_line_is_strict_json_with_the_documented_keys(tiny_model_dir, top_n):
    recs = jsonl_run(tiny_model_dir, "--seed", "21", "-n", "10", "--top-n", str(top_n))
    steps, done = steps_of(recs), done_of(recs)
    assert recs[-1] is done and [r["type"] for r in recs[:-1]] == ["step"] * len(steps)
    for i, step in enumerate(steps):
        assert STEP_KEYS <= step.keys()
        assert step["type"] == "step" and step["sample"] == 0 and step["step"] == i
        assert 0 < step["prob"] <= 1 and 0 < step["sampled_prob"] <= 1
        assert math.isclose(step["prob"], math.exp(step["logprob"]), rel_tol=1e-9)
        assert step["entropy"] > 0 and step["sampled_entropy"] >= 0 and 1 <= step["kept"] <= TINY_VOCAB
        assert step["bytes"] and all(isinstance(b, int) and 0 <= b < 256 for b in step["bytes"])
        assert len(step["top"]) == top_n
        for alt in step["top"]:
            assert TOP_KEYS <= alt.keys()
            assert math.isclose(alt["prob"], math.exp(alt["logprob"]), rel_tol=1e-9)
        assert [a["prob"] for a in step["top"]] == sorted((a["prob"] for a in step["top"]), reverse=True)
        if step["top"] and step["token_id"] == step["top"][0]["token_id"]:
            assert math.isclose(step["prob"], step["top"][0]["prob"], rel_tol=1e-6)
    assert DONE_KEYS <= done.keys()
    assert done["text"] == "".join(s["text"] for s in steps)
    assert done["token_ids"] == [s["token_id"] for s in steps]
    assert done["n_tokens"] == len(steps) == 10 and done["finish_reason"] == "length"
    assert math.isclose(done["logprob_sum"], sum(s["logprob"] for s in steps), rel_tol=1e-9)
    assert math.isclose(done["perplexity"], math.exp(-done["logprob_sum"] / done["n_tokens"]), rel_tol=1e-9)
    assert done["seconds"] > 0 and done["tokens_per_second"] > 0
    assert done["strategy"] == "logits -> temperature(0.8) -> top-p(0.95) -> sample"


def test_num_samples_gives_one_done_record_per_sample_each_with_its_own_steps(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "--seed", "8", "-n", "5", "--num-samples", "3")
    dones = [r for r in recs if r["type"] == "done"]
    assert sorted(d["sample"] for d in dones) == [0, 1, 2]
    for sample in range(3):
        steps = steps_of(recs, sample)
        assert [s["step"] for s in steps] == list(range(5))
        assert done_of(recs, sample)["text"] == "".join(s["text"] for s in steps)
    assert len({tuple(d["token_ids"]) for d in dones}) == 3  # independent draws, not copies


def test_several_samples_as_text_are_separated_by_a_blank_line(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "--seed", "8", "-n", "5", "--num-samples", "3")
    text = generate(tiny_model_dir, "--seed", "8", "-n", "5", "--num-samples", "3", "-q").stdout
    assert text == "\n\n".join(done_of(recs, i)["text"] for i in range(3)) + "\n"


def test_format_json_is_one_document_holding_each_sample_and_its_steps(tiny_model_dir):
    result = generate(tiny_model_dir, "--format", "json", "--seed", "6", "-n", "4", "--num-samples", "2",
                      "--top-n", "2", "-q")
    document = strict_loads(result.stdout)
    assert document["model"] == str(tiny_model_dir) and document["prompt"] == PROMPT
    assert document["seed"] == 6 and document["max_new_tokens"] == 4 and document["interrupted"] is False
    assert [s["sample"] for s in document["samples"]] == [0, 1]
    recs = jsonl_run(tiny_model_dir, "--seed", "6", "-n", "4", "--num-samples", "2", "--top-n", "2")
    for sample in document["samples"]:
        assert DONE_KEYS <= sample.keys()
        assert [s["step"] for s in sample["steps"]] == [0, 1, 2, 3]
        assert all(STEP_KEYS <= s.keys() and len(s["top"]) == 2 for s in sample["steps"])
        assert sample["text"] == "".join(s["text"] for s in sample["steps"])
        assert sample["token_ids"] == done_of(recs, sample["sample"])["token_ids"]


def test_output_file_gets_the_text_and_stdout_stays_empty(tiny_model_dir, tmp_path):
    expected = generate(tiny_model_dir, "--seed", "5", "-n", "8", "-q").stdout
    for flag in ("--output", "-o"):
        path = tmp_path / f"out{flag}.txt"
        result = generate(tiny_model_dir, "--seed", "5", "-n", "8", flag, str(path))
        assert result.stdout == ""
        assert path.read_text(encoding="utf-8") == expected
        assert "finish: length" in result.stderr  # the summary still goes to the terminal


def test_output_file_gets_jsonl_with_format_jsonl(tiny_model_dir, tmp_path):
    path = tmp_path / "out.jsonl"
    result = generate(tiny_model_dir, "--seed", "5", "-n", "8", "-f", "jsonl", "-o", str(path), "-q")
    assert result.stdout == "" and result.stderr == ""
    recs = records(path.read_text(encoding="utf-8"))
    assert done_of(recs)["text"] == generate(tiny_model_dir, "--seed", "5", "-n", "8", "-q").stdout[:-1]


# --- each sampling flag has its effect ---------------------------------------------------------------------------


def _nucleus_size(probs: list[float], top_p: float) -> int:
    ranked, mass, kept = sorted(probs, reverse=True), 0.0, 0
    for p in ranked:
        if mass >= top_p:
            break
        mass, kept = mass + p, kept + 1
    return kept


@pytest.mark.parametrize(("flag", "value", "chain", "expected_kept"), [
    ("--top-k", "5", "top-k(5)", lambda probs: 5),
    ("--top-p", "0.5", "top-p(0.5)", lambda probs: _nucleus_size(probs, 0.5)),
    ("--min-p", "0.9", "min-p(0.9)", lambda probs: sum(p >= 0.9 * max(probs) for p in probs)),
    ("--typical-p", "0.5", "typical(0.5)", None),
], ids=["top-k", "top-p", "min-p", "typical-p"])
def test_a_truncation_flag_keeps_the_tokens_it_promises(tiny_model_dir, flag, value, chain, expected_kept):
    recs = jsonl_run(tiny_model_dir, flag, value, "--seed", "13", "-n", "4", "--top-n", "1000")
    assert done_of(recs)["strategy"] == f"logits -> {chain} -> sample"
    for step in steps_of(recs):
        probs = [a["prob"] for a in step["top"]]
        assert len(probs) == TINY_VOCAB and math.isclose(sum(probs), 1.0, rel_tol=1e-4)
        kept = [a for a in step["top"] if a["sampled_prob"] > 0]
        assert step["kept"] == len(kept) < TINY_VOCAB
        if expected_kept is not None:
            assert step["kept"] == expected_kept(probs)
        # the kept tokens keep their relative probabilities: the strategy only renormalises them
        mass = sum(a["prob"] for a in kept)
        for alt in kept:
            assert math.isclose(alt["sampled_prob"], alt["prob"] / mass, rel_tol=1e-4)


def test_chain_sets_an_explicit_order(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "--chain", "top-k=3,temperature=0.7", "--seed", "1", "-n", "4")
    assert done_of(recs)["strategy"] == "logits -> top-k(3) -> temperature(0.7) -> sample"
    assert all(s["kept"] == 3 for s in steps_of(recs))


def _has_repeat(items: list) -> bool:
    return len(items) != len(set(items))


def test_repetition_penalty_stops_greedy_repeating_tokens(tiny_model_dir):
    prompt_ids = [293, 295, 26]  # "JULIET:" in the tiny tokenizer
    plain = done_of(jsonl_run(tiny_model_dir, "--strategy", "greedy", "-n", "15"))["token_ids"]
    assert _has_repeat(plain)  # the random model's greedy run loops: the penalty has something to do
    recs = jsonl_run(tiny_model_dir, "--strategy", "greedy", "--repetition-penalty", "1000", "-n", "15")
    penalised = done_of(recs)["token_ids"]
    assert done_of(recs)["strategy"] == "logits -> repetition-penalty(1000) -> greedy"
    assert not _has_repeat(prompt_ids + penalised)


def test_no_repeat_ngram_size_bans_a_repeated_bigram(tiny_model_dir):
    def bigrams(ids):
        return list(zip(ids, ids[1:], strict=False))

    prompt_ids = [293, 295, 26]
    plain = done_of(jsonl_run(tiny_model_dir, "--strategy", "greedy", "-n", "15"))["token_ids"]
    assert _has_repeat(bigrams(prompt_ids + plain))
    recs = jsonl_run(tiny_model_dir, "--strategy", "greedy", "--no-repeat-ngram-size", "2", "-n", "15")
    assert done_of(recs)["strategy"] == "logits -> no-repeat-ngram(2) -> greedy"
    assert not _has_repeat(bigrams(prompt_ids + done_of(recs)["token_ids"]))


def test_min_new_tokens_masks_eos_until_then(tiny_model_dir):
    recs = jsonl_run(tiny_model_dir, "--strategy", "sample", "--min-new-tokens", "3", "-n", "6", "--seed", "2",
                     "--top-n", "1000")
    steps = steps_of(recs)
    assert len(steps) >= 4
    for step in steps:
        (eos,) = [a for a in step["top"] if a["token_id"] == EOS_ID]
        assert eos["prob"] > 0  # the model still predicts it ...
        assert (eos["sampled_prob"] > 0) == (step["step"] >= 3)  # ... but it cannot be drawn before step 3


STOP_RUN = ("--seed", "31", "-n", "40", "--min-new-tokens", "40")  # EOS masked: 40 tokens of text to cut


def _stop_candidates(text: str, length: int) -> list[tuple[str, int]]:
    """Substrings of `text` (not at its very start, no replacement character) with where each first occurs."""
    found = [(text[i: i + length], i) for i in range(1, len(text) - length)]
    return [(piece, i) for piece, i in found if "\ufffd" not in piece and text.find(piece) == i]


def test_stop_cuts_the_text_before_the_stop_string(tiny_model_dir):
    full = done_of(jsonl_run(tiny_model_dir, *STOP_RUN))["text"]
    stop, at = _stop_candidates(full, 2)[0]
    recs = jsonl_run(tiny_model_dir, *STOP_RUN, "--stop", stop)
    done = done_of(recs)
    assert done["text"] == full[:at] and done["finish_reason"] == "stop"
    assert "".join(s["text"] for s in steps_of(recs)) == full[:at]
    text = generate(tiny_model_dir, *STOP_RUN, "--stop", stop, "-q").stdout
    assert text == full[:at] + "\n"


def test_stop_is_repeatable_and_the_earliest_match_wins(tiny_model_dir):
    full = done_of(jsonl_run(tiny_model_dir, *STOP_RUN))["text"]
    candidates = _stop_candidates(full, 2)
    (early, at), (late, late_at) = candidates[0], candidates[-1]
    assert at < late_at
    for first, second in ((late, early), (early, late)):
        recs = jsonl_run(tiny_model_dir, *STOP_RUN, "--stop", first, "--stop", second)
        assert done_of(recs)["text"] == full[:at]
    recs = jsonl_run(tiny_model_dir, *STOP_RUN, "--stop", late)
    assert done_of(recs)["text"] == full[:late_at]


@pytest.mark.parametrize("view", ["live", "steps", "none"])
def test_view_shapes_stderr_only(tiny_model_dir, view):
    expected = generate(tiny_model_dir, "--seed", "3", "-n", "5", "-q").stdout
    result = generate(tiny_model_dir, "--seed", "3", "-n", "5", "--view", view, env={"COLUMNS": "200"})
    assert result.stdout == expected
    assert ANSI not in result.stderr  # stderr is not a terminal here: no live panel, no colour
    has_table = "kept" in result.stderr and "H strategy" in result.stderr
    assert has_table == (view == "steps")
    assert "finish: length" in result.stderr


def test_a_setting_the_strategy_ignores_is_reported_on_stderr(tiny_model_dir):
    result = generate(tiny_model_dir, "--strategy", "greedy", "--top-k", "5", "-n", "3")
    assert "warning: greedy ignores top_k=5" in result.stderr
    assert ANSI not in result.stdout


# --- bad input: one line on stderr, a non-zero exit, no traceback, and before the model loads -------------------


BAD_FLAGS = [
    ("temperature-negative", ["--temp", "-1"], ["temperature", "-1"]),
    ("temperature-nan", ["--temp", "nan"], ["temperature", "nan"]),
    ("temperature-inf", ["--temperature", "inf"], ["temperature", "inf"]),
    ("top-p-zero", ["--top-p", "0"], ["top_p", "0"]),
    ("top-p-above-one", ["--top-p", "1.5"], ["top_p", "1.5"]),
    ("top-k-negative", ["--top-k", "-1"], ["top_k", "-1"]),
    ("top-k-fraction", ["--top-k", "2.5"], ["--top-k", "2.5"]),
    ("top-k-word", ["--top-k", "abc"], ["--top-k", "abc"]),
    ("min-p-negative", ["--min-p", "-0.1"], ["min_p", "-0.1"]),
    ("min-p-above-one", ["--min-p", "1.5"], ["min_p", "1.5"]),
    ("typical-p-zero", ["--typical-p", "0"], ["typical_p", "0"]),
    ("typical-p-above-one", ["--typical-p", "1.5"], ["typical_p", "1.5"]),
    ("repetition-penalty-zero", ["--repetition-penalty", "0"], ["repetition_penalty", "0"]),
    ("repetition-penalty-negative", ["--repetition-penalty", "-1"], ["repetition_penalty", "-1"]),
    ("repetition-penalty-inf", ["--repetition-penalty", "inf"], ["repetition_penalty", "inf"]),
    ("repetition-penalty-nan", ["--repetition-penalty", "nan"], ["repetition_penalty", "nan"]),
    ("no-repeat-ngram-negative", ["--no-repeat-ngram-size", "-1"], ["no_repeat_ngram_size", "-1"]),
    ("max-new-tokens-zero", ["--max-new-tokens", "0"], ["--max-new-tokens", "0"]),
    ("max-new-tokens-short-flag-zero", ["-n", "0"], ["--max-new-tokens", "0"]),
    ("min-above-max-new-tokens", ["-n", "5", "--min-new-tokens", "6"], ["--min-new-tokens", "6", "5"]),
    ("strategy-unknown", ["--strategy", "topp"], ["unknown strategy", "topp", "did you mean `top-p`", "greedy",
                                                    "typical", "min-p"]),
    ("chain-missing-value", ["--chain", "top-k="], ["--chain", "top-k="]),
    ("chain-unknown-sampler", ["--chain", "top-z=3"], ["--chain", "top-z", "did you mean"]),
    ("chain-empty-element", ["--chain", ","], ["--chain", "','"]),
    ("chain-and-strategy", ["--chain", "top-k=3", "--strategy", "greedy"], ["--strategy", "--chain"]),
    ("stop-empty", ["--stop", ""], ["--stop", "''"]),
    ("num-samples-zero", ["--num-samples", "0"], ["--num-samples", "0"]),
    ("top-n-negative", ["--top-n", "-1"], ["--top-n", "-1"]),
    ("seed-negative", ["--seed", "-1"], ["--seed", "-1"]),
    ("format-unknown", ["--format", "xml"], ["--format", "xml"]),
    ("view-unknown", ["--view", "fancy"], ["--view", "fancy"]),
]


@pytest.mark.parametrize(("args", "fragments"), [case[1:] for case in BAD_FLAGS], ids=[case[0] for case in BAD_FLAGS])
def test_a_bad_flag_is_one_line_naming_it_before_the_model_loads(tmp_path, args, fragments):
    missing_model = tmp_path / "no-such-model"  # were the model loaded first, this would be the error
    result = invoke("generate", PROMPT, "--model", str(missing_model), *args)
    one_line_error(result, *fragments, code=2)
    assert str(missing_model) not in result.stderr


def test_a_missing_model_directory_is_one_line_naming_it(tmp_path):
    missing_model = tmp_path / "no-such-model"
    result = invoke("generate", PROMPT, "--model", str(missing_model), "-n", "2")
    one_line_error(result, str(missing_model), "no such directory", code=1)


def test_a_directory_without_config_json_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    result = invoke("generate", PROMPT, "--model", str(tmp_path), "-n", "2")
    one_line_error(result, f"model `{tmp_path}`", "config.json", code=1)


def test_an_unknown_device_is_one_line(tiny_model_dir):
    result = invoke("generate", PROMPT, "--model", str(tiny_model_dir), "--device", "tpu")
    one_line_error(result, "--device", "tpu", code=2)


def test_an_unknown_command_is_one_line():
    one_line_error(invoke("generat"), "generat", code=2)


# --- samplecli strategies ---------------------------------------------------------------------------------------


CORE_NAMED = ["greedy", "sample", "temperature", "top-k", "top-p", "min-p", "typical"]
CORE_SAMPLERS = {"temperature": ("temperature", 1.0), "top-k": ("top_k", 40), "top-p": ("top_p", 0.95),
                 "min-p": ("min_p", 0.1), "typical": ("typical_p", 0.95),
                 "repetition-penalty": ("repetition_penalty", 1.1), "no-repeat-ngram": ("no_repeat_ngram_size", 3)}


def registry() -> list[dict]:
    """Every registered sampler as `samplecli strategies --format json` should list it."""
    from samplecli.strategies import describe_registry

    return json.loads(json.dumps(describe_registry()))


def test_strategies_json_lists_every_named_strategy_and_sampler_with_its_defaults():
    result = ok("strategies", "--format", "json")
    assert result.stderr == ""
    document = strict_loads(result.stdout)
    names = [s["name"] for s in document["strategies"]]
    assert [n for n in names if n in CORE_NAMED] == CORE_NAMED
    chains = {s["name"]: s["chain"] for s in document["strategies"]}
    assert chains["greedy"] == "logits -> greedy" and chains["top-p"] == "logits -> top-p(0.95) -> sample"
    assert all(s["summary"] and s["source"] for s in document["strategies"])
    assert document["samplers"] == registry()  # all of them, not only the core ones below
    samplers = {s["name"]: s for s in document["samplers"]}
    assert {*CORE_SAMPLERS, "greedy", "sample"} <= samplers.keys()
    for sampler in document["samplers"]:
        assert sampler["kind"] in ("reshaping", "truncation", "penalty", "stateful", "constraint", "selector")
        assert all({"name", "default", "rule"} <= p.keys() and p["rule"] for p in sampler["params"])
    for name, (param, default) in CORE_SAMPLERS.items():
        first = samplers[name]["params"][0]
        assert (first["name"], first["default"]) == (param, default)
    assert samplers["greedy"]["params"] == [] and samplers["sample"]["kind"] == "selector"
    assert document["default"]["chain"] == "logits -> temperature(0.8) -> top-p(0.95) -> sample"


def test_strategies_table_shows_the_same_registry():
    result = ok("strategies", env={"COLUMNS": "400"})
    assert ANSI not in result.stdout and result.stderr == ""
    rows = result.stdout.splitlines()
    for name in CORE_NAMED:
        assert any(row.startswith(f"│ {name} ") for row in rows), name
    for sampler in registry():
        assert any(row.startswith(f"│ {sampler['name']} ") for row in rows), sampler["name"]
        for param in sampler["params"]:
            assert any(f"│ {param['name']} " in row and f"│ {param['default']} " in row for row in rows), param
    assert "logits -> temperature(0.8) -> top-p(0.95) -> sample" in result.stdout


def test_strategies_rejects_an_unknown_format():
    one_line_error(invoke("strategies", "--format", "yaml"), "--format", "yaml", code=2)


# --- real processes ---------------------------------------------------------------------------------------------


def _modules_imported(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime -m samplecli ARGV` and list every module it imported."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "samplecli", *argv], capture_output=True,
                         text=True, encoding="utf-8", env=subprocess_env(), timeout=60)
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert lines and "cumulative" in lines[0], "no -X importtime report"
    modules = {line.rsplit("|", 1)[-1].strip() for line in lines[1:]}
    assert "samplecli.cli" in modules and "typer" in modules  # the report is real and complete
    return run, modules


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["strategies"],
                                  ["strategies", "--format", "json"]], ids=" ".join)
def test_help_and_strategies_do_not_import_torch_or_transformers(argv):
    run, modules = _modules_imported(*argv)
    assert run.returncode == 0, run.stderr[-2000:]
    heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "transformers", "tokenizers"))
    assert heavy == []
    assert run.stdout.strip()


def test_version_works_as_a_module():
    run = subprocess.run([sys.executable, "-m", "samplecli", "--version"], capture_output=True, text=True,
                         encoding="utf-8", env=subprocess_env(), timeout=60)
    from samplecli import __version__

    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == f"samplecli {__version__}\n"


def test_a_pipe_gets_plain_text_and_a_reader_that_stops_early_ends_the_run_quietly(long_model_dir):
    args = ["generate", PROMPT, "--model", str(long_model_dir), "-n", "200", "--min-new-tokens", "200", "--seed", "1",
            "--view", "steps"]
    samplecli = shlex.join([sys.executable, "-m", "samplecli", *args])
    # no pipefail: the shell's status is head's; PIPESTATUS also reports samplecli's own
    command = f'{samplecli} | head -c 20; status=("${{PIPESTATUS[@]}}"); echo "pipestatus ${{status[*]}}" >&2; ' \
              'exit ${status[1]}'
    run = subprocess.run(["bash", "-c", command], capture_output=True, env=subprocess_env(COLUMNS="160"),
                         timeout=120)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 0, stderr
    assert stderr.splitlines()[-1] == "pipestatus 0 0"  # samplecli itself exits 0 too
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr
    # stdout is a pipe, not a terminal: exactly the text's bytes, no colour codes, on either stream
    assert len(run.stdout) == 20
    assert run.stdout == ok(*args, "-q").stdout.encode("utf-8")[:20]
    assert ANSI.encode() not in run.stdout and ANSI not in stderr
    assert "H strategy" in stderr  # the --view steps table still went to stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_mid_stream_exits_130_and_keeps_what_was_written(long_model_dir, tmp_path):
    out = tmp_path / "streamed.txt"
    argv = [sys.executable, "-m", "samplecli", "generate", PROMPT, "--model", str(long_model_dir), "-o", str(out),
            "-n", "100000", "--min-new-tokens", "100000", "--seed", "1"]
    returncode, stdout, stderr = interrupt_once_written(argv, out, subprocess_env())
    assert returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.splitlines()[-1] == "interrupted"
    assert stdout == b""
    assert out.read_text(encoding="utf-8")  # what was streamed before Ctrl-C stays in the file


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signal_name", "status", "word"), [("SIGINT", 130, "interrupted"),
                                                            ("SIGTERM", 143, "terminated")])
def test_a_signal_keeps_every_sample_of_the_text_each_cut_one_marked(long_model_dir, tmp_path, signal_name, status,
                                                                     word):
    """Several samples decode side by side in one batch: sample 0 streams, the others are held until their turn.
    Ctrl-C (or a kill) writes them all, each after its separator, each cut one ending on its own marked line."""
    import signal

    from samplecli.views.sinks import INTERRUPTED

    out = tmp_path / "samples.txt"
    argv = [sys.executable, "-m", "samplecli", "generate", PROMPT, "--model", str(long_model_dir), "-o", str(out),
            "-n", "100000", "--min-new-tokens", "100000", "--num-samples", "6", "--separator", "===SEP===", "-q",
            "--seed", "1"]
    returncode, stdout, stderr = interrupt_once_written(argv, out, subprocess_env(),
                                                        signal_number=getattr(signal, signal_name))
    assert returncode == status, stderr
    assert stderr.splitlines()[-1] == word and "Traceback" not in stderr
    assert stdout == b""
    samples = out.read_text(encoding="utf-8").split("\n===SEP===\n")
    assert len(samples) == 6  # none finished (--min-new-tokens), and none is lost
    assert all(sample.endswith(INTERRUPTED) for sample in samples[:-1]) and samples[-1].endswith(INTERRUPTED + "\n")


def test_ctrl_c_while_the_plugins_load_is_one_line_and_130():
    """A signal outside a command's error boundary (the app's callback loads the plugins): still one line."""
    code = ("import builtins, sys\n"
            "real = builtins.__import__\n"
            "def guarded(name, globals=None, locals=None, fromlist=(), level=0):\n"
            "    if name == 'samplecli' and fromlist and 'backends' in fromlist:\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, globals, locals, fromlist, level)\n"
            "builtins.__import__ = guarded\n"
            "from samplecli.__main__ import main\n"
            "sys.argv = ['samplecli', 'generate', 'hi', '-n', '2']\n"
            "main()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         timeout=600)
    assert run.returncode == 130 and run.stdout == ""
    assert run.stderr.strip() == "interrupted"


def test_stop_strings_take_the_escapes_llama_cpp_takes():
    from samplecli.config.inputs import unescape

    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n" and unescape(r"\x41\u00e9\q") == "Aé\\q"
    escaped = invoke("generate", "ROMEO:", "--stop", r"\n\n", "-n", "100", "--seed", "1", "-f", "json", "-q")
    typed = invoke("generate", "ROMEO:", "--stop", "\n\n", "-n", "100", "--seed", "1", "-f", "json", "-q")
    assert escaped.exit_code == typed.exit_code == 0, escaped.stderr
    first, second = json.loads(escaped.stdout)["samples"][0], json.loads(typed.stdout)["samples"][0]
    assert first["finish_reason"] == "stop" and first["text"] == second["text"]


def test_a_bad_choice_names_the_flag_without_the_validators_wording():
    result = invoke("generate", "x", "-f", "yaml")
    one_line_error(result, "--format", "'yaml' is not one of 'text', 'jsonl', 'json'", code=2)
    assert "Value error" not in result.stderr


def test_the_kl_of_plain_sampling_is_zero_never_a_rounding_below_it():
    result = invoke("generate", "ROMEO:", "--temp", "1", "--top-p", "1", "-n", "20", "--seed", "1", "-f", "jsonl", "-q")
    kls = [json.loads(line)["kl"] for line in result.stdout.splitlines() if '"step"' in line]
    assert len(kls) == 20 and all(kl == 0 or 0 < kl < 1e-6 for kl in kls)


@pytest.mark.parametrize("command", ["generate", "compare", "chat", "inspect", "score", "explore", "strategies"])
def test_help_at_80_columns_shows_flags_as_flags_and_one_style_of_default(command):
    result = subprocess.run([sys.executable, "-m", "samplecli", command, "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert "<bool>" not in shown and "[default:" not in shown
    assert "<list[" not in shown and all(len(line) <= 80 for line in shown.splitlines())


def test_the_strategies_tables_never_break_a_word_at_80_columns():
    result = subprocess.run([sys.executable, "-m", "samplecli", "strategies"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    cells = [cell.strip() for line in result.stdout.splitlines() for cell in line.split("│")]
    assert "temperatu" not in cells and "temperature" in " ".join(cells)
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


@pytest.mark.parametrize("value", ["true", "False", "1"])
def test_a_flag_given_a_value_is_one_line_not_a_prompt(value):
    one_line_error(invoke("generate", "--trust-remote-code", value, "-n", "3"), "--trust-remote-code is a flag",
                   f"drop '{value}'", code=2)
