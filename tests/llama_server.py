"""Fixtures that run llama.cpp's `llama-server` on the bundled model (converted to GGUF), for tests that talk to a
real server. The binary and the GGUF come from scripts/build_llama_cpp.py's cache (built on first use: several minutes
on a fresh machine, then instant).

    llama_server          session-scoped: one server, 4 slots of the model's full 256-token context
    start_llama_server    function-scoped factory: start(...) -> a separate server, stopped when the test ends
                          (for tests that kill a server mid-stream)

A server object has .url, .gguf, .process, .log_path, and small JSON/SSE helpers built on urllib only.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N_PARALLEL = 4
N_CTX_PER_SLOT = 256  # the bundled model's n_positions: each slot gets the whole trained context
START_TIMEOUT_S = 120.0


def llama_cpp_module():
    """scripts/build_llama_cpp.py as a module (scripts/ is not a package)."""
    name = "samplecli_scripts_llama_cpp"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "build_llama_cpp.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class LlamaServer(llama_cpp_module().Served):
    """A running llama-server (scripts/build_llama_cpp.py's `Served`: .url, .gguf, .process, .log_path, .args,
    .log(), .stop()) with JSON and SSE helpers on urllib only."""

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60.0):
        """(status, parsed JSON body) -- HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload.decode(errors="replace")

    def get(self, path: str, timeout: float = 60.0):
        status, payload = self.request("GET", path, timeout=timeout)
        assert status == 200, f"GET {path} -> {status}: {payload}"
        return payload

    def post(self, path: str, body: dict, timeout: float = 120.0):
        status, payload = self.request("POST", path, body, timeout=timeout)
        assert status == 200, f"POST {path} -> {status}: {payload}"
        return payload

    def stream(self, path: str, body: dict, timeout: float = 120.0) -> Iterator[dict]:
        """POST with "stream": true and yield each server-sent event's JSON (`data: {...}` lines).

        A stream that ends before its final event (`"stop": true`, or `data: [DONE]` on the OpenAI-style
        endpoints) raises ConnectionError: when the server dies mid-stream, urllib just sees the body end."""
        req = urllib.request.Request(self.url + path, data=json.dumps({**body, "stream": True}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            assert response.headers.get_content_type() == "text/event-stream"
            for raw in response:
                if not raw.endswith(b"\n"):
                    raise ConnectionError(f"the stream from {self.url}{path} was cut mid-event: {raw[:200]!r}")
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data: "):
                    continue  # blank separators and ": ping" comments
                if line == "data: [DONE]":  # the OpenAI-style endpoints end with this; /completion does not
                    return
                event = json.loads(line[len("data: "):])
                yield event
                if event.get("stop") is True:
                    return
        raise ConnectionError(f"the stream from {self.url}{path} ended without its final event")

def start(binary: Path | None = None, gguf: Path | None = None, *, n_parallel: int = N_PARALLEL,
          n_ctx_per_slot: int = N_CTX_PER_SLOT, threads: int = 1, extra_args: tuple[str, ...] = (),
          log_dir: Path | None = None, timeout: float = START_TIMEOUT_S) -> LlamaServer:
    """Start llama-server on a free port and wait until GET /health answers 200 (`serve` in
    scripts/build_llama_cpp.py)."""
    return llama_cpp_module().serve(binary=binary, gguf=gguf, n_parallel=n_parallel, ctx_per_slot=n_ctx_per_slot,
                                    threads=threads, extra_args=extra_args, log_dir=log_dir, timeout=timeout,
                                    kind=LlamaServer)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    server = start(log_dir=tmp_path_factory.mktemp("llama-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local():
    """The bundled model in torch: what the server's answers are checked against."""
    from samplecli.backends import open_backend

    return open_backend(None)


@pytest.fixture(scope="module")
def remote(llama_server):
    """The session's llama-server as a backend asked for every token's probability (--full-distribution), so that
    its numbers can equal the local model's exactly; `remote_top` is the default, top-20 one."""
    from samplecli.backends import open_backend

    return open_backend(llama_server.url, full_distribution=True)


@pytest.fixture(scope="module")
def remote_top(llama_server):
    """The session's llama-server as a backend with the default request shape: its top 20 per token."""
    from samplecli.backends import open_backend

    return open_backend(llama_server.url)


@pytest.fixture(scope="module")
def start_llama_server_module(tmp_path_factory):
    """start_llama_server for a module's fixtures: its servers stop when the module's tests end."""
    servers: list[LlamaServer] = []

    def factory(**kwargs) -> LlamaServer:
        kwargs.setdefault("log_dir", tmp_path_factory.mktemp("llama-server"))
        servers.append(start(**kwargs))
        return servers[-1]

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def start_llama_server(tmp_path):
    """A factory: start_llama_server(**kwargs of start()) -> a new LlamaServer, stopped when the test ends."""
    servers: list[LlamaServer] = []

    def factory(**kwargs) -> LlamaServer:
        kwargs.setdefault("log_dir", tmp_path)
        server = start(**kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
