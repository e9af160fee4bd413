"""Specification of `samplecli compare` (samplecli.analysis.compare, samplecli.views.compare and the command):
strategies
parsed from `-s` and presets, decoded in one coupled batch that equals the separate runs token for token,
with each column's marginal distribution intact, then measured and reported on stdout as text, JSON or
Markdown, on the tiny random-init GPT-2."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from samplecli.analysis import metrics
from samplecli.analysis.compare import (
    HOLTZMAN,
    Column,
    ColumnResult,
    collect,
    column_from_settings,
    column_metrics,
    divergence_step,
    human_metrics,
    parse_spec,
    reference_chunks,
)
from samplecli.cli import app
from samplecli.engine.decode import DecodeConfig, Done, Step, decode, encode_prompt
from samplecli.errors import UsageError
from samplecli.views.compare import HOLTZMAN_METRICS, METRICS
from tests.conftest import TINY_TEXT, one_line_error, with_output_bias

PROMPT = "ROMEO:"
ANSI = "\x1b["
runner = CliRunner()


# --- helpers ------------------------------------------------------------------------------------------------------


def spec(text: str):
    """The per-token strategy of a `-s` spec, built afresh (strategies carry per-run state)."""
    return parse_spec(text).strategy


def rows(events) -> dict[tuple[int, int], tuple[list[Step], Done]]:
    """Events by (column, sample): the row's steps in order and its Done."""
    steps: dict[tuple[int, int], list[Step]] = {}
    dones: dict[tuple[int, int], Done] = {}
    for event in events:
        key = (event.column, event.sample)
        if isinstance(event, Step):
            steps.setdefault(key, []).append(event)
        else:
            assert key not in dones, f"two Done events for {key}"
            dones[key] = event
    assert set(steps) == set(dones)
    return {key: (steps[key], dones[key]) for key in dones}


def assert_same_row(batched: tuple[list[Step], Done], alone: tuple[list[Step], Done], where: str) -> None:
    (b_steps, b_done), (a_steps, a_done) = batched, alone
    assert b_done.token_ids == a_done.token_ids, where
    assert (b_done.text, b_done.finish_reason, b_done.n_tokens) == (a_done.text, a_done.finish_reason,
                                                                    a_done.n_tokens), where
    assert b_done.logprob_sum == pytest.approx(a_done.logprob_sum, abs=1e-4), where
    assert [(s.step, s.token_id, s.text) for s in b_steps] == [(s.step, s.token_id, s.text) for s in a_steps], where
    for b, a in zip(b_steps, a_steps, strict=True):
        assert (b.prob, b.sampled_prob) == pytest.approx((a.prob, a.sampled_prob), abs=1e-5), where


