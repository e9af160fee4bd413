"""samplecli's speed and memory against transformers' generate() and the memory-bandwidth ceiling.

    python scripts/bench.py                  # full run, writes BENCHMARKS.md
    python scripts/bench.py --sizes tiny     # seconds: what the test suite runs so the script cannot rot

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
from bench_beam import interleaved_medians  # a sibling script: this directory is on sys.path

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    if (path / "config.json").is_file():
        return path
    base = Tokenizer.from_file(str(BUNDLED_MODEL_DIR / "tokenizer.json")) \
        if (BUNDLED_MODEL_DIR / "tokenizer.json").is_file() else None
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = dict(base.get_vocab()) if base is not None else {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = []
    if base is not None:
        import json

        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in json.loads(base.to_str())["model"]["merges"]]
    letters = sorted(alphabet)
    i = 0
    while len(vocab) < vocab_size - 1:
        a, b, c = letters[i % 188], letters[(i // 188) % 188], letters[(i // (188 * 188)) % 188]
        token = "Ġ" + a + b + c
        if token not in vocab:
            vocab[token] = len(vocab)
        i += 1
    vocab.setdefault("<|endoftext|>", len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eos = vocab["<|endoftext|>"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        n_positions=n_positions, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
        generator = torch.Generator().manual_seed(0)
        self.prompt = torch.randint(1, lm.vocab_size - 1, (prompt_len,), generator=generator).tolist()

    def ours(self, settings: dict | list[dict], record: bool = True) -> float:
        """Seconds for samplecli's loop; a list of settings decodes them side by side in one batch, as
        `compare` does."""
        config = DecodeConfig(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, seed=0, record=record,
                              top_n=5 if record else 0)
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
        config = DecodeConfig(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, seed=0, top_n=5)
        started = time.perf_counter()
        done = [e for e in beam_decode(self.lm, None, self.prompt, config, BeamSettings(num_beams=num_beams))
                if isinstance(e, Done)]
        assert done[0].n_tokens == self.new_tokens
        return time.perf_counter() - started

    def reference(self, **kwargs) -> float:
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
    args = parser.parse_args(argv)
    tiny = args.sizes == "tiny"
    prompt_len, new_tokens = (8, 8) if tiny else (32, 128)
    runs = 1 if tiny else args.runs
    shape = dict(n_layer=2, n_embd=64, n_head=2, vocab_size=4096, n_positions=128) if tiny else {}
    big_dir = build_gpt2_small_shape(args.cache / ("gpt2-tiny-shape" if tiny else "gpt2-small-shape"), **shape)

    lines = [f"# Benchmarks\n\n`python scripts/bench.py{' --sizes tiny' if tiny else ''}` on {platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"Python {platform.python_version()}. Medians of {runs} runs after a warm-up, the two sides of each "
             f"ratio taking turns; prompt {prompt_len} tokens, {new_tokens} new tokens, batch 1.\n"]

    workloads = {}
    if (BUNDLED_MODEL_DIR / "config.json").is_file():
        workloads["bundled"] = Workload(load(None, device="cpu"), prompt_len, new_tokens)
    workloads["gpt2-small shape"] = Workload(load(str(big_dir), device="cpu"), prompt_len, new_tokens)

    lines.append("\n## 1. Decode speed: samplecli vs `model.generate()` (full per-step record on)\n")
    lines.append("| model | strategy | samplecli tok/s | generate() tok/s | ratio |\n|---|---|---:|---:|---:|")
    speeds = {}  # (model, strategy) -> samplecli tok/s, for the bandwidth section
    for name, work in workloads.items():
        for row in decode_rows(name, work, runs):
            lines.append(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.1f} | {row[4]:.2f}x |")
            speeds[row[0], row[1]] = row[2]

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

    lines.append("\n## 4. Start-up\n")
    lines.append(startup(runs, [] if "bundled" in workloads else ["-m", str(big_dir)]))

    lines.append("\n## 5. Memory-bandwidth ceiling (gpt2-small shape)\n")
    bandwidth = matvec_bandwidth(64 if tiny else 512)
    weights = weight_bytes(work.lm.model)
    ceiling = bandwidth / weights
    achieved = speeds["gpt2-small shape", "greedy"]  # section 1's measurement
    lines.append(f"Weights read per token: {weights / 1e6:.1f} MB; measured float32 matrix-vector read bandwidth: "
                 f"{bandwidth / 1e9:.2f} GB/s; ceiling {ceiling:.1f} tok/s; samplecli greedy {achieved:.1f} tok/s = "
                 f"**{achieved / ceiling:.2f}** of the ceiling.")

    lines.append("\n## 6. Peak memory of `samplecli generate` (gpt2-small shape)\n")
    peak = peak_rss(big_dir, 16 if not tiny else 4)
    lines.append(f"Peak resident memory {peak / 1e6:.0f} MB vs {weights / 1e6:.0f} MB of weights: "
                 f"**{peak / weights:.2f}x**.")

    text = "\n".join(lines) + "\n"
    print(text)
    if not tiny:
        args.out.write_text(text, encoding="utf-8")
    return 0


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
    code = ("import sys; from samplecli.cli import main; sys.argv = ['samplecli', 'generate', 'hello', "
            f"'-m', {str(model_dir)!r}, '-n', '{new_tokens}', '-q', '--seed', '1']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(status.split('VmHWM:')[1].split()[0]) * 1024, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
