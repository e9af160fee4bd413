"""`score --against`: two models teacher-forced over one text, and llama.cpp's KL-divergence statistics of them.

A model against itself parts nowhere (KL 0 exactly); two random-init models' statistics equal a direct float64
computation over their whole logits; the bundled model against its own f32 GGUF agrees on the top token nearly
everywhere, and its quantized GGUFs part from it in the order of their precision (f16 < q8_0 < q4_0); a pair that
cannot be compared is refused in one line before any forward pass."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from samplecli.analysis.divergence import aligned_rows, departures, diverge, diverge_many, summarize
from samplecli.analysis.scoring import token_nats
from samplecli.backends import BUNDLED_MODEL_DIR, open_backend
from samplecli.cli import app
from samplecli.views.divergence import show_divergence
from tests.conftest import TINY_TEXT, build_tiny_model, one_line_error, usage_error
from tests.llama_server import llama_cpp_module
from tests.test_screens import compare_snapshot

ONE_WINDOW = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun."
HELD_OUT = (BUNDLED_MODEL_DIR / "held_out.txt").read_text(encoding="utf-8")[:6000]
NEAR_TIE = 2e-2  # two logits closer than this may swap order between torch and llama.cpp (tests/test_gguf.py)


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """Two random-init GPT-2s (seeds 0 and 1) with one tokenizer (trained on the same text)."""
    a = build_tiny_model(tmp_path_factory.mktemp("tiny-a"), seed=0)
    b = build_tiny_model(tmp_path_factory.mktemp("tiny-b"), seed=1)
    return a, b


@pytest.fixture(scope="module")
def tiny_lms(tiny_pair):
    return tuple(open_backend(str(path), device="cpu") for path in tiny_pair)


def test_a_model_against_itself_parts_nowhere(tiny_pair, tiny_lms):
    a = tiny_lms[0]
    d = diverge(a, open_backend(str(tiny_pair[0]), device="cpu"), TINY_TEXT)  # loaded twice: two models
    s = summarize(d)
    assert d.tokens > 64  # more than one window
    assert torch.equal(d.kl, torch.zeros_like(d.kl)) and s.kl.mean == 0.0 and s.kl_percentiles["max"] == 0.0
    assert s.same_top.mean == 1.0 and s.delta_p.mean == 0.0 and s.ppl_ratio == 1.0


def direct(a, b, text: str) -> dict[str, np.ndarray]:
    """The per-position numbers from each model's whole logits at once, in float64, by the definitions."""
    ids = [a.bos_token_id, *a.vocab.encode(text, add_special_tokens=False)]
    assert len(ids) <= a.context_length  # one window: every position sees the whole text before it
    la = torch.log_softmax(a.logits(ids)[:-1].double(), -1).numpy()
    lb = torch.log_softmax(b.logits(ids)[:-1].double(), -1).numpy()
    targets = np.array(ids[1:])
    rows = np.arange(len(targets))
    pa = np.exp(la)
    return {"kl": (pa * (la - lb)).sum(-1), "nats_a": -la[rows, targets], "nats_b": -lb[rows, targets],
            "same": (la.argmax(-1) == lb.argmax(-1)).astype(float)}


def test_the_statistics_equal_a_direct_float64_computation_on_two_random_init_models(tiny_lms):
    a, b = tiny_lms
    want = direct(a, b, ONE_WINDOW)
    s = summarize(diverge(a, b, ONE_WINDOW))
    n = len(want["kl"])
    delta_p = np.exp(-want["nats_b"]) - np.exp(-want["nats_a"])
    close = dict(rel=0, abs=1e-9)
    assert s.tokens == n
    assert s.kl.mean == pytest.approx(want["kl"].mean(), **close) and s.kl.mean > 0.01
    assert s.kl.error == pytest.approx(want["kl"].std(ddof=1) / math.sqrt(n), **close)
    for point in ("50", "90", "99", "99.9"):
        assert s.kl_percentiles[point] == pytest.approx(np.percentile(want["kl"], float(point)), **close)
    assert s.kl_percentiles["max"] == pytest.approx(want["kl"].max(), **close)
    assert s.delta_p.mean == pytest.approx(delta_p.mean(), **close)
    assert s.delta_p.error == pytest.approx(delta_p.std(ddof=1) / math.sqrt(n), **close)
    assert s.delta_p_rms == pytest.approx(np.sqrt((delta_p ** 2).mean()), **close)
    for point in ("1", "10", "50", "90", "99"):
        assert s.delta_p_percentiles[point] == pytest.approx(np.percentile(delta_p, float(point)), **close)
    assert (s.delta_p_percentiles["min"], s.delta_p_percentiles["max"]) == pytest.approx(
        (delta_p.min(), delta_p.max()), **close)
    assert s.same_top.mean == pytest.approx(want["same"].mean(), **close)
    assert s.nats_per_token_a == pytest.approx(want["nats_a"].mean(), **close)
    assert s.nats_per_token_b == pytest.approx(want["nats_b"].mean(), **close)
    assert s.ppl_ratio == pytest.approx(math.exp(want["nats_b"].mean() - want["nats_a"].mean()), rel=1e-12)


