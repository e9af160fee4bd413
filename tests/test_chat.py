"""Chat and instruct models (issue #17): --chat/--system/--messages through the model's chat template, stopping at
the template's end-of-turn token, `samplecli chat` on a terminal and on piped stdin, and --model-defaults.

The models are random-init Qwen2s (two layers, a few hundred tokens) with a byte-level BPE tokenizer trained here:
one with a ChatML template (<|im_start|>, <|im_end|>), one with a Llama-3-style template (<|eot_id|>)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplecli.cli import app
from tests.conftest import controlling_terminal, one_line_error


def _chat_models():
    """scripts/make_chat_models.py, loaded by path (scripts/ is not a package)."""
    import importlib.util

    name = "samplecli_scripts_chat_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "make_chat_models.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


ROOT = Path(__file__).resolve().parent.parent
_models = _chat_models()
CHATML, LLAMA3, SUGGESTED = _models.CHATML, _models.LLAMA3, _models.SUGGESTED
build_chat_model = _models.build_chat_model

runner = CliRunner()


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("chatml"), "chatml")


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("llama3"), "llama3")


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("plain"), "none")


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("instruct"), "chatml", suggested=SUGGESTED)


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})


def run_json(*args: str) -> tuple[dict, str]:
    result = invoke("generate", *args, "-f", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


# --- the prompt the model reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_chat_prompt_ids_are_the_tokenizers_chat_template(style, chatml_dir, llama3_dir):
    from transformers import AutoTokenizer

    from samplecli.backends.torch_lm import load

    path = chatml_dir if style == "chatml" else llama3_dir
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = load(str(path), device="cpu")
    for messages in ([{"role": "user", "content": "Hello"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
                     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "What is the capital of France?"}]):
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        assert lm.chat(messages) == list(expected)
    end = "<|im_end|>" if style == "chatml" else "<|eot_id|>"
    assert tokenizer.convert_tokens_to_ids(end) in lm.eos_token_ids


def test_chat_system_and_messages_flags_make_the_templated_prompt(chatml_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chatml_dir)

    def templated(messages):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        return tokenizer.decode(ids, skip_special_tokens=False)

    doc, err = run_json("Hello", "-m", chatml_dir, "--chat", "-n", "1", "--seed", "1")
    assert doc["prompt"] == templated([{"role": "user", "content": "Hello"}]) and doc["chat"] is True

    doc, err = run_json("Hello", "-m", chatml_dir, "--system", "Be brief.", "-n", "1", "--explain-settings")
    shown = templated([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert doc["prompt"] == shown
    assert "prompt as the model reads it" in err and shown.strip() in err

    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    file = tmp_path / "messages.json"
    file.write_text(json.dumps(conversation))
    doc, _ = run_json("And you?", "-m", chatml_dir, "--messages", file, "-n", "1")
    assert doc["prompt"] == templated([*conversation, {"role": "user", "content": "And you?"}])
    doc, _ = run_json("-m", chatml_dir, "--messages", file, "-n", "1")  # the file alone is the conversation
    assert doc["prompt"] == templated(conversation)


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_generation_stops_at_the_end_of_turn_token_and_never_prints_it(style, chatml_dir, llama3_dir):
    path, end = (chatml_dir, "<|im_end|>") if style == "chatml" else (llama3_dir, "<|eot_id|>")
    # the end-of-turn token is forced once EOS-like tokens are allowed (after 3 tokens)
    result = invoke("generate", "Hello", "-m", path, "--chat", "-n", "30", "--min-new-tokens", "3",
                    "--logit-bias", f"{end}=40", "--seed", "1", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    done = records[-1]
    assert done["finish_reason"] == "eos" and done["n_tokens"] == 4
    assert end not in done["text"] and all(end not in r.get("text", "") for r in records)
    text = invoke("generate", "Hello", "-m", path, "--chat", "-n", "30", "--min-new-tokens", "3",
                  "--logit-bias", f"{end}=40", "--seed", "1")
    assert text.exit_code == 0 and end not in text.stdout and text.stdout.endswith("\n")
    assert text.stdout[:-1] == done["text"]


def test_greedy_chat_equals_model_generate_on_the_templated_ids(chatml_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chatml_dir)
    model = AutoModelForCausalLM.from_pretrained(chatml_dir, dtype=torch.float32)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16, eos_token_id=stops,
                             pad_token_id=stops[0])
    expected = out[0, len(ids):].tolist()
    doc, _ = run_json("Hello", "-m", chatml_dir, "--system", "Be brief.", "--temp", "0", "-n", "16")
    assert list(doc["samples"][0]["token_ids"]) == expected


# --- bad input: one line each, before the model loads where it can be ---------------------------------------------


def test_chat_on_a_model_without_a_template_is_one_line_naming_it(plain_dir, tmp_path):
    result = invoke("generate", "Hello", "-m", plain_dir, "--chat", "-n", "2")
    one_line_error(result, str(plain_dir), "no chat template", "plain prompt", code=1)
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    result = invoke("generate", "Hello", "-m", plain_dir, "--chat-template", template, "-n", "2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(("content", "fragments"), [
    ("{not json", ("not JSON", "line 1")),
    ('[{"role": "wizard", "content": "hi"}]', ("role 'wizard'", "valid roles: system, user, assistant")),
    ("[]", ("empty",)),
    ('{"role": "user", "content": "hi"}', ("JSON list",)),
    ('[{"role": "user"}]', ('"role" and "content"',)),
    ('[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]', ("only the first",)),
])
def test_a_malformed_messages_file_is_one_line_before_the_model_loads(content, fragments, tmp_path):
    file = tmp_path / "messages.json"
    file.write_text(content)
    # the model does not exist: the file is checked first
    result = invoke("generate", "Hello", "-m", tmp_path / "no-model", "--messages", file)
    one_line_error(result, f"--messages {file}", *fragments, code=2)


# --- the model's own generation defaults --------------------------------------------------------------------------


def test_model_defaults_are_named_but_not_applied_without_the_flag(instruct_dir, chatml_dir):
    result = invoke("generate", "Hello", "-m", instruct_dir, "--chat", "-n", "2", "--explain-settings")
    assert result.exit_code == 0, result.stderr
    assert ("model suggests: temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05 "
            "(--model-defaults to use them)") in result.stderr
    plain = invoke("generate", "Hello", "-m", chatml_dir, "--chat", "-n", "2", "--explain-settings")
    default_chain = plain.stderr.split("settings for ")[1].split("\n")[0].strip()
    assert "model suggests" not in plain.stderr
    assert result.stderr.split("settings for ")[1].split("\n")[0].strip() == default_chain
    assert "model defaults" not in result.stderr


def test_model_defaults_flag_applies_them_between_defaults_and_preset(instruct_dir, tmp_path):
    result = invoke("generate", "Hello", "-m", instruct_dir, "--chat", "-n", "2", "--explain-settings",
                    "--model-defaults", "-f", "json")
    assert result.exit_code == 0, result.stderr
    chain = json.loads(result.stdout)["strategy"]
    assert chain == "logits -> repetition-penalty(1.05) -> temperature(0.7) -> top-k(20) -> top-p(0.8) -> sample"
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in result.stderr.splitlines()
            if line.count("│") >= 4 and line.split("│")[1].strip() in SUGGESTED}
    assert rows == dict.fromkeys(SUGGESTED, "model defaults")
    assert "model suggests" not in result.stderr
    flagged = invoke("generate", "Hello", "-m", instruct_dir, "--chat", "-n", "2", "--model-defaults",
                     "--temp", "0.3", "-f", "json")
    assert "temperature(0.3)" in json.loads(flagged.stdout)["strategy"]
    preset = tmp_path / "cool.toml"
    preset.write_text("temperature = 0.2\n")
    over = invoke("generate", "Hello", "-m", instruct_dir, "--chat", "-n", "2", "--model-defaults",
                  "--preset", preset, "-f", "json")
    assert "temperature(0.2)" in json.loads(over.stdout)["strategy"]
    assert "top-k(20)" in json.loads(over.stdout)["strategy"]


# --- samplecli chat -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory):
    """A ChatML model with a long context, so that a reply can run until Ctrl-C stops it."""
    return build_chat_model(tmp_path_factory.mktemp("long"), "chatml", context=1 << 20)


# each reply is 2 tokens of noise, then the forced end of turn
SHORT_REPLIES = ("--min-new-tokens", "2", "--logit-bias", "<|im_end|>=40")


def test_chat_on_piped_stdin_answers_each_line_on_stdout(chatml_dir):
    lines = "Hello\n/temp -1\n/bogus 3\n/temp 0.5\n\nHow are you?\n"
    result = subprocess.run([sys.executable, "-m", "samplecli", "chat", "-m", str(chatml_dir), "--seed", "2",
                             *SHORT_REPLIES], input=lines, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    replies = result.stdout.splitlines()
    assert len(replies) == 2 and all("<|im_end|>" not in r for r in replies)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: /temp: `temperature` has to be >= 0, but is -1.0",
                      "error: unknown command /bogus; type /help for the list"]
    headers = [line for line in result.stderr.splitlines() if " · seed 2" in line]
    assert "temperature(0.5)" not in headers[0] and "temperature(0.5)" in headers[1]
    assert "\x1b" not in result.stdout  # no panels, no colour


class Terminal:
    """`samplecli ARGS` in a pseudo-terminal of 100x30 (its controlling terminal, so Ctrl-C is a SIGINT)."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.output = b""

        self.process = subprocess.Popen([sys.executable, "-m", "samplecli", *args], stdin=self.slave,
                                        stdout=self.slave, stderr=self.slave, cwd=ROOT, close_fds=True,
                                        env={**os.environ, "TERM": "xterm-256color"},
                                        preexec_fn=controlling_terminal)

    def wait_for(self, expected: bytes, after: int, timeout: float = 600) -> int:
        """Read until `expected` shows after offset `after`; return where it ends."""
        end = time.monotonic() + timeout
        while expected not in self.output[after:]:
            if time.monotonic() > end:
                raise AssertionError(f"{expected!r} did not come; the last output: {self.output[-600:]!r}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 1 << 16)
                except OSError:
                    break
        return self.output.index(expected, after) + len(expected)

    def send(self, text: bytes, then: bytes) -> tuple[int, int]:
        """Type `text`, wait for `then`; return (where the answer starts, where `then` ends)."""
        start = len(self.output)
        os.write(self.master, text)
        return start, self.wait_for(then, start)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


def ctrl_d_ends(term) -> int:
    """Ctrl-D at the prompt, and the exit code. The prompt may be on the screen a moment before readline reads
    (and a ^D typed then is taken by the terminal's line discipline, not by readline): send it again until the
    process ends, within 60 s in all."""
    import subprocess

    for _ in range(12):
        os.write(term.master, b"\x04")
        try:
            return term.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
    return term.process.wait(timeout=1)


def test_chat_on_a_terminal_two_turns_a_setting_a_stopped_reply_and_save(long_dir, tmp_path):
    saved = tmp_path / "chat.jsonl"
    term = Terminal("chat", "-m", str(long_dir), "--seed", "5", *SHORT_REPLIES)
    try:
        term.wait_for(b"you> ", 0)
        first, end = term.send(b"Hello\r", b"you> ")
        assert b"temperature(0.8)" in term.output[first:end] and b"finish: eos" in term.output[first:end]
        term.send(b"/temp 0.5\r", b"you> ")
        second, end = term.send(b"How are you?\r", b"you> ")
        header = term.output[second:end].split(b"seed 5")[0]
        assert b"temperature(0.5)" in header
        # a reply that does not end by itself, stopped by Ctrl-C while it streams
        term.send(b"/logit-bias <|im_end|>=-100 <|endoftext|>=-100\r", b"you> ")
        term.send(b"/max-new-tokens 100000\r", b"you> ")
        third, _ = term.send(b"Tell me more\r", b"H(model)")
        _, end = term.send(b"\x03", b"you> ")
        assert b"reply stopped" in term.output[third:end]
        _, end = term.send(b"/temp -1\r", b"you> ")
        assert b"`temperature` has to be >= 0, but is -1.0" in term.output[end - 200:end]
        _, end = term.send(b"/nonsense\r", b"you> ")
        assert b"unknown command /nonsense" in term.output[end - 200:end]
        term.send(b"/max-new-tokens 3\r", b"you> ")
        term.send(b"And now?\r", b"you> ")  # the conversation goes on after Ctrl-C and bad input
        term.send(f"/save {saved}\r".encode(), b"saved 8 messages")
        term.send(b"/show\r", b"you> ")
        assert ctrl_d_ends(term) == 0
    finally:
        term.close()
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert lines[0]["type"] == "chat"
    messages = lines[1:]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    assert [m["content"] for m in messages[::2]] == ["Hello", "How are you?", "Tell me more", "And now?"]
    replies = messages[1::2]
    assert [r["finish_reason"] for r in replies] == ["eos", "eos", "interrupted", "length"]
    assert "temperature(0.8)" in replies[0]["strategy"] and "temperature(0.5)" in replies[1]["strategy"]
    for reply in replies:
        assert reply["steps"] and all(step["type"] == "step" for step in reply["steps"])
        # the streamed deltas, and what the end flushed (half a UTF-8 character, shown as U+FFFD)
        assert reply["content"].startswith("".join(step["text"] for step in reply["steps"]))
    assert len(replies[0]["steps"]) == 3 and replies[0]["steps"][-1]["token"] == "<|im_end|>"


# --- compare, inspect and score read the same templated prompt ----------------------------------------------------


def test_compare_and_inspect_read_the_templated_prompt(chatml_dir):
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    compared = invoke("compare", "Hello", "-m", chatml_dir, "--system", "Be brief.", "-s", "greedy", "-s", "top-k=5",
                      "-n", "3", "--seed", "1", "-f", "json")
    assert compared.exit_code == 0, compared.stderr
    assert json.loads(compared.stdout)["prompt"] == expected
    inspected = invoke("inspect", "Hello", "-m", chatml_dir, "--system", "Be brief.", "-f", "json")
    assert inspected.exit_code == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["prompt"] == expected


def test_score_with_chat_scores_only_the_reply_after_the_templated_conversation(chatml_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chatml_dir)
    model = AutoModelForCausalLM.from_pretrained(chatml_dir, dtype=torch.float32)
    conversation = [{"role": "user", "content": "What is the capital of France?"}]
    file = tmp_path / "messages.json"
    file.write_text(json.dumps(conversation))
    reply = "Paris is the capital."
    result = invoke("score", reply, "-m", chatml_dir, "--messages", file, "-f", "json", "--per-token")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    context = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
    reply_ids = tokenizer.encode(reply, add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([context + reply_ids])).logits[0].double(), -1)
    expected = [-float(logp[len(context) + i - 1, t]) for i, t in enumerate(reply_ids)]
    assert document["tokens"] == len(reply_ids)
    assert [t["token_id"] for t in document["per_token"]] == reply_ids
    assert [t["nats"] for t in document["per_token"]] == pytest.approx(expected, abs=1e-4)


