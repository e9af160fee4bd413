"""A tiny Ollama on 127.0.0.1 that replays the native-API exchange kept in tests/data/ollama/native.json (written
from Ollama's API documentation: Ollama cannot run on this machine). It records every request it gets.

    with ollama_stub() as server: ...        # server.url, server.requests
    with ollama_stub(fault="old") as server  # an Ollama before 0.12.11: its lines carry no `logprobs`
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.openai_stub import Stub

DATA = Path(__file__).parent / "data" / "ollama" / "native.json"


@contextlib.contextmanager
def ollama_stub(fault: str | None = None) -> Iterator[Stub]:
    data = json.loads(DATA.read_text())
    state = Stub("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _json(self, status: int, body) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            state.requests.append((self.command, self.path, dict(self.headers), {}))
            answers = {"/api/version": data["version"], "/api/tags": data["tags"]}
            if self.path in answers:
                return self._json(200, answers[self.path])
            return self._json(404, {"error": "404 page not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            state.requests.append((self.command, self.path, dict(self.headers), body))
            if self.path == "/api/show":
                return self._json(200, data["show"])
            lines = {"/api/generate": data["generate_stream"], "/api/chat": data["chat_stream"]}.get(self.path)
            if lines is None:
                return self._json(404, {"error": "404 page not found"})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in lines:
                if fault == "old":
                    line = {k: v for k, v in line.items() if k != "logprobs"}
                payload = (json.dumps(line) + "\n").encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
