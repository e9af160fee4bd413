"""HTTP for the remote backends: one shared `httpx` client per server, a bearer key from the environment, and
every fault (refused, wrong URL, 401/403, 404, 400, timeout, a stream cut short) as one line naming the URL,
what happened and what to do. Connection errors before any answer are retried with backoff; nothing else is."""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from samplecli.errors import CutShort, SampleCliError
from samplecli.strategies.schema import SAMPLING

KEY_VARIABLES = ("SAMPLECLI_API_KEY", "OPENAI_API_KEY")
RETRIES = 3  # connection attempts before the first answer (0.2 s, 0.4 s, 0.8 s apart)
DEFAULT_TIMEOUT = 60.0  # seconds: `--timeout`'s default
SERVERS: list[str] = []  # the base URL of every server this process talks to (the error boundary names it)


class RemoteError(SampleCliError):
    """A server fault, said in one line (exit 1)."""


class RemoteCut(RemoteError, CutShort):
    """A server's answer that ended before it was whole: the command says what it keeps."""


# A server's numbers are checked where they are read: a wrong one (a string, NaN, a log-probability of +3, an id
# beyond the vocabulary, a vocabulary of 10^9 that would be allocated) raises ValueError, which the CLI's error
# boundary shows as one line naming the server (SERVERS) and what was wrong.
MAX_VOCAB = 2**24  # no tokenizer has more than a few hundred thousand tokens


def checked_logprob(value: Any) -> float:
    """A log-probability from an answer (None: -inf): a number, not NaN, at most 0 (a rounding error above is 0)."""
    if value is None:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a log-probability is {value!r}, not a number")
    value = float(value)
    if math.isnan(value) or value > 1e-3:
        raise ValueError(f"a log-probability is {value!r}; a log-probability is a number <= 0")
    return min(value, 0.0)


def checked_id(value: Any, size: int) -> int:
    """A token id from an answer, inside the vocabulary of `size` tokens."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise ValueError(f"a token id is {value!r}, not an id of the {size}-token vocabulary")
    return value


def checked_vocab(value: Any) -> int:
    """A vocabulary size from an answer: an integer from 1 to MAX_VOCAB."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VOCAB:
        raise ValueError(f"the vocabulary size (`n_vocab`) is {value!r}, not an integer from 1 to {MAX_VOCAB}")
    return value


def api_key() -> str | None:
    """The bearer key, from SAMPLECLI_API_KEY or OPENAI_API_KEY; never printed or written anywhere."""
    return next((os.environ[name] for name in KEY_VARIABLES if os.environ.get(name)), None)