def first_logits(lm, prompt_ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(torch.tensor([prompt_ids])).logits[0, -1].float()


def chi_square(counts: Counter, probs: torch.Tensor, n: int) -> tuple[float, int]:
    """Pearson's statistic over the tokens expected at least 5 times, the rest pooled in one bin; and its
    degrees of freedom. A count on a token of probability 0 makes it infinite."""
    expected = {t: float(p) * n for t, p in enumerate(probs.tolist()) if p > 0}
    if any(t not in expected for t in counts):
        return math.inf, 1
    big = [t for t, e in expected.items() if e >= 5]
    bins = [(counts[t], expected[t]) for t in big]
    rest_expected = sum(e for t, e in expected.items() if t not in big)
    if rest_expected > 0:
        bins.append((sum(c for t, c in counts.items() if t not in big), rest_expected))
    return sum((o - e) ** 2 / e for o, e in bins), max(1, len(bins) - 1)


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """The upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def set_bias(lm, bias: dict[int, float]):
    with torch.no_grad():
        lm.model.lm_head.bias.zero_()
        for token, value in bias.items():
            lm.model.lm_head.bias[token] = value
    return lm


@pytest.fixture(scope="module")
def biased_lm(tiny_model_dir):
    return with_output_bias(tiny_model_dir)


# Ten tokens made likely, in steps of half a nat: the raw distribution has a clear head and a long tail,
# so truncation strategies really differ and a chi-square test has well-filled bins.
PEAKED = {100 + k: 5.0 - 0.5 * k for k in range(10)}


# --- parse_spec: what -s accepts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "chain"), [
    ("greedy", "logits -> greedy"),
    ("sample", "logits -> sample"),
    ("top-p", "logits -> top-p(0.95) -> sample"),  # a named strategy takes its default
    ("min-p", "logits -> min-p(0.1) -> sample"),
    ("top-k:top_k=10", "logits -> top-k(10) -> sample"),  # name:key=value
    ("sample:temperature=0.5", "logits -> temperature(0.5) -> sample"),
    ("top-k=40", "logits -> top-k(40) -> sample"),  # a one-element chain
    ("top-p=0.9,temperature=0.8", "logits -> top-p(0.9) -> temperature(0.8) -> sample"),  # in the order given
    ("temperature=0.7,top-k=40", "logits -> temperature(0.7) -> top-k(40) -> sample"),
    ("top-k=5,greedy", "logits -> top-k(5) -> greedy"),  # a chain may end in its selector
])
def test_a_spec_is_a_named_strategy_or_a_chain_and_keeps_what_the_user_typed_as_its_label(text, chain):
    column = parse_spec(f" {text} ")
    assert (column.label, column.chain, column.search) == (text, chain, None)
    assert str(column.strategy) == chain


def test_a_beam_spec_is_a_search_column_with_its_settings():
    column = parse_spec("beam:num_beams=16")
    assert column.strategy is None
    assert column.search == {"strategy": "beam", "num_beams": 16}
    assert parse_spec("stochastic-beam:num_beams=4").search == {"strategy": "stochastic-beam", "num_beams": 4}
    assert parse_spec("beam:num_beams=4:length_penalty=0.5").search == {"strategy": "beam", "num_beams": 4,
                                                                          "length_penalty": 0.5}


def test_a_label_given_with_the_spec_replaces_the_spec_as_the_label():
    column = parse_spec("top-k=40", "top-k k=40")
    assert (column.label, column.chain) == ("top-k k=40", "logits -> top-k(40) -> sample")


@pytest.mark.parametrize(("text", "fragments"), [
    ("", ["-s", "empty"]),
    ("bogus", ["-s 'bogus'", "not a strategy name or a chain", "greedy", "top-p"]),
    ("top_p", ["-s 'top_p'", "did you mean `top-p`"]),
    ("top-k:foo", ["-s 'top-k:foo'", "key=value", "foo"]),
    ("top-k:top_k=", ["-s 'top-k:top_k='", "missing"]),
    ("top-k=abc", ["-s 'top-k=abc'", "top_k", "'abc'"]),
    ("top-k=-1", ["-s 'top-k=-1'", "top_k", "-1"]),
    ("top-p=2", ["-s 'top-p=2'", "top_p", "2"]),
    ("sample:foo=1", ["-s 'sample:foo=1'", "foo"]),
    ("top-k=3,bogus", ["-s 'top-k=3,bogus'", "bogus"]),
    ("greedy,top-k=3", ["-s 'greedy,top-k=3'", "nothing may follow"]),
    ("beam:num_beams=0", ["-s 'beam:num_beams=0'", "num-beams", "0"]),
    ("beam:bogus=3", ["-s 'beam:bogus=3'", "bogus"]),
])
def test_a_bad_spec_is_one_usage_error_naming_the_spec(text, fragments):
    with pytest.raises(UsageError) as error:
        parse_spec(text)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- column_from_settings: preset tables -------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "chain"), [
    ({"strategy": "greedy"}, "logits -> greedy"),
    ({"strategy": "sample"}, "logits -> sample"),
    ({"temperature": 0.9}, "logits -> temperature(0.9) -> sample"),
    ({"top_k": 40, "temperature": 0.7}, "logits -> temperature(0.7) -> top-k(40) -> sample"),  # flag order
    ({"chain": "top-k=40,temperature=0.7"}, "logits -> top-k(40) -> temperature(0.7) -> sample"),
    ({"temperature": 0}, "logits -> greedy"),
    ({}, "logits -> temperature(0.8) -> top-p(0.95) -> sample"),  # no setting: the default strategy
    ({"top_p": 0.9, "max_new_tokens": 50, "description": "x"}, "logits -> top-p(0.9) -> sample"),
])
def test_a_preset_table_becomes_a_column_with_the_chain_its_settings_compose(values, chain):
    column = column_from_settings("name", values)
    assert (column.label, column.chain, column.search) == ("name", chain, None)


def test_a_preset_table_with_beams_becomes_a_search_column_with_every_search_setting():
    column = column_from_settings("wide", {"num_beams": 4, "length_penalty": 0.5, "repetition_penalty": 1.2,
                                           "no_repeat_ngram_size": 3, "max_new_tokens": 9})
    assert column.strategy is None
    assert column.search == {"strategy": "beam", "num_beams": 4, "length_penalty": 0.5, "repetition_penalty": 1.2,
                             "no_repeat_ngram_size": 3}
    assert column_from_settings("s", {"strategy": "stochastic-beam"}).search == {"strategy": "stochastic-beam"}


def test_the_built_in_holtzman_preset_gives_the_papers_strategies():
    from samplecli.config.preset_files import load_preset

    preset = load_preset("holtzman")
    chains = {name: column_from_settings(name, {k: v.value for k, v in table.items()}).chain
              for name, table in preset.strategies.items()}
    assert chains == {
        "greedy": "logits -> greedy",
        "pure": "logits -> sample",
        "temperature-0.9": "logits -> temperature(0.9) -> sample",
        "top-k-40": "logits -> top-k(40) -> sample",
        "top-k-640": "logits -> top-k(640) -> sample",
        "top-k-40-t-0.7": "logits -> temperature(0.7) -> top-k(40) -> sample",
        "nucleus-0.95": "logits -> top-p(0.95) -> sample",
    }


def test_every_holtzman_spec_parses():
    columns = [parse_spec(text, label) for label, text in HOLTZMAN]
    assert [c.label for c in columns][:3] == ["greedy", "beam b=16", "pure sampling"]
    assert [c.search for c in columns if c.search] == [{"strategy": "beam", "num_beams": 16}]


# --- divergence_step ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "other", "step"), [
    ([1, 2, 3], [1, 2, 3], None),  # the same tokens: no divergence
    ([1, 2, 3], [9, 2, 3], 0),  # the first step that differs, counted from 0
    ([1, 2, 3], [1, 5, 3], 1),
    ([1, 2, 3], [1, 5, 6], 1),  # only the first difference counts
    ([1, 2, 3], [1, 2], 2),  # one stopped early: they diverge where the shorter one ends
    ([1, 2], [1, 2, 3], 2),
    ([], [], None),
    ([], [4], 0),
])
def test_divergence_step_is_the_first_step_where_the_texts_differ(reference, other, step):
    assert divergence_step(reference, other) == step


# --- the batched run equals the separate runs ----------------------------------------------------------------


# typical sampling, a penalty that reads each row's history, and a selector with per-row state (mirostat)
SAMPLING = ["top-k=40", "top-p=0.9,temperature=0.8", "min-p=0.1", "typical=0.95", "temperature=1.5",
            "repetition-penalty=1.3,top-k=20", "mirostat"]


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("specs", [
    ["greedy", "top-k=40", "top-p=0.9,temperature=0.8"],
    ["top-k=40", "greedy", "repetition-penalty=1.3,greedy"],
    SAMPLING,
], ids=["greedy-first", "greedy-between", "sampling-only"])
def test_each_column_of_a_batch_equals_its_strategy_run_alone_with_the_same_seed(tiny_lm, specs, num_samples):
    ids = encode_prompt(tiny_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=14, num_samples=num_samples, seed=5, top_n=3)
    batched = rows(decode(tiny_lm, [spec(s) for s in specs], ids, config))
    assert set(batched) == {(k, i) for k in range(len(specs)) for i in range(num_samples)}
    for k, text in enumerate(specs):
        alone = rows(decode(tiny_lm, spec(text), ids, config))
        for i in range(num_samples):
            assert_same_row(batched[k, i], alone[0, i], f"column {k} ({text}), sample {i}")
    first_tokens = {batched[k, 0][1].token_ids for k in range(len(specs))}
    assert len(first_tokens) > 1  # the columns really differ


def test_columns_that_stop_at_eos_at_different_times_equal_their_runs_alone(biased_lm):
    set_bias(biased_lm, {biased_lm.eos_token_ids[0]: 2.0})  # EOS is likely at every step, never certain
    specs = ["greedy", "sample", "temperature=0.7", "top-k=20", "top-p=0.9"]
    ids = encode_prompt(biased_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=16, num_samples=3, seed=11, top_n=0)
    batched = rows(decode(biased_lm, [spec(s) for s in specs], ids, config))
    for k, text in enumerate(specs):
        alone = rows(decode(biased_lm, spec(text), ids, config))
        for i in range(3):
            assert_same_row(batched[k, i], alone[0, i], f"column {k} ({text}), sample {i}")
    lengths = {done.n_tokens for _, done in batched.values()}
    reasons = {done.finish_reason for _, done in batched.values()}
    assert len(lengths) >= 3 and reasons == {"eos", "length"}  # rows really end at different times


def test_min_new_tokens_and_stop_strings_apply_in_the_batch_as_alone(biased_lm):
    set_bias(biased_lm, {biased_lm.eos_token_ids[0]: 3.5})  # greedy's argmax, and likely for the others
    specs = ["greedy", "sample", "top-k=20", "temperature=1.5"]
    ids = encode_prompt(biased_lm, PROMPT)
    free = rows(decode(biased_lm, [spec(s) for s in specs], ids, DecodeConfig(max_new_tokens=20, num_samples=2,
                                                                               seed=3, min_new_tokens=6)))
    assert all(done.n_tokens >= 7 or done.finish_reason == "length" for _, done in free.values())
    assert free[0, 0][1].n_tokens == 7 and free[0, 0][1].finish_reason == "eos"  # EOS as soon as it may
    stop = next(done.text[2:4] for _, done in free.values() if len(done.text) >= 6)
    config = DecodeConfig(max_new_tokens=20, num_samples=2, seed=3, min_new_tokens=6, stop=(stop,), top_n=0)
    batched = rows(decode(biased_lm, [spec(s) for s in specs], ids, config))
    for k, text in enumerate(specs):
        alone = rows(decode(biased_lm, spec(text), ids, config))
        for i in range(2):
            assert_same_row(batched[k, i], alone[0, i], f"column {k} ({text}), sample {i}")
    assert "stop" in {done.finish_reason for _, done in batched.values()}


def test_without_coupling_the_first_column_is_still_its_run_alone(tiny_lm):
    ids = encode_prompt(tiny_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=10, num_samples=2, seed=9, top_n=0)
    batched = rows(decode(tiny_lm, [spec("top-k=40"), spec("top-k=40")], ids, config, coupled=False))
    alone = rows(decode(tiny_lm, spec("top-k=40"), ids, config))
    for i in range(2):
        assert_same_row(batched[0, i], alone[0, i], f"sample {i}")
    # the same strategy twice, with generators of its own per column: the second column draws differently
    assert [batched[1, i][1].token_ids for i in range(2)] != [batched[0, i][1].token_ids for i in range(2)]


# --- coupled sampling keeps each column's distribution -----------------------------------------------------------


MARGINALS = ["sample", "temperature=0.7", "top-k=5", "top-p=0.3", "min-p=0.2", "greedy"]


@pytest.mark.parametrize("coupled", [True, False], ids=["coupled", "uncoupled"])
def test_each_columns_first_token_follows_its_own_strategys_distribution(biased_lm, coupled):
    set_bias(biased_lm, PEAKED)
    n = 600  # sample i draws from its own generator, seeded from (seed, i): 600 independent draws per column
    ids = encode_prompt(biased_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=1, num_samples=n, seed=2024, top_n=0, record=False)
    events = [e for e in decode(biased_lm, [spec(s) for s in MARGINALS], ids, config, coupled=coupled)
              if isinstance(e, Step)]
    logits, history = first_logits(biased_lm, ids).unsqueeze(0), torch.tensor([ids])
    expected = {text: spec(text).distribution(logits, history)[0] for text in MARGINALS}
    for k, text in enumerate(MARGINALS):
        counts = Counter(e.token_id for e in events if e.column == k)
        assert sum(counts.values()) == n
        stat, df = chi_square(counts, expected[text], n)
        assert stat < chi_square_critical(df), (text, stat, df)
        support = int((expected[text] > 0).sum())
        if text in ("top-k=5", "top-p=0.3", "min-p=0.2"):  # truncations keep a head, and the draws stay in it
            assert support < 40 and len(counts) <= support, (text, support)
    # the check has power: top-k=5's draws do not pass for pure sampling's distribution, nor the reverse
    top_k = Counter(e.token_id for e in events if e.column == MARGINALS.index("top-k=5"))
    pure = Counter(e.token_id for e in events if e.column == 0)
    assert chi_square(top_k, expected["sample"], n)[0] > chi_square_critical(chi_square(top_k, expected["sample"],
                                                                                         n)[1])
    assert chi_square(pure, expected["top-k=5"], n)[0] == math.inf


def inverse_cdf_overlap(p: torch.Tensor, q: torch.Tensor, order: torch.Tensor) -> float:
    """P(same token) when p and q are both sampled by inverse CDF with one shared uniform, the tokens laid
    out in `order`: the total overlap of the intervals [F(x-), F(x)) that each token gets under p and q."""
    zero = torch.zeros(1, dtype=torch.float64)
    f = torch.cat([zero, p[order].double().cumsum(0)])
    g = torch.cat([zero, q[order].double().cumsum(0)])
    return float((torch.minimum(f[1:], g[1:]) - torch.maximum(f[:-1], g[:-1])).clamp(min=0).sum())


@pytest.mark.parametrize("bias", [{}, {100 + k: 8.0 - 0.5 * k for k in range(10)}], ids=["flat", "clear-head"])
def test_coupled_columns_with_nearly_the_same_distribution_pick_the_same_token(biased_lm, bias):
    set_bias(biased_lm, bias)
    n = 500
    ids = encode_prompt(biased_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=1, num_samples=n, seed=77, top_n=0, record=False)
    specs = ["temperature=1.0", "temperature=1.01"]

    def agreement(coupled: bool) -> float:
        events = [e for e in decode(biased_lm, [spec(s) for s in specs], ids, config, coupled=coupled)
                  if isinstance(e, Step)]
        first = {(e.column, e.sample): e.token_id for e in events}
        return sum(first[0, i] == first[1, i] for i in range(n)) / n

    logits, history = first_logits(biased_lm, ids).unsqueeze(0), torch.tensor([ids])
    p, q = (spec(s).distribution(logits, history)[0].double() for s in specs)
    by_chance = float((p * q).sum())  # P(same token) for independent draws
    # coupled: the raw model's order (most probable first), one uniform for both columns
    overlap = inverse_cdf_overlap(p, q, torch.sort(logits[0], descending=True, stable=True).indices)
    assert overlap > 0.9 and by_chance < 0.3

    def close(rate: float, expected: float) -> bool:
        return abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 0.01

    coupled, uncoupled = agreement(True), agreement(False)
    assert close(coupled, overlap), (coupled, overlap)
    assert close(uncoupled, by_chance), (uncoupled, by_chance)
    assert coupled - uncoupled > 0.6


# --- collect, the measurements and the human row -----------------------------------------------------------------


def _done(sample: int, token_ids: list[int], logprob_sum: float, seconds: float = 1.0) -> Done:
    n = len(token_ids)
    return Done(sample=sample, text="", token_ids=tuple(token_ids), finish_reason="length", n_tokens=n,
                logprob_sum=logprob_sum, perplexity=math.exp(-logprob_sum / n), seconds=seconds,
                tokens_per_second=n / seconds, strategy="s", seed=0)


def _step(sample: int, entropy: float, sampled_entropy: float, kl: float) -> Step:
    return Step(sample=sample, step=0, token_id=1, token="a", text="a", bytes=(97,), logprob=-1.0, prob=0.3,
                sampled_prob=0.5, entropy=entropy, sampled_entropy=sampled_entropy, kept=3, kl=kl)


def test_column_metrics_are_the_metrics_of_the_columns_samples():
    result = ColumnResult(Column("c"), seconds=2.0)
    result.dones = {0: _done(0, [1, 2, 1, 2, 1, 2], -6.0), 1: _done(1, [3, 4, 5, 6], -2.0)}
    result.steps = {0: [_step(0, 2.0, 1.0, 0.5), _step(0, 4.0, 3.0, float("nan"))], 1: [_step(1, 3.0, 2.0, 1.5)]}
    values = column_metrics(result)
    assert values["samples"] == 2 and values["tokens"] == 10
    assert values["tokens_per_second"] == pytest.approx(10 / 2.0)
    assert values["mean_entropy_model"] == pytest.approx(3.0)  # (2 + 4 + 3) / 3
    assert values["mean_entropy_strategy"] == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    assert values["mean_kl_strategy_model"] == pytest.approx(1.0)  # (0.5 + 1.5) / 2: NaN is skipped
    assert values["logprob_sum"] == pytest.approx(-4.0)  # (-6 - 2) / 2
    # per-sample perplexities exp(6/6) = e and exp(2/4) = e^0.5, then their mean
    assert values["perplexity"] == pytest.approx((math.e + math.exp(0.5)) / 2)
    assert values["repetition"] == pytest.approx(0.5)  # (1 2) x 3 ends in a loop, 3 4 5 6 does not
    assert values["looped_fraction"] == 0.0  # (1 2) x 3 is 6 tokens: too short to be a loop in the text's share
    # 4-grams of 1 2 1 2 1 2: (1212) (2121) (1212): 1/3 repeated; 3 4 5 6: one 4-gram, none -> mean 1/6
    assert values["repeated_4gram_fraction"] == pytest.approx(1 / 6)
    assert values["distinct_1"] == pytest.approx(6 / 10)  # 1 2 3 4 5 6 of 10 tokens
    assert values["distinct_2"] == pytest.approx(5 / 8)  # (12) (21) | (34) (45) (56) of 5 + 3 bigrams
    assert values["self_bleu_4"] == pytest.approx(metrics.self_bleu([[1, 2, 1, 2, 1, 2], [3, 4, 5, 6]]))
    assert values["zipf"] == pytest.approx(metrics.zipf_coefficient([[1, 2, 1, 2, 1, 2], [3, 4, 5, 6]]))
    assert values["n_tokens_spread"] == pytest.approx(math.sqrt(2))  # 6 and 4
    assert values["logprob_sum_spread"] == pytest.approx(math.sqrt(8))  # -6 and -2
    assert values["repeated_4gram_fraction_spread"] == pytest.approx(math.sqrt(2) / 6)  # 1/3 and 0: sd 1/(3 sqrt 2)
    assert set(METRICS_KEYS) <= set(values)


METRICS_KEYS = [key for key, _, _ in METRICS]


def test_one_sample_has_no_self_bleu_and_no_spreads():
    result = ColumnResult(Column("c"), seconds=1.0)
    result.dones = {0: _done(0, [1, 2, 3], -3.0)}
    values = column_metrics(result)
    assert values["self_bleu_4"] is None
    assert not [key for key in values if key.endswith("_spread")]


def test_collect_puts_each_columns_events_in_its_own_result_beam_columns_included(tiny_lm):
    ids = encode_prompt(tiny_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=6, num_samples=2, seed=4, top_n=0)
    columns = [parse_spec("beam:num_beams=4"), parse_spec("greedy"), parse_spec("top-k=40")]
    seen: list[int] = []
    results = collect(tiny_lm, columns, ids, config, on_event=lambda index, event: seen.append(index))
    assert [r.column.label for r in results] == ["beam:num_beams=4", "greedy", "top-k=40"]
    assert sorted(Counter(seen)) == [0, 1, 2]
    batch = rows(decode(tiny_lm, [spec("greedy"), spec("top-k=40")], ids, config))
    for index, k in ((1, 0), (2, 1)):
        assert results[index].token_ids() == [list(batch[k, i][1].token_ids) for i in range(2)]
    assert all(r.seconds > 0 and sorted(r.dones) == [0, 1] for r in results)
    # the beam column returns min(num_samples, num_beams) sequences, best first, from its own loop
    assert [d.rank for d in results[0].dones.values()] == [0, 1]
    # its time is its own loop's, not the batch's before it
    assert results[0].seconds == pytest.approx(max(d.seconds for d in results[0].dones.values()))


def test_reference_chunks_are_evenly_spaced_spans_of_the_asked_length(tiny_lm):
    ids = tiny_lm.tokenizer(TINY_TEXT, add_special_tokens=False)["input_ids"]
    chunks = reference_chunks(tiny_lm, TINY_TEXT, 3, 10)
    assert len(chunks) == 3 and all(len(c) == 10 for c in chunks)
    assert chunks[0] == ids[:10] and chunks[-1] == ids[-10:]  # from the start to the end
    middle = round((len(ids) - 10) / 2)
    assert chunks[1] == ids[middle : middle + 10]
    with pytest.raises(UsageError, match="--reference"):
        reference_chunks(tiny_lm, "ROMEO:", 2, 10)


def test_the_human_row_scores_text_as_the_decode_loop_scores_generating_it_from_bos(tiny_lm):
    config = DecodeConfig(max_new_tokens=12, num_samples=2, seed=6, top_n=0)
    events = rows(decode(tiny_lm, spec("top-k=40"), [tiny_lm.bos_token_id], config))
    dones = [events[0, i][1] for i in range(2)]
    chunks = [list(d.token_ids) for d in dones]
    human = human_metrics(tiny_lm, chunks)
    assert human["samples"] == 2 and human["tokens"] == sum(len(c) for c in chunks)
    assert human["logprob_sum"] == pytest.approx(sum(d.logprob_sum for d in dones) / 2, abs=1e-3)
    assert human["perplexity"] == pytest.approx(sum(d.perplexity for d in dones) / 2, rel=1e-4)
    steps = [s for i in range(2) for s in events[0, i][0]]
    assert human["mean_entropy_model"] == pytest.approx(sum(s.entropy for s in steps) / len(steps), abs=1e-4)
    assert human["mean_entropy_strategy"] is None and human["mean_kl_strategy_model"] is None
    assert human["distinct_1"] == metrics.distinct_n(chunks, 1)
    assert human["self_bleu_4"] == metrics.self_bleu(chunks)


# --- the command ----------------------------------------------------------------------------------------------


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="samplecli")


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def compare_cli(model_dir, *args: str):
    return ok("compare", PROMPT, "--model", str(model_dir), *args)


def _no_nan(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def compare_json(model_dir, *args: str) -> dict:
    return json.loads(compare_cli(model_dir, "--format", "json", *args).stdout, parse_constant=_no_nan)


TWO = ("-s", "greedy", "-s", "top-k=40", "-n", "8", "--seed", "1")


def test_piped_the_report_has_a_plain_section_per_strategy_and_stderr_has_the_rest(tiny_model_dir):
    result = compare_cli(tiny_model_dir, *TWO)
    document = compare_json(tiny_model_dir, *TWO)
    out = result.stdout
    assert ANSI not in out and ANSI not in result.stderr
    assert out.startswith("prompt: 'ROMEO:'\nseed: 1\n")
    for section in document["strategies"]:
        start = out.index(f"== {section['label']} ==\n")
        body = out[start:].split("\n\n== ")[0]
        assert f"chain: {section['chain']}\n" in body
        assert f"-- text --\n{section['texts'][0]}\n" in body
        assert "-- metrics --\n" in body
        for _, header, _ in METRICS:
            assert f"\n{header}: " in body
    assert out.index("== greedy ==") < out.index("== top-k=40 ==")
    assert "diverges from the first column at step 0" in out  # top-k=40 leaves greedy at once (seed 1)
    assert document["strategies"][1]["diverges_at"] == 0
    # stderr: one header line naming the model, the counts, the seed and the coupling; no payload
    assert result.stderr.splitlines() == [f"{tiny_model_dir} · 2 strategies × 1 sample · seed 1 · coupled"]


def test_json_is_one_strict_document_with_each_strategys_spec_chain_texts_and_metrics(tiny_lm, tiny_model_dir):
    document = compare_json(tiny_model_dir, *TWO)
    assert {k: document[k] for k in ("prompt", "seed", "coupled", "num_samples", "max_new_tokens")} == {
        "prompt": PROMPT, "seed": 1, "coupled": True, "num_samples": 1, "max_new_tokens": 8}
    assert document["human"] is None  # no --reference, and not the bundled model
    greedy, top_k = document["strategies"]
    assert [greedy["label"], top_k["label"]] == ["greedy", "top-k=40"]  # the spec as typed
    assert [greedy["chain"], top_k["chain"]] == ["logits -> greedy", "logits -> top-k(40) -> sample"]
    # the columns are the strategies' own runs with the seed
    ids = encode_prompt(tiny_lm, PROMPT)
    config = DecodeConfig(max_new_tokens=8, seed=1, top_n=0)
    for section, text in ((greedy, "greedy"), (top_k, "top-k=40")):
        [(_, done)] = rows(decode(tiny_lm, spec(text), ids, config)).values()
        assert section["token_ids"] == [list(done.token_ids)] and section["texts"] == [done.text]
        values = section["metrics"]
        assert set(METRICS_KEYS) <= set(values)
        assert values["tokens"] == done.n_tokens and values["samples"] == 1
        assert values["logprob_sum"] == pytest.approx(done.logprob_sum, abs=1e-4)
        assert values["distinct_1"] == metrics.distinct_n(section["token_ids"], 1)
        assert values["self_bleu_4"] is None
    assert greedy["diverges_at"] is None
    assert top_k["diverges_at"] == divergence_step(greedy["token_ids"][0], top_k["token_ids"][0])


def test_markdown_is_the_metrics_table_with_one_row_per_strategy(tiny_model_dir):
    result = compare_cli(tiny_model_dir, *TWO, "--format", "markdown")
    header, rule, *body = result.stdout.splitlines()
    assert header == "| strategy | " + " | ".join(h for _, h, _ in METRICS) + " |"
    assert rule == "|---|" + "---:|" * len(METRICS)
    assert [line.split(" | ")[0] for line in body] == ["| greedy", "| top-k=40"]
    assert all(line.count("|") == len(METRICS) + 2 for line in body)
    assert ANSI not in result.stdout


def without_speed(report: str) -> str:
    """A report with its tokens/s (the one measurement that differs between two runs) blanked out."""
    report = re.sub(r'"tokens_per_second": [0-9.e+-]+', '"tokens_per_second": _', report)
    report = re.sub(r"(?m)^tok/s: .*$", "tok/s: _", report)
    return re.sub(r"(?m)^(\| [^|]+ \| [^|]+ \| )[0-9.]+ \|", r"\1_ |", report)  # the third column


@pytest.mark.parametrize("format", ["text", "json", "markdown"])
def test_output_writes_the_report_to_the_file_and_nothing_to_stdout(tiny_model_dir, tmp_path, format):
    path = tmp_path / f"report.{format}"
    result = compare_cli(tiny_model_dir, *TWO, "--format", format, "--output", str(path))
    assert result.stdout == ""
    assert "seed 1" in result.stderr
    written = path.read_text(encoding="utf-8")
    assert without_speed(written) == without_speed(compare_cli(tiny_model_dir, *TWO, "--format", format).stdout)
    assert without_speed(written) != written  # the speed was there, and blanked


def test_num_samples_gives_each_strategy_self_bleu_and_each_metrics_spread(tiny_model_dir):
    document = compare_json(tiny_model_dir, *TWO, "--num-samples", "3")
    assert document["num_samples"] == 3
    for section in document["strategies"]:
        values = section["metrics"]
        assert len(section["texts"]) == len(section["token_ids"]) == 3 and values["samples"] == 3
        assert values["self_bleu_4"] == pytest.approx(metrics.self_bleu(section["token_ids"]))
        for key in ("n_tokens_spread", "logprob_sum_spread", "perplexity_spread", "repeated_4gram_fraction_spread"):
            assert key in values
    greedy = document["strategies"][0]
    assert greedy["metrics"]["self_bleu_4"] == pytest.approx(1.0)  # greedy's three samples are one text
    assert greedy["metrics"]["logprob_sum_spread"] == pytest.approx(0.0, abs=1e-9)
    text = compare_cli(tiny_model_dir, *TWO, "--num-samples", "3").stdout
    assert all(f"-- sample {i} --" in text for i in range(3)) and "-- text --" not in text


def test_a_preset_with_strategy_tables_gives_one_column_per_table(tiny_model_dir, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "two"\n\n[strategies.cold]\ntemperature = 0.5\n\n'
                    '[strategies.wide]\ntop_k = 100\ntemperature = 1.2\n', encoding="utf-8")
    document = compare_json(tiny_model_dir, "--preset", str(path), "-n", "5", "--seed", "2")
    assert [(s["label"], s["chain"]) for s in document["strategies"]] == [
        ("mine/cold", "logits -> temperature(0.5) -> sample"),
        ("mine/wide", "logits -> temperature(1.2) -> top-k(100) -> sample")]
    # a preset without tables is one column, after the -s columns
    document = compare_json(tiny_model_dir, "-s", "top-p=0.5", "--preset", "greedy", "-n", "5", "--seed", "2")
    assert [(s["label"], s["chain"]) for s in document["strategies"]] == [
        ("top-p=0.5", "logits -> top-p(0.5) -> sample"), ("greedy", "logits -> greedy")]


def test_a_reference_file_adds_a_human_row_measured_the_same_way(tiny_model_dir, tmp_path):
    reference = tmp_path / "human.txt"
    reference.write_text(TINY_TEXT, encoding="utf-8")
    document = compare_json(tiny_model_dir, *TWO, "--num-samples", "2", "--reference", str(reference))
    human = document["human"]
    assert human["samples"] == 2 and human["tokens"] == 2 * 8  # chunks as long as the mean sample
    assert set(METRICS_KEYS) <= set(human)
    assert human["perplexity"] > 1 and human["mean_entropy_strategy"] is None
    markdown = compare_cli(tiny_model_dir, *TWO, "--reference", str(reference), "--format", "markdown").stdout
    assert [line.split(" | ")[0] for line in markdown.splitlines()[2:]] == ["| greedy", "| top-k=40", "| human"]
    text = compare_cli(tiny_model_dir, *TWO, "--reference", str(reference)).stdout
    assert "== human (reference text) ==" in text


def test_no_coupled_is_reported_and_leaves_the_first_column_alone(tiny_model_dir):
    args = ("-s", "top-k=40", "-s", "top-k=40", "-n", "8", "--seed", "3")
    coupled = compare_json(tiny_model_dir, *args)
    result = compare_cli(tiny_model_dir, *args, "--no-coupled", "--format", "json")
    uncoupled = json.loads(result.stdout)
    assert uncoupled["coupled"] is False and "coupled" not in result.stderr
    assert coupled["strategies"][0]["token_ids"] == uncoupled["strategies"][0]["token_ids"]
    assert coupled["strategies"][1]["token_ids"] == coupled["strategies"][0]["token_ids"]  # same draws
    assert uncoupled["strategies"][1]["token_ids"] != uncoupled["strategies"][0]["token_ids"]


def test_holtzman_runs_the_papers_strategies_and_prints_its_table(tiny_model_dir):
    result = compare_cli(tiny_model_dir, "--holtzman", "--num-samples", "2", "-n", "6", "--seed", "1",
                         "--format", "markdown")
    header, _, *body = result.stdout.splitlines()
    assert header == "| strategy | " + " | ".join(h for _, h, _ in HOLTZMAN_METRICS) + " |"
    assert [line.split(" | ")[0][2:] for line in body] == [label for label, _ in HOLTZMAN]
    document = compare_json(tiny_model_dir, "--holtzman", "-n", "6", "--seed", "1")
    assert document["num_samples"] == 8  # --holtzman's default
    beam = document["strategies"][1]
    assert beam["label"] == "beam b=16" and "num_beams=16" in beam["chain"]
    assert len(beam["texts"]) == 8 and beam["metrics"]["samples"] == 8
    assert all(s["metrics"]["self_bleu_4"] is not None for s in document["strategies"])


@pytest.mark.parametrize(("args", "fragments"), [
    ([], ["nothing to compare", "-s", "--preset", "--holtzman"]),
    (["-s", "bogus"], ["-s 'bogus'", "not a strategy name"]),
    (["-s", "greedy", "-s", "top-k=abc"], ["-s 'top-k=abc'", "top_k"]),
    (["-s", "beam:num_beams=0"], ["-s 'beam:num_beams=0'", "num-beams"]),
    (["-s", "greedy", "--num-samples", "0"], ["--num-samples", "0"]),
    (["-s", "greedy", "--num-samples", "abc"], ["--num-samples", "'abc' is not a valid integer"]),
    (["-s", "greedy", "-n", "0"], ["--max-new-tokens", "0"]),
    (["-s", "greedy", "--preset", "no-such-preset"], ["no-such-preset"]),
    (["-s", "greedy", "--reference", "MISSING"], ["--reference", "no such file"]),
], ids=["no-strategies", "unknown-spec", "bad-value", "bad-beam", "zero-samples", "word-samples", "zero-tokens",
        "unknown-preset", "missing-reference"])
def test_bad_input_is_one_line_and_a_usage_exit_before_the_model_loads(tmp_path, args, fragments):
    missing_model = tmp_path / "no-such-model"  # were the model loaded first, this would be the error
    args = [str(tmp_path / "missing.txt") if a == "MISSING" else a for a in args]
    line = one_line_error(invoke("compare", PROMPT, "--model", str(missing_model), *args), *fragments, code=2)
    assert str(missing_model) not in line


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_interrupted_compare_writes_the_report_of_every_token_so_far_said_to_be_partial(tiny_model_dir, tmp_path,
                                                                                            monkeypatch, fmt):
    """Ctrl-C (or SIGTERM) mid-run: the report of what was generated until then, each cut sample `interrupted`,
    then the one line and exit status 130. The run is stopped after a fixed number of events, not at a time."""
    import samplecli.analysis.compare as cmp

    real = cmp.run_columns

    def stopped_after_20_events(*args, **kwargs):
        for count, item in enumerate(real(*args, **kwargs)):
            if count == 20:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(cmp, "run_columns", stopped_after_20_events)
    out = tmp_path / f"report.{fmt}"
    result = CliRunner().invoke(app, ["compare", "ROMEO:", "-m", str(tiny_model_dir), "-s", "greedy", "-s",
                                      "top-k=40", "--num-samples", "2", "-n", "30", "--logit-bias=0=-inf",
                                      "--seed", "1", "-f", fmt, "-o", str(out)], prog_name="samplecli")
    assert result.exit_code == 130, (result.stderr, result.exception)
    assert result.stderr.splitlines()[-1] == "interrupted" and "partial" in result.stderr
    if fmt == "text":
        report = out.read_text(encoding="utf-8")
        assert "interrupted: partial report" in report and "== greedy ==" in report and "== top-k=40 ==" in report
        return
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["interrupted"] is True and document["human"] is None
    # 20 events: every sample of both columns began (coupled batches decode them side by side); none finished
    assert [s["metrics"]["samples"] for s in document["strategies"]] == [2, 2]
    assert sum(s["metrics"]["tokens"] for s in document["strategies"]) == 20
    assert all(len(ids) == 5 for s in document["strategies"] for ids in s["token_ids"])


def test_ctrl_c_while_the_reference_text_is_scored_keeps_the_decoded_report_without_the_human_row(
        tiny_model_dir, tmp_path, monkeypatch):
    import samplecli.analysis.compare as cmp

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmp, "human_metrics", interrupted)
    reference = tmp_path / "human.txt"
    reference.write_text(TINY_TEXT, encoding="utf-8")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["compare", "ROMEO:", "-m", str(tiny_model_dir), "-s", "greedy", "-s", "top-k=40",
                                      "-n", "6", "--seed", "1", "--reference", str(reference), "-f", "json", "-o",
                                      str(out)], prog_name="samplecli")
    assert result.exit_code == 130, (result.stderr, result.exception)
    assert "no human row" in result.stderr and result.stderr.splitlines()[-1] == "interrupted"
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["human"] is None and "interrupted" not in document  # every sample was decoded: not partial
    assert [s["metrics"]["samples"] for s in document["strategies"]] == [1, 1]