def test_over_sliding_windows_each_models_surprisal_is_what_score_gives_it(tiny_lms):
    a, b = tiny_lms
    d = diverge(a, b, TINY_TEXT, stride=20)
    ids = torch.tensor(d.ids)
    assert torch.equal(d.nats_a, token_nats(a, ids, d.context, 20))
    assert torch.equal(d.nats_b, token_nats(b, ids, d.context, 20))


def test_streams_cut_into_different_pieces_are_aligned_position_by_position():
    rows = torch.arange(10.0).unsqueeze(-1)
    a = iter([(1, rows[:4]), (5, rows[4:])])
    b = iter([(1, rows[:3]), (4, rows[3:7]), (8, rows[7:])])
    c = iter([(1, rows)])
    aligned = list(aligned_rows(a, b, c))
    assert [first for first, _ in aligned] == [1, 4, 5, 8]
    assert all(torch.equal(x, y) and torch.equal(x, z) for _, (x, y, z) in aligned)
    assert torch.equal(torch.cat([x for _, (x, _, _) in aligned]), rows)


def test_several_models_against_one_give_what_each_pair_gives_alone(tiny_pair, tiny_lms):
    a, b = tiny_lms
    again = open_backend(str(tiny_pair[0]), device="cpu")
    together = diverge_many(a, [b, again], TINY_TEXT, stride=20)
    for alone, other in zip(together, (b, again), strict=True):
        pair = diverge(a, other, TINY_TEXT, stride=20)
        for name in ("kl", "nats_a", "nats_b", "top_a", "top_b"):
            assert torch.equal(getattr(alone, name), getattr(pair, name)), name


def test_the_departures_are_the_largest_kl_with_the_text_around_them(tiny_lms):
    a, b = tiny_lms
    d = diverge(a, b, ONE_WINDOW)
    shown = departures(d, lambda ids: a.vocab.decode(ids, skip_special_tokens=False), count=5)
    assert [x.kl for x in shown] == sorted(d.kl.tolist(), reverse=True)[:5]
    for x in shown:
        assert x.before + x.token + x.after in ONE_WINDOW
        assert x.top_a[0][1] >= x.top_a[1][1] and len(x.top_b) == 3


def test_models_with_different_tokenizers_are_refused_before_any_forward_pass(tiny_pair, tmp_path, monkeypatch):
    other = open_backend(str(build_tiny_model(tmp_path / "other", vocab_size=280)), device="cpu")
    a = open_backend(str(tiny_pair[0]), device="cpu")

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass before the refusal")

    monkeypatch.setattr(a, "logit_chunks", forward)
    usage_error(lambda: diverge(a, other, ONE_WINDOW), "--against", "280", "same tokenizer")
    line = one_line_error(cli("score", ONE_WINDOW, "-m", str(tiny_pair[0]), "--against", str(tmp_path / "other")),
                          "--against", "same tokenizer")
    assert "vocabulary has 280 tokens" in line


def test_a_server_that_returns_its_top_n_is_refused_with_the_way_out(remote_top, local):
    usage_error(lambda: diverge(local, remote_top, ONE_WINDOW), "--against", "top 20", "--full-distribution")


def test_bad_against_inputs_are_one_line(tiny_pair):
    model = str(tiny_pair[0])
    one_line_error(cli("score", ONE_WINDOW, "-m", model, "--against", model, "--top-k", "5"), "--against",
                   "sampling settings")
    one_line_error(cli("score", ONE_WINDOW, "-m", model, "--against", model, "--against", model, "-f", "html"),
                   "--format html", "one --against")
    one_line_error(cli("score", ONE_WINDOW, "-m", model, "--against", "/no/such/model"), "/no/such/model")


