"""Issues #27 (section 2) and #32: the bad-input and fault matrix, one test per class of case. Each ends as one
line on stderr naming the flag (or variable, or file, or URL) and the value, exit 1 or 2, no traceback, nothing
on stdout; what can be known before the model loads is refused before it (`no_model` fails the test otherwise).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests import test_bad_inputs
from tests.test_bad_inputs import PROMPT, invoke, one_line_error

# the same fixtures as tests/test_bad_inputs.py: no SAMPLECLI_* from the caller, and a model load fails the test
clean_environment, no_model = test_bad_inputs.clean_environment, test_bad_inputs.no_model

# --- refused before the model loads ------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "args", "env"), [
    ("--messages", ["generate", "--messages", "{file}"], {}),
    ("preset", ["generate", PROMPT, "--preset", "{toml}"], {}),
    ("environment SAMPLECLI_TEMPERATURE", ["generate", PROMPT], {"SAMPLECLI_TEMPERATURE": "[" * 5000 + "]" * 5000}),
])
def test_input_nested_deeper_than_python_recurses_is_one_line(no_model, tmp_path, where, args, env):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    (tmp_path / "deep.toml").write_text(f"temperature = {deep}\n")
    args = [a.replace("{file}", str(tmp_path / "deep.json")).replace("{toml}", str(tmp_path / "deep.toml"))
            for a in args]
    one_line_error(invoke(*args, env=env), where, "nested too deeply", code=2)


@pytest.mark.parametrize(("value", "fragment"), [('["", "x"]', "non-empty strings"),
                                                 ('["a", 5]', "an array of strings")])
def test_a_preset_alias_in_the_environment_is_read_and_checked(no_model, value, fragment):
    one_line_error(invoke("generate", PROMPT, env={"SAMPLECLI_STOP": value}), "SAMPLECLI_STOP", fragment, code=2)


def test_an_alias_and_its_setting_both_in_the_environment_are_refused(no_model):
    one_line_error(invoke("generate", PROMPT, env={"SAMPLECLI_TEMP": "0.5", "SAMPLECLI_TEMPERATURE": "0.7"}),
                   "SAMPLECLI_TEMPERATURE", "SAMPLECLI_TEMP", code=2)


def test_an_environment_alias_is_no_unknown_variable():
    from samplecli.config.environment import from_env, unknown_variables

    assert unknown_variables({"SAMPLECLI_STOP": "x", "SAMPLECLI_TIMEOUT": "5"}) == []
    assert from_env({"SAMPLECLI_STOP": "x"})["stop_strings"].value == ["x"]


@pytest.mark.parametrize("chain", ["top-k=abc", "top-p=nan", "temperature=inf", "dry:dry_base=0.5", "nope"])
def test_a_bad_chain_names_the_chain_flag_and_its_value(no_model, chain):
    one_line_error(invoke("generate", PROMPT, "--chain", chain), "--chain", repr(chain), code=2)


@pytest.mark.parametrize(("args", "fragments"), [
    (["--logprob-of", ""], ("--logprob-of ''", "may not be empty")),
    (["--logit-bias=-1=5"], ("--logit-bias '-1=5'", "-1 is no token id")),
    (["--num-beams", "2", "--length-penalty=1e308"], ("--length-penalty", "[-20, 20]", "1e+308")),
    (["--sample-locally"], ("--sample-locally", "remote engine")),
    (["--post-sampling-probs"], ("--post-sampling-probs", "remote engine")),
    (["--timeout", "0"], ("--timeout", "0")),
    (["--timeout", "nan"], ("--timeout", "nan")),
])
def test_values_refused_before_the_model_loads(no_model, args, fragments):
    one_line_error(invoke("generate", PROMPT, "-n", "3", *args), *fragments, code=2)


def test_a_timeout_for_a_local_model_is_refused_before_it_loads(monkeypatch):
    import samplecli.backends.torch_lm

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(samplecli.backends.torch_lm, "load", refuse)
    one_line_error(invoke("generate", PROMPT, "--timeout", "5"), "--timeout", "remote engine", code=2)


def test_compare_refuses_server_sampling_flags_for_a_local_model_before_it_loads(no_model):
    one_line_error(invoke("compare", PROMPT, "-s", "greedy", "--sample-locally"), "--sample-locally", code=2)


def test_a_device_this_torch_lacks_is_refused_before_the_model_loads(no_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(invoke("generate", PROMPT, "--device", "cuda"), "--device cuda", "no CUDA device", code=2)


# --- remote URLs: one line before any connection (#32), with the network blocked ---------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or DNS lookup outside 127.0.0.1 fails the test."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local(host) -> bool:
        return host in ("127.0.0.1", "localhost", "::1")

    def connect(self, address):
        if isinstance(address, tuple) and not local(address[0]):
            raise AssertionError(f"a connection to {address} was attempted")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not local(host):
            raise AssertionError(f"a DNS lookup of {host!r} was attempted")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connect(None, address))


@pytest.mark.parametrize(("url", "fragment"), [("http://", "names no host"), ("http://[::1", "not a valid URL"),
                                               ("http://:8080", "names no host"),
                                               ("http://127.0.0.1:99999", "not a valid URL")])
def test_a_url_without_a_host_is_one_line_before_any_connection(no_network, url, fragment):
    one_line_error(invoke("generate", PROMPT, "--model", url), f"--model {url}", fragment, code=2)


def test_a_model_name_not_in_the_cache_with_hf_hub_offline_is_one_line_without_a_packet(no_network, monkeypatch,
                                                                                       tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    one_line_error(invoke("generate", PROMPT, "-n", "2", "--model", "gpt2-nonexistent-xyz"),
                   "gpt2-nonexistent-xyz", "HF_HUB_OFFLINE", "to run offline", code=1)


def test_device_and_dtype_are_refused_for_a_remote_engine(no_network):
    one_line_error(invoke("generate", PROMPT, "--model", "http://127.0.0.1:9", "--device", "cpu"),
                   "--device cpu", "remote engine", code=2)


# --- a server that stalls: --timeout bounds each answer and each token --------------------------------------------


@contextlib.contextmanager
def stalling_server(behaviour: str) -> Iterator[str]:
    """A server on 127.0.0.1 that accepts and then never answers ("silent"), or sends a status line and then one
    byte every 0.2 s, for ever ("dribble"). Yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            with contextlib.suppress(OSError):
                conn.recv(65536)
                if behaviour == "dribble":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.2):
                    if behaviour == "dribble":
                        conn.sendall(b"X")

    def accept() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("behaviour", ["silent", "dribble"])
