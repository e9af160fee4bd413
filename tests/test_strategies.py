"""The strategy registry, as a specification: what each transform does to a hand-made distribution, that it
matches the transformers warper of the same parameters, how ties and "off" values behave, what the selectors
draw, how flags, named strategies and `--chain` specs become a Strategy, and how bad input is reported."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from samplecli.errors import UsageError
from samplecli.strategies import (
    DEFAULT_SETTINGS,
    NAMED,
    SELECTORS,
    TRANSFORMS,
    Strategy,
    Transform,
    build_strategy,
    describe_registry,
    parse_chain,
)
from samplecli.strategies.selectors import Greedy, Sample
from samplecli.strategies.transforms import (
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
)
from tests.conftest import (
    NO_IDS,
    P,
    assert_probs,
    assert_same_as,
    distribution_after,
    log_probs,
    logits_and_history,
    usage_error,
)

# --- 1. each transform on a hand-made distribution, with exact numbers ------------------------------------


def test_temperature_below_one_squares_towards_the_top_token():
    # T = 0.5: p_i^2 / sum p_j^2 = (0.16, 0.09, 0.04, 0.01) / 0.30
    assert_probs(distribution_after([Temperature(temperature=0.5)]), (0.533333, 0.3, 0.133333, 0.033333))


def test_temperature_above_one_flattens_the_distribution():
    # T = 2: sqrt(p_i) / sum sqrt(p_j) = (0.632456, 0.547723, 0.447214, 0.316228) / 1.943621
    assert_probs(distribution_after([Temperature(temperature=2.0)]), (0.325401, 0.281805, 0.230093, 0.1627))


def test_temperature_one_leaves_the_distribution_unchanged():
    # logits / 1 = logits
    assert_probs(distribution_after([Temperature(temperature=1.0)]), P)


@pytest.mark.parametrize("temperature", [1e-39, 1e-46, 1e-300])
def test_a_vanishing_temperature_gives_the_greedy_limit_not_nan(temperature):
    # logits / T overflows float32; the T -> 0 limit is the argmax (ties share the mass)
    logits = torch.tensor([[3.0, 0.0, -2.0, 1.0], [-1.0, -3.0, -0.5, -2.0], [2.0, 2.0, 0.0, 1.0]])
    strategy = Strategy([Temperature(temperature=temperature)], Sample())
    probs = strategy.distribution(logits, NO_IDS.expand(3, 0))
    assert torch.equal(probs, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0, 0]]))
    order = torch.sort(logits, descending=True, stable=True).indices
    picked = strategy.selector.select(strategy.process(logits, NO_IDS), probs, order, torch.tensor([0.3, 0.3, 0.3]))
    assert picked.tolist() == [0, 2, 0]


def test_top_k_keeps_the_k_most_probable_tokens():
    # k = 2: (0.4, 0.3) / 0.7
    assert_probs(distribution_after([TopK(top_k=2)]), (0.571429, 0.428571, 0, 0))
    # k = 3: (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([TopK(top_k=3)]), (0.444444, 0.333333, 0.222222, 0))
    # k = 1: only the top token
    assert_probs(distribution_after([TopK(top_k=1)]), (1, 0, 0, 0))


def test_top_k_works_on_token_ids_not_positions():
    # probabilities by id (0.1, 0.4, 0.2, 0.3): k = 2 keeps ids 1 and 3, (0.4, 0.3) / 0.7
    assert_probs(distribution_after([TopK(top_k=2)], log_probs((0.1, 0.4, 0.2, 0.3))), (0, 0.571429, 0, 0.428571))


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    # p = 0.6: mass above each token is (0, 0.4, 0.7, 0.9); 0.4 < 0.6 keeps the 0.3 token that crosses 0.6
    assert_probs(distribution_after([TopP(top_p=0.6)]), (0.571429, 0.428571, 0, 0))


def test_top_p_stops_at_the_first_token_whose_mass_above_reaches_p():
    # p = 0.75: mass above (0, 0.4, 0.7, 0.9); 0.7 < 0.75 keeps three, (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([TopP(top_p=0.75)]), (0.444444, 0.333333, 0.222222, 0))
    # p = 0.35: the top token alone already holds 0.4 >= 0.35
    assert_probs(distribution_after([TopP(top_p=0.35)]), (1, 0, 0, 0))
    # p = 0.95: mass above the last token is 0.9 < 0.95, nothing is cut
    assert_probs(distribution_after([TopP(top_p=0.95)]), P)


def test_top_p_works_on_token_ids_not_positions():
    # probabilities by id (0.1, 0.2, 0.3, 0.4), llama.cpp's order: p = 0.6 keeps ids 3 and 2, (0.4, 0.3) / 0.7
    assert_probs(distribution_after([TopP(top_p=0.6)], log_probs((0.1, 0.2, 0.3, 0.4))), (0, 0, 0.428571, 0.571429))


def test_min_p_keeps_tokens_above_a_fraction_of_the_top_probability():
    # min_p = 0.6: floor 0.6 * 0.4 = 0.24 keeps (0.4, 0.3) / 0.7
    assert_probs(distribution_after([MinP(min_p=0.6)]), (0.571429, 0.428571, 0, 0))
    # min_p = 0.3: floor 0.12 keeps (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([MinP(min_p=0.3)]), (0.444444, 0.333333, 0.222222, 0))
    # min_p = 0.8: floor 0.32 keeps the top token only
    assert_probs(distribution_after([MinP(min_p=0.8)]), (1, 0, 0, 0))
    # min_p = 0.2: floor 0.08 keeps all four
    assert_probs(distribution_after([MinP(min_p=0.2)]), P)


def test_typical_keeps_the_tokens_whose_surprisal_is_closest_to_the_entropy():
    # H = 1.279854; |-log p_i - H| = (0.364, 0.076, 0.330, 1.023): by distance ids 1, 2, 0, 3 with cumulative
    # mass (0.3, 0.5, 0.9, 1.0). typical_p = 0.4: the 0.2 token reaches 0.4, so ids 1 and 2: (0.3, 0.2) / 0.5
    assert_probs(distribution_after([Typical(typical_p=0.4)]), (0, 0.6, 0.4, 0))
    # typical_p = 0.25: the closest token (id 1, 0.3) already reaches 0.25
    assert_probs(distribution_after([Typical(typical_p=0.25)]), (0, 1, 0, 0))
    # typical_p = 0.6: ids 1, 2, 0 (cumulative 0.9 reaches 0.6): (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([Typical(typical_p=0.6)]), (0.444444, 0.333333, 0.222222, 0))


def test_repetition_penalty_multiplies_negative_logits_of_seen_tokens():
    # all logits are log p < 0; penalty 2 on id 0: logit 2 log 0.4 -> weight 0.16; (0.16, 0.3, 0.2, 0.1) / 0.76
    penalty = RepetitionPenalty(repetition_penalty=2.0)
    assert_probs(distribution_after([penalty], input_ids=torch.tensor([[0]])), (0.210526, 0.394737, 0.263158, 0.131579))


def test_repetition_penalty_below_one_encourages_seen_tokens():
    # penalty 0.5 on id 0: logit 0.5 log 0.4 -> weight sqrt(0.4) = 0.632456; divided by 1.232456
    penalty = RepetitionPenalty(repetition_penalty=0.5)
    assert_probs(distribution_after([penalty], input_ids=torch.tensor([[0]])), (0.513167, 0.243416, 0.162278, 0.081139))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    # logits (2, 1, 0, -1), penalty 2 on ids {0, 3}: (1, 1, 0, -2); softmax of that
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    penalised = RepetitionPenalty(repetition_penalty=2.0)(logits, torch.tensor([[3, 0]]))
    assert torch.equal(penalised, torch.tensor([[1.0, 1.0, 0.0, -2.0]]))
    assert_probs(torch.softmax(penalised, dim=-1)[0], (0.413622, 0.413622, 0.152163, 0.020593))


def test_repetition_penalty_applies_once_however_often_a_token_was_seen():
    penalty = RepetitionPenalty(repetition_penalty=2.0)
    once = penalty(log_probs(P), torch.tensor([[0]]))
    assert torch.equal(penalty(log_probs(P), torch.tensor([[0, 0, 0, 0]])), once)


def test_no_repeat_ngram_bans_the_token_that_would_repeat_a_trigram():
    # n = 3 on 0 1 2 0 1: the suffix (0, 1) was followed by 2, so 2 is banned: (0.4, 0.3, 0.1) / 0.8
    ban = NoRepeatNGram(no_repeat_ngram_size=3)
    assert_probs(distribution_after([ban], input_ids=torch.tensor([[0, 1, 2, 0, 1]])), (0.5, 0.375, 0, 0.125))


def test_no_repeat_ngram_bans_every_successor_of_the_last_token_for_bigrams():
    # n = 2 on 1 0 1 3 1: token 1 was followed by 0 and by 3, both banned: (0.3, 0.2) / 0.5
    ban = NoRepeatNGram(no_repeat_ngram_size=2)
    assert_probs(distribution_after([ban], input_ids=torch.tensor([[1, 0, 1, 3, 1]])), (0, 0.6, 0.4, 0))


def test_no_repeat_ngram_of_size_one_bans_every_token_seen():
    # n = 1 on 0 1 2: only id 3 is left
    ban = NoRepeatNGram(no_repeat_ngram_size=1)
    assert_probs(distribution_after([ban], input_ids=torch.tensor([[0, 1, 2]])), (0, 0, 0, 1))


def test_no_repeat_ngram_bans_nothing_before_a_full_ngram_can_repeat():
    ban = NoRepeatNGram(no_repeat_ngram_size=3)
    assert_probs(distribution_after([ban], input_ids=torch.tensor([[0, 1]])), P)
    assert_probs(distribution_after([ban], input_ids=torch.tensor([[1]])), P)


def test_a_chain_applies_its_transforms_in_order():
    # temperature 0.5 then top-k 2: (0.16, 0.09) / 0.25
    assert_probs(distribution_after([Temperature(temperature=0.5), TopK(top_k=2)]), (0.64, 0.36, 0, 0))
    # top-p 0.65 then temperature 2: mass above (0, 0.4, 0.7) keeps two; sqrt(0.4, 0.3) / 1.180179
    assert_probs(distribution_after([TopP(top_p=0.65), Temperature(temperature=2.0)]), (0.535898, 0.464102, 0, 0))
    # temperature 2 first flattens to (0.325, 0.282, 0.230, 0.163): mass above the third is 0.607 < 0.65, so
    # three stay: sqrt(0.4, 0.3, 0.2) / 1.627393
    flattened_first = distribution_after([Temperature(temperature=2.0), TopP(top_p=0.65)])
    assert_probs(flattened_first, (0.388631, 0.336565, 0.274804, 0))


def test_filtered_logits_are_minus_infinity_and_their_probabilities_exactly_zero():
    out = TopK(top_k=2)(log_probs(P), NO_IDS)
    assert torch.isneginf(out[0, 2:]).all()
    assert torch.equal(out[0, :2], log_probs(P)[0, :2])


# --- 2. oracle: the transformers warper of the same parameters --------------------------------------------


BATCH = 4  # rows of the random_logits fixture


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.5, 4.0])
def test_temperature_equals_transformers(random_logits, temperature):
    ours = Temperature(temperature=temperature)(random_logits, NO_IDS)
    assert_same_as(ours, TemperatureLogitsWarper(float(temperature))(NO_IDS, random_logits))


@pytest.mark.parametrize("top_k", [1, 10, 500])
def test_top_k_equals_transformers(random_logits, top_k):
    ours = TopK(top_k=top_k)(random_logits, NO_IDS)
    assert (torch.isfinite(ours).sum(dim=-1) == top_k).all()
    assert_same_as(ours, TopKLogitsWarper(top_k)(NO_IDS, random_logits))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_equals_transformers(random_logits, top_p):
    ours = TopP(top_p=top_p)(random_logits, NO_IDS)
    assert torch.isneginf(ours).any()
    assert_same_as(ours, TopPLogitsWarper(top_p)(NO_IDS, random_logits))


@pytest.mark.parametrize("min_p", [0.01, 0.1, 0.5])
def test_min_p_equals_transformers(random_logits, min_p):
    ours = MinP(min_p=min_p)(random_logits, NO_IDS)
    assert torch.isneginf(ours).any()
    assert_same_as(ours, MinPLogitsWarper(min_p)(NO_IDS, random_logits))


@pytest.mark.parametrize("typical_p", [0.2, 0.5, 0.95])
def test_typical_equals_transformers(random_logits, typical_p):
    ours = Typical(typical_p=typical_p)(random_logits, NO_IDS)
    assert torch.isneginf(ours).any()
    assert_same_as(ours, TypicalLogitsWarper(mass=typical_p)(NO_IDS, random_logits))


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_equals_transformers(random_logits, repeating_ids, penalty):
    ids = repeating_ids * 16  # spread over the vocabulary, where logits of both signs live
    ours = RepetitionPenalty(repetition_penalty=penalty)(random_logits, ids)
    assert not torch.equal(ours, random_logits)
    assert_same_as(ours, RepetitionPenaltyLogitsProcessor(penalty)(ids, random_logits))


@pytest.mark.parametrize("ngram", [1, 2, 3])
def test_no_repeat_ngram_equals_transformers(random_logits, repeating_ids, ngram):
    ours = NoRepeatNGram(no_repeat_ngram_size=ngram)(random_logits, repeating_ids)
    assert torch.isneginf(ours).any(dim=-1).all(), "every row should ban something"
    assert_same_as(ours, NoRepeatNGramLogitsProcessor(ngram)(repeating_ids, random_logits))


ORACLE_CHAINS = [
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "temperature": 0.7, "top_k": 50, "top_p": 0.9,
     "min_p": 0.05, "typical_p": 0.95},
    {"typical_p": 0.8, "top_k": 200, "temperature": 1.3},
    {"min_p": 0.02, "top_p": 0.5, "repetition_penalty": 0.8},
    {"no_repeat_ngram_size": 3, "temperature": 0.5, "top_p": 0.99},
]


def transformers_chain(flags: dict) -> list:
    """The processors transformers' generate() builds for these flags, in its order."""
    makers = [
        ("repetition_penalty", lambda v: RepetitionPenaltyLogitsProcessor(float(v))),
        ("no_repeat_ngram_size", NoRepeatNGramLogitsProcessor),
        ("temperature", lambda v: TemperatureLogitsWarper(float(v))),
        ("top_k", TopKLogitsWarper),
        ("top_p", TopPLogitsWarper),
        ("min_p", MinPLogitsWarper),
        ("typical_p", lambda v: TypicalLogitsWarper(mass=v)),
    ]
    return [make(flags[key]) for key, make in makers if key in flags]


