"""The bundled model's training script, run for a few steps on a small slice so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tests.conftest import TINY_TEXT

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_default_model.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("train_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("train")
    corpus = root / "corpus.txt"
    corpus.write_text(TINY_TEXT * 6, encoding="utf-8")
    out = root / "model"
    argv = [str(corpus), "--out", str(out), "--vocab-size", "300", "--n-layer", "1", "--n-embd", "32",
            "--n-head", "2", "--block-size", "32", "--batch-size", "4", "--steps", "6", "--eval-every", "3",
            "--warmup-steps", "2", "--ema", "0.5"]
    assert module.main(argv) == 0
    return module, corpus, out


def test_it_writes_a_standard_model_directory_with_a_model_card(trained):
    _, _, out = trained
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "README.md", "training.json", "held_out.txt"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    for needed in ("public domain", "parameters", "Held-out cross-entropy", "nats/char", "Reproduce",
                   "scripts/train_default_model.py", "| step |"):
        assert needed in card, needed


def test_the_held_out_split_is_the_last_tenth_of_the_characters(trained):
    module, _, _ = trained
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, validation, held_out = module.split_corpus(text, 0.05, 0.80)
    assert held_out == text[900:]
    assert validation == text[800:850]
    assert train == [text[:800], text[850:900]]
    assert module.split_corpus(text, 0.05, 0.85)[0] == [text[:850]]
    with pytest.raises(SystemExit, match="--val-start 0.88"):
        module.split_corpus(text, 0.05, 0.88)


def test_the_reported_held_out_figure_is_what_samplecli_score_computes(trained):
    from samplecli.analysis.scoring import score
    from samplecli.backends.torch_lm import load

    module, corpus, out = trained
    stats = json.loads((out / "training.json").read_text())
    _, _, held_out = module.split_corpus(corpus.read_text(encoding="utf-8"), 0.05, 0.80)
    result = score(load(str(out), device="cpu"), held_out)
    assert math.isclose(result.nats_per_char, stats["held_out"]["nats_per_char"], rel_tol=1e-6)
    assert result.tokens == stats["held_out"]["tokens"]


def test_training_lowers_the_loss_and_keeps_the_best_checkpoint(trained):
    _, _, out = trained
    stats = json.loads((out / "training.json").read_text())
    curve = stats["curve"]
    assert [c["step"] for c in curve] == [3, 6]
    candidates = [(c[key], c["step"], weights) for c in curve for key, weights in
                  (("val_loss", "raw"), ("ema_val_loss", "ema"))]
    _, step, weights = min(candidates)
    assert (stats["best_step"], stats["best_weights"]) == (step, weights)
    assert curve[-1]["train_loss"] < math.log(300)  # better than uniform over the vocabulary


def test_the_kept_weights_are_the_ones_whose_validation_loss_was_lowest(trained):
    """Raw and moving-average weights both compete; what is saved scores exactly the winning figure."""
    from samplecli.backends.torch_lm import load

    module, corpus, out = trained
    stats = json.loads((out / "training.json").read_text())
    lm = load(str(out), device="cpu")
    _, validation, _ = module.split_corpus(corpus.read_text(encoding="utf-8"), 0.05, 0.80)
    loss = module.mean_loss(lm.model, module.encode(lm.tokenizer, validation), 32, 4, 0)
    best = min(min(c["val_loss"], c["ema_val_loss"]) for c in stats["curve"])
    assert math.isclose(loss, best, rel_tol=1e-5)
    assert "validation loss, EMA weights" in (out / "README.md").read_text()


def test_a_draft_reuses_the_tokenizer_it_is_given(trained, tmp_path):
    module, corpus, out = trained
    draft = tmp_path / "draft"
    argv = [str(corpus), "--out", str(draft), "--tokenizer", str(out), "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--block-size", "32", "--batch-size", "4", "--steps", "2", "--eval-every", "2",
            "--warmup-steps", "1", "--ema", "0"]
    assert module.main(argv) == 0
    from transformers import AutoTokenizer

    ours, theirs = AutoTokenizer.from_pretrained(draft), AutoTokenizer.from_pretrained(out)
    assert ours.get_vocab() == theirs.get_vocab()
    assert json.loads((draft / "config.json").read_text())["vocab_size"] == len(theirs)
