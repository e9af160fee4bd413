"""Remote engines: samplecli driving `llama-server -np 4` against the same server driven by a plain HTTP client.

    python scripts/bench_remote.py                  # 128 new tokens, medians of 5 runs
    python scripts/bench_remote.py --sizes tiny     # seconds: what the test suite runs so the script cannot rot

The server serves the bundled model converted to GGUF (scripts/build_llama_cpp.py builds and caches both) on a
free port, started here and stopped at the end. Every figure is a median of runs after a warm-up, the two sides
of each ratio taking turns, so a busy machine slows both alike. `remote_section` is bench.py's section too.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "ROMEO:"
SLOTS = 4  # llama-server -np 4: the server
CONTEXT_PER_SLOT = 256  # the bundled model's trained context
SERVER_THREADS = 1  # the bundled model's weights are far below 256 MiB: samplecli's own default is one thread
SEED = 7
CASES = (("greedy", {"temperature": 0}), ("top-p (T 0.8, p 0.95)", {"temperature": 0.8, "top_p": 0.95}))
# compare's 16 rows: four strategies x four samples
COMPARE_SPECS = ("temperature=0.8,top-p=0.95", "top-k=40", "temperature=0.7", "min-p=0.05")
COMPARE_SAMPLES = 4
CONCURRENCY = (1, 4, 16)
TOP = 20  # `--top-logprobs 20`: the lever on the per-event cost (an event of the full distribution is 2048 entries)
LOCAL_TOKENS = 32  # (b) asks a whole distribution per token: fewer tokens keep the full run within minutes


def _script(name: str, module: str):
    """A sibling script as a module, loaded by path (scripts/ is not a package, and `llama_cpp` is
    llama-cpp-python's name); `module` is the name tests/llama_server.py gives it, so both share one copy."""
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, HERE / f"{name}.py")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module] = loaded
        spec.loader.exec_module(loaded)
    return sys.modules[module]


def taking_turns(fns: dict, runs: int, warmup: int) -> dict:
    """name -> (median seconds, last result): bench_beam's `interleaved_medians`, the implementations run in
    turn, run by run, after `warmup` runs each."""
    return _script("bench_beam", "samplecli_scripts_bench_beam").interleaved_medians(fns, runs, warmup)


