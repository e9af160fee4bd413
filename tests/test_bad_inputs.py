"""Issue #18, case by case: bad input as a new user types it ends as one line naming the flag (or file) and the
value, a non-zero exit, no traceback and nothing on stdout, and nothing already produced is lost. The checks
that can come before the model loads do: `no_model` makes loading one fail the test.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplecli.cli import app
from samplecli.errors import SampleCliError
from tests.conftest import one_line_error

runner = CliRunner()
PROMPT = "ROMEO:"
TINY_VOCAB, TINY_CONTEXT = 300, 64  # build_tiny_model's


def invoke(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input=input, env=env, prog_name="samplecli")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("SAMPLECLI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SAMPLECLI_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the error has to come before it."""
    import samplecli.backends
    import samplecli.backends.torch_lm

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(samplecli.backends, "open_backend", refuse)
    monkeypatch.setattr(samplecli.backends.torch_lm, "load", refuse)


# --- output paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "compare"])
def test_an_output_path_in_a_missing_directory_is_refused_before_the_model_loads(no_model, tmp_path, command):
    target = tmp_path / "nodir" / "sub" / "out.txt"
    extra = ["-s", "greedy"] if command == "compare" else []
    one_line_error(invoke(command, PROMPT, *extra, "-o", str(target)), "--output", str(target), "does not exist",
                   code=2)


@pytest.mark.parametrize("command", ["generate", "compare"])
def test_an_output_path_where_no_file_can_be_made_is_refused_before_the_model_loads(no_model, command):
    extra = ["-s", "greedy"] if command == "compare" else []
    one_line_error(invoke(command, PROMPT, *extra, "-o", "/proc/x"), "--output /proc/x", "cannot write there", code=2)


def test_an_output_path_that_is_a_directory_is_refused_before_the_model_loads(no_model, tmp_path):
    one_line_error(invoke("generate", PROMPT, "-o", str(tmp_path)), "--output", str(tmp_path), "is a directory",
                   code=2)


def test_the_output_check_leaves_no_file_behind(no_model, tmp_path):
    target = tmp_path / "out.txt"
    one_line_error(invoke("generate", PROMPT, "-o", str(target), "--top-k", "-3"), "--top-k")
    assert not target.exists()
    existing = tmp_path / "kept.txt"
    existing.write_text("earlier run")
    one_line_error(invoke("generate", PROMPT, "-o", str(existing), "--top-k", "-3"), "--top-k")
    assert existing.read_text() == "earlier run"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_during_generate_is_one_line_naming_the_output(tiny_model_dir):
    result = invoke("generate", PROMPT, "--model", str(tiny_model_dir), "-n", "4", "-o", "/dev/full")
    one_line_error(result, "--output /dev/full", "No space left on device", "stays", code=1, started=True)


def test_a_write_failure_keeps_what_was_written_and_is_raised_once():
    from samplecli.config.inputs import OutputFile

    class Disk(io.StringIO):
        def __init__(self):
            super().__init__()
            self.room = 2

        def flush(self):
            if self.room == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= 1

    disk = Disk()
    out = OutputFile(disk, "--output out.txt")
    out.write("ROMEO:")
    out.flush()
    out.write(" But")
    out.flush()
    out.write(" soft")
    with pytest.raises(SampleCliError, match="--output out.txt: writing failed .No space left on device.; what was"):
        out.flush()
    out.write(" ignored")
    out.flush()  # the failure is reported once; a sink closing afterwards does not fail again
    out.close()
    assert disk.getvalue() == "ROMEO: But soft"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_compare_report_that_cannot_be_written_is_kept_in_a_file_the_error_names(tiny_model_dir):
    result = invoke("compare", PROMPT, "-s", "greedy", "--model", str(tiny_model_dir), "-n", "3", "-o", "/dev/full")
    line = one_line_error(result, "--output /dev/full", "No space left on device", "the report is in", code=1,
                          started=True)
    saved = Path(line.rsplit("the report is in ", 1)[1].strip())
    try:
        assert "== greedy ==" in saved.read_text(encoding="utf-8")
    finally:
        saved.unlink()


