"""samplecli's speed and memory against transformers' generate(), llama.cpp and the memory-bandwidth ceiling.

    python scripts/bench.py                  # full run, writes BENCHMARKS.md
    python scripts/bench.py --sizes tiny     # seconds: what the test suite runs so the script cannot rot
    python scripts/bench_real.py             # section 10 alone (V = 128k and 152k), written into BENCHMARKS.md

Every figure is a median of several runs after a warm-up, and every comparison is a ratio of two
things measured in the same process (or the same command), so a busy machine shifts both sides.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_beam import interleaved_medians  # sibling scripts: this directory is on sys.path
from bench_peers import (
    LlamaCppLoop,
    StepParts,
    build_llama_100m,
    busy_neighbour,
    grown_tokenizer,
    llama_cpp_available,
    read_bandwidth,
)
from bench_real import real_section
from bench_remote import remote_section
from build_llama_cpp import gguf_model

from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR, load
from samplecli.engine.beam import BeamSettings, beam_decode
from samplecli.engine.decode import DecodeConfig, Done, decode
from samplecli.strategies import build_strategy

ROOT = Path(__file__).resolve().parent.parent


def median_time(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_medians(first, second, runs: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds of two functions that take turns run by run (bench_beam's `interleaved_medians`), so
    a machine whose load drifts (this shared one does, by +-15%) slows both alike and their ratio stays fair."""
    medians = interleaved_medians({"first": first, "second": second}, runs, warmup)
    return medians["first"][0], medians["second"][0]


def build_gpt2_small_shape(path: Path, vocab_size: int = 50257, n_layer: int = 12, n_embd: int = 768,
                           n_head: int = 12, n_positions: int = 1024) -> Path:
    """A randomly initialised model of GPT-2 small's shape (124M parameters at the defaults), with a
    byte-level tokenizer of the same vocabulary size: the bundled tokenizer's tokens plus filler tokens
    (decodable byte strings that no merge produces). Nothing is downloaded."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    if (path / "config.json").is_file():
        return path
    tokenizer, eos = grown_tokenizer(vocab_size)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        n_positions=n_positions, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def weight_bytes(model) -> int:
    """Bytes of weights read to decode one token: every parameter once (a tied embedding counts once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def matvec_bandwidth(megabytes: int = 512, runs: int = 7) -> float:
    """Bytes per second a float32 matrix-vector product reads (the kernel decoding at batch 1 runs)."""
    cols = 4096
    rows = megabytes * 1024 * 1024 // (4 * cols)
    matrix = torch.randn(rows, cols)
    vector = torch.randn(cols)
    seconds = median_time(lambda: torch.mv(matrix, vector), runs, warmup=2)
    return matrix.numel() * 4 / seconds


class Workload:
    """One model, one prompt: times samplecli's loop and generate() on it."""

    def __init__(self, lm, prompt_len: int, new_tokens: int) -> None:
        self.lm, self.new_tokens = lm, new_tokens
        self.threads = torch.get_num_threads()  # what loading chose for this model (samplecli's default)
        generator = torch.Generator().manual_seed(0)
        self.prompt = torch.randint(1, lm.vocab_size - 1, (prompt_len,), generator=generator).tolist()

    def _threads(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def ours(self, settings: dict | list[dict], record: bool = True) -> float:
        """Seconds for samplecli's loop; a list of settings decodes them side by side in one batch, as
        `compare` does."""
        config = DecodeConfig(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, seed=0, record=record,
                              top_n=5 if record else 0)
        self._threads()
        if isinstance(settings, list):
            chosen = [build_strategy(s).strategy for s in settings]
        else:
            chosen = build_strategy(settings).strategy
        started = time.perf_counter()
        done = [e for e in decode(self.lm, chosen, self.prompt, config) if isinstance(e, Done)]
        assert all(d.n_tokens == self.new_tokens for d in done)
        return time.perf_counter() - started

    def beam(self, num_beams: int) -> float:
        """Seconds for samplecli's beam search as `generate --num-beams` runs it (every step recorded)."""
        self._threads()
        config = DecodeConfig(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, seed=0, top_n=5)
        started = time.perf_counter()
        done = [e for e in beam_decode(self.lm, None, self.prompt, config, BeamSettings(num_beams=num_beams))
                if isinstance(e, Done)]
        assert done[0].n_tokens == self.new_tokens
        return time.perf_counter() - started

    def reference(self, **kwargs) -> float:
        self._threads()
        ids = torch.tensor([self.prompt], device=self.lm.device)
        eos = self.lm.eos_token_ids[0]
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.new_tokens,
                                         min_new_tokens=self.new_tokens, pad_token_id=eos, **kwargs)
        assert out.shape[1] == len(self.prompt) + self.new_tokens
        return time.perf_counter() - started


SAMPLING = {"temperature": 0.8, "top_p": 0.95}
# what `compare` is for: four different sampling strategies side by side
COMPARE = [SAMPLING, {"top_k": 40}, {"temperature": 0.7}, {"min_p": 0.05}]
HF_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0}
BEAMS = 4


