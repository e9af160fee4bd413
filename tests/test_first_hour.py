"""The rough edges a new user met in a first hour (issue 21), each as a specification: the context limit is
said, the prompt can come from a file, several samples are told apart, `samplecli` alone helps, the common names
of strategies work, score's and strategies' format is `text`, presets speak JSON and line up, a greedy run shows
no seed, and the settings table labels its columns and names presets by relative paths."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from samplecli import __version__
from samplecli.cli import app
from samplecli.config.preset_files import builtin_presets, load_preset
from samplecli.engine.events import Done, Step
from samplecli.strategies import build_strategy
from samplecli.views.render import RunState, TerminalSink, live_view
from tests.conftest import one_line_error, strict_loads

PROMPT = "JULIET:"
CONTEXT = 64  # build_tiny_model's n_positions
runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, prog_name="samplecli")


def ok(*args: str, input: str | None = None):
    result = invoke(*args, input=input)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# --- the model's context cuts -n short: finish_reason `context`, and one line saying so --------------------------


def test_a_run_cut_short_by_the_context_ends_with_context_and_says_so_once(tiny_model_dir):
    from transformers import AutoTokenizer

    used = len(AutoTokenizer.from_pretrained(str(tiny_model_dir))(PROMPT)["input_ids"])
    room = CONTEXT - used
    result = ok("generate", PROMPT, "--model", str(tiny_model_dir), "-n", "100", "--seed", "1", "-f", "jsonl",
                "--min-new-tokens", str(room))  # no EOS before the context ends
    done = records(result.stdout)[-1]
    assert (done["type"], done["finish_reason"], done["n_tokens"]) == ("done", "context", room)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: -n 100: the model's context ({CONTEXT}) leaves room for {room} new tokens after "
                        f"the {used}-token prompt; the run ends there with finish_reason `context`"]
    document = strict_loads(ok("generate", PROMPT, "--model", str(tiny_model_dir), "-n", "100", "--seed", "1",
                               "-f", "json", "-q", "--min-new-tokens", str(room)).stdout)
    assert document["samples"][0]["finish_reason"] == "context"
    text = ok("generate", PROMPT, "--model", str(tiny_model_dir), "-n", "100", "--seed", "1", "--min-new-tokens",
              str(room))
    assert "finish: context" in text.stderr
    # asking for exactly the room there is: no warning, and the run ends with `length`
    exact = ok("generate", PROMPT, "--model", str(tiny_model_dir), "-n", str(room), "--seed", "1", "-f", "jsonl",
               "--min-new-tokens", str(room))
    assert "warning" not in exact.stderr and records(exact.stdout)[-1]["finish_reason"] == "length"


# --- --prompt-file ------------------------------------------------------------------------------------------------


def test_prompt_file_reads_the_prompt_as_it_is_trailing_newline_included(tiny_model_dir, tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT + "\n", encoding="utf-8")
    args = ("--model", str(tiny_model_dir), "-n", "3", "--seed", "1", "-f", "json", "-q")
    from_file = strict_loads(ok("generate", "--prompt-file", str(path), *args).stdout)
    assert from_file["prompt"] == PROMPT + "\n"
    from_stdin = strict_loads(ok("generate", "--prompt-file", "-", *args, input=PROMPT + "\n").stdout)
    assert from_stdin == {**from_file, "samples": from_stdin["samples"]}
    assert from_stdin["samples"][0]["token_ids"] == from_file["samples"][0]["token_ids"]
    # the prompt piped without --prompt-file loses its one trailing newline, as before
    piped = strict_loads(ok("generate", *args, input=PROMPT + "\n").stdout)
    assert piped["prompt"] == PROMPT


def test_prompt_file_refuses_a_prompt_argument_beside_it_and_a_missing_file(tiny_model_dir, tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT, encoding="utf-8")
    one_line_error(invoke("generate", PROMPT, "--prompt-file", str(path), "--model", str(tiny_model_dir)),
                   "--prompt-file", "not both")
    one_line_error(invoke("generate", "--prompt-file", str(tmp_path / "nowhere.txt"), "--model", str(tiny_model_dir)),
                   "--prompt-file", "nowhere.txt")


# --- several samples: a separator when piped, labels on a terminal ------------------------------------------------


def test_piped_samples_are_separated_by_the_separator_line(tiny_model_dir):
    args = ("--model", str(tiny_model_dir), "-n", "6", "--seed", "2", "--num-samples", "3", "-q")
    texts = [r["text"] for r in records(ok("generate", PROMPT, *args, "-f", "jsonl").stdout) if r["type"] == "done"]
    assert ok("generate", PROMPT, *args, "--separator", "----").stdout == "\n----\n".join(texts) + "\n"
    assert ok("generate", PROMPT, *args).stdout == "\n\n".join(texts) + "\n"  # by default: one blank line


def _step(sample: int, step: int, text: str) -> Step:
    return Step(sample=sample, step=step, token_id=5, token=text, text=text, bytes=tuple(text.encode()), logprob=-1.0,
                prob=0.4, sampled_prob=0.5, entropy=2.0, sampled_entropy=1.5, kept=3)


def _done(sample: int, text: str) -> Done:
    return Done(sample=sample, text=text, token_ids=(5, 5), finish_reason="length", n_tokens=2, logprob_sum=-2.0,
                perplexity=2.7, seconds=0.1, tokens_per_second=20.0, strategy="logits -> sample", seed=1)


def test_on_a_terminal_each_sample_is_labelled_and_the_panel_names_the_steps_sample():
    state = RunState()
    for event in (_step(0, 0, "ab"), _step(1, 0, "cd"), _step(2, 0, "ef"), _step(1, 1, "gh")):
        state.add(event)
    panel = Console(file=io.StringIO(), width=80, height=24, record=True)
    panel.print(live_view(state, "logits -> sample", panel, num_samples=3))
    shown = panel.export_text()
    assert "── sample 1/3 ──\nab" in shown and "── sample 2/3 ──\ncdgh" in shown and "── sample 3/3 ──\nef" in shown
    assert "logits -> sample · sample 2/3" in shown  # the last step was sample 1's: the second

    err, out = (Console(file=io.StringIO(), record=True, width=80) for _ in range(2))
    sink = TerminalSink(err, out, "logits -> sample", "none", summary=True, num_samples=2)
    for event in (_step(0, 0, "ab"), _step(1, 0, "cd"), _done(0, "ab"), _done(1, "cd")):
        (sink.step if isinstance(event, Step) else sink.done)(event)
    sink.close()
    assert out.export_text() == "── sample 1/2 ──\nab\n\n── sample 2/2 ──\ncd\n"
    summaries = err.export_text().splitlines()
    assert [line.split(":")[0] for line in summaries] == ["sample 1/2", "sample 2/2"]


# --- `samplecli` alone, -h and -V -------------------------------------------------------------------------------


def test_samplecli_alone_prints_its_commands_not_an_empty_error():
    result = invoke()
    assert result.exit_code == 0 and "error" not in result.stderr
    for command in ("generate", "inspect", "compare", "score", "strategies", "presets"):
        assert command in result.stdout
    presets = invoke("presets")
    assert presets.exit_code == 0 and "list" in presets.stdout and "error" not in presets.stderr


@pytest.mark.parametrize("args", [["-h"], ["generate", "-h"], ["presets", "show", "-h"], ["score", "-h"]])
def test_h_is_help_everywhere(args):
    result = ok(*args)
    assert "Usage" in result.stdout and result.stdout == invoke(*args[:-1], "--help").stdout


@pytest.mark.parametrize("args", [["-V"], ["--version"], ["generate", "-V"], ["presets", "list", "-V"]])
def test_v_is_the_version_everywhere(args):
    assert ok(*args).stdout == f"samplecli {__version__}\n"


# --- the common names of strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "chain"), [
    ("nucleus", "logits -> top-p(0.95) -> sample"), ("top_p", "logits -> top-p(0.95) -> sample"),
    ("sampling", "logits -> sample"), ("argmax", "logits -> greedy"),
])
def test_a_common_name_is_an_alias_and_the_registrys_name_is_shown(tiny_model_dir, alias, chain):
    assert str(build_strategy({}, strategy=alias).strategy) == chain
    result = ok("generate", PROMPT, "--model", str(tiny_model_dir), "--strategy", alias, "-n", "2", "--seed", "1",
                "-f", "jsonl")
    assert records(result.stdout)[-1]["strategy"] == chain
    assert result.stderr.splitlines()[0].startswith(f"{tiny_model_dir} · {chain}")


def test_a_preset_may_name_a_strategy_by_its_alias(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('strategy = "nucleus"\n', encoding="utf-8")
    assert load_preset(str(path)).values["strategy"].value == "top-p"


def test_an_unknown_strategy_is_still_one_line_with_the_valid_names():
    one_line_error(invoke("generate", PROMPT, "--strategy", "nucleos", "--model", "/nonexistent"),
                   "unknown strategy `nucleos`", "top-p")


# --- formats: score and strategies say text; presets speak JSON --------------------------------------------------


def test_score_format_is_text_and_table_is_its_old_name(tiny_model_dir):
    args = ("score", "ROMEO: a text", "--model", str(tiny_model_dir))
    text = ok(*args).stdout
    assert text == ok(*args, "--format", "text").stdout == ok(*args, "--format", "table").stdout
    assert "perplexity" in text
    one_line_error(invoke(*args, "--format", "xml"), "--format", "`xml`", "text, json")


def test_strategies_format_is_text_and_lists_the_aliases():
    text = ok("strategies").stdout
    assert text == ok("strategies", "-f", "text").stdout == ok("strategies", "-f", "table").stdout
    assert "nucleus (= top-p)" in " ".join(text.split())
    assert json.loads(ok("strategies", "-f", "json").stdout)["strategy_aliases"]["nucleus"] == "top-p"


def test_presets_list_lines_up_and_speaks_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLECLI_CONFIG_DIR", str(tmp_path))  # the built-ins alone
    rows = json.loads(ok("presets", "list", "--format", "json").stdout)
    assert {row["name"] for row in rows} >= set(builtin_presets()) and "stochastic-beam" in builtin_presets()
    for row in rows:
        assert row["valid"] and not row["path"].startswith("/")
    width = max(len(row["name"]) for row in rows)
    lines = [line for line in ok("presets", "list").stdout.splitlines() if line]
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):  # every column starts at the same place, the longest name too
        assert line[:width].rstrip() == row["name"] and line[width : width + 2] == "  "
        assert line[width + 2 : width + 24].rstrip() == row["origin"]
        assert line[width + 26 :] == row["description"]


def test_presets_show_speaks_json_with_relative_paths():
    document = json.loads(ok("presets", "show", "creative", "-f", "json").stdout)
    assert document["path"] == "presets/creative.toml"
    assert document["strategy"] == "logits -> temperature(1.2) -> min-p(0.1) -> sample"
    settings = {row["setting"]: row for row in document["settings"]}
    assert settings["temperature"]["value"] == 1.2
    assert settings["temperature"]["source"] == "preset creative (presets/creative.toml)"
    one_line_error(invoke("presets", "show", "creative", "-f", "xml"), "--format")


# --- the settings table and the header --------------------------------------------------------------------------


def header_cells(text: str) -> list[str]:
    header = next(line for line in text.splitlines() if "┃ setting" in line)
    return [cell.strip() for cell in header.split("┃")[1:-1]]


def test_the_settings_table_names_presets_relatively_and_labels_its_note_column(tiny_model_dir):
    shown = ok("presets", "show", "creative").stdout
    assert "presets/creative.toml" in shown and not re.search(r"(?<![\w.])/\w+/.*creative\.toml", shown)
    assert header_cells(shown) == ["setting", "value", "source"]  # no notes: no blank fourth column
    # wide enough for the model's path, whatever the length of the temporary folder it is in
    ignored = runner.invoke(app, ["generate", PROMPT, "--model", str(tiny_model_dir), "--strategy", "greedy",
                                  "--top-p", "0.9", "--explain-settings", "-n", "2"], env={"COLUMNS": "200"})
    assert ignored.exit_code == 0, ignored.stderr
    assert header_cells(ignored.stderr) == ["setting", "value", "source", "note"]
    top_p = next(line for line in ignored.stderr.splitlines() if line.startswith("│ top_p "))
    assert top_p.split("│")[4].strip().startswith("ignored")  # the note, in its labelled column


def test_a_greedy_run_shows_no_seed_and_a_sampled_one_does(tiny_model_dir):
    greedy = ok("generate", PROMPT, "--model", str(tiny_model_dir), "--temp", "0", "-n", "2")
    assert "seed" not in greedy.stderr.splitlines()[0]
    sampled = ok("generate", PROMPT, "--model", str(tiny_model_dir), "--temp", "0.9", "-n", "2", "--seed", "7")
    assert sampled.stderr.splitlines()[0].endswith("· seed 7")