class PlainClient:
    """The server driven as its own client drives it: one `/completion` request with the sampling fields and
    `n_predict`, streamed (each server-sent event parsed, as the web UI does) or not; no per-step record."""

    def __init__(self, url: str, concurrency: int = 1) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(300.0),
                                   limits=httpx.Limits(max_connections=concurrency))
        self.concurrency = concurrency

    def completion(self, body: dict, stream: bool) -> int:
        """Tokens generated for one request."""
        body = {**body, "stream": stream}
        if not stream:
            response = self.client.post("/completion", json=body)
            response.raise_for_status()
            return int(response.json()["tokens_predicted"])
        with self.client.stream("POST", "/completion", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[len("data: "):])
                    if event.get("stop"):
                        return int(event["tokens_predicted"])
        raise RuntimeError("the stream ended before its last event")

    def many(self, bodies: list[dict]) -> int:
        """Every request non-streamed, `concurrency` in flight; the tokens generated in all."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            return sum(pool.map(lambda body: self.completion(body, stream=False), bodies))

    def close(self) -> None:
        self.client.close()


def _close(lm) -> None:
    lm.http.close()
    lm.pool.shutdown()


def samplecli_generate(lm, strategy, prompt_ids: list[int], new_tokens: int, sample_locally: bool) -> int:
    """`samplecli generate -f jsonl` through its Python API: server sampling (streamed, every step recorded with
    the distribution the server returns) or `--sample-locally` (a request per token); the tokens generated."""
    from samplecli.engine.decode import Done, decode_in_chunks
    from samplecli.engine.events import DecodeConfig
    from samplecli.engine.server_decode import server_chain, server_decode
    from samplecli.views.sinks import JsonlSink

    config = DecodeConfig(max_new_tokens=new_tokens, seed=SEED, top_n=5)
    if sample_locally:
        events = decode_in_chunks(lm, strategy, prompt_ids, config)
    else:
        chain = server_chain(lm, strategy, config)
        events = server_decode(lm, chain, prompt_ids, config, label=str(chain))
    sink, tokens = JsonlSink(io.StringIO()), 0
    for event in events:
        if isinstance(event, Done):
            sink.done(event)
            tokens += event.n_tokens
        else:
            sink.step(event)
    return tokens


def generate_rows(url: str, new_tokens: int, runs: int, warmup: int) -> tuple[list[str], list[str]]:
    """(a) server sampling against the plain client, and (b) --sample-locally against the plain stream."""
    from samplecli.backends import open_backend
    from samplecli.engine.events import DecodeConfig
    from samplecli.engine.server_decode import server_chain, server_seed
    from samplecli.strategies import build_strategy

    lm, top = open_backend(url), open_backend(url, top_logprobs=TOP)
    plain = PlainClient(url)
    prompt_ids = lm.vocab.encode(PROMPT)
    on_server, local = [], []
    try:
        for label, settings in CASES:
            strategy = build_strategy(settings).strategy
            chain = server_chain(lm, strategy, DecodeConfig(max_new_tokens=new_tokens))
            body = {**chain.fields, "prompt": prompt_ids, "n_predict": new_tokens, "seed": server_seed(SEED, 0),
                    "cache_prompt": True}
            timed = taking_turns({
                "samplecli": lambda s=strategy: samplecli_generate(lm, s, prompt_ids, new_tokens, False),
                "top": lambda s=strategy: samplecli_generate(top, s, prompt_ids, new_tokens, False),
                "stream": lambda b=body: plain.completion(b, stream=True),
                "whole": lambda b=body: plain.completion(b, stream=False),
                "stream+probs": lambda b=body: plain.completion({**b, "n_probs": lm.n_probs}, stream=True),
            }, runs, warmup)
            speed = {name: tokens / seconds for name, (seconds, tokens) in timed.items()}
            on_server.append(f"| {label} | {speed['samplecli']:.1f} | {speed['stream']:.1f} | "
                             f"{speed['whole']:.1f} | **{speed['samplecli'] / speed['stream']:.2f}x** | "
                             f"{speed['stream+probs']:.1f} | **{speed['samplecli'] / speed['stream+probs']:.2f}x** | "
                             f"{speed['top']:.1f} | **{speed['top'] / speed['stream']:.2f}x** |")
            local_tokens = min(new_tokens, LOCAL_TOKENS)
            local_body = {**body, "n_predict": local_tokens}
            timed = taking_turns({
                "local": lambda s=strategy, n=local_tokens: samplecli_generate(lm, s, prompt_ids, n, True),
                "stream": lambda b=local_body: plain.completion(b, stream=True),
            }, runs, warmup)
            speed = {name: tokens / seconds for name, (seconds, tokens) in timed.items()}
            local.append(f"| {label} | {speed['local']:.1f} | {speed['stream']:.1f} | "
                         f"**{speed['local'] / speed['stream']:.2f}x** |")
        return on_server, local
    finally:
        plain.close()
        _close(lm)
        _close(top)


def compare_rows(url: str, new_tokens: int, runs: int, warmup: int) -> list[str]:
    """(c) `compare` of 16 rows sampled on the server at each --concurrency, against the same 16 requests sent
    by the plain client at the same concurrency."""
    from samplecli.analysis.compare import collect, on_server, parse_spec
    from samplecli.backends import open_backend
    from samplecli.engine.events import DecodeConfig
    from samplecli.engine.server_decode import server_seed

    config = DecodeConfig(max_new_tokens=new_tokens, num_samples=COMPARE_SAMPLES, seed=SEED, top_n=0)
    rows = []
    for concurrency in CONCURRENCY:
        lm = open_backend(url, concurrency=concurrency)
        plain = PlainClient(url, concurrency)
        try:
            prompt_ids = lm.vocab.encode(PROMPT)
            columns = on_server(lm, [parse_spec(spec) for spec in COMPARE_SPECS], config)
            bodies = [{**column.server_chain.fields, "prompt": prompt_ids, "n_predict": new_tokens,
                       "seed": server_seed(SEED, sample), "cache_prompt": True}
                      for column in columns for sample in range(COMPARE_SAMPLES)]

            def ours(columns=columns, lm=lm, prompt_ids=prompt_ids) -> int:
                results = collect(lm, columns, prompt_ids, config, coupled=False)
                return sum(done.n_tokens for result in results for done in result.dones.values())

            timed = taking_turns({"samplecli": ours, "plain": lambda p=plain, b=bodies: p.many(b)}, runs, warmup)
            (ours_s, ours_tokens), (plain_s, plain_tokens) = timed["samplecli"], timed["plain"]
            rows.append(f"| {concurrency} | {ours_tokens} | {ours_tokens / ours_s:.1f} | {plain_tokens / plain_s:.1f} "
                        f"| **{ours_tokens / ours_s / (plain_tokens / plain_s):.2f}x** |")
        finally:
            plain.close()
            _close(lm)
    return rows


def remote_section(runs: int, tiny: bool) -> str:
    """The section's Markdown body: (a) `generate` sampled on the server against the plain client, (b) with
    --sample-locally, (c) `compare` at --concurrency 1, 4, 16; or one line saying why it was not measured."""
    new_tokens = 8 if tiny else 128
    warmup = 0 if tiny else 1  # no timing is read at tiny sizes
    try:
        server = _script("build_llama_cpp", "samplecli_scripts_llama_cpp").serve(
            n_parallel=SLOTS, ctx_per_slot=CONTEXT_PER_SLOT, threads=SERVER_THREADS,
            log_dir=Path(tempfile.mkdtemp(prefix="bench-remote-")))
    except Exception as exc:  # no compiler, no network for the sources: the section says why
        return f"Not measured: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}."
    try:
        on_server, local = generate_rows(server.url, new_tokens, runs, warmup)
        compared = compare_rows(server.url, new_tokens, runs, warmup)
    finally:
        server.stop()
    return "\n".join([
        f"`llama-server -np {SLOTS} -t {SERVER_THREADS}` serving the bundled model (GGUF f32, {SLOTS} slots of "
        f"{CONTEXT_PER_SLOT} tokens) on 127.0.0.1, prompt {PROMPT!r}, {new_tokens} new tokens, seed {SEED}; "
        f"medians of {runs} runs after {warmup} warm-up run, the columns of a row taking turns. tok/s counts the "
        "tokens each side generated (the server stops at an end of sequence).\n",
        "### (a) `generate`, sampled on the server\n",
        "samplecli: `generate -f jsonl` through its Python API (`server_chain`, `server_decode`, every step recorded "
        "with the server's `n_probs` = the vocabulary, written as JSONL). Plain: one `/completion` request with the "
        "same fields, seed and `n_predict`, from httpx, streamed (each event parsed) or whole; the last two columns "
        "add samplecli's `n_probs` to the plain stream, so the gap splits into what the server spends on the "
        "distribution and what samplecli spends on the record. The last two: samplecli with `--top-logprobs "
        f"{TOP}` (`n_probs` {TOP}: each event carries {TOP} candidates instead of every token's, the entropy an "
        "interval), against the plain stream.\n",
        "| strategy | samplecli tok/s | plain stream tok/s | plain whole tok/s | vs plain stream | "
        f"plain stream + `n_probs` tok/s | vs that | samplecli `--top-logprobs {TOP}` tok/s | vs plain stream |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *on_server,
        f"\n### (b) `generate --sample-locally` (a `/completion` request per token, the full distribution; "
        f"{min(new_tokens, LOCAL_TOKENS)} new tokens)\n",
        "| strategy | samplecli tok/s | plain stream tok/s | vs plain stream |",
        "|---|---:|---:|---:|",
        *local,
        f"\n### (c) `compare`: {len(COMPARE_SPECS)} strategies x {COMPARE_SAMPLES} samples, sampled on the server\n",
        f"Strategies {', '.join(f'`{s}`' for s in COMPARE_SPECS)}; every row one streamed request, `--concurrency` "
        f"in flight against the server's {SLOTS} slots (`analysis.compare.collect`, as `samplecli compare` runs "
        "it). Plain: the same 16 requests (fields, seeds, `n_predict`), whole answers without `n_probs`, as many "
        "in flight. Total tok/s: every row's tokens over the wall time.\n",
        "| --concurrency | tokens | samplecli tok/s | plain tok/s | vs plain |",
        "|---:|---:|---:|---:|---:|",
        *compared,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=["full", "tiny"], default="full")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    tiny = args.sizes == "tiny"
    print("## Remote engines: samplecli vs llama-server's own client\n")
    print(remote_section(1 if tiny else args.runs, tiny))
    return 0


if __name__ == "__main__":
    sys.exit(main())