def decode_rows(name: str, work: Workload, runs: int) -> list[tuple[str, str, float, float, float]]:
    rows = []
    cases = [("greedy", {"temperature": 0}, {"do_sample": False}),
             ("top-p sampling (T 0.8, p 0.95, k 0)", SAMPLING, HF_SAMPLING)]
    for label, ours_settings, hf in cases:
        ours, ref = paired_medians(lambda s=ours_settings: work.ours(s), lambda h=hf: work.reference(**h), runs)
        rows.append((name, label, work.new_tokens / ours, work.new_tokens / ref, ref / ours))
    ours, ref = paired_medians(lambda: work.beam(BEAMS),
                               lambda: work.reference(num_beams=BEAMS, do_sample=False), runs)
    rows.append((name, f"beam search ({BEAMS} beams)", work.new_tokens / ours, work.new_tokens / ref, ref / ours))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=["full", "tiny"], default="full")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "samplecli-bench")
    parser.add_argument("--no-llama-cpp", action="store_true", help="leave out the llama.cpp columns and rows")
    parser.add_argument("--no-remote", action="store_true", help="leave out section 9 (llama-server)")
    parser.add_argument("--no-real", action="store_true",
                        help="leave out section 10 (V = 128k and 152k; `scripts/bench_real.py` runs it alone)")
    args = parser.parse_args(argv)
    tiny = args.sizes == "tiny"
    prompt_len, new_tokens = (8, 8) if tiny else (32, 128)
    runs = 1 if tiny else args.runs
    shape = dict(n_layer=2, n_embd=64, n_head=2, vocab_size=4096, n_positions=128) if tiny else {}
    big_dir = build_gpt2_small_shape(args.cache / ("gpt2-tiny-shape" if tiny else "gpt2-small-shape"), **shape)
    llama_shape = dict(vocab_size=4096, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96,
                       positions=128) if tiny else {}
    llama_dir = build_llama_100m(args.cache / ("llama-tiny" if tiny else "llama-100m"), **llama_shape)

    lines = [f"# Benchmarks\n\n`python scripts/bench.py{' --sizes tiny' if tiny else ''}` on {platform.machine()}, "
             f"{os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, "
             f"Python {platform.python_version()}. Medians of {runs} runs after a warm-up, the two sides of each "
             f"ratio taking turns; prompt {prompt_len} tokens, {new_tokens} new tokens, batch 1. Threads: "
             "samplecli's default for each model (`--threads`: one below 256 MiB of weights, else one per free core), "
             "the same for `generate()` and llama.cpp. Speeds vary from machine to machine and run to run; "
             "compare the ratios.\n"]

    workloads = {}
    if (BUNDLED_MODEL_DIR / "config.json").is_file():
        workloads["bundled"] = Workload(load(None, device="cpu"), prompt_len, new_tokens)
    workloads["gpt2-small shape"] = Workload(load(str(big_dir), device="cpu"), prompt_len, new_tokens)
    dirs = {"bundled": BUNDLED_MODEL_DIR, "gpt2-small shape": big_dir}

    bandwidth = read_bandwidth(64 if tiny else 1024)
    peers, why_not = {}, llama_cpp_available() if not args.no_llama_cpp else "left out (--no-llama-cpp)"
    if why_not is None:
        for name, work in workloads.items():
            try:
                peers[name] = LlamaCppLoop(gguf_model(dirs[name], "f32"), work.threads)
            except Exception as exc:  # a conversion or load failure: the column says why
                why_not = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

    lines.append("\n## 1. Decode speed: samplecli vs `model.generate()` and llama.cpp (full per-step record on)\n")
    lines.append("llama.cpp is its own greedy loop (`llama_decode` and an argmax, no per-step record) on the same "
                 "weights converted to GGUF float32, taking turns with samplecli's greedy run; the ceiling is the "
                 "measured memory read bandwidth over the bytes of weights a token reads (section 5).\n")
    lines.append("| model | strategy | samplecli tok/s | generate() tok/s | vs generate() | llama.cpp tok/s | "
                 "vs llama.cpp | share of ceiling |\n|---|---|---:|---:|---:|---:|---:|---:|")
    speeds = {}  # (model, strategy) -> samplecli tok/s, for the bandwidth section
    peer_speed = {}
    for name, work in workloads.items():
        ceiling = bandwidth / weight_bytes(work.lm.model)
        if name in peers:
            ours, theirs = paired_medians(lambda w=work: w.ours({"temperature": 0}),
                                          lambda w=work, p=peers[name]: p.run(w.prompt, w.new_tokens), runs)
            peer_speed[name] = new_tokens / theirs
        for row in decode_rows(name, work, runs):
            speeds[row[0], row[1]] = row[2]
            peer = (f"{peer_speed[name]:.1f} | {row[2] / peer_speed[name]:.2f}x" if name in peer_speed
                    else "not measured | -")
            lines.append(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.1f} | {row[4]:.2f}x | {peer} | "
                         f"{row[2] / ceiling:.2f} |")
    if not peers:
        lines.append(f"\nllama.cpp not measured: {why_not}.")

    lines.append("\n## 1b. GGUF models in process (`--model file.gguf`) vs llama.cpp's own loop\n")
    lines.append(gguf_section(workloads, peers, dirs, runs, why_not))

    work = workloads["gpt2-small shape"]
    full, bare = paired_medians(lambda: work.ours(SAMPLING, record=True), lambda: work.ours(SAMPLING, record=False),
                                runs)
    lines.append("\n## 2. Cost of the per-step view (gpt2-small shape, top-p sampling)\n")
    lines.append(f"| record | seconds |\n|---|---:|\n| full (entropies, top-5, KL, text) | {full:.3f} |\n"
                 f"| none | {bare:.3f} |\n\nOverhead: **{(full / bare - 1) * 100:.1f}%**.")

    lines.append("\n## 3. `compare` of 4 sampling strategies vs one `generate`\n")
    lines.append("Strategies: " + "; ".join(", ".join(f"{k} {v}" for k, v in s.items()) for s in COMPARE)
                 + f" ({new_tokens} tokens each). One `generate` is the first of them alone, timed both as "
                 "`samplecli generate` runs it and as `model.generate()`; the three take turns.\n")
    lines.append("| model | samplecli, one strategy s | `model.generate()`, one strategy s | four in one batch s "
                 "| vs samplecli's one | vs `model.generate()` |\n|---|---:|---:|---:|---:|---:|")
    for name, each in workloads.items():
        timed = interleaved_medians({"one": lambda w=each: w.ours(SAMPLING),
                                     "reference": lambda w=each: w.reference(**HF_SAMPLING),
                                     "four": lambda w=each: w.ours(COMPARE)}, runs, 1)
        one, reference, four = (timed[key][0] for key in ("one", "reference", "four"))
        lines.append(f"| {name} | {one:.3f} | {reference:.3f} | {four:.3f} | **{four / one:.2f}x** | "
                     f"**{four / reference:.2f}x** |")

    lines.append(compare_metrics_section(tiny))

    lines.append("\n## 4. Start-up\n")
    lines.append(startup(runs, [] if "bundled" in workloads else ["-m", str(big_dir)]))

    lines.append("\n## 5. Memory-bandwidth ceiling\n")
    matvec = matvec_bandwidth(64 if tiny else 512)
    lines.append(f"Measured memory read bandwidth (`torch.ones(2**28).sum()`, 1 GiB): **{bandwidth / 1e9:.2f} GB/s**; "
                 f"a float32 matrix-vector product (`torch.mv`, MKL) reads at {matvec / 1e9:.2f} GB/s, "
                 f"{matvec / bandwidth:.2f} of it. The ceiling is the first: a decode step reads every weight once.\n")
    lines.append("| model | weights MB | ceiling tok/s | samplecli greedy | share | llama.cpp | share |\n"
                 "|---|---:|---:|---:|---:|---:|---:|")
    for name, each in workloads.items():
        weights = weight_bytes(each.lm.model)
        ceiling = bandwidth / weights
        achieved = speeds[name, "greedy"]
        peer = (f"{peer_speed[name]:.1f} | {peer_speed[name] / ceiling:.2f}" if name in peer_speed else "- | -")
        lines.append(f"| {name} | {weights / 1e6:.1f} | {ceiling:.1f} | {achieved:.1f} | "
                     f"**{achieved / ceiling:.2f}** | {peer} |")

    lines.append("\n## 6. Peak memory of `samplecli generate` (gpt2-small shape)\n")
    weights = weight_bytes(work.lm.model)
    peak = peak_rss(big_dir, 16 if not tiny else 4)
    lines.append(f"Peak resident memory {peak / 1e6:.0f} MB vs {weights / 1e6:.0f} MB of weights: "
                 f"**{peak / weights:.2f}x**.")

    lines.append("\n## 7. A Llama-family model (random init, grouped-query attention)\n")
    lines.append(llama_section(llama_dir, prompt_len, new_tokens, runs, why_not if not peers else None))

    lines.append("\n## 8. Threads, and one busy process beside the decode\n")
    lines.append(busy_section(workloads, runs))

    if not args.no_remote:
        lines.append("\n## 9. Remote engines: samplecli vs llama-server's own client\n")
        lines.append(remote_section(runs, tiny))

    for peer in peers.values():
        peer.close()
    if not (args.no_real or tiny):  # tests/test_bench_real.py runs it at tiny sizes
        lines.append("\n" + real_section(args.runs, tiny, args.cache / "real", remote=not args.no_remote))
    text = "\n".join(lines) + "\n"
    print(text)
    if not tiny:
        args.out.write_text(text, encoding="utf-8")
    return 0