def test_compare_refuses_to_write_its_report_over_the_reference_text(no_model, tmp_path):
    reference = tmp_path / "ref.txt"
    reference.write_text("But soft, what light through yonder window breaks?\n" * 20)
    before = reference.read_text()
    result = invoke("compare", PROMPT, "-s", "greedy", "--reference", str(reference), "-o", str(reference))
    one_line_error(result, "--output", str(reference), "--reference", code=2)
    assert reference.read_text() == before


# --- text that is not UTF-8 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "inspect", "compare", "score"])
def test_a_prompt_on_stdin_that_is_not_utf8_is_refused_with_the_byte_offset(no_model, command):
    extra = ["-s", "greedy"] if command == "compare" else []
    result = invoke(command, *extra, input=b"\xff\xfeROMEO:\xc3(")
    one_line_error(result, "standard input", "not valid UTF-8", "0xff", "offset 0", code=2)
    result = invoke(command, *extra, input=b"ROMEO: \xff\xfe hello")
    one_line_error(result, "standard input", "not valid UTF-8", "offset 7", code=2)


@pytest.mark.parametrize("command", ["generate", "inspect", "compare", "score"])
def test_an_argument_that_is_not_utf8_is_refused_with_the_byte_offset(no_model, command):
    extra = ["-s", "greedy"] if command == "compare" else []
    # Python hands undecodable bytes of argv over as surrogate escapes
    result = invoke(command, "ROMEO:\udcff\udcfe", *extra)
    one_line_error(result, "argument", "not valid UTF-8", "0xff", "offset 6", code=2)


def test_settings_that_are_not_utf8_are_refused(no_model):
    one_line_error(invoke("generate", PROMPT, "--stop", "a\udcff"), "--stop", "not valid UTF-8", code=2)
    one_line_error(invoke("generate", PROMPT, "--strategy", "gre\udcffedy"), "--strategy", "not valid UTF-8", code=2)


def test_a_file_to_score_that_is_not_utf8_names_the_file_and_the_offset(no_model, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    one_line_error(invoke("score", "--file", str(path)), "--file", str(path), "not valid UTF-8", "offset 3")


def test_real_argv_and_stdin_bytes_are_refused_without_a_traceback():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("SAMPLECLI_")}
    argv = [sys.executable, "-m", "samplecli", "generate", os.fsdecode(b"ROMEO:\xff\xfe")]
    run = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 2 and run.stdout == b"" and "Traceback" not in stderr
    assert stderr.startswith("error: the prompt argument: not valid UTF-8 (byte 0xff at offset 6)"), stderr
    run = subprocess.run([sys.executable, "-m", "samplecli", "score"], input=b"ROMEO: \xff\xfe hello",
                         capture_output=True, env=env, timeout=120)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 2 and run.stdout == b"" and "Traceback" not in stderr
    assert "not valid UTF-8 (byte 0xff at offset 7)" in stderr


# --- values refused (or no longer accepted silently) ------------------------------------------------------------


def test_a_sweep_step_too_small_to_count_is_one_line(no_model):
    one_line_error(invoke("inspect", PROMPT, "--sweep", "top-p=0:1:1e-320"), "--sweep", "1e-320", "too many values",
                   code=2)