def test_chat_without_a_template_is_one_line_and_reset_clears_the_conversation(plain_dir, chatml_dir, tmp_path):
    result = invoke("chat", "-m", plain_dir, input="Hello\n")
    one_line_error(result, str(plain_dir), "no chat template", "-m DIR", "--chat-template FILE", code=1)
    saved = tmp_path / "after-reset.jsonl"
    result = invoke("chat", "-m", chatml_dir, "--system", "Be brief.", *SHORT_REPLIES,
                    input=f"Hello\n/reset\nAgain\n/strategy min-p\n/min-p 0.2\n/show\n/save {saved}\n/exit\nIgnored\n")
    assert result.exit_code == 0, result.stderr
    assert "logits -> logit-bias({2: 40}) -> min-p(0.2)" in result.stderr
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert lines[0]["system"] == "Be brief." and [m["content"] for m in lines[1:2]] == ["Again"]
    assert len(lines) == 3
    # two replies, each a line, and nothing after /exit: stdout ends with the saved second reply, on one line
    from samplecli.views.sinks import one_line

    second = lines[2]["content"]
    assert lines[2]["role"] == "assistant" and len(result.stdout.split("\n")) == 3
    assert result.stdout.endswith("\n" + one_line(second) + "\n")


def piped_chat(model_dir, lines: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "samplecli", "chat", "-m", str(model_dir), *args], input=lines,
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    return result