def gguf_section(workloads: dict, peers: dict, dirs: dict, runs: int, why_not: str | None) -> str:
    """samplecli on the GGUF backend (llama.cpp's logits, samplecli's loop and record) against llama.cpp's own
    loop on the same file, and where the bundled model's step goes."""
    if not peers:
        return f"Not measured: {why_not}."
    from samplecli.backends.gguf import GGUFBackend

    out = ["| model | strategy | samplecli on GGUF tok/s | llama.cpp tok/s | vs llama.cpp |",
           "|---|---|---:|---:|---:|"]
    parts = ""
    for name, peer in peers.items():
        work = workloads[name]
        backend = GGUFBackend(gguf_model(dirs[name], "f32"), threads=work.threads)
        on_gguf = Workload(backend, 0, work.new_tokens)
        on_gguf.prompt, on_gguf.threads = work.prompt, work.threads
        for label, settings in (("greedy", {"temperature": 0}), ("top-p sampling (T 0.8, p 0.95, k 0)", SAMPLING)):
            ours, theirs = paired_medians(lambda s=settings, g=on_gguf: g.ours(s),
                                          lambda p=peer, w=work: p.run(w.prompt, w.new_tokens), runs)
            out.append(f"| {name} | {label} | {work.new_tokens / ours:.1f} | {work.new_tokens / theirs:.1f} | "
                       f"**{theirs / ours:.2f}x** |")
        if name == "bundled":
            split = StepParts(backend)
            with split.watching():
                total = on_gguf.ours({"temperature": 0})
            parts = f"\nOne greedy step of the bundled model on GGUF, by part: {split.report(total)}."
        backend.close()
    return "\n".join(out) + parts


