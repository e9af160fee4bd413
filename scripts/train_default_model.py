"""Train samplecli's bundled default model: a byte-level BPE tokenizer and a small GPT-2 on Tiny Shakespeare.

The corpus is split by characters: the first 90% is training data, the last 10% is held out and only
ever scored once, for the figure in the model card. Checkpoints are chosen on a validation slice
carved from inside the training 90% (by default 80-85% of the corpus, so the play that the held-out
text continues is still trained on), so the held-out figure is honest.

    python scripts/train_default_model.py ../shared/data/tinyshakespeare.txt

Seeded and reproducible on the same machine and library versions. Uses a GPU when one is present.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from samplecli.analysis.scoring import token_nats
from samplecli.backends.torch_lm import LM

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "samplecli" / "bundled_model"
EOS = "<|endoftext|>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path, help="the training text (Tiny Shakespeare)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory to write")
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters (0: all)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="reuse this model directory's tokenizer instead of training one (a draft model for "
                        "speculative decoding must share its target's: --tokenizer samplecli/bundled_model)")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--block-size", type=int, default=256, help="context length (n_positions)")
    p.add_argument("--dropout", type=float, default=0.2, help="embedding and residual dropout")
    p.add_argument("--attn-dropout", type=float, default=0.0,
                   help="dropout on attention weights (0 keeps SDPA's fused kernel: ~1/3 of a CPU step otherwise)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--ema", type=float, default=0.998,
                   help="decay of an exponential moving average of the weights, validated alongside the raw "
                        "weights at every evaluation; the better of the two is kept (0: off)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=0, help="cap validation windows (0: the whole slice)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="validation share of the whole corpus")
    p.add_argument("--val-start", type=float, default=0.80,
                   help="where the validation slice starts, as a fraction of the corpus (it must end by 0.9)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16 autocasts the forward pass (weights stay float32): faster on CUDA and on CPUs "
                        "with AMX; slower with AVX512-BF16 alone (2.7 s against 2.0 s a step measured on one), "
                        "many times slower without either; auto picks bf16 only on CUDA and AMX")
    return p.parse_args(argv)


def split_corpus(text: str, val_fraction: float, val_start: float) -> tuple[list[str], str, str]:
    """(train parts, validation, held-out): held-out is the last 10% of characters, validation the
    `val_fraction` of the corpus from `val_start` on, and training is the rest of the first 90%, in
    one or two parts (before and after the validation slice)."""
    test_start = int(len(text) * 0.9)
    v0 = int(len(text) * val_start)
    v1 = v0 + int(len(text) * val_fraction)
    if not 0 <= v0 <= v1 <= test_start:
        raise SystemExit(f"--val-start {val_start} with --val-fraction {val_fraction} leaves the training 90%")
    train = [part for part in (text[:v0], text[v1:test_start]) if part]
    return train, text[v0:v1], text[test_start:]


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def train_tokenizer(train_parts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for part in train_parts for line in part.splitlines(keepends=True)]
    tok.train_from_iterator((lines[i : i + 1000] for i in range(0, len(lines), 1000)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=10**9
    )


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def mean_loss(model: GPT2LMHeadModel, ids: torch.Tensor, block: int, batch: int, max_batches: int) -> float:
    """Mean next-token loss over non-overlapping windows (the cheap figure used during training)."""
    model.eval()
    n = (ids.numel() - 1) // block
    starts = torch.arange(n) * block
    if max_batches:
        starts = starts[: max_batches * batch]
    total, count = 0.0, 0
    for i in range(0, starts.numel(), batch):
        s = starts[i : i + batch]
        x = torch.stack([ids[j : j + block] for j in s]).to(model.device)
        y = torch.stack([ids[j + 1 : j + block + 1] for j in s]).to(model.device)
        logits = model(x).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / max(count, 1)


def score_text(model, tokenizer, text: str, block: int) -> dict[str, float]:
    """Exactly what `samplecli score` computes: BOS + text, sliding window with stride block/2."""
    ids = torch.tensor([tokenizer.bos_token_id] + tokenizer(text)["input_ids"])
    nats = token_nats(LM.of(model), ids, context=block, stride=block // 2)
    total = float(nats.sum())
    return {"tokens": nats.numel(), "nats_per_token": total / nats.numel(), "nats_per_char": total / len(text)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    text = args.corpus.read_text(encoding="utf-8")
    if args.max_chars:
        text = text[: args.max_chars]
    train_parts, val_text, test_text = split_corpus(text, args.val_fraction, args.val_start)
    train_chars = sum(map(len, train_parts))
    console.print(f"corpus {len(text):,} chars: train {train_chars:,}, validation {len(val_text):,}, "
                  f"held-out {len(test_text):,}")
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"

    tokenizer = (PreTrainedTokenizerFast.from_pretrained(str(args.tokenizer)) if args.tokenizer is not None
                 else train_tokenizer(train_parts, args.vocab_size))
    # each part is encoded alone, so no token spans the seam where the validation slice was cut out
    train_ids = torch.cat([encode(tokenizer, part) for part in train_parts])
    val_ids = encode(tokenizer, val_text)
    console.print(f"tokenizer: {len(tokenizer)} tokens, {train_chars / train_ids.numel():.2f} chars/token")

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=args.block_size,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.attn_dropout,
        activation_function="gelu",  # exact GELU: one fused kernel, where GPT-2's tanh form costs five
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"model: GPT-2, {n_params:,} parameters, device {device}, {precision}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    block, max_start = args.block_size, train_ids.numel() - args.block_size - 1

    # the moving average lives in a copy of the model (deepcopy keeps the tied embeddings tied)
    ema_model = copy.deepcopy(model).eval() if args.ema else None
    ema_params = list(ema_model.parameters()) if ema_model else []
    params = list(model.parameters())

    curve: list[dict[str, float]] = []
    best = {"val_loss": float("inf"), "step": 0, "weights": "raw", "state": None}
    started = time.perf_counter()
    model.train()
    columns = [TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]:.3f}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=args.steps, loss=float("nan"), val=float("nan"))
        running = None
        for step in range(args.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args)
            starts = torch.randint(0, max_start, (args.batch_size,), generator=gen)
            x = torch.stack([train_ids[s : s + block] for s in starts]).to(device)
            y = torch.stack([train_ids[s + 1 : s + block + 1] for s in starts]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if ema_model is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - args.ema)
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            last = step + 1 == args.steps
            if (step + 1) % args.eval_every == 0 or last:
                point = {"step": step + 1, "train_loss": running,
                         "val_loss": mean_loss(model, val_ids, block, args.batch_size, args.eval_batches)}
                candidates = {"raw": (point["val_loss"], model)}
                if ema_model is not None:
                    point["ema_val_loss"] = mean_loss(ema_model, val_ids, block, args.batch_size, args.eval_batches)
                    candidates["ema"] = (point["ema_val_loss"], ema_model)
                point["minutes"] = (time.perf_counter() - started) / 60
                curve.append(point)
                for weights, (val, source) in candidates.items():
                    if val < best["val_loss"]:
                        best = {"val_loss": val, "step": step + 1, "weights": weights,
                                "state": {k: v.detach().clone() for k, v in source.state_dict().items()}}
                progress.update(task, val=point["val_loss"])
                if not console.is_terminal:  # a log file gets one line per evaluation
                    ema_words = f", EMA {point['ema_val_loss']:.4f}" if ema_model is not None else ""
                    console.print(f"step {step + 1}: train {running:.4f}, validation {point['val_loss']:.4f}"
                                  f"{ema_words} nats/token, {point['minutes']:.1f} min")
            progress.update(task, advance=1, loss=running)
    train_minutes = (time.perf_counter() - started) / 60

    model.load_state_dict(best["state"])
    model.eval()
    held_out = score_text(model, tokenizer, test_text, block)
    val_scored = score_text(model, tokenizer, val_text, block)
    console.print(f"best step {best['step']} ({best['weights']} weights): "
                  f"validation {val_scored['nats_per_char']:.4f} nats/char; "
                  f"held-out {held_out['nats_per_token']:.4f} nats/token, {held_out['nats_per_char']:.4f} nats/char")

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    stats = {
        "parameters": n_params, "vocab_size": len(tokenizer), "steps": args.steps, "best_step": best["step"],
        "best_weights": best["weights"], "ema": args.ema,
        "train_minutes": train_minutes, "held_out": held_out, "validation": val_scored,
        "chars_per_token": train_chars / train_ids.numel(), "precision": precision, "curve": curve,
        "device": str(device),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    (args.out / "training.json").write_text(json.dumps(stats, indent=1) + "\n")
    # the held-out text ships with the model: `samplecli score --file` reproduces the card's figure with it,
    # and `samplecli compare` uses it as the human reference
    (args.out / "held_out.txt").write_text(test_text, encoding="utf-8")
    command = "python scripts/train_default_model.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    (args.out / "README.md").write_text(model_card(args, config, stats, command))
    console.print(f"wrote {args.out}")
    return 0


def model_card(args: argparse.Namespace, config: GPT2Config, stats: dict, command: str) -> str:
    held, val = stats["held_out"], stats["validation"]
    precision_words = ("forward pass in bf16 autocast (float32 weights)" if stats["precision"] == "bf16"
                       else "float32 throughout")
    ema = stats["ema"]
    curve_rows = "\n".join(
        f"| {c['step']} | {c['minutes']:.1f} | {c['train_loss']:.4f} | {c['val_loss']:.4f} |"
        + (f" {c['ema_val_loss']:.4f} |" if ema else "")
        for c in stats["curve"]
    )
    curve_head = "| step | minutes | train loss (nats/token, smoothed) | validation loss (nats/token) |"
    curve_rule = "|---:|---:|---:|---:|"
    if ema:
        curve_head += " validation loss, EMA weights |"
        curve_rule += "---:|"
    weights_words = {"raw": "the trained weights", "ema": "the moving average of the weights"}[stats["best_weights"]]
    ema_words = (f"\nAn exponential moving average of the weights (decay {ema}) is kept beside them and validated at "
                 "every evaluation too." if ema else "")
    if stats["best_weights"] == "ema":
        ema_words += ("\nOn this small corpus the average of the last few hundred steps generalises better than the "
                      "weights of any single step\n(compare the two validation columns).")
    return f"""---