@pytest.mark.parametrize("flags", ORACLE_CHAINS, ids=lambda f: ",".join(f))
def test_flags_compose_like_transformers_generate(random_logits, repeating_ids, flags):
    strategy = build_strategy(flags).strategy
    expected = random_logits
    for processor in transformers_chain(flags):
        expected = processor(repeating_ids, expected)
    assert_same_as(strategy.process(random_logits, repeating_ids), expected)
    torch.testing.assert_close(strategy.distribution(random_logits, repeating_ids), torch.softmax(expected, dim=-1),
                               rtol=0, atol=1e-6)


# --- 3. inputs are never modified in place ------------------------------------------------------------------


EVERY_TRANSFORM = [
    Temperature(temperature=0.7), Temperature(temperature=1.0), TopK(top_k=3), TopK(top_k=0), TopP(top_p=0.5),
    TopP(top_p=1.0), MinP(min_p=0.2), MinP(min_p=0.0), Typical(typical_p=0.5), Typical(typical_p=1.0),
    RepetitionPenalty(repetition_penalty=1.5), RepetitionPenalty(repetition_penalty=1.0),
    NoRepeatNGram(no_repeat_ngram_size=2), NoRepeatNGram(no_repeat_ngram_size=0),
]


@pytest.mark.parametrize("transform", EVERY_TRANSFORM, ids=str)
def test_transforms_never_modify_their_input(transform):
    logits, ids = logits_and_history()
    logits_before, ids_before = logits.clone(), ids.clone()
    out = transform(logits, ids)
    assert torch.equal(logits, logits_before) and torch.equal(ids, ids_before)
    assert out is not logits and out.data_ptr() != logits.data_ptr(), "a transform returns a new tensor"


