"""docs/why.md's questions, each answered by a command: every figure the answers quote is read again from a fresh
run of that command (docs/why.toml holds both, scripts/why_docs.py writes the page from them); `inspect --pair`
and `score`'s entropy checked against independent computations."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samplecli.analysis.pair import restrict, sigmoid, softplus
from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR
from samplecli.cli.app import app
from samplecli.stats import entropy_nats, kl_nats

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("why_docs", ROOT / "scripts" / "why_docs.py")
why_docs = importlib.util.module_from_spec(_spec)
sys.modules["why_docs"] = why_docs  # dataclasses look their module up there
_spec.loader.exec_module(why_docs)
SECTIONS = why_docs.load()
runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env=why_docs.ENV, prog_name="samplecli")


# --- docs/why.md: each section's command and the figures it quotes --------------------------------------------


def test_there_is_one_section_per_question():
    assert [s.id for s in SECTIONS] == ["temperature", "zero", "beam", "length", "tail", "multinomial", "sigmoid",
                                        "entropy"]
    for s in SECTIONS:
        assert s.figures, f"{s.id} quotes no figure"
        assert s.answer.count("\n\n") == 1, f"{s.id}'s answer should be two paragraphs"


@pytest.mark.parametrize("section", SECTIONS, ids=[s.id for s in SECTIONS])
def test_each_figure_the_docs_quote_is_what_its_command_prints(section):
    outputs = why_docs.run_all(section)
    assert why_docs.mismatches(section, outputs) == []
    page = (ROOT / "docs" / "why.md").read_text(encoding="utf-8")
    body = page[page.index(section.title):]
    for name, (_, value, _) in section.figures.items():
        assert value in body, f"docs/why.md does not quote {section.id}.{name} = {value!r}; rerun scripts/why_docs.py"
    for command in section.commands:
        assert f"$ {why_docs.shown_command(command)}" in body
    for output in outputs:  # each output whole, headers included, as the page shows it (speeds vary)
        assert speeds_blanked(output.strip()) in speeds_blanked(body), "rerun scripts/why_docs.py"


def speeds_blanked(text: str) -> str:
    import re

    return re.sub(r"\d+(\.\d+)? tok/s", "N tok/s", text)


# --- inspect --pair --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 30.0])
def test_softmax_over_a_pair_equals_the_sigmoid_of_the_logit_difference(scale):
    generator = torch.Generator().manual_seed(20)
    for _ in range(25):
        logits = torch.randn(2048, generator=generator) * scale
        a, b = torch.randint(0, 2048, (2,), generator=generator).tolist()
        if a == b:
            continue
        _, _, p_softmax, p_sigmoid = restrict(logits, a, b)
        assert abs(p_softmax - p_sigmoid) <= 1e-9
        assert abs(p_sigmoid - float(torch.sigmoid(logits[a].double() - logits[b].double()))) <= 1e-12


def test_the_bernoulli_in_exponential_family_form_is_the_sigmoid():
    for eta in (-40.0, -3.0, -1e-3, 0.0, 0.5, 7.0, 40.0):
        assert math.exp(eta * 1 - softplus(eta)) == pytest.approx(sigmoid(eta), rel=1e-12)
        assert math.exp(-softplus(eta)) == pytest.approx(sigmoid(-eta), rel=1e-12)  # p(y=0) = 1 - sigmoid(eta)


def _pair_json(*args: str) -> dict:
    result = invoke("inspect", "What say you to", "-f", "json", "--pair", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_pair_json_agrees_with_the_models_own_logits():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    doc = _pair_json(" do", " be")
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL_DIR).eval()
    ids = tokenizer("What say you to")["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    a, b = doc["a"]["token_id"], doc["b"]["token_id"]
    assert (tokenizer.decode([a]), tokenizer.decode([b])) == (" do", " be")
    eta = float(logits[a] - logits[b])
    assert doc["eta"] == pytest.approx(eta, abs=1e-4)
    assert abs(doc["p_softmax"] - doc["p_sigmoid"]) <= 1e-9
    assert doc["p_sigmoid"] == pytest.approx(1 / (1 + math.exp(-eta)), abs=1e-5)
    probs = torch.softmax(logits, -1)
    assert doc["p_softmax"] == pytest.approx(float(probs[a] / (probs[a] + probs[b])), abs=1e-5)
    assert doc["log_odds"] == pytest.approx(doc["eta"], abs=1e-9)
    assert doc["notes"] == [] and doc["chain"] is None


def test_pair_tokens_may_be_ids_or_text():
    by_text = _pair_json(" do", " be")
    by_ids = _pair_json(str(by_text["a"]["token_id"]), str(by_text["b"]["token_id"]))
    mixed = _pair_json(str(by_text["a"]["token_id"]), " be")
    assert by_text["p_sigmoid"] == by_ids["p_sigmoid"] == mixed["p_sigmoid"]
    assert (by_ids["a"]["token"], by_ids["b"]["token"]) == (" do", " be")


def test_a_pair_with_a_token_the_strategy_filters_says_so():
    doc = _pair_json(" do", " be", "--top-k", "1")
    assert doc["a"]["kept"] is True and doc["b"]["kept"] is False
    assert doc["strategy_p"] == 1.0
    assert len(doc["notes"]) == 1 and "filters ' be'" in doc["notes"][0]
    text = invoke("inspect", "What say you to", "--pair", " do", " be", "--top-k", "1")
    assert text.exit_code == 0
    assert "note: the strategy (logits -> top-k(1) -> sample) filters ' be' (id 305)" in text.stdout
    assert "p_A / (p_A + p_B) = " in text.stdout and "sigmoid(eta)" in text.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--pair", " do"], "Option '--pair' requires 2 arguments"),
    (["--pair", " do", " do"], "--pair: A and B are the same token (' do')"),
    (["--pair", "382", " do"], "--pair: both tokens are id 382 (' do')"),
    (["--pair", " do", "xyzzyq"], "--pair 'xyzzyq': the tokenizer makes 6 tokens of it"),
    (["--pair", " do", "5000"], "--pair: token id 5000 is outside the model's vocabulary (2048 tokens)"),
    (["--pair", " do", ""], "--pair '': a token may not be empty"),
    (["--pair", " do", " be", "--temps", "1,2"], "--pair shows only the pair; it does not combine with --temps"),
])
def test_bad_pairs_are_one_clear_line(args, message):
    result = invoke("inspect", "What say you to", *args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --- score: the model's entropy next to the cross-entropy ------------------------------------------------------


def test_score_entropy_is_the_mean_of_the_models_per_position_entropies():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "KING RICHARD II:\nWhat say you to this, my lord? I will not be so.\n"
    result = invoke("score", text, "-f", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL_DIR).eval()
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    p = logp.exp()
    entropies = -(p * logp).sum(-1)  # one per scored position, computed here without samplecli
    targets = torch.tensor(ids[1:])
    surprisal = -logp.gather(-1, targets[:, None])[:, 0]
    assert doc["tokens"] == len(ids) - 1
    assert doc["entropy_per_token"] == pytest.approx(float(entropies.mean()), abs=1e-6)
    assert doc["ce_minus_entropy"] == pytest.approx(float(surprisal.mean() - entropies.mean()), abs=1e-6)
    top40 = torch.topk(p, 40, dim=-1).values.sum(-1)
    assert doc["tail40_mass_per_token"] == pytest.approx(float((1 - top40).mean()), abs=1e-6)
    ranks = (logp > logp.gather(-1, targets[:, None])).sum(-1) + 1
    assert doc["outside_top40_tokens"] == int((ranks > 40).sum())
    table = invoke("score", text)
    assert f"= mean entropy {doc['entropy_per_token']:.4f} + (CE - H)" in table.stdout


def test_cross_entropy_is_entropy_plus_kl_on_four_tokens():
    """The worked example in docs/why.md: p = (1/2, 1/4, 1/8, 1/8) against the uniform q, in bits 2 = 1.75 + 0.25."""
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    q = torch.full((4,), 0.25, dtype=torch.float64)
    h = float(entropy_nats(p.log()))
    kl = float(kl_nats(p, q.log()))
    ce = float(-(p * q.log()).sum())
    assert (h / math.log(2), kl / math.log(2), ce / math.log(2)) == pytest.approx((1.75, 0.25, 2.0), abs=1e-12)
    assert ce == pytest.approx(h + kl, abs=1e-12)
    assert (f"{h:.4f}", f"{kl:.4f}", f"{ce:.4f}") == ("1.2130", "0.1733", "1.3863")
    assert "1.2130 + 0.1733 = 1.3863 nats" in (ROOT / "docs" / "why.md").read_text(encoding="utf-8")