def test_an_empty_file_to_score_names_the_flag_and_the_file(no_model, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    one_line_error(invoke("score", "--file", str(path)), "--file", str(path), "empty")
    one_line_error(invoke("score", ""), "text argument", "empty")
    one_line_error(invoke("score", input=""), "standard input", "empty")


@pytest.mark.parametrize("chain", ["top-k:top_k=5:top_k=6", "top-k=5:top_k=6", "xtc:seed=1:xtc_threshold=0.1:seed=2"])
def test_a_chain_parameter_given_twice_is_refused(no_model, chain):
    one_line_error(invoke("generate", PROMPT, "--chain", chain), "--chain", "given twice", code=2)


def test_a_compare_spec_setting_given_twice_is_refused(no_model):
    one_line_error(invoke("compare", PROMPT, "-s", "top-k:top_k=5:top_k=6"), "-s", "`top_k` is given twice", code=2)


def test_malformed_toml_in_the_environment_is_refused_not_taken_literally(no_model):
    result = invoke("generate", PROMPT, env={"SAMPLECLI_STOP_STRINGS": '["\\n\\n"'})
    one_line_error(result, "SAMPLECLI_STOP_STRINGS", "not a valid TOML value", code=2)
    result = invoke("generate", PROMPT, env={"SAMPLECLI_TOP_P": "0.9.1"})
    one_line_error(result, "SAMPLECLI_TOP_P", code=2)


def test_a_bare_string_in_the_environment_still_works():
    from samplecli.config.environment import from_env

    assert from_env({"SAMPLECLI_STOP_STRINGS": "END"})["stop_strings"].value == ["END"]
    assert from_env({"SAMPLECLI_STOP_STRINGS": '["\\n\\n", "END"]'})["stop_strings"].value == ["\n\n", "END"]


def test_a_misspelt_variable_is_warned_about_with_the_closest_name():
    result = invoke("strategies", "--format", "json", env={"SAMPLECLI_TEMPRATURE": "0.3"})
    assert result.exit_code == 0
    (line,) = result.stderr.splitlines()
    assert line.startswith("warning: SAMPLECLI_TEMPRATURE") and "SAMPLECLI_TEMPERATURE" in line
    json.loads(result.stdout)  # the payload is untouched
    quiet = invoke("strategies", "--format", "json", env={"SAMPLECLI_CONFIG_DIR": "/tmp", "SAMPLECLI_API_KEY": "x"})
    assert quiet.stderr == ""


def test_length_penalty_nan_says_finite_once(no_model):
    line = one_line_error(invoke("generate", PROMPT, "--num-beams", "2", "--length-penalty", "nan"),
                          "--length-penalty", "nan")
    assert "finite number finite" not in line and "a finite number" in line


@pytest.mark.parametrize("form", ["name", "path"])
def test_a_preset_that_is_a_directory_says_so(no_model, tmp_path, monkeypatch, form):
    folder = tmp_path / "presets-dir"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    ref = "presets-dir" if form == "name" else str(folder)
    one_line_error(invoke("generate", PROMPT, "--preset", ref), "presets-dir", "is a directory", code=2)


def test_the_same_strategy_twice_in_compare_is_numbered(tiny_model_dir):
    result = invoke("compare", PROMPT, "-s", "greedy", "-s", "greedy", "--no-coupled", "-n", "3", "--model",
                    str(tiny_model_dir), "--format", "json")
    assert result.exit_code == 0, result.stderr
    labels = [s["label"] for s in json.loads(result.stdout)["strategies"]]
    assert labels == ["greedy #1", "greedy #2"]


@pytest.mark.parametrize(("args", "path"), [
    (["generate", "--temp"], "samplecli generate --help"),
    (["generate", "--trust-remote-code=1"], "samplecli generate --help"),
    (["compare", "--coupled=3"], "samplecli compare --help"),
    (["presets", "save", "x", "--temp"], "samplecli presets save --help"),
])
def test_a_subcommands_flag_error_points_at_that_subcommands_help(args, path):
    one_line_error(invoke(*args), f"(see `{path}`)", code=2)


def test_a_truncated_weights_file_is_named(tmp_path, tiny_model_dir):
    import shutil

    model = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    line = one_line_error(invoke("generate", PROMPT, "--model", str(model), "-n", "2"), str(weights), "truncated")
    assert "deserializing" not in line


# --- checked against the model's config before its weights load -----------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["generate", PROMPT, "--logit-bias", "999999=1"], ["--logit-bias", "999999", f"{TINY_VOCAB} tokens"]),
    (["generate", PROMPT, "--logprob-of", "99999"], ["--logprob-of", "99999", f"{TINY_VOCAB} tokens"]),
    (["inspect", PROMPT, "--logit-bias", "300=-inf"], ["--logit-bias", "300", f"{TINY_VOCAB} tokens"]),
    (["compare", PROMPT, "-s", "greedy", "--logit-bias", "1000=2"], ["--logit-bias", "1000"]),
    (["score", "hello", "--stride", "0"], ["--stride", "0", f"context of {TINY_CONTEXT}"]),
    (["score", "hello", "--stride", "-1"], ["--stride", "-1"]),
    (["score", "hello", "--stride", "64"], ["--stride", "64"]),
    (["inspect", PROMPT, "--at", "100000"], ["--at 100000", f"context of {TINY_CONTEXT} tokens"]),
    (["generate", PROMPT, "--device", "quantum"], ["--device", "quantum"]),
    (["generate", PROMPT, "--dtype", "float8"], ["--dtype", "float8"]),
    (["score", "hello", "--device", "quantum"], ["--device", "quantum"]),
    (["inspect", PROMPT, "--dtype", "float8"], ["--dtype", "float8"]),
])
def test_what_the_config_can_refuse_is_refused_before_the_model_loads(no_model, tiny_model_dir, args, fragments):
    one_line_error(invoke(*args, "--model", str(tiny_model_dir)), *fragments, code=2)


