"""A tiny OpenAI-compatible server on 127.0.0.1 that replays the answers kept in tests/data/openai/<engine>.json, for
the shapes the local llama-server cannot produce (vLLM's, SGLang's, Ollama's) and for the faults it will not make
on demand. It records every request it gets.

    with stub("vllm", fault="reset") as server: ...   # server.url, server.requests

Faults: "401" (a key is wanted), "404-model", "400-logprobs", "no-logprobs" (answers without log-probabilities),
"slow" (sleeps before answering), "no-echo" (an `echo` request answered with the generated token only), "reset"
(the connection is cut after two events). `/v1/chat/completions` replays `chat_stream` where the engine's file has
one; an `echo` request gets `echo`, another non-streamed completion `completion`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).parent / "data" / "openai"


def recorded(engine: str) -> dict:
    return json.loads((DATA / f"{engine}.json").read_text())


@dataclass
class Stub:
    url: str
    requests: list[tuple[str, str, dict, dict]] = field(default_factory=list)  # method, path, headers, body


@contextlib.contextmanager
def stub(engine: str, fault: str | None = None, key: str | None = None, delay_s: float = 3.0,
         port: int = 0) -> Iterator[Stub]:
    """The stub on 127.0.0.1:`port` (0: a free one the system picks), serving until the block ends."""
    data = recorded(engine)
    server_state = Stub("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, status: int, body) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _record(self, body: dict) -> None:
            server_state.requests.append((self.command, self.path, dict(self.headers), body))

        def _authorized(self) -> bool:
            wanted = key if key is not None else ("s3cret" if fault == "401" else None)
            if wanted is None or self.headers.get("Authorization") == f"Bearer {wanted}":
                return True
            self._json(401, data.get("errors", {}).get("key", {"error": {"message": "Unauthorized"}}))
            return False

        def do_GET(self) -> None:
            self._record({})
            if self.path == "/v1/models":
                if self._authorized():
                    self._json(200, data["models"])
            elif self.path == "/" and "root" in data:
                payload = data["root"].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self._json(404, {"error": {"message": "Not Found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            self._record(body)
            if not self._authorized():
                return
            if self.path == "/tokenize" and "tokenize" in data:
                return self._json(200, data["tokenize"])
            if self.path == "/detokenize" and "detokenize" in data:
                return self._json(200, {"prompt": "".join(data["detokenize"].get(str(t), "?") for t in body["tokens"])})
            chat = self.path == "/v1/chat/completions" and "chat_stream" in data
            if self.path != "/v1/completions" and not chat:
                return self._json(404, {"error": {"message": "Not Found"}})
            if fault == "404-model":
                return self._json(404, data["errors"]["model"])
            if fault == "400-logprobs":
                return self._json(400, data["errors"]["max_logprobs"])
            if fault == "slow":
                time.sleep(delay_s)
            if body.get("prompt_logprobs") is not None:
                if body.get("stream") or "prompt_logprobs" not in data:
                    return self._json(400, {"error": {"message": "prompt_logprobs is not supported", "code": 400}})
                answer = json.loads(json.dumps(data["prompt_logprobs"]))
                choice = answer["choices"][0]  # a prefix of the recorded prompt: the recorded rows up to it
                choice["prompt_logprobs"] = choice["prompt_logprobs"][: len(body["prompt"])]
                return self._json(200, answer)
            if body.get("echo") and "echo" in data:
                answer = json.loads(json.dumps(data["echo"]))
                if fault == "no-echo":  # the generated token only, as if `echo` were ignored
                    choice = answer["choices"][0]
                    choice["text"] = choice["text"][len(body["prompt"]):]
                    choice["logprobs"] = {k: v[-1:] for k, v in choice["logprobs"].items()}
                return self._json(200, answer)
            if not body.get("stream") and "completion" in data:
                return self._json(200, data["completion"])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, event in enumerate(data["chat_stream" if chat else "stream"]):
                if fault == "reset" and i == 2:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # cut mid-stream, no terminating chunk
                    return
                if fault == "no-logprobs":
                    event = json.loads(json.dumps(event))
                    event["choices"][0]["logprobs"] = None
                self._chunk(f"data: {json.dumps(event)}\n\n")
            self._chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, text: str) -> None:
            payload = text.encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:  # a client that hung up (a timeout test): quiet
            pass

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