@pytest.mark.parametrize("selector", [Greedy(), Sample()], ids=str)
def test_strategy_distribution_and_select_never_modify_their_input(selector):
    logits, ids = logits_and_history()
    logits_before, ids_before = logits.clone(), ids.clone()
    strategy = Strategy(EVERY_TRANSFORM, selector)
    probs = strategy.distribution(logits, ids)
    processed = strategy.process(logits, ids)
    assert torch.equal(logits, logits_before) and torch.equal(ids, ids_before)
    order = torch.sort(logits, descending=True, stable=True).indices
    uniforms = torch.tensor([0.1, 0.5, 0.9])
    before = [t.clone() for t in (processed, probs, order, uniforms)]
    selector.select(processed, probs, order, uniforms)
    assert all(torch.equal(a, b) for a, b in zip((processed, probs, order, uniforms), before, strict=True))


# --- 4. ties, "off" values, and a chain that would leave nothing ---------------------------------------------


def test_top_k_breaks_ties_at_the_cut_by_the_lowest_token_id():
    out = TopK(top_k=2)(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), NO_IDS)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    out = TopK(top_k=2)(torch.tensor([[0.0, 1.0, 1.0, 1.0]]), NO_IDS)
    assert torch.isfinite(out).tolist() == [[False, True, True, False]]