def test_a_setting_command_adds_to_the_default_chain_and_a_run_setting_answers_with_its_value(chatml_dir):
    result = piped_chat(chatml_dir, "/top-k 20\n/max-new-tokens 200\n/show\n", "--seed", "2")
    now = [line for line in result.stderr.splitlines() if line.startswith("now:")]
    assert now == ["now: logits -> temperature(0.8) -> top-k(20) -> top-p(0.95) -> sample",
                   "now: max_new_tokens = 200"]
    assert "logits -> temperature(0.8) -> top-k(20) -> top-p(0.95) -> sample" in result.stderr.splitlines()


def test_help_lists_each_command_once_and_reads_whole_at_80_columns(chatml_dir):
    from samplecli.config.chat_session import help_rows

    shown = piped_chat(chatml_dir, "/help\n").stderr.splitlines()
    assert all(len(line) <= 80 for line in shown)
    firsts = [line.split()[0].rstrip(",") for line in shown if line.startswith("/")]
    assert firsts == [row[0].split(",")[0] for row in help_rows()]  # one row per command, aliases beside it
    assert "/temp, /temperature" in "\n".join(shown) and "/load" in firsts
    words = {word for line in shown for word in line.split()}
    assert "temperature;" not in words or "Temperature;" in words  # no word broken over two lines
    assert not any(line.rstrip().endswith(("temperatu", "penal")) for line in shown)