license: other
language: en
library_name: transformers
pipeline_tag: text-generation
---

# samplecli bundled model: a small GPT-2 trained on Tiny Shakespeare

The offline default model of [samplecli](../../README.md). It exists so that every feature of the
tool can be shown and tested with no network; point `--model` at a real LM for real work.

## Data

Tiny Shakespeare (Karpathy's `tinyshakespeare/input.txt`, 1,115,394 characters of Shakespeare's plays).
Shakespeare's text is in the **public domain**. Split by characters: the first 90% is training data
(of which {args.val_fraction:.0%} of the corpus, from {args.val_start:.0%} on, is the validation slice used to choose
the checkpoint and is not trained on),
the last 10% is held out and was scored once, for the figures below.

## Architecture

- `GPT2LMHeadModel`: {config.n_layer} layers, {config.n_head} heads, width {config.n_embd},
  context {config.n_positions} tokens, tied input/output embeddings, exact GELU, dropout {args.dropout}
  (embeddings and residual), attention dropout {args.attn_dropout}.
- **{stats['parameters']:,} parameters**, stored as float32 safetensors.
- Tokenizer: byte-level BPE trained with `tokenizers` on the training split, {stats['vocab_size']} tokens
  (`{EOS}` is BOS, EOS and padding), {stats['chars_per_token']:.2f} characters per token on the training text.

