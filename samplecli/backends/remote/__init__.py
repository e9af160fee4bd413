"""Remote engines as backends: samplecli as a client of a server people already run, over its HTTP API: llama.cpp's
`llama-server` (its native `/completion`), Ollama (its native `/api/generate` and `/api/chat`), or any
OpenAI-compatible server (vLLM, SGLang, Ollama's and llama.cpp's `/v1`). `--model http://HOST:PORT` picks one; the
protocol is detected from the server's own endpoints (`/props` answers on llama.cpp's, `/api/version` on Ollama's,
`/v1/models` on the OpenAI-compatible ones; a URL ending in `/v1` is OpenAI's), or named with `--api`."""

from __future__ import annotations

from samplecli.errors import UsageError

APIS = ("auto", "llama.cpp", "ollama", "openai")


def claims(reference: str) -> bool:
    return reference.startswith(("http://", "https://"))


def check_url(url: str) -> str:
    """A server's URL that names a host (and a valid port), checked before any connection or DNS lookup."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", a port that is not a number or beyond 65535
        raise UsageError(f"--model {url}: not a valid URL ({exc}); give http://HOST:PORT") from None
    if not host:
        raise UsageError(f"--model {url}: the URL names no host; give http://HOST:PORT (e.g. "
                         "http://127.0.0.1:8080)")
    if port == 0:
        raise UsageError(f"--model {url}: port 0 is no server's port; give http://HOST:PORT")
    return url


def open_remote(url: str, *, api: str = "auto", concurrency: int = 4, timeout: float = 60.0,
                top_logprobs: int | None = None, full_distribution: bool = False, **_):
    """Connect to the server at `url` and return its backend; faults are one line naming the URL."""
    from samplecli.backends.remote.http import Http, RemoteError
    from samplecli.backends.remote.llama_cpp import open_llama_cpp
    from samplecli.backends.remote.ollama import is_ollama, open_ollama
    from samplecli.backends.remote.openai import open_openai

    check_url(url)
    if api not in APIS:
        raise UsageError(f"--api: unknown protocol `{api}`; valid: {', '.join(APIS)}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"--concurrency has to be an integer >= 1, but is {concurrency}")
    if top_logprobs is not None and (not isinstance(top_logprobs, int) or top_logprobs < 1):
        raise UsageError(f"--top-logprobs has to be an integer >= 1, but is {top_logprobs}")
    if full_distribution and top_logprobs is not None:
        raise UsageError(f"--full-distribution and --top-logprobs {top_logprobs}: give one (every token's "
                         "probability, or the top N)")
    only_top = (f"--full-distribution: {{}} returns at most the top {top_logprobs or 20} log-probabilities per token; "
                "llama.cpp's server gives every token's (its native API)")
    root = url.rstrip("/")
    if root.endswith("/v1"):  # the OpenAI clients' base URL; the endpoints are asked from the server's root
        root, api = root[: -len("/v1")], "openai" if api == "auto" else api
    http = Http(root, timeout=timeout, concurrency=concurrency)
    if api == "openai":
        return _top_only(open_openai(root, http, concurrency, top_logprobs), full_distribution, only_top)
    if api == "ollama":
        return _top_only(open_ollama(root, http, top_logprobs), full_distribution, only_top)
    code = http.status("/props")
    if code is None or code in (401, 403) or code >= 500:
        http.get("/props")  # raises the one-line fault: refused, unknown host, a key needed, a server error
    if api == "auto" and code != 200:
        if is_ollama(http):
            return _top_only(open_ollama(root, http, top_logprobs), full_distribution, only_top)
        if http.status("/v1/models") == 200:
            return _top_only(open_openai(root, http, concurrency, top_logprobs), full_distribution, only_top)
        raise RemoteError(f"{url}: neither llama.cpp's server (GET /props), Ollama (GET /api/version) nor an "
                          "OpenAI-compatible one (GET /v1/models) answers there; check the URL, or name the protocol "
                          "with --api")
    return open_llama_cpp(root, http, concurrency, top_logprobs, full_distribution)


def _top_only(backend, full_distribution: bool, message: str):
    """An engine that returns only a top N: refused with --full-distribution (one line naming it)."""
    if full_distribution:
        raise UsageError(message.format(backend.engine))
    return backend