def test_top_p_breaks_ties_at_the_cut_by_the_lowest_token_id():
    # probabilities (0.3057, 0.3057, 0.3057, 0.1125): p = 0.5 needs two of the three tied tokens
    out = TopP(top_p=0.5)(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), NO_IDS)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    out = TopP(top_p=0.5)(torch.tensor([[0.0, 1.0, 1.0, 1.0]]), NO_IDS)
    assert torch.isfinite(out).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("transform", [
    TopK(top_k=0), TopK(top_k=4), TopK(top_k=1000), TopP(top_p=1.0), MinP(min_p=0.0), Typical(typical_p=1.0),
    Temperature(temperature=1.0), RepetitionPenalty(repetition_penalty=1.0), NoRepeatNGram(no_repeat_ngram_size=0),
], ids=str)
def test_off_values_leave_the_logits_unchanged(transform):
    logits = log_probs(P)
    assert torch.equal(transform(logits, torch.tensor([[0, 1, 0, 1]])), logits)


def test_min_p_of_one_keeps_only_the_tokens_tied_with_the_top():
    out = MinP(min_p=1.0)(torch.tensor([[2.0, 1.0, 2.0, 0.0]]), NO_IDS)
    assert torch.isfinite(out).tolist() == [[True, False, True, False]]


class RejectEverything(Transform):
    """A transform that filters out every token (not registered)."""

    name = "reject-everything"
    kind = "truncation"

    def __call__(self, logits, input_ids):
        return torch.full_like(logits, float("-inf"))


class RejectFirstRow(Transform):
    """Filters out every token of row 0 only (not registered)."""

    name = "reject-first-row"
    kind = "truncation"

    def __call__(self, logits, input_ids):
        out = logits.clone()
        out[0] = float("-inf")
        return out


def test_a_chain_that_would_leave_no_candidate_keeps_the_raw_argmax():
    logits = torch.tensor([[0.1, 0.9, 0.3, 0.2], [2.0, -1.0, 0.5, 0.0]])
    ids = torch.tensor([[1], [0]])
    # the penalty moves the argmax of both rows before everything is rejected; the raw argmax is what stays
    strategy = Strategy([RepetitionPenalty(repetition_penalty=10.0), RejectEverything()], Sample())
    out = strategy.process(logits, ids)
    assert torch.isfinite(out).tolist() == [[False, True, False, False], [True, False, False, False]]
    assert out[0, 1] == logits[0, 1] and out[1, 0] == logits[1, 0]
    assert torch.equal(strategy.distribution(logits, ids), torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 0, 0]]))


