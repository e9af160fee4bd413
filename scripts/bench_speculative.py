"""Speculative decoding against plain decoding of the same model (issue #30): the acceptance α, the tokens a target
forward yields, and the tokens per second of each, the two sides taking turns so that a machine's drift falls on both.

    python scripts/bench_speculative.py                 # the bundled model with its draft; a 151,936-token model
    python scripts/bench_speculative.py --sizes tiny    # seconds: what the test suite runs

Each case decodes the same prompt with the same strategy and seed, `--runs` times a side, alternating, and reports
medians. The drafts: the bundled draft (`bundled-draft`, trained on the same text with the same tokenizer), prompt
lookup (`ngram`, no model) and the target itself (α = 1: the most a round can yield, and what verifying costs). The
real-vocabulary case is a random-init Qwen2-shaped model (GPT-2-small's width and depth, 768 x 12, with a 151,936
token vocabulary) and a random-init draft of its tokenizer (256 x 2): random weights make its α a property of two
random models, not of a trained pair, so that row measures the cost of a round at that size, not a speed-up to
expect. One thread; nothing is asserted about the times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PROMPT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
          "JULIET:\n")


def timed(events) -> tuple[float, list]:
    started = time.perf_counter()
    collected = list(events)
    return time.perf_counter() - started, collected


def case(lm, draft, label: str, settings: dict, k: int, new: int, runs: int) -> str:
    """One table row: plain and speculative decoding of `new` tokens, `runs` each, taking turns."""
    from samplecli.engine.decode import decode, encode_prompt
    from samplecli.engine.events import DecodeConfig, Done, Step
    from samplecli.engine.speculative import speculative_decode
    from samplecli.strategies import build_strategy

    prompt = encode_prompt(lm, PROMPT)
    config = DecodeConfig(max_new_tokens=new, min_new_tokens=new, seed=0)
    plain_rates, spec_rates, done = [], [], None
    for _ in range(runs):
        seconds, events = timed(decode(lm, build_strategy(settings).strategy, prompt, config))
        plain_rates.append(sum(isinstance(e, Step) for e in events) / seconds)
        seconds, events = timed(speculative_decode(lm, draft, build_strategy(settings).strategy, prompt, config, k))
        spec_rates.append(sum(isinstance(e, Step) for e in events) / seconds)
        done = next(e for e in events if isinstance(e, Done))
    s = done.speculation
    plain, spec = statistics.median(plain_rates), statistics.median(spec_rates)
    strategy = "greedy" if settings.get("temperature") == 0 else ", ".join(f"{k}={v}" for k, v in settings.items())
    return (f"| {lm.name} (V = {lm.vocab_size:,}) | {label} | {k} | {strategy} | {s.acceptance:.3f} | "
            f"{s.expected_per_round:.2f} | {done.n_tokens / s.rounds:.2f} | "
            f"{s.tokens_per_forward(done.n_tokens):.2f} | "
            f"{plain:,.0f} | {spec:,.0f} | {spec / plain:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("full", "tiny"), default="full")
    parser.add_argument("--runs", type=int, default=0, help="runs a side (0: 5, or 1 with --sizes tiny)")
    parser.add_argument("--cache", type=Path, default=None, help="where the random-init models are built")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from bench_vocab import build_model

    from samplecli.backends.torch_lm import BUNDLED_DRAFT_DIR, load

    tiny = args.sizes == "tiny"
    runs = args.runs or (1 if tiny else 5)
    new = 24 if tiny else 128
    lines = ["## Speculative against plain decoding (tokens/s, median of the runs; one thread)", "",
             "| model | draft | K | strategy | α | tokens a round expected | measured | tokens per target forward "
             "| plain tok/s | speculative tok/s | speed-up |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    bundled = load(None, device="cpu")
    drafts = [(load(str(BUNDLED_DRAFT_DIR), device="cpu"), "bundled-draft")] if BUNDLED_DRAFT_DIR.is_dir() else []
    drafts += [(None, "ngram"), (bundled, "itself")]
    for settings in ({"temperature": 0}, {"temperature": 0.8}):
        for draft, label in drafts:
            for k in ((4,) if tiny else (2, 4, 6)):
                lines.append(case(bundled, draft, label, settings, k, new, runs))
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or Path(scratch)
        vocab, (hidden, layers), (draft_hidden, draft_layers) = \
            (512, (64, 2), (32, 1)) if tiny else (151936, (768, 12), (256, 2))
        target = load(str(build_model(cache / f"target-{vocab}-{hidden}", vocab, hidden, layers, 1024)), device="cpu")
        small = load(str(build_model(cache / f"draft-{vocab}-{draft_hidden}", vocab, draft_hidden, draft_layers,
                                     1024)), device="cpu")
        target.name, small.name = f"random {hidden} x {layers}", f"random {draft_hidden} x {draft_layers}"
        for draft, label in ((small, small.name), (target, "itself")):
            lines.append(case(target, draft, label, {"temperature": 1.0}, 4, new, runs))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
