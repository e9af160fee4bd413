"""Beam search speed: samplecli's beam loop against transformers' generate(num_beams=B), in one process.

    python scripts/bench_beam.py                       # GPT-2 small's shape (124M, random init), 4 beams
    python scripts/bench_beam.py --n-layer 2 --n-embd 128 --n-head 2 --vocab-size 1000   # a smaller shape

Both run the same randomly initialised model (nothing is downloaded) on the same 32-token prompt for 64
new tokens (EOS is masked until then, so neither stops early) and must return the same best sequence.
Each figure is the median of several runs after a warm-up; tokens/s counts the returned sequence's new
tokens. The markdown table goes to stdout; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch


def interleaved_medians(fns: dict, runs: int, warmup: int) -> dict:
    """name -> (median seconds, last result). The implementations take turns run by run, so a machine whose
    load drifts slows each of them alike."""
    results = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            results[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def build_model(args: argparse.Namespace):
    """GPT2Config() defaults unless overridden: GPT-2 small's 124M parameters, randomly initialised."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    eos = min(50256, args.vocab_size - 1)  # GPT-2's <|endoftext|>, or the last id of a smaller vocabulary
    config = GPT2Config(vocab_size=args.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                        n_positions=args.n_positions, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config).eval().to(args.device)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos, bos_token_id=eos)
    return model, eos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per implementation (the median is shown)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--vocab-size", type=int, default=50257)
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--n-positions", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from samplecli.backends.torch_lm import LM
    from samplecli.engine.beam import BeamResult, BeamSettings, search
    from samplecli.engine.decode import DecodeConfig

    model, eos = build_model(args)
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, args.vocab_size - 1, (args.prompt_tokens,), generator=generator)
    prompt[prompt == eos] = (eos + 1) % args.vocab_size
    prompt_ids = prompt.tolist()
    n = args.new_tokens
    settings = BeamSettings(num_beams=args.beams)

    def ours(record: bool):
        config = DecodeConfig(max_new_tokens=n, min_new_tokens=n, record=record, top_n=5)
        for event in search(LM.of(model), prompt_ids, settings, config, eos_token_ids=[eos]):
            if isinstance(event, BeamResult):
                return list(event.ranked[0].token_ids)

    def theirs():
        with torch.inference_mode():
            out = model.generate(prompt[None, :].to(args.device), num_beams=args.beams, do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, eos_token_id=eos, pad_token_id=eos)
        return out[0, len(prompt_ids):].tolist()

    reference_label = f"transformers `generate(num_beams={args.beams})`"
    timed = interleaved_medians({
        reference_label: theirs,
        "samplecli beam loop (events only)": lambda: ours(False),
        "samplecli beam loop (+ per-step stats, as the CLI)": lambda: ours(True),
    }, args.runs, args.warmup)
    reference_seconds, reference = timed[reference_label]
    rows = [(label, seconds, tokens == reference) for label, (seconds, tokens) in timed.items()]

    params = sum(p.numel() for p in model.parameters()) / 1e6
    threads = torch.get_num_threads()
    print(f"Beam search, {args.beams} beams, {args.prompt_tokens}-token prompt, {n} new tokens; GPT-2 shape "
          f"{args.n_layer} layers x {args.n_embd} wide, vocabulary {args.vocab_size} ({params:.1f}M parameters, "
          f"random init); {args.device}, {threads} torch threads; median of {args.runs} interleaved runs "
          f"after {args.warmup} warm-up; Python {platform.python_version()}, torch {torch.__version__}.")
    print()
    print("| implementation | median s | tokens/s | ms/step | vs generate | same best sequence |")
    print("|---|---:|---:|---:|---:|---|")
    for label, seconds, same in rows:
        print(f"| {label} | {seconds:.3f} | {n / seconds:.1f} | {1000 * seconds / n:.2f} | "
              f"{reference_seconds / seconds:.2f}x | {'yes' if same else 'NO'} |")
    return 0 if all(same for _, _, same in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