def test_the_argmax_fallback_touches_only_rows_that_were_emptied():
    logits = torch.tensor([[0.1, 0.9, 0.3, 0.2], [2.0, -1.0, 0.5, 0.0]])
    out = Strategy([RejectFirstRow(), TopK(top_k=2)], Sample()).process(logits, NO_IDS.expand(2, 0))
    assert torch.isfinite(out).tolist() == [[False, True, False, False], [True, False, True, False]]


def test_typical_may_filter_out_the_most_probable_token():
    # the example above: the 0.4 token is further from the entropy than the 0.3 and 0.2 ones
    assert torch.isneginf(Typical(typical_p=0.4)(log_probs(P), NO_IDS))[0, 0]


# --- 5. the greedy selector ---------------------------------------------------------------------------------


def test_greedy_distribution_is_the_one_hot_at_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 4.5]])
    assert torch.equal(Greedy().distribution(logits), torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 0, 0]]))


def test_greedy_breaks_ties_by_the_lowest_token_id():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0]])
    assert torch.equal(Greedy().distribution(logits), torch.tensor([[0.0, 1, 0, 0]]))
    order = torch.sort(logits, descending=True, stable=True).indices
    assert Greedy().select(logits, Greedy().distribution(logits), order, torch.tensor([0.99])).tolist() == [1]


def test_greedy_select_returns_the_argmax_whatever_the_uniforms(random_logits):
    order = torch.sort(random_logits, descending=True, stable=True).indices
    for u in (0.0, 0.5, 0.999):
        picked = Greedy().select(random_logits, Greedy().distribution(random_logits), order, torch.full((BATCH,), u))
        assert torch.equal(picked, random_logits.argmax(dim=-1))


def test_greedy_after_a_penalty_picks_the_argmax_of_the_penalised_logits():
    strategy = build_strategy({"temperature": 0, "repetition_penalty": 4.0}).strategy
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]])
    # 2 / 4 = 0.5 < 1: id 1 is now the most probable
    assert torch.equal(strategy.distribution(logits, torch.tensor([[0]])), torch.tensor([[0.0, 1, 0, 0]]))


# --- 6. sampling frequencies ---------------------------------------------------------------------------------

# Probabilities by token id, most probable first: ids 1, 5, 3, 7, 0, 4, 6, 2.
P8 = (0.10, 0.30, 0.02, 0.15, 0.07, 0.20, 0.04, 0.12)
DRAWS = 100_000


@pytest.mark.parametrize(("flags", "strategy", "kept"), [
    ({}, "sample", {0, 1, 2, 3, 4, 5, 6, 7}),
    ({"temperature": 0.7}, None, {0, 1, 2, 3, 4, 5, 6, 7}),
    ({"top_k": 3}, None, {1, 5, 3}),  # the three most probable
    ({"top_p": 0.8}, None, {1, 5, 3, 7, 0}),  # mass above 0.10 is 0.77 < 0.8; above 0.07 it is 0.87
    ({"min_p": 0.2}, None, {1, 5, 3, 7, 0, 4}),  # floor 0.2 * 0.3 = 0.06 drops 0.04 and 0.02
    ({"typical_p": 0.5}, None, None),  # may drop the most probable token, the first in the sampler's order
], ids=["sample", "temperature-0.7", "top-k-3", "top-p-0.8", "min-p-0.2", "typical-0.5"])
def test_sampling_frequencies_match_the_strategy_distribution(flags, strategy, kept):
    built = build_strategy(flags, strategy=strategy).strategy
    raw = log_probs(P8)
    probs = built.distribution(raw, NO_IDS)
    if kept is not None:
        assert {i for i, p in enumerate(probs[0].tolist()) if p > 0} == kept
    order = torch.sort(raw, descending=True, stable=True).indices
    uniforms = torch.rand(DRAWS, generator=torch.Generator().manual_seed(99))
    tokens = built.selector.select(built.process(raw, NO_IDS).repeat(DRAWS, 1), probs.repeat(DRAWS, 1),
                                   order.repeat(DRAWS, 1), uniforms)
    frequencies = torch.bincount(tokens, minlength=len(P8)).double() / DRAWS
    assert (frequencies[probs[0] == 0] == 0).all(), "a filtered token was drawn"
    total_variation = 0.5 * (frequencies - probs[0].double()).abs().sum().item()
    assert total_variation < 0.01


def test_sample_lays_tokens_out_in_the_raw_order_and_inverts_the_cdf():
    # raw order ids 1, 0, 2 with probabilities (0.5, 0.3, 0.2): cumulative 0.5, 0.8, 1.0
    probs = torch.tensor([[0.3, 0.5, 0.2]]).repeat(5, 1)
    order = torch.tensor([[1, 0, 2]]).repeat(5, 1)
    picked = Sample().select(probs.log(), probs, order, torch.tensor([0.0, 0.49, 0.51, 0.79, 0.81]))
    assert picked.tolist() == [1, 1, 0, 0, 2]