def test_piped_replies_are_one_line_each_with_their_newlines_escaped(chatml_dir, tmp_path):
    saved = tmp_path / "chat.jsonl"
    result = piped_chat(chatml_dir, f"Hello\nHow are you?\n/save {saved}\n", "--seed", "3", "-n", "40",
                        "--logit-bias", "<|im_end|>=-100", "--logit-bias", "<|endoftext|>=-100",
                        "--logit-bias", "\n=8")
    replies = result.stdout.split("\n")
    assert len(replies) == 3 and replies[2] == ""  # two replies, each one line
    messages = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()][1:]
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    assert any("\n" in c for c in contents)  # the bias made newlines: they are escaped, not lost
    assert [r.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")
            for r in replies[:2]] == contents


def test_a_saved_chat_goes_on_with_continue_and_load_and_multi_line_messages(chatml_dir, tmp_path):
    saved = tmp_path / "chat.jsonl"
    piped_chat(chatml_dir, 'First \\\nof two lines\n"""\nthree\nlines\nhere\n"""\n' f"/save {saved}\n",
               "--system", "Be brief.", "--seed", "1", *SHORT_REPLIES)
    users = [m["content"] for m in map(json.loads, saved.read_text(encoding="utf-8").splitlines()[1:])
             if m["role"] == "user"]
    assert users == ["First \nof two lines", "three\nlines\nhere"]
    # --continue FILE: the conversation goes on, and /save with no name writes it back
    piped_chat(chatml_dir, "And then?\n/save\n", "--continue", str(saved), "--seed", "1", *SHORT_REPLIES)
    records = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
    assert records[0]["system"] == "Be brief."
    assert [m["content"] for m in records[1:] if m["role"] == "user"] == [*users, "And then?"]
    # --messages takes the saved file too, and /load replaces the conversation with one
    other = tmp_path / "other.jsonl"
    result = piped_chat(chatml_dir, f"/load {saved}\nLast\n/save {other}\n", "--messages", str(saved), "--seed", "1",
                        *SHORT_REPLIES)
    assert "loaded 6 messages" in result.stderr
    again = [json.loads(line) for line in other.read_text(encoding="utf-8").splitlines()]
    assert [m["content"] for m in again[1:] if m["role"] == "user"] == [*users, "And then?", "Last"]