def test_a_stalled_server_ends_at_the_timeout_given_naming_the_url_and_the_value(behaviour):
    with stalling_server(behaviour) as url:
        result = invoke("generate", PROMPT, "--model", url, "--timeout", "1", "-n", "2")
    one_line_error(result, url, "--timeout 1 ", code=1)


def test_the_timeout_comes_from_the_environment_too():
    with stalling_server("dribble") as url:
        result = invoke("generate", PROMPT, "--model", url, "-n", "2", env={"SAMPLECLI_TIMEOUT": "1"})
    one_line_error(result, url, "--timeout 1 ", code=1)


def test_the_deadline_holds_across_reads_that_each_return_in_time():
    """The deadline is for the whole wait, not per read: reads that each bring a byte within the read timeout
    still end once the deadline passes."""
    import httpcore

    from samplecli.backends.remote.http import Deadline

    deadline = Deadline()
    assert deadline.bound(5.0, httpcore.ReadTimeout) == 5.0  # no deadline: the read's own timeout
    with deadline.within(0.05):
        assert deadline.bound(5.0, httpcore.ReadTimeout) <= 0.05
        time.sleep(0.06)
        with pytest.raises(httpcore.ReadTimeout):
            deadline.bound(5.0, httpcore.ReadTimeout)
    assert deadline.at is None


# --- standard streams: closed, full, or an encoding that cannot hold every character --------------------------------


def _run(args: list[str], **popen) -> tuple[int, str, str]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLECLI_")}
    proc = subprocess.run([sys.executable, "-m", "samplecli", *args], capture_output="stdout" not in popen,
                          env={**env, **popen.pop("env", {})}, timeout=120, **popen)
    return proc.returncode, *(b.decode("utf-8", "replace") if b else "" for b in (proc.stdout, proc.stderr))


