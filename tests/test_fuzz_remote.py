"""A fuzzer of remote engines' answers (issue #27): a stub server on 127.0.0.1 replays vLLM's recorded answers
(tests/data/openai/vllm.json) with one part of one answer replaced by garbage (a list where an object was, a
string where a number was, NaN, +3, 10^9, a negative id, HTML, truncated JSON, an empty body), and answers
`/props` (which llama.cpp's server has) with garbage or 404. Whatever it answers, `samplecli generate` against it
shows no traceback and no "internal error", exits 0, 1 or 2, and a failure is one line, the last on stderr, with
nothing on stdout but the text generated before the fault. Seeded (`derandomize`) like tests/test_fuzz_cli.py;
SAMPLECLI_FUZZ_EXAMPLES sets how many (half of them here).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from samplecli.cli import app
from tests.openai_stub import recorded

EXAMPLES = int(os.environ.get("SAMPLECLI_FUZZ_EXAMPLES", "60")) // 2 or 1
runner = CliRunner()

GARBAGE = st.sampled_from([
    [], {}, "abc", "", None, True, math.nan, math.inf, 3.0, -1, 0, 10**9, 10**30, 1e308, "token_id:99999999",
    "token_id:-5", [1, 2], {"id": "x"}, [[[[]]]], "<html><body>502 Bad Gateway</body></html>",
])
RAW = st.sampled_from([b"<html><body>502 Bad Gateway</body></html>", b'{"object": "li', b"", b"null", b"[1, 2",
                       b"data: {}\n\n", b"\xff\xfe"])
RECORDED_TEXT = "".join(event["choices"][0]["text"] for event in recorded("vllm")["stream"])
ANSWERS = ("models", "tokenize", "detokenize", "stream", "completion", "props")


def replace_at(data, path: list[int], value):
    """`data` with the part that `path` picks (each number chooses a key or an item, level by level) replaced."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = keys[path[0] % len(keys)]
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[key] = replace_at(data[key], path[1:], value)
    return copy


@st.composite
def faults(draw):
    """Which answer is broken, and how: a part replaced by garbage, or the whole body raw bytes."""
    answer = draw(st.sampled_from(ANSWERS))
    if draw(st.booleans()) and answer != "props":
        return answer, None, None, draw(RAW)
    path = draw(st.lists(st.integers(0, 50), max_size=6))
    return answer, path, draw(GARBAGE), None