## Training

AdamW (betas 0.9/0.95, weight decay {args.weight_decay}), learning rate {args.lr} with {args.warmup_steps}
warm-up steps and cosine decay to {args.min_lr}, batch {args.batch_size} x {args.block_size} tokens,
gradient clipping 1.0, seed {args.seed}, {precision_words}.
{stats['steps']} steps in {stats['train_minutes']:.1f} minutes on
{stats['device']} ({stats['threads']} threads, torch {stats['torch']}).{ema_words}
The checkpoint with the lowest validation loss was kept: step {stats['best_step']}, {weights_words}.

{curve_head}
{curve_rule}
{curve_rows}

## Held-out cross-entropy (last 10% of the corpus, never trained on)

| | nats/token | nats/char | bits/char |
|---|---:|---:|---:|
| held-out | {held['nats_per_token']:.4f} | {held['nats_per_char']:.4f} | {held['nats_per_char'] / math.log(2):.4f} |
| validation | {val['nats_per_token']:.4f} | {val['nats_per_char']:.4f} | {val['nats_per_char'] / math.log(2):.4f} |

The two figures measure different things. In Tiny Shakespeare the validation slice (80-85%) is the middle of
*Measure for Measure*, whose other scenes are training text; the held-out tenth is the rest of *The Taming of
the Shrew*, whose opening scenes are training text, and all of *The Tempest*, whose speakers the model has
never seen, and whose names the tokenizer splits into short pieces. The gap between training and validation
loss in the curve is overfitting to a 1 MB corpus. This is a demonstration model.

Scored as `samplecli score` does: a BOS token, then the text, sliding window of {config.n_positions} tokens
with stride {config.n_positions // 2}; {held['tokens']:,} tokens. To check it:

    samplecli score --file "$(python -c 'import samplecli.backends as m; print(m.BUNDLED_MODEL_DIR)')/held_out.txt"

(`held_out.txt` in this directory is exactly the last 10% of the corpus's characters.)

## Reproduce

    {command}
"""


if __name__ == "__main__":
    sys.exit(main())