def test_sample_never_draws_a_zero_probability_token_even_at_the_edges():
    # the raw argmax (id 0) and the last id are filtered; u = 0 and u just below 1 must still land on kept tokens
    probs = torch.tensor([[0.0, 0.6, 0.4, 0.0]]).repeat(3, 1)
    order = torch.tensor([[0, 1, 2, 3]]).repeat(3, 1)
    picked = Sample().select(probs.log(), probs, order, torch.tensor([0.0, 0.6, 1 - 2**-24]))
    assert picked.tolist() == [1, 2, 2]


# --- 7. build_strategy --------------------------------------------------------------------------------------


def test_flags_without_a_strategy_compose_in_transformers_order_whatever_order_they_are_given_in():
    flags = {"typical_p": 0.9, "min_p": 0.05, "top_p": 0.9, "top_k": 40, "temperature": 0.7,
             "no_repeat_ngram_size": 3, "repetition_penalty": 1.2}
    built = build_strategy(flags)
    assert str(built.strategy) == ("logits -> repetition-penalty(1.2) -> no-repeat-ngram(3) -> temperature(0.7) "
                                   "-> top-k(40) -> top-p(0.9) -> min-p(0.05) -> typical(0.9) -> sample")
    assert built.strategy.name == "custom" and built.ignored == {}


def test_temperature_zero_is_greedy():
    built = build_strategy({"temperature": 0})
    assert str(built.strategy) == "logits -> greedy"
    assert built.strategy.name == "greedy" and not built.strategy.stochastic and built.ignored == {}


def test_a_tiny_temperature_samples_the_greedy_token(random_logits):
    cold = build_strategy({"temperature": 1e-4}).strategy
    greedy = build_strategy({"temperature": 0}).strategy
    cold_probs = cold.distribution(random_logits, NO_IDS)
    assert (cold_probs.amax(dim=-1) > 0.999).all(), "T = 1e-4 is all but one-hot"
    assert torch.equal(cold_probs.argmax(dim=-1), greedy.distribution(random_logits, NO_IDS).argmax(dim=-1))
    order = torch.sort(random_logits, descending=True, stable=True).indices
    uniforms = torch.rand(BATCH, generator=torch.Generator().manual_seed(5))
    assert torch.equal(cold.selector.select(cold.process(random_logits, NO_IDS), cold_probs, order, uniforms),
                       random_logits.argmax(dim=-1))


def test_a_flag_given_alone_adds_no_hidden_defaults():
    assert str(build_strategy({"temperature": 0.7}).strategy) == "logits -> temperature(0.7) -> sample"
    assert str(build_strategy({"top_k": 5, "temperature": None}).strategy) == "logits -> top-k(5) -> sample"


def test_no_settings_at_all_gives_the_printed_default():
    for settings_given in ({}, {"temperature": None, "top_p": None, "top_k": None}):
        built = build_strategy(settings_given)
        assert str(built.strategy) == "logits -> temperature(0.8) -> top-p(0.95) -> sample"
        assert built.strategy.name == "default"
    assert DEFAULT_SETTINGS == {"temperature": 0.8, "top_p": 0.95}


def test_penalties_alone_do_not_replace_the_default_sampling():
    built = build_strategy({"repetition_penalty": 1.3})
    assert str(built.strategy) == "logits -> repetition-penalty(1.3) -> temperature(0.8) -> top-p(0.95) -> sample"


@pytest.mark.parametrize(("name", "printed"), [
    ("greedy", "logits -> greedy"),
    ("sample", "logits -> sample"),
    ("temperature", "logits -> temperature(0.8) -> sample"),
    ("top-k", "logits -> top-k(40) -> sample"),
    ("top-p", "logits -> top-p(0.95) -> sample"),
    ("min-p", "logits -> min-p(0.1) -> sample"),
    ("typical", "logits -> typical(0.95) -> sample"),
])
def test_a_named_strategy_fills_in_its_own_default(name, printed):
    built = build_strategy({}, strategy=name)
    assert str(built.strategy) == printed
    assert built.strategy.name == name


def test_every_named_strategy_is_covered_above():
    extended = {"epsilon", "eta", "top-h", "top-n-sigma", "mirostat", "mirostat-v2"}  # in test_extended_samplers.py
    beam = {"beam", "stochastic-beam"}  # their own loop: covered in test_beam.py
    assert set(NAMED) == {"greedy", "sample", "temperature", "top-k", "top-p", "min-p", "typical"} | extended | beam


def test_a_named_strategy_takes_the_value_given_and_composes_other_flags():
    assert str(build_strategy({"top_p": 0.5}, strategy="top-p").strategy) == "logits -> top-p(0.5) -> sample"
    built = build_strategy({"temperature": 0.7, "repetition_penalty": 1.1}, strategy="top-k")
    assert str(built.strategy) == "logits -> repetition-penalty(1.1) -> temperature(0.7) -> top-k(40) -> sample"


def test_strategy_prints_as_its_chain():
    strategy = Strategy([Temperature(temperature=0.8), TopP(top_p=0.9), TopK(top_k=40)], Sample())
    assert str(strategy) == "logits -> temperature(0.8) -> top-p(0.9) -> top-k(40) -> sample"
    assert str(Strategy([], Greedy())) == "logits -> greedy"
    assert "temperature(0.8)" in repr(strategy)
    assert str(Temperature(temperature=1e-4)) == "temperature(0.0001)"


