"""The cost of samplecli's own work at real vocabulary sizes (issues #26 item 3 and #33): the decode loop's
per-step record, part by part, the full-vocabulary way it was computed before (a stable sort of the whole row for
top-p, typical, top-h and the sampling order; three passes for the strategy's entropy, kept count and KL) against
the way it is computed now (`topk` and threshold searches), the two taking turns in this process; and `score`'s
peak resident memory and time in a child process, against the size of the model's weights.

    python scripts/bench_vocab.py                     # V = 2,048, 50,257, 128,256, 151,936; score at 4k tokens
    python scripts/bench_vocab.py --sizes tiny        # under a minute: what the test suite runs
    python scripts/bench_vocab.py --baseline DIR      # also `score` from another checkout (the commit before),
                                                      # up to --baseline-max tokens (800)

Logits are random (seeded): N(0, 4^2) per token, a peaked distribution like a model's (top-p 0.95 keeps a few
hundred tokens of 152k). Torch runs on one intra-op thread, as it does beside llama.cpp, so a neighbour's load
moves both sides alike; every figure is a median over interleaved runs. Models are random-init, built here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FULL_SIZES = (2048, 50257, 128256, 151936)
TINY_SIZES = (512, 2048)
TOP_N = 10  # alternatives shown per step (`--top-n`'s default order of size)


# --- the full-vocabulary computations as the code did them before (HEAD of #26/#33's branch point) ---

def before_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    from samplecli.strategies.ranking import descending

    sorted_logits, order = descending(logits)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    keep_sorted = (probs.cumsum(dim=-1) - probs) < top_p
    keep_sorted[..., 0] = True
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), float("-inf"))


def before_typical(logits: torch.Tensor, typical_p: float) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).nansum(dim=-1, keepdim=True)
    distance = (-logp - entropy).abs()
    sorted_distance, order = torch.sort(distance, dim=-1, stable=True)
    sorted_probs = logp.gather(-1, order).exp()
    last = (sorted_probs.cumsum(dim=-1) < typical_p).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    keep_sorted = sorted_distance <= sorted_distance.gather(-1, last)
    keep_sorted[..., 0] = True
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), float("-inf"))


def before_top_h_candidates(logits: torch.Tensor, n: int = 100) -> torch.Tensor:
    values, ids = torch.sort(logits, dim=-1, descending=True, stable=True)
    return ids[..., :n]


def before_top_ids(x: torch.Tensor, k: int) -> torch.Tensor:
    from samplecli.strategies.ranking import descending_ids

    values, ids = torch.topk(x, k + 1, dim=-1)
    if bool((values[..., 1:] == values[..., :-1]).any()):
        return descending_ids(x)[..., :k]
    return ids[..., :k]


def before_kept(probs: torch.Tensor, logp: torch.Tensor):
    from samplecli.stats import entropy_nats, kl_nats

    return entropy_nats(probs, is_log=False), (probs > 0).sum(-1).float(), kl_nats(probs, logp)


def parts(vocab: int, rows: int) -> dict[str, tuple]:
    """name -> (before, after) callables of one step's part, on fixed random logits."""
    from samplecli.stats import entropy_nats, kept_measures
    from samplecli.strategies import build_strategy
    from samplecli.strategies.ranking import descending_ids, drawing_order, top_ids, top_sorted

    generator = torch.Generator().manual_seed(vocab + rows)
    raw = torch.randn(rows, vocab, generator=generator) * 4
    logp = torch.log_softmax(raw, dim=-1)
    top_p = build_strategy({"top_p": 0.95}).strategy
    typical = build_strategy({"typical_p": 0.95}).strategy
    probs = top_p.distribution(raw, torch.empty(rows, 0, dtype=torch.long))
    named = torch.tensor([0, vocab // 2])
    chosen = raw.argmax(-1, keepdim=True)
    return {
        "raw log-softmax + entropy": (lambda: entropy_nats(torch.log_softmax(raw, -1)),) * 2,
        f"top-{TOP_N} alternatives": (lambda: before_top_ids(raw, TOP_N), lambda: top_ids(raw, TOP_N)),
        "sampling order": (lambda: descending_ids(raw), lambda: drawing_order(raw, probs)),
        "top-p 0.95": (lambda: before_top_p(raw, 0.95), lambda: top_p.transforms[0](raw, None)),
        "typical 0.95": (lambda: before_typical(raw, 0.95), lambda: typical.transforms[0](raw, None)),
        "top-h candidates (100)": (lambda: before_top_h_candidates(raw), lambda: top_sorted(raw, 100)[1]),
        "strategy entropy, kept, KL": (lambda: before_kept(probs, logp), lambda: kept_measures(probs, logp)),
        "rank + --logprob-of": ((lambda: ((raw > raw.gather(-1, chosen)).sum(-1) + 1, logp[:, named])),) * 2,
    }


def interleaved(before, after, runs: int) -> tuple[float, float]:
    """Median µs of two callables that take turns, after one warm-up each."""
    before(), after()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for side, fn in enumerate((before, after)):
            started = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - started)
    return statistics.median(times[0]) * 1e6, statistics.median(times[1]) * 1e6


def step_tables(sizes: tuple[int, ...], runs: int) -> list[str]:
    lines = []
    for rows in (1, 4):
        lines += [f"### µs per step by part, {rows} row{'s' if rows > 1 else ''} (before -> after)", "",
                  "| part | " + " | ".join(f"V = {v:,}" for v in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        cells: dict[str, list[str]] = {}
        totals = [[0.0, 0.0] for _ in sizes]
        for column, vocab in enumerate(sizes):
            for name, (before, after) in parts(vocab, rows).items():
                b, a = interleaved(before, after, runs)
                totals[column][0] += b
                totals[column][1] += a
                cells.setdefault(name, []).append(f"{b:,.0f} -> {a:,.0f}")
        for name, row in cells.items():
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("| **all parts** | " + " | ".join(f"**{b:,.0f} -> {a:,.0f} ({b / a:.1f}x)**"
                                                   for b, a in totals) + " |")
        lines.append("")
    return lines


def build_model(path: Path, vocab: int, hidden: int, layers: int, positions: int, tied: bool = True) -> Path:
    """A random-init Qwen2-shaped model (tied embeddings unless `tied` is False, as Qwen2.5-7B's) with the bundled
    tokenizer grown to `vocab`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_peers import grown_tokenizer
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if (path / "config.json").is_file():
        return path
    tokenizer, eos = grown_tokenizer(vocab)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), num_key_value_heads=1,
                         max_position_embeddings=positions, tie_word_embeddings=tied, bos_token_id=eos,
                         eos_token_id=eos)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CHILD = """
import sys, time
from samplecli.__main__ import main
sys.argv = ['samplecli', 'score', '--file', sys.argv[1], '-m', sys.argv[2], '--format', 'json']
started = time.perf_counter()
try:
    main()
except SystemExit:
    pass
seconds = time.perf_counter() - started
status = open('/proc/self/status').read()
print(int(status.split('VmHWM:')[1].split()[0]) * 1024, seconds, file=sys.stderr)
"""


def score_child(model_dir: Path, text_file: Path, tree: Path) -> tuple[int, float, str]:
    """(peak RSS bytes, seconds, stdout) of `samplecli score --json` in a child process importing `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    # run from the tree itself: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    result = subprocess.run([sys.executable, "-c", CHILD, str(text_file), str(model_dir)], capture_output=True,
                            text=True, env=env, check=True, cwd=tree)
    peak, seconds = result.stderr.strip().splitlines()[-1].split()
    return int(peak), float(seconds), result.stdout


def score_table(vocab: int, lengths: tuple[int, ...], shape: tuple[int, int], cache: Path, baseline: Path | None,
                baseline_max: int) -> list[str]:
    """`score` of texts of each length (tokens) at `vocab`, in a child process per run; the baseline tree only up to
    `baseline_max` tokens (it held ~5 MB a token at 152k: 4k tokens would need ~20 GB)."""
    import json

    from transformers import AutoTokenizer

    hidden, layers = shape
    corpus = Path("/work/shared/data/tinyshakespeare.txt")
    text = corpus.read_text(encoding="utf-8") if corpus.is_file() else "To be, or not to be, that is the question. "
    model_dir = build_model(cache / f"qwen2-{vocab}-{hidden}x{layers}", vocab, hidden, layers, max(lengths) + 64)
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines = [f"### `score` at V = {vocab:,}: peak resident memory and time (child process, Qwen2 shape, hidden "
             f"{hidden}, {layers} layers, {weights / 1e6:,.0f} MB of weights)", "",
             "| tokens | tree | peak RSS | peak / weights | above the shortest text's peak | seconds | nats/token |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    trees = [("this tree", ROOT)] + ([("baseline", baseline)] if baseline else [])
    floor: dict[str, int] = {}
    for tokens in lengths:
        ids = tokenizer.encode(text * (1 + 4 * tokens // max(len(text), 1)), add_special_tokens=False)[:tokens - 1]
        text_file = cache / f"text-{vocab}-{tokens}.txt"
        text_file.write_text(tokenizer.decode(ids), encoding="utf-8")
        for label, tree in trees:
            if label == "baseline" and tokens > baseline_max:
                continue
            peak, seconds, out = score_child(model_dir, text_file, tree)
            floor.setdefault(label, peak)
            nats = json.loads(out).get("nats_per_token", float("nan"))
            lines.append(f"| {tokens:,} | {label} | {peak / 1e6:,.0f} MB | {peak / weights:.2f}x | "
                         f"{(peak - floor[label]) / 1e6:,.0f} MB | {seconds:.1f} | {nats:.9f} |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("full", "tiny"), default="full")
    parser.add_argument("--cache", type=Path, default=None, help="where the random models are kept")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to run `score` from")
    parser.add_argument("--baseline-max", type=int, default=800, help="the longest text the baseline scores")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tiny = args.sizes == "tiny"
    sizes = TINY_SIZES if tiny else FULL_SIZES
    cache = args.cache or Path(tempfile.gettempdir()) / "samplecli-bench-vocab"
    cache.mkdir(parents=True, exist_ok=True)
    lines = ["## Per-step record and `score` at real vocabulary sizes", ""]
    lines += step_tables(sizes, runs=3 if tiny else 15)
    lines += score_table(sizes[-1], (16, 96) if tiny else (16, 800, 4000), shape=(64, 2) if tiny else (512, 4),
                         cache=cache, baseline=args.baseline, baseline_max=args.baseline_max)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