class Deadline(threading.local):
    """The time by which the current request of this thread has to be answered (each thread asks on its own):
    every socket read and write waits at most until then, so a server that dribbles a byte every second cannot
    keep a request alive past it, as a per-read timeout that restarts with each byte would."""

    at: float | None = None

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        before, self.at = self.at, time.monotonic() + seconds
        try:
            yield
        finally:
            self.at = before

    def restart(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def bound(self, timeout: float | None, late: type[Exception]) -> float | None:
        """`timeout` (a read's, a connect's) cut to what is left before the deadline; `late` once it has passed."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise late("the deadline passed")
        return left if timeout is None else min(timeout, left)


def _keep_to(deadline: Deadline, client) -> None:
    """Make the sockets of `client` wait no longer than `deadline`: httpcore's network backend of its transport,
    wrapped (a transport without one, e.g. through a proxy, keeps httpx's per-read timeout)."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner) -> None:
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self.inner.read(max_bytes, deadline.bound(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self.inner.write(buffer, deadline.bound(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self.inner.start_tls(ssl_context, server_hostname,
                                               deadline.bound(timeout, httpcore.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self.inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self, inner) -> None:
            self.inner = inner

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return Stream(self.inner.connect_tcp(host, port, deadline.bound(timeout, httpcore.ConnectTimeout),
                                                 local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(self.inner.connect_unix_socket(path, deadline.bound(timeout, httpcore.ConnectTimeout),
                                                         socket_options))

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    pool = getattr(getattr(client, "_transport", None), "_pool", None)  # httpcore's ConnectionPool
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = Backend(pool._network_backend)


def check_timeout(timeout: float) -> float:
    """`--timeout`: a finite number of seconds > 0."""
    from samplecli.errors import UsageError

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise UsageError(f"--timeout has to be a finite number of seconds > 0, but is {timeout}")
    return float(timeout)


class Http:
    """A JSON client for one server. `timeout`, in seconds, bounds the wait for each answer: a whole request, or
    each event of a stream (each token), from the moment it is asked for."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, concurrency: int = 4) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.timeout, self.deadline = check_timeout(timeout), Deadline()
        headers = {"Authorization": f"Bearer {api_key()}"} if api_key() else {}
        # room for every worker's stream and one request it makes while reading it (a held-back token's /tokenize):
        # a pool at its limit closes an idle connection to make room, and httpcore 1.0.9 can close one it has just
        # handed to a waiting thread (encode/httpcore#1110: "Bad file descriptor" under a streamed answer)
        room = 2 * max(concurrency, 1) + 1
        limits = httpx.Limits(max_connections=room, max_keepalive_connections=room)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.timeout),
                                   limits=limits)
        _keep_to(self.deadline, self.client)
        SERVERS.append(self.base_url)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> Any:
        return self._json(self._send("GET", path), path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._send("POST", path, body), path)

    def status(self, path: str) -> int | None:
        """The status code of GET `path` (for detecting the protocol), or None when no answer comes. A refused
        connection is tried again as any request's is, and after the last try raised as one line: a server still
        starting is then detected by what it answers, not taken as absent on the first refusal."""
        import httpx

        try:
            with self._faults(path, timeouts_only=True):
                for attempt in self._attempts():
                    with attempt, self.deadline.within(self.timeout):
                        return self.client.get(path).status_code
        except httpx.HTTPError:
            return None

    def status_text(self, path: str) -> str:
        """The body of GET `path` as text, or "" when nothing answers 200 (for naming the engine)."""
        import httpx

        try:
            with self._faults(path, timeouts_only=True), self.deadline.within(self.timeout):
                response = self.client.get(path)
        except httpx.HTTPError:
            return ""
        return response.text[:200] if response.status_code == 200 else ""

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Server-sent events (`data: {...}`) or JSON lines (Ollama's native API) as JSON objects; a stream cut short
        raises RemoteError (the caller keeps what came)."""
        with self._faults(path, waiting="the next token"):
            for attempt in self._attempts():
                with attempt, self.deadline.within(self.timeout), \
                        self.client.stream("POST", path, json=body) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._status_error(response, path)
                    for line in response.iter_lines():
                        data = line[5:] if line.startswith("data:") else line if line.startswith("{") else None
                        if data is not None and data.strip() != "[DONE]":
                            yield self._event(data, path)
                            self.deadline.restart(self.timeout)  # the wait for the next token starts now
                    return

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None):
        with self._faults(path):
            for attempt in self._attempts():
                with attempt, self.deadline.within(self.timeout):
                    response = self.client.request(method, path, json=body)
                    if response.status_code >= 400:
                        raise self._status_error(response, path)
                    return response

    def _attempts(self) -> Iterator[contextlib.AbstractContextManager]:
        """Context managers for up to RETRIES + 1 tries: a connection error before any answer is retried with
        backoff (0.2 s, 0.4 s, ...), the last one raised as one line; anything else ends the tries at once."""
        import httpx

        for attempt in range(RETRIES + 1):
            failed = []

            @contextlib.contextmanager
            def one_try(attempt=attempt, failed=failed):
                try:
                    yield
                except httpx.ConnectError as exc:
                    if attempt == RETRIES:
                        raise self._connect_error(exc) from None
                    failed.append(exc)

            yield one_try()
            if not failed:
                return
            time.sleep(0.2 * 2**attempt)

    @contextlib.contextmanager
    def _faults(self, path: str, waiting: str = "an answer", timeouts_only: bool = False) -> Iterator[None]:
        """httpx's exceptions as one line naming the URL (with `timeouts_only`, a timeout alone: the rest is the
        caller's)."""
        import httpx

        url = self.base_url + path
        try:
            yield
        except httpx.TimeoutException:
            raise RemoteCut(f"{url}: no answer within {self.timeout:g} s; the server may be overloaded or stalled "
                            f"(--timeout {self.timeout:g} bounds the wait for {waiting}); raise --timeout to wait "
                            "longer") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if timeouts_only:
                raise
            raise RemoteCut(f"{url}: the connection was closed ({_short(exc)}); check that the server is still "
                            "running") from None
        except httpx.HTTPError as exc:
            if timeouts_only:
                raise
            raise RemoteError(f"{url}: {_short(exc)}") from None

    def _event(self, data: str, path: str) -> dict[str, Any]:
        """One server-sent event's JSON object."""
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise RemoteError(f"{self.base_url + path}: an event of the stream is not a JSON object "
                              f"({data.strip()[:80]!r}); is this the server's address?")
        return event

    def _json(self, response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{self.base_url + path}: the answer is not JSON ({response.text[:80]!r}); is this "
                              "the server's address?") from None

    def _connect_error(self, exc: Exception) -> RemoteError:
        return RemoteError(f"{self.base_url}: cannot connect ({_short(exc)}); is the server running and is this "
                           "its address and port?")

    def _status_error(self, response, path: str) -> RemoteError:
        url, code, body = self.base_url + path, response.status_code, _error_body(response)
        message = _server_message(body, response)
        if code in (401, 403):
            return RemoteError(f"{url}: {code} {'unauthorized' if code == 401 else 'forbidden'}"
                               f"{': ' + message if message else ''}; set SAMPLECLI_API_KEY (or OPENAI_API_KEY)")
        if code == 404:
            return RemoteError(f"{url}: 404 not found{': ' + message if message else ''}; check the URL (and the "
                               "model name, where the server serves several), or pass --api")
        param = _server_param(body)
        if code == 400 and param:
            flag = FLAGS.get(param)
            return RemoteError(f"{url}: 400 {message or response.reason_phrase} (the request's `{param}`"
                               f"{f', from {flag}' if flag else ''}); change {flag or 'it'} and run again")
        if code in (400, 500) and "grammar" in (message or "").lower():  # a constraint the engine's parser refused
            return RemoteError(f"{url}: {code} {message} (the engine did not take the constraint: llama.cpp's GBNF "
                               "parser refuses left recursion, which samplecli's takes); use --sample-locally")
        return RemoteError(f"{url}: {code} {message or response.reason_phrase}")


# a request field -> the samplecli flag it comes from, for a 400 that names the field: each sampling setting's
# fields (llama.cpp's and the OpenAI protocol's, from strategies.schema), and the fields that are no sampler's
FLAGS = {"logprobs": "--top-logprobs", "n_probs": "--top-logprobs", "max_tokens": "-n", "n_predict": "-n",
         "seed": "--seed", "model": "--model", "prompt": "the prompt",
         # the first setting a field carries names it (`grammar`: --grammar, though --choice's text goes there too)
         **{field: setting.flag for setting in reversed(SAMPLING) for field in (setting.llama_cpp, setting.openai)
            if field}}


def _error_body(response) -> dict | None:
    """The error object of a JSON error answer ({} where its JSON holds none), or None where it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return {}
    return body["error"] if isinstance(body.get("error"), dict) else body  # vLLM's older errors are top-level


def _server_message(body: dict | None, response) -> str:
    """The server's own words from `_error_body`'s `body` (the answer's text where it is not JSON)."""
    if body is None:
        return " ".join(response.text.split())[:200]
    message = body.get("message") or (body.get("error") if isinstance(body.get("error"), str) else "")
    return " ".join(str(message or "").split())[:300].rstrip(".")


def _server_param(body: dict | None) -> str | None:
    """The request field a 400 names (OpenAI's `param`), from `_error_body`'s `body`."""
    param = body.get("param") if body else None
    return param if isinstance(param, str) and param else None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
