"""What a constraint's mask costs per step, at real vocabulary sizes, for the two automaton libraries that fit samplecli
(issue #29): llguidance (what samplecli uses: JSON schema, regex, Lark and GBNF) and outlines-core (regex and JSON
schema only), against the step it constrains.

    python scripts/bench_constrain.py                 # V = 2,048 (the bundled tokenizer) and 151,936 (grown)
    python scripts/bench_constrain.py --sizes tiny    # seconds: what the test suite runs

Each tokenizer family is measured: byte-level BPE (the bundled tokenizer grown with filler tokens, as
`bench_vocab.py` grows it) and SentencePiece (`▁` pieces and byte fallback, grown alike). A mask is measured at every
state of one fixed sentence of the language (the JSON schema's and the regex's), so its cost is an average over real
states, not the start's alone. "samplecli stage" is the whole `json-schema` stage per step: llguidance's bitmask,
unpacked, the logits masked, the mass inside and its count; the library columns are the mask alone. "the step" is
the least any model of that vocabulary pays per token: its output layer, one row of hidden 896 (Qwen2-0.5B's) times
the V x 896 embedding, one thread. Medians in µs; nothing is asserted about them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "role": {"enum": ["king", "queen", "fool"]}},
          "required": ["name", "age", "role"], "additionalProperties": False}
SENTENCE = '{"name": "Romeo", "age": 16, "role": "fool"}'
REGEX = r"[A-Z][a-z]+ (and|or) [a-z]+\."
REGEX_SENTENCE = "Romeo and juliet."
HIDDEN = 896


def grown_sentencepiece(vocab_size: int):
    """A SentencePiece-style tokenizer (`▁` pieces, `<0x..>` byte fallback) of `vocab_size` tokens: the bundled
    tokenizer's pieces with `Ġ` written `▁`, then filler pieces, as `bench_peers.grown_tokenizer` grows a BPE."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR

    base = json.loads((BUNDLED_MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))])}
    for piece in sorted(base, key=base.get):
        if all(ch.isascii() or ch == "Ġ" for ch in piece):
            vocab.setdefault(piece.replace("Ġ", "▁"), len(vocab))
    letters = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    i = 0
    while len(vocab) < vocab_size:
        piece = "▁" + letters[i % 94] + letters[(i // 94) % 94] + letters[(i // 94 ** 2) % 94]
        vocab.setdefault(piece, len(vocab))
        i += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tokenizer(family: str, vocab_size: int):
    from bench_peers import grown_tokenizer
    from transformers import AutoTokenizer

    from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR

    if family == "byte-level BPE":
        return AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR) if vocab_size == 2048 else \
            grown_tokenizer(vocab_size)[0]
    return grown_sentencepiece(vocab_size)


def sentence_ids(vocab, size: int, eos: int, sentence: str) -> list[int]:
    """The sentence's tokens as they read mid-sequence (a SentencePiece tokenizer's leading `▁` left out)."""
    from samplecli.strategies.languages import tokenizer_for

    return tokenizer_for(vocab, size, (eos,)).tokenize_bytes(sentence.encode("utf-8"))


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def samplecli_stage(vocab, size: int, eos: int, kind: str, value, sentence: str, runs: int) -> tuple[float, float]:
    """(seconds to build llguidance's tokenizer from samplecli's vocabulary, µs per step of the whole stage)."""
    from samplecli.strategies import TRANSFORMS
    from samplecli.strategies.languages import tokenizer_for

    started = time.perf_counter()
    tokenizer_for(vocab, size, (eos,))
    built = time.perf_counter() - started
    stage = TRANSFORMS[kind](**{kind.replace("-", "_"): value})
    stage.bind_vocabulary(vocab, size, (eos,))
    ids = sentence_ids(vocab, size, eos, sentence)
    logits = torch.randn(1, size, generator=torch.Generator().manual_seed(size)) * 4
    times = []
    for _ in range(runs):
        stage.reset(1)
        for token in ids:
            started = time.perf_counter()
            stage(logits, None)
            times.append(time.perf_counter() - started)
            stage.accept(torch.tensor([token]), logits)
    return built, median_us(times)


def llguidance_mask(vocab, size: int, eos: int, grammar: str, sentence: str, runs: int) -> float:
    """µs per mask (the bitmask alone) along the sentence."""
    import llguidance as llg

    from samplecli.strategies.languages import tokenizer_for

    ids = sentence_ids(vocab, size, eos, sentence)
    times = []
    for _ in range(runs):
        matcher = llg.LLMatcher(tokenizer_for(vocab, size, (eos,)), grammar, log_level=0)
        for token in ids:
            started = time.perf_counter()
            matcher.compute_bitmask()
            times.append(time.perf_counter() - started)
            matcher.consume_token(token)
    return median_us(times)


def outlines_mask(vocab, size: int, eos: int, regex: str, sentence: str, runs: int) -> tuple[float, float] | None:
    """(seconds to build the index, µs per mask) with outlines-core, or None where it is not installed."""
    try:
        import outlines_core
    except ImportError:
        return None
    special = set(vocab.special) | {eos}
    table: dict[bytes, list[int]] = {}
    for i in range(size):
        if i not in special:
            table.setdefault(bytes(vocab.bytes(i)), []).append(i)
    started = time.perf_counter()
    index = outlines_core.Index(regex, outlines_core.Vocabulary(eos, table))
    built = time.perf_counter() - started
    ids = sentence_ids(vocab, size, eos, sentence)
    mask = torch.zeros((size + 31) // 32, dtype=torch.int32)
    times = []
    for _ in range(runs):
        guide = outlines_core.Guide(index)
        for token in ids:
            started = time.perf_counter()
            guide.write_mask_into(mask.data_ptr(), mask.numel(), 4)
            times.append(time.perf_counter() - started)
            guide.advance(token)
    return built, median_us(times)


def output_layer_us(size: int, runs: int) -> float:
    embedding = torch.randn(size, HIDDEN) * 0.02
    hidden = torch.randn(1, HIDDEN)
    torch.matmul(hidden, embedding.T)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        torch.matmul(hidden, embedding.T)
        times.append(time.perf_counter() - started)
    return median_us(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("full", "tiny"), default="full")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import llguidance as llg

    from samplecli.backends.vocabulary import HFVocabulary
    from samplecli.strategies.languages import JSON_LAYOUT

    sizes = (2048,) if args.sizes == "tiny" else (2048, 151936)
    runs = 2 if args.sizes == "tiny" else 20
    json_grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA), defaults=JSON_LAYOUT)
    regex_grammar = llg.LLMatcher.grammar_from_regex(REGEX)
    try:
        from outlines_core.json_schema import build_regex_from_schema
        json_regex = build_regex_from_schema(json.dumps(SCHEMA), whitespace_pattern=r"[ ]?")
    except ImportError:
        json_regex = None
    lines = ["## The constraint's mask per step (µs, median over every state of one sentence)", "",
             "| tokenizer | V | language | samplecli stage | llguidance mask | outlines-core mask | the step's output "
             "layer | llguidance tokenizer built (s) | outlines-core index built (s) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for family in ("byte-level BPE", "SentencePiece"):
        for size in sizes:
            hf = tokenizer(family, size)
            vocab = HFVocabulary(hf, size)
            eos = hf.eos_token_id
            layer = output_layer_us(size, runs * 10)
            for language, kind, value, grammar, regex, sentence in (
                    ("JSON schema", "json-schema", json.dumps(SCHEMA), json_grammar, json_regex, SENTENCE),
                    ("regex", "regex", REGEX, regex_grammar, REGEX, REGEX_SENTENCE)):
                built, stage = samplecli_stage(vocab, size, eos, kind, value, sentence, runs)
                mask = llguidance_mask(vocab, size, eos, grammar, sentence, runs)
                outlines = outlines_mask(vocab, size, eos, regex, sentence, runs) if regex is not None else None
                lines.append(f"| {family} | {size:,} | {language} | {stage:,.0f} | {mask:,.0f} | "
                             f"{f'{outlines[1]:,.0f}' if outlines else '–'} | {layer:,.0f} | {built:.2f} | "
                             f"{f'{outlines[0]:.2f}' if outlines else '–'} |")
    lines.append("")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
