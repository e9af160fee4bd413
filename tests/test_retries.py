"""Retries with backoff before the first token, over real sockets: a connection refused before any answer is tried
again after 0.2, 0.4 and 0.8 s (samplecli/backends/remote/http.py, RETRIES = 3), a server that never opens is one
line after the last try, and a connection cut once the answer has begun is never sent again (the completion would
be asked for twice and what was streamed would not be what the server sampled)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner

from samplecli.backends.remote import http as http_module
from samplecli.backends.remote.http import RETRIES, Http, RemoteError
from samplecli.cli import app
from tests.openai_stub import Stub, recorded, stub

NO_KEY = {k: v for k, v in os.environ.items() if k not in ("SAMPLECLI_API_KEY", "OPENAI_API_KEY")}
BACKOFF_S = [0.2 * 2**attempt for attempt in range(RETRIES)]  # 0.2, 0.4, 0.8
VLLM_TOKENS = [198, 40, 686, 537]  # the four tokens tests/data/openai/vllm.json streams


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env=NO_KEY)


def tokens(stdout: str) -> list[int]:
    """The token ids of the step records in `-f jsonl` output."""
    return [r["token_id"] for r in map(json.loads, stdout.splitlines()) if "token_id" in r]


def completions(server: Stub) -> list[dict]:
    return [body for _, path, _, body in server.requests if path == "/v1/completions"]


def closed_port() -> int:
    """A port nothing listens on (the system's pick, released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BackoffClock:
    """The http module's `time`, recording each backoff pause (the pauses are still real); `refused` is set at the
    first, which follows the first refused connection."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.refused = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.refused.set()
        time.sleep(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def backoff(monkeypatch) -> BackoffClock:
    clock = BackoffClock()
    monkeypatch.setattr(http_module, "time", clock)
    return clock


@dataclass
class LateServer:
    url: str
    opened: threading.Event = field(default_factory=threading.Event)
    server: Stub | None = None


@contextlib.contextmanager
def late_stub(engine: str, clock: BackoffClock, after_s: float = 0.5) -> Iterator[LateServer]:
    """The OpenAI stub on a fixed port that starts listening only `after_s` seconds after the client's first
    try was refused (however long the client took to start): until then every connection to it is refused."""
    port = closed_port()
    late, done = LateServer(f"http://127.0.0.1:{port}"), threading.Event()

    def serve() -> None:
        while not clock.refused.wait(0.05):
            if done.is_set():  # the test ended first
                return
        time.sleep(after_s)
        with stub(engine, port=port) as server:
            late.server = server
            late.opened.set()
            done.wait(120)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield late
    finally:
        done.set()
        thread.join(10)


# --- a server that comes up while the client retries ------------------------------------------------------------

def test_a_stream_to_a_server_that_opens_half_a_second_late_gets_through_on_a_later_try(backoff):
    with late_stub("vllm", backoff) as late:
        client = Http(late.url)
        try:
            events = list(client.stream("/v1/completions", {"prompt": "ROMEO:", "max_tokens": 4, "stream": True}))
        finally:
            client.close()
        assert late.opened.is_set()
        assert events == recorded("vllm")["stream"]
        assert len(completions(late.server)) == 1  # refused tries never reached it; the one that did, once
    # tried at 0, 0.2 and 0.6 s (open at 0.5 s); at 1.4 s too if the machine is slow to start the server
    assert backoff.pauses in (BACKOFF_S[:2], BACKOFF_S)


@pytest.mark.parametrize("suffix", ["", "/v1"])  # the protocol detected from the server, or named by the URL
def test_generate_against_a_server_that_opens_late_succeeds_and_asks_for_the_completion_once(backoff, suffix):
    with late_stub("vllm", backoff) as late:
        result = cli("generate", "ROMEO:", "--model", late.url + suffix, "-n", "4", "-f", "jsonl", "-q")
        assert late.opened.is_set()
        requests = completions(late.server)
    assert result.exit_code == 0, result.stderr
    assert tokens(result.stdout) == VLLM_TOKENS
    assert len(requests) == 1
    assert backoff.pauses in (BACKOFF_S[:2], BACKOFF_S)


# --- a server that never opens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_a_port_that_never_opens_is_one_line_naming_the_url_after_every_try(backoff, suffix):
    url = f"http://127.0.0.1:{closed_port()}"
    result = cli("generate", "ROMEO:", "--model", url + suffix, "-n", "3")
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{url}: cannot connect" in result.stderr
    assert "is the server running" in result.stderr
    assert backoff.pauses == BACKOFF_S  # RETRIES + 1 tries, once: not a second round for the next request


def test_the_client_gives_up_on_a_closed_port_with_the_connect_error_not_a_traceback(backoff):
    url = f"http://127.0.0.1:{closed_port()}"
    client = Http(url)
    try:
        with pytest.raises(RemoteError, match=rf"^{url}: cannot connect \(.+\); is the server running") as raised:
            client.post("/v1/completions", {"prompt": "x"})
    finally:
        client.close()
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert backoff.pauses == BACKOFF_S


# --- a connection cut once the answer has begun -----------------------------------------------------------------

def test_a_connection_cut_mid_stream_is_not_tried_again_and_what_came_stays_on_stdout(backoff):
    with stub("vllm", fault="reset") as server:
        result = cli("generate", "ROMEO:", "--model", server.url + "/v1", "-n", "8", "-f", "jsonl", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert tokens(result.stdout) == VLLM_TOKENS[:2]
    assert result.stderr.count("\n") == 1 and f"{server.url}/v1/completions: the connection was closed" \
        in result.stderr
    assert len(completions(server)) == 1
    assert backoff.pauses == []