def compare_metrics_section(tiny: bool) -> str:
    """`compare`'s work after decoding, per strategy: the metrics of every sample, Self-BLEU the costliest (each
    sample against all the others). Random token ids stand for the samples: the cost depends on their number and
    length only."""
    import random

    from samplecli.analysis.metrics import bleu, distinct_n, self_bleu

    def by_definition(samples):
        return sum(bleu(s, [o for j, o in enumerate(samples) if j != i]) for i, s in enumerate(samples)) / len(samples)

    rng = random.Random(0)
    many, few, length = (200, 20, 50) if tiny else (10_000, 200, 250)
    samples = [[rng.randrange(2048) for _ in range(length)] for _ in range(many)]
    start = time.perf_counter()
    self_bleu(samples)
    distinct_n(samples, 2)
    linear = time.perf_counter() - start
    start = time.perf_counter()
    by_definition(samples[:few])
    quadratic = time.perf_counter() - start
    return (f"\n`compare`'s metrics after decoding, one strategy's {many:,} samples of {length} tokens (Self-BLEU and "
            f"distinct-2): **{linear:.1f} s**. Self-BLEU by its definition (each sample's BLEU against every other) "
            f"took {quadratic:.1f} s for {few} samples; it grows with the square of their number, about "
            f"{_duration(quadratic * (many / few) ** 2)} at {many:,}.")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def llama_section(llama_dir: Path, prompt_len: int, new_tokens: int, runs: int, why_not: str | None) -> str:
    lm = load(str(llama_dir), device="cpu")
    work = Workload(lm, prompt_len, new_tokens)
    config = lm.model.config
    params = sum(p.numel() for p in lm.model.parameters())
    out = [f"`LlamaForCausalLM`, {params / 1e6:.0f}M parameters: hidden {config.hidden_size}, "
           f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads with "
           f"{config.num_key_value_heads} key/value heads, vocabulary {config.vocab_size}; through samplecli's "
           "lean Llama forward.\n",
           "| strategy | samplecli tok/s | generate() tok/s | vs generate() |", "|---|---:|---:|---:|"]
    for row in decode_rows("llama", work, runs)[:2]:
        out.append(f"| {row[1]} | {row[2]:.1f} | {row[3]:.1f} | **{row[4]:.2f}x** |")
    peer_line = f"\nllama.cpp not measured: {why_not}." if why_not else ""
    if not why_not:
        try:
            peer = LlamaCppLoop(gguf_model(llama_dir, "f32"), work.threads)
            ours, theirs = paired_medians(lambda: work.ours({"temperature": 0}),
                                          lambda: peer.run(work.prompt, work.new_tokens), runs)
            peer.close()
            peer_line = (f"\nllama.cpp's loop on the same weights (GGUF f32): {new_tokens / theirs:.1f} tok/s; "
                         f"samplecli greedy {new_tokens / ours:.1f} tok/s = **{theirs / ours:.2f}x** llama.cpp.")
        except Exception as exc:
            peer_line = f"\nllama.cpp not measured: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}."
    return "\n".join(out) + peer_line