def test_chain_keeps_the_order_written_and_understands_aliases():
    transforms, selector = parse_chain("top-k=40, top-p=0.95, temp=0.8")
    assert [str(t) for t in transforms] == ["top-k(40)", "top-p(0.95)", "temperature(0.8)"]
    assert isinstance(selector, Sample)
    transforms, _ = parse_chain("nucleus=0.9,top_k=5,min_p=0.1,typical_p=0.5,repeat-penalty=1.2,no_repeat_ngram_size=2")
    assert [str(t) for t in transforms] == [
        "top-p(0.9)", "top-k(5)", "min-p(0.1)", "typical(0.5)", "repetition-penalty(1.2)", "no-repeat-ngram(2)"]


def test_chain_may_end_with_a_selector():
    transforms, selector = parse_chain("min-p=0.05,greedy")
    assert [str(t) for t in transforms] == ["min-p(0.05)"] and isinstance(selector, Greedy)
    assert isinstance(parse_chain("top-k=3,sample")[1], Sample)


def test_chain_element_may_name_its_parameters_or_take_the_default():
    transforms, _ = parse_chain("top-p:top_p=0.9,top-k")
    assert [str(t) for t in transforms] == ["top-p(0.9)", "top-k(40)"]


def test_chain_through_build_strategy_puts_penalties_first_and_reports_the_flags_it_overrides():
    built = build_strategy({"repetition_penalty": 1.2, "temperature": 0.5, "top_k": None}, chain="top-k=5,temp=0.9")
    assert str(built.strategy) == "logits -> repetition-penalty(1.2) -> top-k(5) -> temperature(0.9) -> sample"
    assert built.strategy.name == "chain"
    assert built.ignored == {"temperature": 0.5}


def test_ignored_reports_what_greedy_does_not_use():
    built = build_strategy({"temperature": 0, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.3})
    assert str(built.strategy) == "logits -> repetition-penalty(1.3) -> greedy"
    assert built.ignored == {"top_k": 5, "top_p": 0.9}
    built = build_strategy({"temperature": 0.7, "min_p": 0.1}, strategy="greedy")
    assert str(built.strategy) == "logits -> greedy"
    assert built.ignored == {"temperature": 0.7, "min_p": 0.1}
    assert build_strategy({"temperature": 0.7}).ignored == {}


# --- 8. bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "echo"), [(-0.5, "-0.5"), (-1, "-1"), (math.nan, "nan"), (math.inf, "inf"),
                                             (-math.inf, "-inf")])
def test_temperature_must_be_a_finite_number_at_least_zero(value, echo):
    usage_error(lambda: build_strategy({"temperature": value}), "`temperature`", f"but is {echo}")