def test_device_and_dtype_names_are_checked_without_torch():
    code = ("import sys; from samplecli.config.preflight import check_device_dtype\n"
            "try:\n    check_device_dtype('quantum', 'auto')\nexcept Exception as exc:\n    print(exc)\n"
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.splitlines() == ["--device: unknown device `quantum`; valid: auto, cpu, cuda, mps", "False"]


# --- memory ------------------------------------------------------------------------------------------------------


def test_the_memory_estimate_matches_what_the_bundled_model_was_measured_to_take():
    from samplecli.backends.facts import read_facts
    from samplecli.backends.memory import RUNTIME_BYTES, estimate

    facts = read_facts(None)
    # measured peak RSS at 100 new tokens: 1.32 GB for 500 samples in one batch, 4.0 GB for 2000
    for rows, measured in ((500, 1.32 * 2**30), (2000, 4.0 * 2**30)):
        needed = estimate(facts, rows, 102, device="cpu")
        assert measured * 0.95 <= needed.total <= measured * 1.25, (rows, needed.describe())
    assert estimate(facts, 1, 102).total < RUNTIME_BYTES + 64 * 2**20


def test_a_run_that_does_not_fit_in_memory_is_refused_with_both_figures(no_model, monkeypatch):
    import samplecli.backends.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda kind: (300 * 2**20, "system memory available"))
    line = one_line_error(invoke("generate", PROMPT, "--num-beams", "2000", "--device", "cpu"), "--num-beams 2000",
                          "KV cache", "300 MB of system memory available", code=1)
    assert "needs about" in line
    line = one_line_error(invoke("generate", PROMPT, "--num-samples", "10000", "--device", "cpu"),
                          "--num-samples 10000 (256 at a time)", code=1)
    assert "256 rows" in line  # the estimate is for one chunk, not for 10000 rows


def test_results_too_many_to_keep_are_refused_before_the_model_loads(no_model):
    line = one_line_error(invoke("generate", PROMPT, "--num-samples", "100000000", "-f", "json"),
                          "--num-samples 100000000", "results kept to the end", "--format jsonl", code=1)
    assert "system memory" in line
    one_line_error(invoke("compare", PROMPT, "-s", "greedy", "-s", "top-k", "--num-samples", "100000000"),
                   "2 strategies x --num-samples 100000000", "results kept to the end", code=1)


def test_the_terminal_summary_keeps_sums_not_every_step():
    from samplecli.views.render import RunState, summary_line
    from tests.test_render import make_done, make_step

    state = RunState(keep_steps=False)
    steps = [make_step(s, i, "x") for s in range(3) for i in range(4)]
    for step in steps:
        state.add(step)
    assert state.steps == []
    assert summary_line(make_done(1, "xxxx", n=4), state) == summary_line(make_done(1, "xxxx", n=4), steps)