def _last_error(stderr: str) -> str:
    lines = stderr.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[-1]


def test_a_closed_stdout_is_one_line_before_anything_runs():
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "samplecli", "generate", PROMPT, "-n", "2"], stderr=subprocess.PIPE,
                          timeout=120, preexec_fn=lambda: os.close(1))
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    assert "standard output is closed" in _last_error(stderr)


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "T.jinja"
    path.write_text("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>")
    return path


def test_chat_with_stdin_closed_is_one_line_before_the_model_loads(template):
    import os

    code, _, stderr = _run(["chat", "--chat-template", str(template), "-n", "3"],
                           preexec_fn=lambda: os.close(0), stdin=None)
    assert code == 2, stderr
    assert "standard input is closed" in _last_error(stderr)


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
def test_a_chat_reply_on_a_full_disk_is_one_line(template, tiny_model_dir):
    with open("/dev/full", "w") as full:
        code, _, stderr = _run(["chat", "--model", str(tiny_model_dir), "--chat-template", str(template), "-n", "4",
                                "--seed", "1"], input=b"hello\n", stdout=full, stderr=__import__("subprocess").PIPE)
    assert code == 1, stderr
    assert "No space left on device" in _last_error(stderr)


def test_a_template_that_renders_nothing_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "nothing.jinja"
    empty.write_text('{{ "" }}')
    one_line_error(invoke("generate", "hi", "--chat", "--chat-template", str(empty), "-n", "2"),
                   "--chat-template", "renders nothing", code=2)


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("args", [["inspect", PROMPT], ["score", "But soft, what light"],
                                  ["compare", PROMPT, "-s", "greedy", "-n", "3", "--seed", "1"]])
def test_an_output_encoding_that_cannot_hold_every_character_escapes_the_rest(tiny_model_dir, encoding, args):
    from typer.testing import CliRunner

    from samplecli.cli import app

    result = CliRunner(charset=encoding).invoke(app, [*args, "--model", str(tiny_model_dir)], prog_name="samplecli",
                                                color=False)
    assert result.exit_code == 0, (result.stderr, repr(result.exception))
    assert result.stdout.strip()
    if args[0] == "inspect":  # its table's bars and the summary's `·`, escaped
        assert "\\u" in result.stdout or "\\x" in result.stdout, result.stdout


# --- accepted wrongly, or waiting for ever ------------------------------------------------------------------------


def test_columns_zero_is_ignored_not_a_zero_wide_table():
    result = invoke("strategies", env={"COLUMNS": "0"})
    assert result.exit_code == 0, result.stderr
    assert "greedy" in result.stdout


@pytest.mark.parametrize("flag", ["--prompt-file", "--messages", "--output"])
def test_a_named_pipe_where_a_file_is_needed_is_refused_not_waited_on(no_model, tmp_path, flag):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [flag, str(fifo)] if flag != "--output" else [PROMPT, flag, str(fifo)]
    one_line_error(invoke("generate", "-n", "2", *args), f"{flag} {fifo}", "named pipe", code=2)


def test_a_prompt_file_too_big_for_any_tokenizer_to_fit_is_refused_from_its_size(no_model, tmp_path, monkeypatch):
    import samplecli.engine.decode

    big = tmp_path / "big.txt"
    big.write_text("ab " * 30_000)  # 90 kB: more than 256 bytes for each of the bundled model's 256 positions

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the prompt was tokenized")

    monkeypatch.setattr(samplecli.engine.decode, "encode_prompt", no_tokenizing)
    one_line_error(invoke("generate", "--prompt-file", str(big), "-n", "2"), f"--prompt-file {big}", "90000 bytes",
                   "context of 256 tokens", code=2)


