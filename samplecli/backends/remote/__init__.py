"""Remote engines as backends: samplecli as a client of a server people already run, over its HTTP API: llama.cpp's
`llama-server` (its native `/completion`), or any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp's
`/v1`). `--model http://HOST:PORT` picks one; the protocol is detected from the server's own endpoints (`/props`
answers on llama.cpp's, `/v1/models` on the OpenAI-compatible ones; a URL ending in `/v1` is OpenAI's), or named
with `--api`."""

from __future__ import annotations

from samplecli.errors import UsageError

APIS = ("auto", "llama.cpp", "openai")


def claims(reference: str) -> bool:
    return reference.startswith(("http://", "https://"))


def open_remote(url: str, *, api: str = "auto", concurrency: int = 4, timeout: float = 60.0,
                top_logprobs: int | None = None, **_):
    """Connect to the server at `url` and return its backend; faults are one line naming the URL."""
    from samplecli.backends.remote.http import Http, RemoteError
    from samplecli.backends.remote.llama_cpp import open_llama_cpp
    from samplecli.backends.remote.openai import open_openai

    if api not in APIS:
        raise UsageError(f"--api: unknown protocol `{api}`; valid: {', '.join(APIS)}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"--concurrency has to be an integer >= 1, but is {concurrency}")
    if top_logprobs is not None and (not isinstance(top_logprobs, int) or top_logprobs < 1):
        raise UsageError(f"--top-logprobs has to be an integer >= 1, but is {top_logprobs}")
    root = url.rstrip("/")
    if root.endswith("/v1"):  # the OpenAI clients' base URL; the endpoints are asked from the server's root
        root, api = root[: -len("/v1")], "openai" if api == "auto" else api
    http = Http(root, timeout=timeout, concurrency=concurrency)
    if api == "openai":
        return open_openai(root, http, concurrency, top_logprobs)
    code = http.status("/props")
    if code is None or code in (401, 403) or code >= 500:
        http.get("/props")  # raises the one-line fault: refused, unknown host, a key needed, a server error
    if api == "auto" and code != 200:
        if http.status("/v1/models") == 200:
            return open_openai(root, http, concurrency, top_logprobs)
        raise RemoteError(f"{url}: neither llama.cpp's server (GET /props) nor an OpenAI-compatible one (GET "
                          "/v1/models) answers there; check the URL, or name the protocol with --api")
    return open_llama_cpp(root, http, concurrency, top_logprobs)