def test_a_large_batch_is_decoded_in_chunks_with_the_same_samples(tiny_lm):
    from samplecli.engine.decode import decode, decode_in_chunks
    from samplecli.engine.events import DecodeConfig, Done, Step
    from samplecli.strategies import build_strategy

    ids = tiny_lm.vocab.encode(PROMPT)
    for chain in ("top-k=20,temperature=0.9", "xtc:xtc_probability=0.5:xtc_threshold=0.01,temperature=1.5",
                  "mirostat"):
        config = DecodeConfig(max_new_tokens=10, num_samples=7, seed=5)

        def run(events):
            steps = sorted((e.sample, e.step, e.token_id, e.text) for e in events if isinstance(e, Step))
            return steps

        whole = list(decode(tiny_lm, build_strategy({}, chain=chain).strategy, ids, config))
        chunked = list(decode_in_chunks(tiny_lm, build_strategy({}, chain=chain).strategy, ids, config, chunk=3))
        assert run(whole) == run(chunked), chain
        texts = {e.sample: e.text for e in whole if isinstance(e, Done)}
        assert texts == {e.sample: e.text for e in chunked if isinstance(e, Done)}
        assert len(texts) == 7


def test_generate_in_chunks_writes_what_one_batch_writes(tiny_model_dir, monkeypatch):
    import samplecli.engine.decode as decode_module

    args = ["generate", PROMPT, "--model", str(tiny_model_dir), "--num-samples", "5", "-n", "8", "--seed", "3", "-q"]
    whole_text, whole_json = invoke(*args), invoke(*args, "--format", "json")
    monkeypatch.setattr(decode_module, "CHUNK_ROWS", 2)
    assert decode_module.chunk_samples(5) == 2
    chunked_text, chunked_json = invoke(*args), invoke(*args, "--format", "json")
    assert whole_text.exit_code == chunked_text.exit_code == 0
    assert chunked_text.stdout == whole_text.stdout

    def without_timing(stdout):  # tokens and texts exactly; probabilities differ by float32 batch noise
        document = json.loads(stdout)
        return [(s["sample"], s["text"], s["token_ids"], s["finish_reason"],
                 [(step["step"], step["token_id"], step["text"]) for step in s["steps"]]) for s in document["samples"]]

    assert without_timing(chunked_json.stdout) == without_timing(whole_json.stdout)


# --- beam search with one beam -----------------------------------------------------------------------------------


def test_num_beams_one_alone_is_beam_search_with_one_beam_which_is_greedy(tiny_model_dir):
    beam = invoke("generate", PROMPT, "--model", str(tiny_model_dir), "--num-beams", "1", "-n", "12",
                  "--format", "json")
    greedy = invoke("generate", PROMPT, "--model", str(tiny_model_dir), "--strategy", "greedy", "-n", "12",
                    "--format", "json", "-q")
    assert beam.exit_code == greedy.exit_code == 0, beam.stderr
    assert "beam(num_beams=1" in beam.stderr
    assert json.loads(beam.stdout)["samples"][0]["text"] == json.loads(greedy.stdout)["samples"][0]["text"]
    sampled = invoke("generate", PROMPT, "--model", str(tiny_model_dir), "--num-beams", "1", "--temp", "0.7", "-n",
                     "4")
    assert sampled.exit_code == 0 and "beam(" not in sampled.stderr  # beside a sampling flag, 1 beam is no search


def test_num_beams_one_matches_transformers_generate(tiny_lm):
    import torch

    ids = tiny_lm.vocab.encode(PROMPT)
    with torch.no_grad():
        oracle = tiny_lm.model.generate(torch.tensor([ids]), num_beams=1, do_sample=False, max_new_tokens=12,
                                        min_new_tokens=12, pad_token_id=0)[0, len(ids):].tolist()
    from samplecli.config.beam_plan import plan_beam
    from samplecli.engine.beam import beam_decode
    from samplecli.engine.events import DecodeConfig, Done

    plan = plan_beam(num_beams=1)
    config = DecodeConfig(max_new_tokens=12, min_new_tokens=12)
    (done,) = [e for e in beam_decode(tiny_lm, None, ids, config, plan.settings) if isinstance(e, Done)]
    assert list(done.token_ids) == oracle