def test_a_full_context_leaves_out_the_oldest_exchanges_and_keeps_the_system_message(tmp_path):
    small = build_chat_model(tmp_path / "small", "chatml", context=96)
    lines = "".join(f"Tell me about the number {i} and what follows it\n" for i in range(6))
    result = piped_chat(small, lines + f"/save {tmp_path / 'c.jsonl'}\n", "--system", "Be brief.", "--seed", "1",
                        "-n", "8", "--logit-bias", "<|im_end|>=-100", "--logit-bias", "<|endoftext|>=-100")
    assert len(result.stdout.splitlines()) == 6  # every message answered: no dead end
    notes = [line for line in result.stderr.splitlines() if "is full" in line]
    assert notes and all("the system message stays" in n for n in notes)
    # the saved conversation keeps every message, also those the prompt left out
    saved = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(saved) == 1 + 12 and saved[0]["system"] == "Be brief."


def test_chat_without_a_chat_model_points_to_m_and_chat_template():
    result = subprocess.run([sys.executable, "-m", "samplecli", "chat"], input="", capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "-m DIR" in line and "--chat-template FILE" in line and "plain prompt" not in line


def test_a_continue_file_that_cannot_be_read_is_one_line_naming_continue(tmp_path):
    one_line_error(invoke("chat", "--continue", str(tmp_path / "missing.jsonl"), input=""), "--continue",
                   "missing.jsonl", "cannot read it", code=2)