def test_a_prompt_of_more_tokens_than_the_context_is_counted_by_the_tokenizer_file_before_the_model_loads(
        no_model, tmp_path):
    """Under the size bound but over the context (/proc/self/status is 1,178 tokens): the model's tokenizer file
    counts it, without the weights. A short prompt is not counted at all (fewer bytes than positions)."""
    from tokenizers import Tokenizer

    from samplecli.backends import BUNDLED_MODEL_DIR

    text = "ROMEO: what light through yonder window breaks?\n" * 40  # 2 kB, under the 64 kB size bound
    tokens = len(Tokenizer.from_file(str(BUNDLED_MODEL_DIR / "tokenizer.json")).encode(text).ids)
    assert tokens >= 256
    prompt = tmp_path / "long.txt"
    prompt.write_text(text)
    one_line_error(invoke("generate", "--prompt-file", str(prompt), "-n", "2"), f"--prompt-file {prompt}",
                   f"at least {tokens} tokens", "context is 256 tokens", code=2)


def test_plot_without_matplotlib_is_one_line_before_the_model_loads(no_model, monkeypatch, tmp_path):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    target = tmp_path / "x.png"
    one_line_error(invoke("inspect", PROMPT, "--plot", str(target)), "--plot", "matplotlib")
    assert not target.exists()


def test_chat_on_a_model_without_a_template_is_refused_from_its_tokenizer_config_before_it_loads(no_model):
    one_line_error(invoke("generate", PROMPT, "--chat", "-n", "2"), "no chat template", "tokenizer_config.json",
                   "--chat-template", code=1)
    one_line_error(invoke("chat", "-n", "2", input="hello\n"), "no chat template", code=1)


def test_a_second_run_writing_the_same_output_is_refused_and_leaves_the_first_runs_text(no_model, tmp_path):
    import fcntl

    target = tmp_path / "out.txt"
    target.write_text("the first run's text so far")
    with open(target, "a") as first:  # the first run holds its lock while it streams
        fcntl.flock(first.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_line_error(invoke("generate", PROMPT, "-o", str(target)), f"--output {target}", "another run", code=2)
    assert target.read_text() == "the first run's text so far"


def test_the_output_lock_refuses_a_second_writer_once_the_model_ran(tmp_path):
    from samplecli.config.inputs import OutputFile
    from samplecli.errors import UsageError

    target = tmp_path / "out.txt"
    first = OutputFile.open(target, "--output")
    first.write("kept")
    first.flush()
    with pytest.raises(UsageError, match="another run is writing this file"):
        OutputFile.open(target, "--output")
    first.close()
    assert target.read_text() == "kept"
    OutputFile.open(target, "--output").close()  # free again once the first run ended
    assert target.read_text() == ""


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("stderr_tty", "term", "fragment"), [(False, "xterm", "stderr is not a terminal"),
                                                                (True, "dumb", "TERM=dumb")])
def test_explore_will_not_draw_where_stderr_is_no_terminal_or_term_is_dumb(monkeypatch, stderr_tty, term, fragment):
    import sys

    from samplecli.cli.explore import check_terminal
    from samplecli.errors import UsageError

    monkeypatch.setattr(sys, "stdin", _Stream(True))
    monkeypatch.setattr(sys, "stdout", _Stream(True))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_tty))
    monkeypatch.setenv("TERM", term)
    with pytest.raises(UsageError, match=fragment):
        check_terminal()
    monkeypatch.setattr(sys, "stderr", _Stream(True))
    monkeypatch.setenv("TERM", "xterm-256color")
    check_terminal()  # a real terminal on all three: explore runs


def test_ten_thousand_beams_are_refused_with_the_estimate_before_anything_is_allocated(no_model, monkeypatch):
    import samplecli.backends.memory

    monkeypatch.setattr(samplecli.backends.memory, "available_ram", lambda: 24 * 2**30)  # a 24 GB machine
    one_line_error(invoke("generate", PROMPT, "--num-beams", "10000"), "--num-beams 10000", "needs about",
                   "24.0 GB", code=1)
    # a beam search that fits is not refused by the estimate (the model load comes next, which no_model stops)
    result = invoke("generate", PROMPT, "--num-beams", "4", "-n", "3")
    assert "the model was loaded before the error" in result.stderr


def test_a_pair_token_outside_the_vocabulary_is_refused_before_the_model_loads(no_model):
    one_line_error(invoke("inspect", PROMPT, "--pair", "5", "99999"), "--pair", "99999", "2048 tokens", code=2)