@contextlib.contextmanager
def garbage_server(answer: str, path, value, raw: bytes | None):
    data = recorded("vllm")
    answers = {name: data.get(name) for name in ANSWERS}
    answers["props"] = None  # 404: an OpenAI-compatible server, unless it is the answer broken
    if raw is None:
        answers[answer] = replace_at(answers[answer] if answers[answer] is not None else {}, path, value)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, payload: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, name: str) -> None:
            if raw is not None and name == answer:
                return self._send(200, raw, "text/html")
            if answers[name] is None:
                return self._send(404, b'{"error": {"message": "Not Found"}}')
            self._send(200, json.dumps(answers[name]).encode())

        def do_GET(self) -> None:
            name = {"/props": "props", "/v1/models": "models"}.get(self.path)
            if name is None:
                return self._send(404, b'{"error": {"message": "Not Found"}}')
            self._answer(name)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path in ("/tokenize", "/detokenize"):
                return self._answer(self.path[1:])
            if not body.get("stream"):
                return self._answer("completion")
            if raw is not None and answer == "stream":
                return self._send(200, raw, "text/event-stream")
            events = answers["stream"] if isinstance(answers["stream"], list) else [answers["stream"]]
            payload = b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in events) + b"data: [DONE]\n\n"
            self._send(200, payload, "text/event-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(fault=faults(), sample_locally=st.booleans())
def test_whatever_a_server_answers_is_a_result_or_one_line(fault, sample_locally):
    answer, path, value, raw = fault
    with garbage_server(answer, path, value, raw) as url:
        args = ["generate", "ROMEO:", "--model", url, "-n", "2", "--timeout", "10", "-q", "--seed", "1",
                *(["--sample-locally", "--top-logprobs", "3"] if sample_locally else [])]
        result = runner.invoke(app, args, env={"SAMPLECLI_API_KEY": ""}, prog_name="samplecli")
    shown = f"{fault} -> {result.exit_code}: {result.stderr[-400:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (shown, repr(result.exception))
    assert result.exit_code in (0, 1, 2), shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert "internal error" not in result.stderr, shown
    if result.exit_code != 0:
        # what was generated before the fault stays on stdout (the recorded stream's text, where the server samples)
        assert result.stdout == "" or (not sample_locally and RECORDED_TEXT.startswith(result.stdout)), shown
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and result.stderr.rstrip("\n").splitlines()[-1] == errors[0], shown


def test_the_fuzzer_reaches_the_model_with_an_unbroken_answer():
    """The stub itself serves a valid run (so the fuzzer's faults are what breaks it): `/props` 404 alone."""
    with garbage_server("props", [], None, None) as url:  # garbage None at /props: its 404
        result = runner.invoke(app, ["generate", "ROMEO:", "--model", url, "-n", "2", "-q", "--seed", "1"],
                               prog_name="samplecli")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()


def test_a_vocabulary_too_large_to_allocate_is_one_line_naming_the_server():
    data = recorded("vllm")["models"]
    data["data"][0]["meta"] = {"n_vocab": 10**9}
    with garbage_server("models", [], data, None) as url:
        result = runner.invoke(app, ["generate", "ROMEO:", "--model", url, "-n", "2", "--sample-locally"],
                               prog_name="samplecli")
    assert result.exit_code == 1, result.stderr
    assert url in result.stderr and "n_vocab" in result.stderr and "1000000000" in result.stderr
    assert "internal error" not in result.stderr


def _event_with(field: str, value):
    """vLLM's recorded stream with the first event's `field` of its log-probabilities set to `value`."""
    events = recorded("vllm")["stream"]
    logprobs = events[0]["choices"][0]["logprobs"]
    if field == "token_logprobs":
        logprobs["token_logprobs"][0] = value
    elif field == "tokens":
        logprobs["tokens"][0] = value
    else:  # a candidate of the top log-probabilities
        top = logprobs["top_logprobs"][0]
        top[value[0]] = value[1]
    return events


# the cases of issue #27 by name: each one line naming the server, exit 1, whichever way the run samples
NAMED = {
    "a logprob that is a string": ("stream", _event_with("token_logprobs", "abc")),
    "a logprob of +3": ("stream", _event_with("token_logprobs", 3.0)),
    "a logprob that is NaN": ("stream", _event_with("token_logprobs", math.nan)),
    "a token that is a number": ("stream", _event_with("tokens", 5)),
    "a candidate id out of range": ("stream", _event_with("top", ("token_id:99999999999", -1.0))),
    "a /props that is a list": ("props", [1, 2, 3]),
    "an n_vocab that is a string": ("models", {"data": [{"id": "m", "meta": {"n_vocab": "abc"}}]}),
}


def test_every_named_garbage_answer_is_one_line_naming_the_server():
    for name, (answer, value) in NAMED.items():
        with garbage_server(answer, [], value, None) as url:
            result = runner.invoke(app, ["generate", "ROMEO:", "--model", url, "-n", "2", "--timeout", "10"],
                                   prog_name="samplecli")
        last = result.stderr.rstrip("\n").splitlines()[-1] if result.stderr.strip() else ""
        assert result.exit_code == 1, (name, result.stderr)
        assert last.startswith("error: ") and url in last, (name, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
        assert RECORDED_TEXT.startswith(result.stdout), (name, result.stdout)


def test_html_for_an_answer_is_one_line_naming_the_server():
    with garbage_server("models", None, None, b"<html><body>502 Bad Gateway</body></html>") as url:
        result = runner.invoke(app, ["generate", "ROMEO:", "--model", url, "-n", "2"], prog_name="samplecli")
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.rstrip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}"), result.stderr
    assert "internal error" not in result.stderr and result.stdout == ""
