"""Remote engines as backends: samplecli as a client of a server people already run (llama.cpp's
`llama-server` today), over its HTTP API. `--model http://HOST:PORT` picks one; `--api` names the protocol
where detecting it from the server's own endpoints is not wanted."""

from __future__ import annotations

from samplecli.errors import UsageError

APIS = ("auto", "llama.cpp")


def claims(reference: str) -> bool:
    return reference.startswith(("http://", "https://"))


def open_remote(url: str, *, api: str = "auto", concurrency: int = 4, timeout: float = 60.0,
                top_logprobs: int | None = None, **_):
    """Connect to the server at `url` and return its backend; faults are one line naming the URL."""
    from samplecli.backends.remote.http import Http, RemoteError
    from samplecli.backends.remote.llama_cpp import open_llama_cpp

    if api not in APIS:
        raise UsageError(f"--api: unknown protocol `{api}`; valid: {', '.join(APIS)}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"--concurrency has to be an integer >= 1, but is {concurrency}")
    if top_logprobs is not None and (not isinstance(top_logprobs, int) or top_logprobs < 1):
        raise UsageError(f"--top-logprobs has to be an integer >= 1, but is {top_logprobs}")
    http = Http(url, timeout=timeout, concurrency=concurrency)
    code = http.status("/props")
    if code is None or code in (401, 403) or code >= 500:
        http.get("/props")  # raises the one-line fault: refused, unknown host, a key needed, a server error
    if api == "auto" and code != 200:
        raise RemoteError(f"{url}: no llama.cpp server answers there (GET /props did not answer 200); samplecli "
                          "speaks llama.cpp's API (`llama-server`); pass --api llama.cpp to try it anyway")
    return open_llama_cpp(url.rstrip("/"), http, concurrency, top_logprobs)