def test_score_against_as_json_and_per_token_jsonl(tiny_pair):
    a, b = (str(p) for p in tiny_pair)
    result = cli("score", ONE_WINDOW, "-m", a, "--against", b, "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["tokens"] > 10 and 0 <= document["same_top"]["mean"] <= 1
    assert set(document["kl"]["percentiles"]) == {"50", "90", "99", "99.9", "max"}
    assert len(document["departures"]) == 10 and document["departures"][0]["kl"] == document["kl"]["percentiles"]["max"]
    result = cli("score", ONE_WINDOW, "-m", a, "--against", b, "--per-token")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == document["tokens"]
    assert all(r["delta_p"] == pytest.approx(r["prob_against"] - r["prob"], abs=1e-15) for r in records)
    assert sum(r["kl"] for r in records) / len(records) == pytest.approx(document["kl"]["mean"], rel=1e-12)
    assert "KL(A‖B)" in result.stderr


@pytest.mark.parametrize("width", [80, 120])
def test_the_terminal_report_fits_and_matches_its_reviewed_snapshot(tiny_lms, width):
    a, b = tiny_lms
    d = diverge(a, b, ONE_WINDOW)
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    show_divergence(console, summarize(d), departures(d, lambda ids: a.vocab.decode(ids, skip_special_tokens=False)),
                    model_a="tiny seed 0", model_b="tiny seed 1", characters=d.characters, context=d.context,
                    stride=d.stride, token_text=a.vocab.text)
    shown = console.file.getvalue()
    assert all(len(line) <= width for line in shown.splitlines()) and "…" not in shown
    compare_snapshot(f"score_against_{width}.txt", shown)


@pytest.fixture(scope="module")
def quantized():
    build = llama_cpp_module()
    return {kind: open_backend(str(build.gguf_model(outtype=kind))) for kind in ("f32", "f16", "q8_0", "q4_0")}


@pytest.mark.needs_llama_cpp
def test_the_bundled_model_against_its_f32_gguf_agrees_on_the_top_token_but_at_near_ties(local, quantized):
    """Measured over these 2,247 tokens: mean KL 7.9e-7, same top token 99.91% (2 positions). llama.cpp's GPT-2
    uses the tanh GELU (~4e-3 on a logit), so the top token may differ only where torch's first two nearly tie."""
    d = diverge(local, quantized["f32"], HELD_OUT)
    s = summarize(d)
    assert s.same_top.mean >= 0.998 and s.kl.mean < 1e-5 and s.kl_percentiles["max"] < 1e-3
    for i in torch.nonzero(~d.same_top).flatten().tolist():
        first, second = d.top_prob_a[i, 0].item(), d.top_prob_a[i, 1].item()
        assert math.log(first / second) < NEAR_TIE and int(d.top_b[i, 0]) == int(d.top_a[i, 1])


@pytest.mark.needs_llama_cpp
def test_the_quantized_ggufs_part_from_the_model_in_the_order_of_their_precision(quantized):
    """Measured against the f32 GGUF on these 2,247 tokens (against torch: f16 9.1e-7, q8_0 1.1e-4, q4_0 4.0e-3)."""
    kl = {kind: summarize(diverge(quantized["f32"], quantized[kind], HELD_OUT)).kl for kind in ("f16", "q8_0", "q4_0")}
    assert kl["f16"].mean < kl["q8_0"].mean < kl["q4_0"].mean
    # apart by more than their errors: the order is not the text's chance
    assert kl["q8_0"].mean - kl["f16"].mean > 3 * (kl["q8_0"].error + kl["f16"].error)
    assert kl["q4_0"].mean - kl["q8_0"].mean > 3 * (kl["q4_0"].error + kl["q8_0"].error)



def compare_json(*args: str) -> dict:
    result = cli("compare", "ROMEO:", "-n", "12", "--num-samples", "3", "--seed", "7", "-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_compare_against_makes_the_models_columns_each_what_it_draws_alone_with_the_seed(tiny_pair):
    a, b = (str(p) for p in tiny_pair)
    both = compare_json("-m", a, "--against", b, "-s", "top-p=0.9")
    assert [s["label"] for s in both["strategies"]] == [a, b] and both["models"] == [a, b]
    for model, section in zip((a, b), both["strategies"], strict=True):
        alone = compare_json("-m", model, "-s", "top-p=0.9")["strategies"][0]
        assert section["token_ids"] == alone["token_ids"]
    assert both["strategies"][0]["token_ids"] != both["strategies"][1]["token_ids"]  # two different models
    same = compare_json("-m", a, "--against", a, "-s", "top-p=0.9")  # coupled: one model twice draws alike
    assert same["strategies"][0]["token_ids"] == same["strategies"][1]["token_ids"]
    assert [s["label"] for s in same["strategies"]] == [f"{a} #1", f"{a} #2"]


def test_compare_against_refuses_what_it_cannot_couple_in_one_line(tiny_pair, tmp_path):
    a = str(tiny_pair[0])
    one_line_error(cli("compare", "ROMEO:", "-m", a, "--against", a, "-s", "greedy", "-s", "top-p=0.9"),
                   "--against", "one strategy", "2 are given")
    one_line_error(cli("compare", "ROMEO:", "-m", a, "--against", a, "-s", "greedy", "--no-coupled"),
                   "--no-coupled")
    other = build_tiny_model(tmp_path / "other", vocab_size=280)
    one_line_error(cli("compare", "ROMEO:", "-m", a, "--against", str(other), "-s", "greedy"), "same tokenizer")


def test_the_html_page_colours_the_text_by_kl_and_lists_where_the_models_part(tiny_pair, browser, tmp_path):
    from tests.test_html import open_clean

    a, b = (str(p) for p in tiny_pair)
    page = tmp_path / "against.html"
    written = cli("score", ONE_WINDOW, "-m", a, "--against", b, "-f", "html", "-o", str(page))
    assert written.exit_code == 0 and written.stdout == "", written.stderr
    report = json.loads(cli("score", ONE_WINDOW, "-m", a, "--against", b, "-f", "json", "--per-token").stdout)
    tab = open_clean(browser, page)
    shown = tab.evaluate("[...document.querySelectorAll('#text .tok')].map(t => t.dataset.kl)")
    assert [float(kl) for kl in shown] == pytest.approx([t["kl"] for t in report["per_token"]], rel=1e-5)
    listed = tab.evaluate("[...document.querySelectorAll('.worst a')].map(a => a.textContent)")
    assert listed == [f"position {d['position']}" for d in report["departures"]]
    tab.evaluate("document.querySelector('.worst a').click()")
    focused = int(tab.evaluate("document.activeElement.dataset.step"))
    assert report["per_token"][focused]["position"] == report["departures"][0]["position"]
    assert "KL" in tab.evaluate("document.getElementById('detail').textContent")


def test_at_a_real_vocabulary_the_streamed_windows_give_the_whole_windows_numbers(tiny_lm):
    """Two random-init Llamas at V = 151,936 (a 96-token context: the windows slide): every position's KL and
    surprisals, streamed a few rows at a time, equal those from each window's whole logits in float64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from samplecli.analysis.scoring import sliding_windows
    from samplecli.backends.torch_lm import LM

    def model(seed: int):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=151_936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=96,
                             bos_token_id=0, eos_token_id=0)
        return LM.of(LlamaForCausalLM(config).eval(), tiny_lm.tokenizer, f"llama seed {seed}")

    a, b = model(0), model(1)
    text = "To be, or not to be, that is the question: whether tis nobler in the mind to suffer. " * 3
    d = diverge(a, b, text, stride=40)
    assert d.context == 96 and d.tokens > 96
    kl, nats_a, nats_b = [], [], []
    for w in sliding_windows(len(d.ids), d.context, d.stride):
        window = d.ids[w.start : w.end]
        rows = slice(w.score_from - w.start - 1, w.end - w.start - 1)
        la = torch.log_softmax(a.logits(window).double(), -1)[rows]
        lb = torch.log_softmax(b.logits(window).double(), -1)[rows]
        targets = torch.tensor(d.ids[w.score_from : w.end]).unsqueeze(-1)
        kl.append((la.exp() * (la - lb)).sum(-1))
        nats_a.append(-la.gather(-1, targets).squeeze(-1))
        nats_b.append(-lb.gather(-1, targets).squeeze(-1))
    for ours, theirs in ((d.kl, kl), (d.nats_a, nats_a), (d.nats_b, nats_b)):
        assert torch.allclose(ours, torch.cat(theirs), rtol=0, atol=1e-6)  # pieces through the KV cache
    assert float(d.kl.min()) > 0