def test_a_template_that_renders_millions_of_words_stops_at_the_cap_before_tokenizing(tmp_path, monkeypatch):
    from samplecli.config.chat import check_rendered_size
    from samplecli.errors import UsageError

    huge = "{% for i in range(100000) %}{% for j in range(500) %}word {% endfor %}{% endfor %}"
    with pytest.raises(UsageError, match="--chat-template: the template renders more than 1000 characters"):
        check_rendered_size(huge, [{"role": "user", "content": "hi"}], 1000, "--chat-template")
    check_rendered_size("{{ messages[0].content }}", [{"role": "user", "content": "hi"}], 1000, "x")  # fits
    check_rendered_size("{{ tools | tojson }}", [], 1000, "x")  # what it cannot render is left to the tokenizer
    template = tmp_path / "huge.jinja"
    template.write_text(huge)
    one_line_error(invoke("generate", "hi", "--chat-template", str(template), "-n", "2"), "--chat-template",
                   "renders more than 65536 characters", code=2)


def test_more_samples_than_any_machine_decodes_are_refused_and_a_long_run_is_said_first(no_model, tmp_path):
    count = "99999999999999999999"
    one_line_error(invoke("generate", PROMPT, "--num-samples", count, "-q", "-o", str(tmp_path / "out.txt")),
                   f"--num-samples {count}", "1e+22 tokens", "more than any machine", code=2)
    # streamed to a file with -q, 10^8 samples keep no results: the run starts (here: the load, which no_model
    # stops), after a line saying how long it is
    result = invoke("generate", PROMPT, "--num-samples", "100000000", "-q", "-o", str(tmp_path / "out.txt"))
    assert "warning: --num-samples 100000000 x -n 100 is 1e+10 tokens to decode" in result.stderr
    assert "the model was loaded before the error" in result.stderr
    # kept on the terminal, they are refused from the memory estimate
    one_line_error(invoke("generate", PROMPT, "--num-samples", "100000000"), "--num-samples 100000000",
                   "needs about", code=1)


def test_a_chat_piped_into_a_reader_that_goes_away_ends_quietly_with_exit_0(template, tiny_model_dir):
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "samplecli", "chat", "--model", str(tiny_model_dir), "--chat-template",
            str(template), "-n", "40", "--seed", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLECLI_")}
    command = " ".join(f"'{a}'" for a in argv) + ' | head -c 1 > /dev/null; echo "${PIPESTATUS[0]}" >&2'
    run = subprocess.run(["bash", "-c", command], input=b"hello\nhow are you\nand then\n", capture_output=True,
                         env={**env, "PYTHONIOENCODING": "utf-8"}, timeout=180)
    stderr = run.stderr.decode("utf-8", "replace")
    assert stderr.splitlines()[-1] == "0", stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "error" not in stderr


def test_an_address_space_too_small_for_torch_is_one_line_saying_so():
    import resource
    import subprocess
    import sys

    def limit() -> None:  # `ulimit -v 300000`
        resource.setrlimit(resource.RLIMIT_AS, (300_000 * 1024, 300_000 * 1024))

    proc = subprocess.run([sys.executable, "-m", "samplecli", "generate", PROMPT, "-n", "2"], capture_output=True,
                          timeout=120, preexec_fn=limit)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, stderr
    line = _last_error(stderr)
    assert "out of memory" in line and "ulimit -v" in line
    assert proc.stdout == b""


def test_a_chat_template_with_a_syntax_error_is_refused_before_the_model_loads(no_model, tmp_path):
    from samplecli.config.chat import read_template

    broken = tmp_path / "bad.jinja"
    broken.write_text("{% for m in messages %}{{ m.content }\n")
    one_line_error(invoke("generate", "hi", "--chat-template", str(broken), "-n", "2"), f"--chat-template {broken}",
                   "not a valid Jinja template", "line 1", code=2)
    # what transformers' own environment takes is taken: loop controls, and its {% generation %} tag
    fine = tmp_path / "fine.jinja"
    fine.write_text("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% break %}"
                    "{% endfor %}")
    assert read_template(fine).startswith("{% for")