@pytest.mark.parametrize(("value", "echo"), [(0, "0"), (-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan")])
def test_top_p_must_be_in_zero_to_one(value, echo):
    message = usage_error(lambda: build_strategy({"top_p": value}), "`top_p`", "(0, 1]")
    assert re.search(rf"but is {re.escape(echo)}(\.0)?$", message), message


@pytest.mark.parametrize(("value", "echo"), [(-1, "-1"), (2.5, "2.5"), (math.inf, "inf"), ("ten", "'ten'")])
def test_top_k_must_be_a_whole_number_at_least_zero(value, echo):
    usage_error(lambda: build_strategy({"top_k": value}), "`top_k`", f"but is {echo}")


@pytest.mark.parametrize(("value", "echo"), [(-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan")])
def test_min_p_must_be_in_zero_to_one(value, echo):
    usage_error(lambda: build_strategy({"min_p": value}), "`min_p`", "[0, 1]", f"but is {echo}")


@pytest.mark.parametrize(("value", "echo"), [(0, "0"), (-0.2, "-0.2"), (1.01, "1.01")])
def test_typical_p_must_be_in_zero_to_one(value, echo):
    usage_error(lambda: build_strategy({"typical_p": value}), "`typical_p`", "(0, 1]", f"but is {echo}")


@pytest.mark.parametrize(("value", "echo"), [(0, "0"), (-1.2, "-1.2"), (math.inf, "inf"), (math.nan, "nan")])
def test_repetition_penalty_must_be_a_finite_number_above_zero(value, echo):
    usage_error(lambda: build_strategy({"repetition_penalty": value}), "`repetition_penalty`", f"but is {echo}")


def test_no_repeat_ngram_size_must_be_a_whole_number_at_least_zero():
    usage_error(lambda: build_strategy({"no_repeat_ngram_size": -1}), "`no_repeat_ngram_size`", "but is -1")
    usage_error(lambda: build_strategy({"no_repeat_ngram_size": 1.5}), "`no_repeat_ngram_size`", "but is 1.5")


def test_a_boolean_is_not_a_number():
    usage_error(lambda: build_strategy({"top_k": True}), "`top_k`", "but is True")


def test_a_value_is_validated_even_when_greedy_ignores_it():
    usage_error(lambda: build_strategy({"temperature": 0, "top_p": 1.5}), "`top_p`", "1.5")
    usage_error(lambda: build_strategy({"top_k": -3}, strategy="greedy"), "`top_k`", "-3")


def test_an_unknown_strategy_lists_the_valid_names_and_the_closest_one():
    message = usage_error(lambda: build_strategy({}, strategy="topp"), "unknown strategy `topp`",
                          "did you mean `top-p`?")
    assert all(name in message for name in NAMED)


def test_an_unknown_setting_names_the_closest_one():
    usage_error(lambda: build_strategy({"top_q": 0.9}), "unknown sampling setting `top_q`", "did you mean `top_p`?")


def test_chain_and_strategy_together_are_refused():
    usage_error(lambda: build_strategy({}, strategy="top-p", chain="top-k=5"), "--strategy", "--chain")


@pytest.mark.parametrize(("spec", "fragments"), [
    ("", ("empty chain",)),
    ("   ", ("empty chain",)),
    ("top-k=40,,top-p=0.9", ("element 2 is empty",)),
    ("top-k=40,", ("element 2 is empty",)),
    ("top-k=", ("`top-k=`", "value is missing")),
    ("top-z=3", ("unknown sampler `top-z`", "valid:", "top-k", "greedy")),
    ("top-k:foo=3", ("unknown parameter `foo`", "valid: top_k")),
    ("top-k:40", ("expected key=value", "`40`")),
    ("top-k=40,greedy,top-p=0.9", ("element 3", "nothing may follow the selector `greedy`")),
    ("greedy=1", ("`greedy` takes no value",)),
    ("top-p=1.5", ("`top_p`", "1.5")),
    ("top-k=abc", ("`top_k`", "'abc'")),
])
def test_a_malformed_chain_says_what_is_wrong(spec, fragments):
    usage_error(lambda: parse_chain(spec), *fragments)


def test_a_malformed_chain_is_reported_through_build_strategy_too():
    usage_error(lambda: build_strategy({}, chain="temp=0.8,bogus"), "unknown sampler `bogus`")


# --- 9 and 10. import cost and the registry listing ----------------------------------------------------------


def test_importing_the_registry_does_not_import_torch():
    code = "import samplecli.strategies, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_describe_registry_lists_every_sampler_with_its_parameters():
    rows = {row["name"]: row for row in describe_registry()}
    assert set(rows) == set(TRANSFORMS) | set(SELECTORS)
    assert set(TRANSFORMS) >= {"temperature", "top-k", "top-p", "min-p", "typical", "repetition-penalty",
                               "no-repeat-ngram"}
    assert set(SELECTORS) >= {"greedy", "sample"}
    for name, cls in (*TRANSFORMS.items(), *SELECTORS.items()):
        row = rows[name]
        assert row["kind"] == cls.kind and row["source"] and row["summary"]
        assert row["params"] == [{"name": p.name, "type": p.type.__name__, "default": p.default, "rule": p.rule}
                                 for p in cls.params]
    assert rows["top-p"]["params"] == [{"name": "top_p", "type": "float", "default": 0.95, "rule": "in (0, 1]"}]
    assert rows["top-k"]["params"] == [{"name": "top_k", "type": "int", "default": 40, "rule": ">= 0 (0 is off)"}]
    assert rows["greedy"]["params"] == [] and rows["greedy"]["kind"] == "selector"


def test_every_registered_default_is_itself_valid():
    for cls in TRANSFORMS.values():
        if any(p.default is None for p in cls.params):  # a constraint: its language has no default, and is asked for
            with pytest.raises(UsageError, match="is required"):
                cls()
            continue
        transform = cls()
        assert str(transform).startswith(cls.name)


# --- properties on random small distributions ----------------------------------------------------------------

logit_rows = st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=12)
chains = st.lists(st.sampled_from([
    Temperature(temperature=0.6), TopK(top_k=2), TopP(top_p=0.7), MinP(min_p=0.3), Typical(typical_p=0.6),
    RepetitionPenalty(repetition_penalty=1.5), NoRepeatNGram(no_repeat_ngram_size=1), RejectEverything(),
]), max_size=4)


@settings(max_examples=60, deadline=None, database=None)
@given(row=logit_rows, chain=chains)
def test_every_chain_gives_a_distribution_with_exact_zeros_where_it_filters(row, chain):
    logits = torch.tensor([row])
    ids = torch.tensor([[0, 1, 0]])
    strategy = Strategy(chain, Sample())
    processed = strategy.process(logits, ids)
    probs = strategy.distribution(logits, ids)
    assert torch.isfinite(processed).any()
    assert abs(probs.sum().item() - 1) < 1e-5
    filtered = torch.isneginf(processed)
    assert bool((probs[filtered] == 0).all())
    # a kept token is 0 only where float32's exp underflows: stacked temperatures can push a logit more than
    # ~103.3 below the top one (found by this property: [7, -7] after four temperatures of 0.6)
    underflow = math.log(torch.finfo(torch.float32).smallest_normal * 2.0**-23)
    zero_but_kept = (probs == 0) & ~filtered
    assert bool((processed[zero_but_kept] - processed.max() < underflow + 1).all())