def busy_section(workloads: dict, runs: int) -> str:
    """Greedy decode with one other process spinning on a core, against the same model on the quiet machine: at
    the threads samplecli's default picks when it starts beside that process (the target is 0.6x of the quiet
    speed), and at 1 and 2 threads."""
    from samplecli.backends.threads import default_threads

    out = ["| model | quiet: default threads | quiet tok/s | busy: default threads | busy, default tok/s | "
           "busy / quiet | busy, 1 thread | busy, 2 threads |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, work in workloads.items():
        quiet_threads = work.threads
        quiet = median_time(lambda w=work: w.ours({"temperature": 0}), runs)
        busy = {}
        with busy_neighbour():
            chosen = default_threads(weight_bytes(work.lm.model))  # what a start beside the neighbour picks
            for threads in (chosen, 1, 2):
                if threads not in busy:
                    work.threads = threads
                    busy[threads] = median_time(lambda w=work: w.ours({"temperature": 0}), min(runs, 3))
        work.threads = quiet_threads
        n = work.new_tokens
        out.append(f"| {name} | {quiet_threads} | {n / quiet:.1f} | {chosen} | {n / busy[chosen]:.1f} | "
                   f"**{quiet / busy[chosen]:.2f}** | {n / busy[1]:.1f} | {n / busy[2]:.1f} |")
    return "\n".join(out)


def _wall(command: list[str], runs: int) -> float:
    return median_time(lambda: subprocess.run(command, capture_output=True, check=True), runs)


def startup(runs: int, model_args: list[str]) -> str:
    python = sys.executable
    help_time = _wall([python, "-m", "samplecli", "--help"], runs)
    torch_time = _wall([python, "-c", "import torch"], runs)
    both_time = _wall([python, "-c", "import torch, transformers"], runs)
    first = statistics.median(time_to_first_token(model_args) for _ in range(runs))
    return (f"| measure | seconds | ratio |\n|---|---:|---:|\n"
            f"| `samplecli --help` | {help_time:.3f} | {help_time / torch_time:.2f}x `import torch` |\n"
            f"| `python -c 'import torch'` | {torch_time:.3f} | |\n"
            f"| first token of `samplecli generate {' '.join(model_args) or '(bundled)'}` | {first:.3f} | "
            f"{first / both_time:.2f}x `import torch, transformers` |\n"
            f"| `python -c 'import torch, transformers'` | {both_time:.3f} | |")


def time_to_first_token(model_args: list[str]) -> float:
    """Seconds from starting `samplecli generate` until its first byte of text arrives on stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "samplecli", "generate", "ROMEO:", *model_args, "-n", "20", "-q",
                             "--seed", "1", "--min-new-tokens", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdout.read(1)
    elapsed = time.perf_counter() - started
    proc.stdout.read()
    proc.wait()
    return elapsed


def peak_rss(model_dir: Path, new_tokens: int) -> int:
    """Peak resident set size (bytes) of a `samplecli generate` child process: its VmHWM, which belongs to
    the child's own address space (getrusage's ru_maxrss would count the parent it was forked from)."""
    code = ("import sys; from samplecli.__main__ import main; sys.argv = ['samplecli', 'generate', 'hello', "
            f"'-m', {str(model_dir)!r}, '-n', '{new_tokens}', '-q', '--seed', '1']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(status.split('VmHWM:')[1].split()[0]) * 1024, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
