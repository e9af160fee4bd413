"""Real vocabularies: every path at its default settings against its peer, on a Llama-3-shaped model
(V = 128,256) and a Qwen2-shaped one (V = 151,936), random-init, seeded, built and cached here (issues #26, #33).

    python scripts/bench_real.py                  # writes section 10 of BENCHMARKS.md (the rest stays as it is)
    python scripts/bench_real.py --sizes tiny     # seconds: what the test suite runs so the script cannot rot

The vocabulary is what is measured: the models are small otherwise (hidden 512, 4 layers), so the output head
(V x 512) is most of each step (in a real 1-8B model it is a smaller share), and the per-step work that scales with
V is a real model's. Each ratio's two sides take turns, run by run, after a warm-up.

- torch in process: `samplecli generate` (its loop, every step recorded) vs `model.generate()`; and samplecli's own
  per-step work (choosing, measuring, the record) as the share of a step above a bare forward-and-argmax loop;
- GGUF in process (`-m FILE.gguf`) vs llama.cpp's own greedy loop (`llama_decode` and an argmax) on the same file;
- `llama-server -np 4 -t 1` serving that file: `generate` (the server samples; its top 20 per token) vs a plain
  stream of the same request; `--sample-locally` vs the plain stream; `compare` of 4 strategies x 4 samples vs the
  plain client at the same concurrency; `score` over the server vs `score` on the GGUF in process;
- `explore`: the time a setting change takes to recompute the cursor's distribution, and memory per explored token;
- peak memory of `generate` and of `score` (4,000 tokens) against the weights.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_beam import interleaved_medians  # sibling scripts: this directory is on sys.path
from bench_peers import LlamaCppLoop, build_llama_100m, llama_cpp_available
from build_llama_cpp import gguf_model, serve

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## 10. Real vocabularies"
GREEDY = {"temperature": 0}
SAMPLING = {"temperature": 0.8, "top_p": 0.95}
HF_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0}
COMPARE_SPECS = ("temperature=0.8,top-p=0.95", "top-k=40", "temperature=0.7", "min-p=0.05")
SLOTS, CONCURRENCY, LOCAL_TOKENS = 4, 4, 16
SCORE_TOKENS, SCORE_LONG = 200, 4000
LOGIT_SPREAD = 4.0  # a trained model's logits over its vocabulary: top-p 0.95 then keeps ~1-2k of 152k tokens


@dataclass(frozen=True)
class Shape:
    name: str
    family: str  # "llama" (4 key/value heads) or "qwen2" (1 key/value head, biases on q/k/v); heads untied
    vocab: int
    hidden: int
    layers: int


FULL = (Shape("Llama-3 shape", "llama", 128256, 512, 4), Shape("Qwen2 shape", "qwen2", 151936, 512, 4))
TINY = (Shape("Llama-3 shape (tiny)", "llama", 4096, 64, 2), Shape("Qwen2 shape (tiny)", "qwen2", 5000, 64, 2))


def build(shape: Shape, cache: Path, positions: int) -> Path:
    """The model of `shape`, random-init and seeded, its output head scaled so that its logits spread as a trained
    model's do (standard deviation LOGIT_SPREAD over the vocabulary): a random-init model's next-token distribution
    is nearly flat, where top-p 0.95 keeps most of 152k tokens, which no trained model does. Cached in `cache`."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cache / f"{shape.family}-{shape.vocab}-{shape.hidden}x{shape.layers}-{positions}-spread{LOGIT_SPREAD:g}"
    if (path / "config.json").is_file():
        return path
    raw = cache / f"{path.name}-raw"
    if shape.family == "llama":
        build_llama_100m(raw, vocab_size=shape.vocab, hidden=shape.hidden, layers=shape.layers,
                         heads=max(1, shape.hidden // 64), kv_heads=max(1, shape.hidden // 128),
                         intermediate=shape.hidden * 3, positions=positions)
    else:
        from bench_vocab import build_model

        build_model(raw, shape.vocab, shape.hidden, shape.layers, positions, tied=False)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(raw), AutoTokenizer.from_pretrained(raw)
    ids = torch.tensor([tokenizer.encode(text_of(tokenizer, 64), add_special_tokens=False)])
    with torch.no_grad():
        for _ in range(3):  # a tied head scales the embeddings too: a few rounds settle it
            spread = float(model(ids).logits[0].std(-1).mean())
            model.get_output_embeddings().weight.mul_(LOGIT_SPREAD / spread)
    model.save_pretrained(path)
    for file in raw.iterdir():  # the tokenizer's own files: saved again through AutoTokenizer a Qwen2 model's would
        if not (path / file.name).exists():  # gain Qwen's pre-tokenizer and normaliser
            shutil.copy(file, path / file.name)
    shutil.rmtree(raw)
    return path


def weights_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def text_of(tokenizer, tokens: int) -> str:
    """Shakespeare (the bundled model's corpus) cut to `tokens` tokens of `tokenizer`."""
    corpus = Path("/work/shared/data/tinyshakespeare.txt")
    base = corpus.read_text(encoding="utf-8") if corpus.is_file() else "ROMEO: I will not stay, my lord. " * 50
    ids = tokenizer.encode(base[: 12 * tokens + 100], add_special_tokens=False)
    while len(ids) < tokens:
        ids = ids + ids
    return tokenizer.decode(ids[:tokens])


# --- torch and GGUF in process -------------------------------------------------------------------------------------


def forward_only(lm, prompt: list[int], new_tokens: int) -> float:
    """Seconds for the model's own steps alone: prefill, then per token one `advance` and an argmax (what any
    loop must do; the rest of samplecli's step is its own work)."""
    started = time.perf_counter()
    batch, scores = lm.start(prompt, 1)
    for _ in range(new_tokens):
        scores = batch.advance(scores[-1:].argmax(-1))
    return time.perf_counter() - started


def in_process_rows(shape: Shape, model_dir: Path, prompt_len: int, new_tokens: int, runs: int,
                    why_not: str | None) -> tuple[list[str], list[str]]:
    """(torch rows, GGUF rows) for one model."""
    torch_rows = torch_path_rows(shape, model_dir, prompt_len, new_tokens, runs)
    gc.collect()
    if why_not is None:
        try:
            return torch_rows, gguf_rows(shape, model_dir, prompt_len, new_tokens, runs)
        except Exception as exc:  # a conversion that fails: the row says why, the other rows are still measured
            why_not = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return torch_rows, [f"| {shape.name} | {shape.vocab:,} | - | not measured: {why_not} | | |"]


def torch_path_rows(shape: Shape, model_dir: Path, prompt_len: int, new_tokens: int, runs: int) -> list[str]:
    from bench import Workload

    from samplecli.backends.torch_lm import load

    lm = load(str(model_dir), device="cpu")
    work = Workload(lm, prompt_len, new_tokens)
    rows = []
    for label, ours, hf in (("greedy", GREEDY, {"do_sample": False}),
                            ("top-p (T 0.8, p 0.95)", SAMPLING, HF_SAMPLING)):
        timed = interleaved_medians({"ours": lambda s=ours: work.ours(s), "hf": lambda h=hf: work.reference(**h),
                                     "bare": lambda: forward_only(lm, work.prompt, new_tokens)}, runs, 1)
        (t_ours, _), (t_hf, _), (t_bare, _) = timed["ours"], timed["hf"], timed["bare"]
        own = max(t_ours - t_bare, 0.0) / t_ours
        rows.append(f"| {shape.name} | {shape.vocab:,} | {label} | {new_tokens / t_ours:.1f} | "
                    f"{new_tokens / t_hf:.1f} | **{t_hf / t_ours:.2f}x** | {own * 100:.1f}% |")
    return rows


def gguf_rows(shape: Shape, model_dir: Path, prompt_len: int, new_tokens: int, runs: int) -> list[str]:
    from bench import Workload

    from samplecli.backends.gguf import GGUFBackend

    gguf = gguf_model(model_dir, "f32")
    backend = GGUFBackend(gguf)
    on_gguf = Workload(backend, prompt_len, new_tokens)
    peer = LlamaCppLoop(gguf, backend.threads)  # llama.cpp's threads on both sides (samplecli's default)
    rows = []
    try:
        for label, settings in (("greedy", GREEDY), ("top-p (T 0.8, p 0.95)", SAMPLING)):
            timed = interleaved_medians({"ours": lambda s=settings: on_gguf.ours(s),
                                         "peer": lambda: peer.run(on_gguf.prompt, new_tokens)}, runs, 1)
            (ours, _), (theirs, _) = timed["ours"], timed["peer"]
            rows.append(f"| {shape.name} | {shape.vocab:,} | {label} | {new_tokens / ours:.1f} | "
                        f"{new_tokens / theirs:.1f} | **{theirs / ours:.2f}x** |")
    finally:
        peer.close()
        backend.close()
    return rows


# --- llama-server ---------------------------------------------------------------------------------------------------


def remote_rows(shape: Shape, model_dir: Path, new_tokens: int, runs: int, tiny: bool) -> list[str]:
    """`generate`, `--sample-locally`, `compare` and `score` over llama-server against their peers."""
    from bench_remote import PlainClient, _close, samplecli_generate

    from samplecli.analysis.compare import collect, on_server, parse_spec
    from samplecli.analysis.scoring import score
    from samplecli.backends import open_backend
    from samplecli.backends.gguf import GGUFBackend
    from samplecli.engine.events import DecodeConfig
    from samplecli.engine.server_decode import server_chain, server_seed
    from samplecli.strategies import build_strategy

    gguf = gguf_model(model_dir, "f32")
    server = serve(gguf=gguf, n_parallel=SLOTS, ctx_per_slot=SCORE_TOKENS + 64, threads=1,
                   log_dir=Path(tempfile.mkdtemp(prefix="bench-real-")))
    rows = []
    lm = open_backend(server.url, concurrency=CONCURRENCY)
    plain = PlainClient(server.url)
    many = PlainClient(server.url, CONCURRENCY)
    try:
        prompt_ids = lm.vocab.encode("ROMEO:")
        for label, settings in (("greedy", GREEDY), ("top-p (T 0.8, p 0.95)", SAMPLING)):
            strategy = build_strategy(settings).strategy
            chain = server_chain(lm, strategy, DecodeConfig(max_new_tokens=new_tokens))
            body = {**chain.fields, "prompt": prompt_ids, "n_predict": new_tokens, "seed": server_seed(7, 0),
                    "cache_prompt": True}
            timed = interleaved_medians({
                "ours": lambda s=strategy: samplecli_generate(lm, s, prompt_ids, new_tokens, False),
                "plain": lambda b=body: plain.completion(b, stream=True)}, runs, 1)
            rows.append(_ratio_row(shape, f"`generate`, {label}", timed, "plain stream"))
        local = min(new_tokens, LOCAL_TOKENS)
        strategy = build_strategy(SAMPLING).strategy
        chain = server_chain(lm, strategy, DecodeConfig(max_new_tokens=local))
        body = {**chain.fields, "prompt": prompt_ids, "n_predict": local, "seed": server_seed(7, 0),
                "cache_prompt": True}
        timed = interleaved_medians({
            "ours": lambda: samplecli_generate(lm, strategy, prompt_ids, local, True),
            "plain": lambda: plain.completion(body, stream=True)}, runs, 1)
        rows.append(_ratio_row(shape, f"`generate --sample-locally`, top-p ({local} tokens)", timed, "plain stream"))

        config = DecodeConfig(max_new_tokens=new_tokens, num_samples=4, seed=7, top_n=0)
        columns = on_server(lm, [parse_spec(spec) for spec in COMPARE_SPECS], config)
        bodies = [{**column.server_chain.fields, "prompt": prompt_ids, "n_predict": new_tokens,
                   "seed": server_seed(7, sample), "cache_prompt": True}
                  for column in columns for sample in range(4)]

        def ours_compare() -> int:
            results = collect(lm, columns, prompt_ids, config, coupled=False)
            return sum(done.n_tokens for result in results for done in result.dones.values())

        timed = interleaved_medians({"ours": ours_compare, "plain": lambda: many.many(bodies)}, runs, 1)
        rows.append(_ratio_row(shape, f"`compare`, 4 strategies x 4 samples, --concurrency {CONCURRENCY}", timed,
                               f"plain client, {CONCURRENCY} in flight"))

        from transformers import AutoTokenizer

        text = text_of(AutoTokenizer.from_pretrained(model_dir), 32 if tiny else SCORE_TOKENS)
        in_process = GGUFBackend(gguf)
        try:
            timed = interleaved_medians({"ours": lambda: score(lm, text).tokens,
                                         "plain": lambda: score(in_process, text).tokens}, runs, 1)
        finally:
            in_process.close()
        (ours, tokens), (theirs, _) = timed["ours"], timed["plain"]
        rows.append(f"| {shape.name} | `score` over the server, {tokens} tokens (top 20; each token's own "
                    f"probability) | {tokens / ours:.1f} | `score` on the GGUF in process | {tokens / theirs:.1f} | "
                    f"**{theirs / ours:.2f}x** |")
    finally:
        plain.close()
        many.close()
        _close(lm)
        server.stop()
    return rows


def _ratio_row(shape: Shape, label: str, timed: dict, peer: str) -> str:
    (ours, ours_tokens), (theirs, their_tokens) = timed["ours"], timed["plain"]
    ours_speed, their_speed = ours_tokens / ours, their_tokens / theirs
    return (f"| {shape.name} | {label} | {ours_speed:.1f} | {peer} | {their_speed:.1f} | "
            f"**{ours_speed / their_speed:.2f}x** |")


# --- explore, memory ------------------------------------------------------------------------------------------------


def rss() -> int:
    """Resident memory held now: after a collection, with the C heap's freed pages handed back (glibc keeps them
    otherwise, and a freed 0.6 MB row of logits would count as held)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024


def explore_row(shape: Shape, model_dir: Path, steps: int) -> str:
    """A setting change's recomputation at the cursor (`Session.position` under new settings, what the explorer
    runs off its UI thread before it redraws), median over changes; and resident memory per explored token over
    `steps` tokens after the first 16 (each token forwarded, its position computed, as the explorer does)."""
    from samplecli.analysis.exploration import Session
    from samplecli.backends.torch_lm import load

    lm = load(str(model_dir), device="cpu")
    session = Session(lm, "ROMEO:", dict(SAMPLING), seed=1)
    session.forward()
    session.position()
    changes = []
    for i in range(12):  # settings never seen before: nothing cached
        session.adjust("temperature" if i % 2 else "top_p", up=bool(i % 2))
        started = time.perf_counter()
        session.position()
        changes.append(time.perf_counter() - started)

    def explore(count: int) -> None:
        for _ in range(count):
            session.forward()
            session.position()
            session.sample()

    explore(16)
    before = rss()
    explore(steps)
    per_token = (rss() - before) / steps
    return (f"| {shape.name} | {shape.vocab:,} | {statistics.median(changes) * 1e3:.0f} ms | {max(changes) * 1e3:.0f} "
            f"ms | {per_token / 1e3:.1f} kB |")


def memory_rows(shape: Shape, model_dir: Path, cache: Path, tiny: bool, runs: int) -> list[str]:
    """Peak RSS of `generate` once, and of `score` over SCORE_LONG tokens the worst of `runs` child processes
    (the peak moves from one run to the next with what lies free in the allocator's heap at its moment; the
    target, 1.3x the weights + 100 MB, holds for every run or not at all)."""
    from bench import peak_rss
    from bench_vocab import score_child
    from transformers import AutoTokenizer

    weights = weights_bytes(model_dir)
    peak = peak_rss(model_dir, 8 if tiny else 64)
    rows = [f"| {shape.name} | `generate -n {8 if tiny else 64}` | {weights / 1e6:,.0f} MB | {peak / 1e6:,.0f} MB | "
            f"**{peak / weights:.2f}x** | {(peak - weights) / 1e6:,.0f} MB |"]
    tokens = 64 if tiny else SCORE_LONG
    text_file = cache / f"score-{shape.family}-{shape.vocab}-{tokens}.txt"
    text_file.write_text(text_of(AutoTokenizer.from_pretrained(model_dir), tokens), encoding="utf-8")
    runs = 1 if tiny else runs  # the suite's tiny run: one child is enough to show the row whole
    measured = [score_child(model_dir, text_file, ROOT) for _ in range(runs)]
    peaks = sorted(peak for peak, _, _ in measured)
    seconds = statistics.median(seconds for _, seconds, _ in measured)
    target = 1.3 * weights + 100e6
    rows.append(f"| {shape.name} | `score`, {tokens:,} tokens ({seconds:.0f} s), worst of {runs} (runs "
                f"{', '.join(f'{p / 1e6:,.0f}' for p in peaks)} MB; target {target / 1e6:,.0f} MB) | "
                f"{weights / 1e6:,.0f} MB | {peaks[-1] / 1e6:,.0f} MB | **{peaks[-1] / weights:.2f}x** | "
                f"{(peaks[-1] - weights) / 1e6:,.0f} MB |")
    return rows


# --- the section ----------------------------------------------------------------------------------------------------


def real_section(runs: int, tiny: bool, cache: Path, remote: bool = True) -> str:
    shapes = TINY if tiny else FULL
    prompt_len, new_tokens = (8, 8) if tiny else (32, 64)
    why_not = llama_cpp_available()
    torch_rows, gguf_rows, served, explored, memory = [], [], [], [], []
    for shape in shapes:
        model_dir = build(shape, cache, positions=max(SCORE_LONG + 64, 1024) if not tiny else 256)
        ours, peers = in_process_rows(shape, model_dir, prompt_len, new_tokens, runs, why_not)
        torch_rows += ours
        gguf_rows += peers
        if remote and why_not is None:
            try:
                served += remote_rows(shape, model_dir, new_tokens, runs, tiny)
            except Exception as exc:  # no compiler, no sources: the rows say why
                served.append(f"| {shape.name} | not measured: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]} | | | | |")
        explored.append(explore_row(shape, model_dir, 8 if tiny else 128))
        memory += memory_rows(shape, model_dir, cache, tiny, runs)
    shapes_line = "; ".join(f"{s.name}: V = {s.vocab:,}, hidden {s.hidden}, {s.layers} layers" for s in shapes)
    out = [
        SECTION + " (V = 128,256 and 151,936), every path at its default settings\n",
        f"`python scripts/bench_real.py{' --sizes tiny' if tiny else ''}`: {shapes_line} (random init, the output "
        f"head scaled so that the logits spread with a standard deviation of {LOGIT_SPREAD:g} as a trained model's "
        f"do, not flat; the bundled tokenizer grown with filler tokens). Prompt {prompt_len} tokens, {new_tokens} new "
        f"tokens, medians of {runs} runs after a warm-up, the two sides of each ratio taking turns. Threads: "
        "samplecli's default (`--threads`), the same for the peer.\n",
        "### (a) torch in process vs `model.generate()`\n",
        "Own work: samplecli's step minus a bare forward-and-argmax loop on the same model (the choosing, the "
        "measuring and the per-step record), as a share of samplecli's step.\n",
        "| model | V | strategy | samplecli tok/s | generate() tok/s | vs generate() | own work |",
        "|---|---:|---|---:|---:|---:|---:|", *torch_rows,
        "\n### (b) GGUF in process (`-m FILE.gguf`) vs llama.cpp's own loop on the same file\n",
        "| model | V | strategy | samplecli tok/s | llama.cpp tok/s | vs llama.cpp |", "|---|---:|---|---:|---:|---:|",
        *gguf_rows,
        f"\n### (c) `llama-server -np {SLOTS} -t 1` serving the GGUF: samplecli vs a plain client of the same server\n",
        "samplecli at its defaults: the server samples and returns its top 20 per token (`generate`, `compare`); "
        "`--sample-locally` asks each next-token distribution's top 20 and samples it here; `score` makes each of the "
        "text's tokens the server's greedy choice by a logit bias, which returns that token's own probability and "
        "the top 20 (one lane of the text per slot, its requests pinned to the slot, two in flight). The plain "
        "client sends the same fields and reads the stream, with no per-step record.\n",
        "| model | samplecli | tok/s | peer | tok/s | ratio |", "|---|---|---:|---|---:|---:|",
        *(served or ["| - | not measured | | | | |"]),
        "\n### (d) `explore`: a setting change, and memory per explored token\n",
        "| model | V | setting change, median | slowest | memory per explored token |", "|---|---:|---:|---:|---:|",
        *explored,
        "\n### (e) Peak resident memory (a child process) against the weights\n",
        "| model | command | weights | peak | peak / weights | above the weights |", "|---|---|---:|---:|---:|---:|",
        *memory,
    ]
    return "\n".join(out)


def write_section(out: Path, section: str) -> None:
    """Replace section 10 of `out` (from its heading to the next `## ` heading), or add it after section 9."""
    text = out.read_text(encoding="utf-8") if out.is_file() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        nine = text.find("## 9. ")
        after = text.find("\n## ", nine + 1) if nine >= 0 else -1
        start = after + 1 if after >= 0 else len(text)
        text = text[:start] + "\n" + text[start:]
        end = start
    else:
        following = text.find("\n## ", start + 1)
        end = following + 1 if following >= 0 else len(text)
    out.write_text(text[:start] + section.rstrip() + "\n\n" + text[end:].lstrip("\n"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=["full", "tiny"], default="full")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "samplecli-bench-real")
    parser.add_argument("--no-remote", action="store_true", help="leave out (c), the llama-server rows")
    args = parser.parse_args(argv)
    tiny = args.sizes == "tiny"
    args.cache.mkdir(parents=True, exist_ok=True)
    section = real_section(1 if tiny else args.runs, tiny, args.cache, remote=not args.no_remote)
    print(section)
    if not tiny:
        write_section(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