# --- a reader that goes away -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["strategies"], ["inspect", PROMPT], ["score", "But soft", "--per-token"]])
def test_a_reader_that_goes_away_ends_every_command_quietly_with_exit_0(tiny_model_dir, args):
    """As `generate` already did (tests/test_cli.py checks it)."""
    argv = [sys.executable, "-m", "samplecli", *args]
    if args[0] != "strategies":
        argv += ["--model", str(tiny_model_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLECLI_")}
    env.update({"PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1", "COLUMNS": "100"})
    command = " ".join(f"'{a}'" for a in argv) + ' | head -c 20 > /dev/null; echo "${PIPESTATUS[0]}" >&2'
    run = subprocess.run(["bash", "-c", command], capture_output=True, env=env, timeout=180)
    stderr = run.stderr.decode("utf-8", "replace")
    assert stderr.splitlines()[-1] == "0", stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "error" not in stderr


def test_a_closed_stdout_before_the_first_write_is_quiet_too():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLECLI_")}
    proc = subprocess.Popen([sys.executable, "-m", "samplecli", "strategies"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "PYTHONIOENCODING": "utf-8"})
    proc.stdout.close()  # every write meets a broken pipe
    stderr = proc.stderr.read().decode("utf-8", "replace")
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""


# --- --help --------------------------------------------------------------------------------------------------------


def _help(*command: str) -> str:
    result = invoke(*command, "--help", env={"COLUMNS": "400"})
    assert result.exit_code == 0
    return " ".join(result.stdout.split())


def test_help_keeps_bracketed_text():
    assert "(default: half the context)" in _help("score")
    assert "(default: 0, right after the prompt)" in _help("inspect")
    assert "one with [strategies.NAME] tables adds each of them" in _help("compare")
    assert "pip install 'samplecli[plot]'" in _help("inspect")


def test_every_help_text_appears_whole_in_help():
    import typer

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None) or {None: command}
        for sub, leaf in subcommands.items():
            path = [name] if sub is None else [name, sub]
            shown = _help(*path)
            for param in leaf.params:
                text = getattr(param, "help", None)
                if text and "[" in text:
                    from rich.text import Text

                    plain = Text.from_markup(text).plain if "\\[" in text else text  # escaped once it has run
                    assert " ".join(plain.split()) in shown, (path, param.name, plain)


# --- found by the fuzzer (tests/test_fuzz_cli.py) ------------------------------------------------------------


@pytest.mark.parametrize("args", [["presets", "show", ""], ["generate", PROMPT, "--preset", " "]])
def test_an_empty_preset_name_is_one_line(no_model, args):
    one_line_error(invoke(*args), "preset", "not empty", code=2)


def test_control_characters_the_user_typed_are_shown_escaped_on_the_one_line(no_model):
    line = one_line_error(invoke("generate", PROMPT, "--strategy", "a\x1eb\rc\u2028d"), code=2)
    assert "a\\x1eb\\rc\\u2028d" in line


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize(("args", "fragment"), [
    (["generate", PROMPT, "--messages", "/dev/full"], "--messages /dev/full: cannot read it (it is a device"),
    (["generate", PROMPT, "--chat-template", "/dev/zero"], "--chat-template /dev/zero: cannot read it"),
    (["score", "--file", "/dev/zero"], "--file /dev/zero: cannot read it (it is a device"),
    (["compare", PROMPT, "-s", "greedy", "--reference", "/dev/zero"], "--reference /dev/zero"),
    (["generate", PROMPT, "--preset", "/dev/zero"], "preset /dev/zero is not a file"),
])
def test_a_device_given_as_a_file_is_refused_not_read_until_memory_runs_out(no_model, args, fragment):
    one_line_error(invoke(*args), fragment, code=2)


def test_a_stream_that_never_ends_on_stdin_is_refused_at_the_limit():
    from samplecli.config import inputs
    from samplecli.errors import UsageError

    class Zeros:
        def read(self, size=-1):
            assert size > 0, "an unbounded read"
            return b"\0" * size

    class Stdin:
        buffer = Zeros()

    with pytest.raises(UsageError, match="standard input: more than 256 MB"):
        inputs.read_stdin("the prompt on standard input", Stdin())
