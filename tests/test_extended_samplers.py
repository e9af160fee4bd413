"""The extended samplers (issue 8; the classic ones, temperature, top-k, top-p, min-p and typical, are in
test_strategies.py), as a specification: epsilon, eta, top-h, top-n-sigma, XTC, dynamic temperature, logit bias,
presence and frequency penalties, DRY, sequence bias, bad words, min new tokens, mirostat v1/v2.

Each one on a hand-made distribution with its derivation; the transformers processor of the same parameters
on random logits where transformers has one; llama.cpp's own test vectors (tests/test-sampling.cpp) where
llama.cpp defines it; per-sequence state in a batch of samples on the tiny model; and bad values."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TopHLogitsWarper,
    TopKLogitsWarper,
)
from typer.testing import CliRunner

from samplecli.cli import app
from samplecli.engine.decode import DecodeConfig, Done, Step, decode, encode_prompt
from samplecli.engine.events import sample_seed
from samplecli.strategies import SELECTORS, TRANSFORMS, Strategy, build_strategy, describe_registry, parse_chain
from samplecli.strategies.penalties import DRY, BadWords, FrequencyPenalty, MinNewTokens, PresencePenalty, SequenceBias
from samplecli.strategies.reshaping import DynamicTemperature, LogitBias
from samplecli.strategies.selectors import Sample
from samplecli.strategies.stateful import Mirostat, MirostatV2
from samplecli.strategies.transforms import Temperature
from samplecli.strategies.truncation import XTC, Epsilon, Eta, TopH, TopNSigma
from samplecli.views.records import step_record
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

NEW = ("epsilon", "eta", "top-h", "top-n-sigma", "xtc", "dynatemp", "logit-bias", "presence-penalty",
       "frequency-penalty", "dry", "sequence-bias", "bad-words", "min-new-tokens")


def uniform(n: int) -> torch.Tensor:
    return log_probs([1 / n] * n)


def ids(*tokens: int) -> torch.Tensor:
    return torch.tensor([tokens])


# --- 1. hand-made distributions, with exact numbers ------------------------------------------------------


def test_epsilon_keeps_tokens_at_or_above_the_floor():
    # epsilon 0.15 removes only the 0.1 token: (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([Epsilon(epsilon_cutoff=0.15)]), (0.444444, 0.333333, 0.222222, 0))
    # epsilon 0.25 removes 0.2 and 0.1: (0.4, 0.3) / 0.7
    assert_probs(distribution_after([Epsilon(epsilon_cutoff=0.25)]), (0.571429, 0.428571, 0, 0))


def test_epsilon_above_every_probability_keeps_the_top_token_and_its_ties():
    # 0.9 is above everything; the top token stays, and so does the token tied with it
    assert_probs(distribution_after([Epsilon(epsilon_cutoff=0.9)]), (1, 0, 0, 0))
    assert_probs(distribution_after([Epsilon(epsilon_cutoff=0.9)], torch.tensor([[1.0, 1.0, 0.0]])), (0.5, 0.5, 0))


def test_eta_lowers_its_floor_as_the_entropy_rises():
    # H(P) = 1.279854, exp(-H) = 0.278078. With epsilon 0.25: eta = min(0.25, sqrt(0.25) * 0.278078) = 0.139039,
    # which removes only 0.1: (0.4, 0.3, 0.2) / 0.9 -- where epsilon 0.25 itself also removes the 0.2 token
    assert_probs(distribution_after([Eta(eta_cutoff=0.25)]), (0.444444, 0.333333, 0.222222, 0))
    # epsilon 0.2: eta = min(0.2, 0.447214 * 0.278078) = 0.124360, again only 0.1 goes
    assert_probs(distribution_after([Eta(eta_cutoff=0.2)]), (0.444444, 0.333333, 0.222222, 0))
    # a flat row of four (H = ln 4, exp(-H) = 0.25): eta = min(0.2, 0.447214 * 0.25) = 0.111803 < 0.25 keeps all
    assert_probs(distribution_after([Eta(eta_cutoff=0.2)], uniform(4)), (0.25, 0.25, 0.25, 0.25))


def test_top_h_keeps_tokens_while_their_entropy_stays_within_top_h_of_the_total():
    # entropy terms -p ln p = (0.366516, 0.361192, 0.321888, 0.230259), cumulative (0.366516, 0.727708,
    # 1.049596, 1.279854), H = 1.279854.
    # top_h 0.6: bound 0.767912 keeps two, (0.4, 0.3) / 0.7
    assert_probs(distribution_after([TopH(top_h=0.6)]), (0.571429, 0.428571, 0, 0))
    # top_h 0.3: bound 0.383956 keeps one
    assert_probs(distribution_after([TopH(top_h=0.3)]), (1, 0, 0, 0))
    # top_h 0.85: bound 1.087876 keeps three, (0.4, 0.3, 0.2) / 0.9
    assert_probs(distribution_after([TopH(top_h=0.85)]), (0.444444, 0.333333, 0.222222, 0))


def test_top_n_sigma_matches_llama_cpp_test_vectors():
    # llama.cpp test_top_n_sigma on probabilities by id (0.1, 0.2, 0.3, 0.4): logits ln p have max -0.916291,
    # mean -1.508072 and population sigma 0.523796.
    by_id = log_probs((0.1, 0.2, 0.3, 0.4))
    # n = 1: the cut -1.440087 keeps ids 2 and 3, (0.3, 0.4) / 0.7
    assert_probs(distribution_after([TopNSigma(top_n_sigma=1.0)], by_id), (0, 0, 0.428571, 0.571429))
    # n = 0 is off; n = 3 cuts below -2.487679, under every logit
    assert_probs(distribution_after([TopNSigma(top_n_sigma=0.0)], by_id), (0.1, 0.2, 0.3, 0.4))
    assert_probs(distribution_after([TopNSigma(top_n_sigma=3.0)], by_id), (0.1, 0.2, 0.3, 0.4))


def test_top_n_sigma_ignores_tokens_already_filtered():
    # logits (2, 1, 0, -inf): over the three finite ones mean 1, sigma sqrt(2/3) = 0.816497; n = 1 cuts
    # below 1.183503 and keeps only id 0. (Counting -inf would make sigma infinite and keep everything.)
    logits = torch.tensor([[2.0, 1.0, 0.0, float("-inf")]])
    assert_probs(distribution_after([TopNSigma(top_n_sigma=1.0)], logits), (1, 0, 0, 0))


@pytest.mark.parametrize(("threshold", "expected"), [
    (0.09, (0, 0, 0, 1)),            # all four reach 0.09: all but the least probable (0.1) go
    (0.19, (0, 0, 0.666667, 0.333333)),  # 0.4, 0.3, 0.2 reach it: 0.4 and 0.3 go, (0.2, 0.1) / 0.3
    (0.29, (0, 0.5, 0.333333, 0.166667)),  # 0.4 and 0.3 reach it: 0.4 goes, (0.3, 0.2, 0.1) / 0.6
    (0.39, (0.4, 0.3, 0.2, 0.1)),     # only 0.4 reaches it: fewer than two top choices, nothing goes
])
def test_xtc_removes_every_top_choice_but_the_least_probable(threshold, expected):
    # llama.cpp test_xtc on (0.4, 0.3, 0.2, 0.1); probability 1 makes the cut at every step
    assert_probs(distribution_after([XTC(xtc_probability=1.0, xtc_threshold=threshold)]), expected)


def test_xtc_with_probability_zero_or_a_threshold_above_one_half_is_off():
    assert_probs(distribution_after([XTC(xtc_probability=0.0, xtc_threshold=0.09)]), P)
    assert_probs(distribution_after([XTC(xtc_probability=1.0, xtc_threshold=0.51)]), P)


def test_dynamic_temperature_scales_with_the_normalised_entropy():
    # H = 1.279854, ln 4 = 1.386294, ratio 0.923220; T0 1, range 0.5 -> T in [0.5, 1.5]:
    # T = 0.5 + 1.0 * 0.923220 = 1.423220; p_i^(1/T) = (0.525274, 0.429143, 0.322762, 0.198324), sum 1.475503
    dynatemp = DynamicTemperature(dynatemp_range=0.5, temperature=1.0, dynatemp_exponent=1.0)
    assert dynatemp.temperatures(log_probs(P)).item() == pytest.approx(1.423220, abs=1e-6)
    assert_probs(distribution_after([dynatemp]), (0.356001, 0.290847, 0.218745, 0.134408))
    # exponent 2: T = 0.5 + 0.923220^2 = 1.352335
    squared = DynamicTemperature(dynatemp_range=0.5, dynatemp_exponent=2.0)
    assert squared.temperatures(log_probs(P)).item() == pytest.approx(1.352335, abs=1e-6)


def test_dynamic_temperature_gives_a_peaked_row_a_lower_temperature_than_a_flat_one():
    # (0.97, 0.01, 0.01, 0.01): H = 0.167701, ratio 0.120970, T = 0.5 + 0.120970 = 0.620970; the flat row: T = 1.5
    rows = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]]))
    temperatures = DynamicTemperature(dynatemp_range=0.5).temperatures(rows).squeeze(-1).tolist()
    assert temperatures == pytest.approx([0.620970, 1.5], abs=1e-6)


def test_dynamic_temperature_with_no_range_is_plain_temperature_and_zero_is_the_greedy_limit():
    # llama.cpp test_temp_ext: T0 1, range 0 leaves (0.1, 0.2, 0.3, 0.4); T0 0 keeps only the top token
    by_id = log_probs((0.1, 0.2, 0.3, 0.4))
    same = DynamicTemperature(dynatemp_range=0, temperature=1.0)
    assert_probs(distribution_after([same], by_id), (0.1, 0.2, 0.3, 0.4))
    assert_probs(distribution_after([DynamicTemperature(dynatemp_range=0, temperature=0.0)], by_id), (0, 0, 0, 1))
    plain = DynamicTemperature(dynatemp_range=0, temperature=0.5)(by_id, NO_IDS)
    torch.testing.assert_close(plain, Temperature(temperature=0.5)(by_id, NO_IDS), rtol=0, atol=1e-6)


def test_dynamic_temperature_leaves_a_row_with_one_candidate_alone():
    logits = torch.tensor([[1.5, float("-inf"), float("-inf")]])
    assert torch.equal(DynamicTemperature(dynatemp_range=0.5)(logits, NO_IDS), logits)


def test_logit_bias_adds_to_the_named_tokens_and_minus_infinity_bans():
    # {0: -inf}: (0, 0.3, 0.2, 0.1) / 0.6
    assert_probs(distribution_after([LogitBias(logit_bias="0=-inf")]), (0, 0.5, 0.333333, 0.166667))
    # {3: ln 4}: weight 0.1 * 4 = 0.4, (0.4, 0.3, 0.2, 0.4) / 1.3
    assert_probs(distribution_after([LogitBias(logit_bias={3: math.log(4)})]), (0.307692, 0.230769, 0.153846, 0.307692))


def test_presence_and_frequency_penalties_match_llama_cpp_test_vectors():
    # llama.cpp test_penalties: five tokens at 0.2, frequency 5 and presence 5 (repeat penalty 1).
    both = [PresencePenalty(presence_penalty=5.0), FrequencyPenalty(frequency_penalty=5.0)]
    # after 0: token 0's logit drops by 5 + 5 = 10: e^-10 / (4 + e^-10) = 0.000011
    assert_probs(distribution_after(both, uniform(5), ids(0)), (0.000011, 0.249997, 0.249997, 0.249997, 0.249997))
    # after 0 1 2: each of them drops by 10, e^-10 / (3 e^-10 + 2) = 0.000023
    assert_probs(distribution_after(both, uniform(5), ids(0, 1, 2)),
                 (0.000023, 0.000023, 0.000023, 0.499966, 0.499966))
    # after 0 1 2 0 0: token 0 (count 3) drops by 15 + 5 = 20, tokens 1 and 2 by 10 (llama.cpp prints
    # 0.000000 for e^-20 / (2 e^-10 + 2) = 1.03e-9, which is small but not filtered)
    assert_probs(distribution_after(both, uniform(5), ids(0, 1, 2, 0, 0)),
                 (1.03e-9, 0.000023, 0.000023, 0.499977, 0.499977))


def test_frequency_penalty_counts_each_occurrence_and_presence_only_once():
    # after 0 0 1, frequency ln 2: token 0's weight / 4, token 1's / 2: (0.1, 0.15, 0.2, 0.1) / 0.55
    frequency = FrequencyPenalty(frequency_penalty=math.log(2))
    assert_probs(distribution_after([frequency], input_ids=ids(0, 0, 1)), (0.181818, 0.272727, 0.363636, 0.181818))
    # presence ln 2: both seen tokens' weights / 2 once: (0.2, 0.15, 0.2, 0.1) / 0.65
    presence = PresencePenalty(presence_penalty=math.log(2))
    assert_probs(distribution_after([presence], input_ids=ids(0, 0, 1)), (0.307692, 0.230769, 0.307692, 0.153846))


def test_penalty_last_n_counts_only_the_window():
    # window 2 over 0 0 1 sees 0 1: each weight / 2 once, the same as presence above
    frequency = FrequencyPenalty(frequency_penalty=math.log(2), penalty_last_n=2)
    assert_probs(distribution_after([frequency], input_ids=ids(0, 0, 1)), (0.307692, 0.230769, 0.307692, 0.153846))
    # window 0 is off
    off = FrequencyPenalty(frequency_penalty=math.log(2), penalty_last_n=0)
    assert_probs(distribution_after([off], input_ids=ids(0, 0, 1)), P)


def dry(multiplier=1.0, base=1.1, allowed=2, last_n=-1, breakers=()) -> DRY:
    return DRY(dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed, dry_penalty_last_n=last_n,
               dry_sequence_breakers=[list(b) for b in breakers])


@pytest.mark.parametrize(("vocab", "history", "expected", "params"), [
    # too short to repeat: 2 tokens in the window <= allowed length 2
    (4, (0, 1), (0.25, 0.25, 0.25, 0.25), dict(last_n=4)),
    # the suffix 0 1 occurred before, followed by 2: 2 drops by 1 * 1.1^0, (e, e, 1, e) / (3e + 1)
    (4, (0, 1, 2, 0, 1), (0.296923, 0.296923, 0.109232, 0.296923), dict(last_n=5)),
    # the same match would penalise 3, but 3 is a sequence breaker
    (5, (0, 1, 3, 4, 0, 1), (0.2, 0.2, 0.2, 0.2, 0.2), dict(last_n=6, breakers=[[3]])),
    # multiplier 2: 2 drops by 2, (e^2, e^2, 1, e^2, e^2) / (4 e^2 + 1)
    (5, (0, 1, 2, 0, 1), (0.241818, 0.241818, 0.032727, 0.241818, 0.241818), dict(multiplier=2.0, last_n=5)),
    # allowed length 4: the repeated 0 1 is too short
    (5, (0, 1, 2, 3, 4, 0, 1), (0.2, 0.2, 0.2, 0.2, 0.2), dict(allowed=4, last_n=7)),
])
def test_dry_matches_llama_cpp_test_vectors(vocab, history, expected, params):
    # llama.cpp test_dry, with the same uniform distributions and parameters
    assert_probs(distribution_after([dry(**params)], uniform(vocab), ids(*history)), expected)


def test_dry_penalty_grows_by_the_base_for_each_token_beyond_the_allowed_length():
    # after 0 1 2 3 0 1 2, the suffix 0 1 2 (L = 3) occurred before, followed by 3: penalty 1 * 2^(3 - 2) = 2,
    # (1, 1, 1, e^-2) / (3 + e^-2) = (0.318945, ..., 0.043165)
    history = ids(0, 1, 2, 3, 0, 1, 2)
    assert_probs(distribution_after([dry(base=2.0)], uniform(4), history), (0.318945, 0.318945, 0.318945, 0.043165))


def test_a_multi_token_breaker_stops_a_match_from_reaching_back_across_it():
    # after 0 1 5 6 0 1 the suffix 0 1 occurred before, followed by 5: without breakers 5 drops by 1,
    # e^-1 / (6 + e^-1) = 0.057771. The breaker 6 0 ends one token from the end, so a match may reach
    # back only 1 token, below the allowed length 2: nothing is penalised.
    history, flat = ids(0, 1, 5, 6, 0, 1), [1 / 7] * 7
    assert_probs(distribution_after([dry()], uniform(7), history), [0.157038] * 5 + [0.057771, 0.157038])
    assert_probs(distribution_after([dry(breakers=[[6, 0]])], uniform(7), history), flat)


def test_sequence_bias_applies_to_the_last_token_when_the_rest_has_just_appeared():
    # after 2 0 with {(0, 1): ln 0.5}: the sequence ends with 0, so token 1's weight halves:
    # (0.4, 0.15, 0.2, 0.1) / 0.85
    bias = SequenceBias(sequence_bias="0 1=" + str(math.log(0.5)))
    assert_probs(distribution_after([bias], input_ids=ids(2, 0)), (0.470588, 0.176471, 0.235294, 0.117647))
    # after 0 2 it does not apply
    assert_probs(distribution_after([bias], input_ids=ids(0, 2)), P)


def test_bad_words_ban_single_tokens_always_and_sequences_only_when_completed():
    # after 1 2, [[3], [2, 0], [1, 1]]: 3 always, 0 because the sequence ends with 2, 1 stays: (0.3, 0.2) / 0.5
    ban = BadWords(bad_words_ids="3;2 0;1 1")
    assert_probs(distribution_after([ban], input_ids=ids(1, 2)), (0, 0.6, 0.4, 0))


def test_min_new_tokens_bans_eos_until_enough_new_tokens():
    # EOS 0, a 2-token prompt, min 2: after 1 new token EOS is banned, (0.3, 0.2, 0.1) / 0.6; after 2 it is not
    minimum = MinNewTokens(min_new_tokens=2, prompt_length=2, eos_token_id=0)
    assert_probs(distribution_after([minimum], input_ids=ids(1, 2, 3)), (0, 0.5, 0.333333, 0.166667))
    assert_probs(distribution_after([minimum], input_ids=ids(1, 2, 3, 1)), P)


def test_min_new_tokens_takes_the_first_length_after_a_reset_as_the_prompt():
    minimum = MinNewTokens(min_new_tokens=1, eos_token_id=[0])
    minimum.reset(1)
    assert torch.isneginf(minimum(log_probs(P), ids(5, 6, 7))[0, 0])  # the prompt: 3 tokens, 0 new
    assert torch.isfinite(minimum(log_probs(P), ids(5, 6, 7, 1))[0, 0])  # 1 new token
    minimum.reset(1)
    assert torch.isneginf(minimum(log_probs(P), ids(5, 6, 7, 1))[0, 0])  # a new sequence: its own prompt


def test_min_new_tokens_uses_the_model_eos_the_decode_loop_binds():
    minimum = MinNewTokens(min_new_tokens=1)
    minimum.bind((2,), seed=0)
    minimum.reset(1)
    assert torch.isneginf(minimum(log_probs(P), ids(5))[0, 2])


def test_mirostat_v2_truncates_at_surprise_mu_and_moves_mu_towards_tau():
    # surprises -log2 p = (1.321928, 1.736966, 2.321928, 3.321928). tau 0.6: mu starts at 2 * tau = 1.2,
    # below every surprise, so only the most probable token stays.
    mirostat = MirostatV2(tau=0.6, eta=1.0)
    mirostat.reset(1)
    logits, order = log_probs(P), torch.tensor([[0, 1, 2, 3]])
    probs = mirostat.distribution(logits)
    assert_probs(probs[0], (1, 0, 0, 0))
    # choosing it (surprise -log2 1 = 0): mu <- 1.2 - 1.0 * (0 - 0.6) = 1.8
    mirostat.accept(mirostat.select(logits, probs, order, torch.tensor([0.5])), probs)
    assert mirostat.mu == pytest.approx([1.8])
    # now 1.321928 and 1.736966 are <= 1.8: (0.4, 0.3) / 0.7
    probs = mirostat.distribution(logits)
    assert_probs(probs[0], (0.571429, 0.428571, 0, 0))
    # u = 0.9 picks token 1, surprise -log2 0.428571 = 1.222392: mu <- 1.8 - (1.222392 - 0.6) = 1.177608
    chosen = mirostat.select(logits, probs, order, torch.tensor([0.9]))
    assert chosen.tolist() == [1]
    mirostat.accept(chosen, probs)
    assert mirostat.mu == pytest.approx([1.177608], abs=1e-6)


def test_mirostat_v1_keeps_the_top_k_its_zipf_estimate_gives():
    # t = ln 2, ln 1.5, ln 4/3; b = ln 4/3, ln 1.5, ln 2: s = 0.563214 / 0.727616 = 0.774054, e = -0.225946.
    # tau 0.85, mu = 1.7: k = (e * 2^1.7 / (1 - 4^-e))^(1 / s) = (0.614263 * 3.249010)^1.291899 = 2.441775,
    # so the top 2 stay: (0.4, 0.3) / 0.7
    mirostat = Mirostat(tau=0.85, eta=0.1)
    mirostat.reset(1)
    assert mirostat.cutoff(list(P), mu=1.7, vocab=4) == pytest.approx(2.441775, abs=1e-6)
    logits, order = log_probs(P), torch.tensor([[0, 1, 2, 3]])
    probs = mirostat.distribution(logits)
    assert_probs(probs[0], (0.571429, 0.428571, 0, 0))
    # choosing token 0 (surprise -log2 0.571429 = 0.807355): mu <- 1.7 - 0.1 * (0.807355 - 0.85) = 1.704265
    mirostat.accept(mirostat.select(logits, probs, order, torch.tensor([0.1])), probs)
    assert mirostat.mu == pytest.approx([1.704265], abs=1e-6)
    # tau 3 (mu = 6): k = 114.8 > 4 keeps all; tau 0.5 (mu = 1): k = 1.30 keeps one
    assert_probs(distribution_after([], selector=_fresh(Mirostat(tau=3.0))), P)
    assert_probs(distribution_after([], selector=_fresh(Mirostat(tau=0.5))), (1, 0, 0, 0))


def _fresh(selector):
    selector.reset(1)
    return selector


# --- 2. oracle: the transformers processor of the same parameters ------------------------------------------



def both_ways(ours, theirs, logits, input_ids=NO_IDS, prefilter_k: int = 0):
    """Ours and theirs on the same logits, optionally after the same top-k (so the input holds -inf)."""
    if prefilter_k:
        logits = TopKLogitsWarper(prefilter_k)(input_ids, logits)
    return ours(logits, input_ids), theirs(input_ids, logits)


@pytest.mark.parametrize("prefilter_k", [0, 50])
@pytest.mark.parametrize("epsilon", [1e-4, 1e-3, 2e-2])
def test_epsilon_equals_transformers(random_logits, epsilon, prefilter_k):
    assert_same_as(*both_ways(Epsilon(epsilon_cutoff=epsilon), EpsilonLogitsWarper(epsilon), random_logits,
                              prefilter_k=prefilter_k))


@pytest.mark.parametrize("prefilter_k", [0, 50])
@pytest.mark.parametrize("epsilon", [1e-4, 2e-3, 0.05])
def test_eta_equals_transformers(random_logits, epsilon, prefilter_k):
    assert_same_as(*both_ways(Eta(eta_cutoff=epsilon), EtaLogitsWarper(epsilon), random_logits,
                              prefilter_k=prefilter_k))


@pytest.mark.parametrize("prefilter_k", [0, 50])
@pytest.mark.parametrize("top_h", [0.2, 0.5, 0.9])
def test_top_h_equals_transformers(random_logits, top_h, prefilter_k):
    assert_same_as(*both_ways(TopH(top_h=top_h), TopHLogitsWarper(top_h), random_logits, prefilter_k=prefilter_k))


def test_top_h_considers_only_the_hundred_most_probable_tokens(random_logits):
    kept = torch.isfinite(TopH(top_h=1.0)(random_logits, NO_IDS)).sum(dim=-1)
    assert (kept <= 100).all() and (kept > 1).all()


def biased_sequences(repeating_ids: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Sequences whose prefixes end some rows (so they apply there) and some that never match."""
    tails = repeating_ids[:, -2:].tolist()
    return {(tails[0][1], 7): 2.5, (tails[1][0], tails[1][1], 11): -3.0, (tails[2][1], 900): float("-inf"),
            (5,): -1.5, (999,): 4.0, (61, 62, 63): -7.0, (tails[0][1], 8): -0.5}


def test_sequence_bias_equals_transformers(random_logits, repeating_ids):
    biases = biased_sequences(repeating_ids)
    theirs = SequenceBiasLogitsProcessor(sequence_bias=[[list(k), v] for k, v in biases.items()])
    ours, expected = both_ways(SequenceBias(sequence_bias=biases), theirs, random_logits, repeating_ids)
    assert not torch.equal(ours, random_logits)
    assert_same_as(ours, expected)


def test_bad_words_equal_transformers(random_logits, repeating_ids):
    tails = repeating_ids[:, -3:].tolist()
    words = [[tails[0][2]], [tails[1][1], tails[1][2], 13], [tails[2][2], 14], [70, 71], [999]]
    ours, expected = both_ways(BadWords(bad_words_ids=words), NoBadWordsLogitsProcessor(words), random_logits,
                               repeating_ids)
    assert torch.isneginf(ours).sum() > 4  # the single tokens everywhere, and the completed sequences
    assert_same_as(ours, expected)


@pytest.mark.parametrize(("prompt_length", "minimum"), [(20, 5), (28, 3), (31, 0), (10, 40)])
def test_min_new_tokens_equals_transformers(random_logits, repeating_ids, prompt_length, minimum):
    ours = MinNewTokens(min_new_tokens=minimum, prompt_length=prompt_length, eos_token_id=[0, 17])
    theirs = MinNewTokensLengthLogitsProcessor(prompt_length, minimum, [0, 17])
    assert_same_as(*both_ways(ours, theirs, random_logits, repeating_ids))


# --- 3. XTC's coin: reproducible, per row, independent of the batch -------------------------------------


def flips(xtc: XTC, rows: int, steps: int, seed: int = 7) -> torch.Tensor:
    xtc.bind((), seed)
    xtc.reset(rows)
    return torch.stack([xtc.flips(rows) for _ in range(steps)])


def test_xtc_coin_is_reproducible_and_restarts_at_reset():
    xtc = XTC(xtc_probability=0.5)
    first = flips(xtc, rows=3, steps=50)
    assert torch.equal(first, flips(xtc, rows=3, steps=50))
    assert torch.equal(first, flips(XTC(xtc_probability=0.5), rows=3, steps=50))


def test_xtc_coin_of_a_row_does_not_depend_on_the_batch_size_and_rows_differ():
    three, two = flips(XTC(xtc_probability=0.5), 3, 50), flips(XTC(xtc_probability=0.5), 2, 50)
    assert torch.equal(three[:, :2], two)
    assert not torch.equal(three[:, 0], three[:, 1])


def test_xtc_coin_follows_the_run_seed_unless_its_own_seed_is_given():
    assert not torch.equal(flips(XTC(), 2, 50, seed=1), flips(XTC(), 2, 50, seed=2))
    assert torch.equal(flips(XTC(seed=5), 2, 50, seed=1), flips(XTC(seed=5), 2, 50, seed=2))


def test_xtc_cuts_at_about_the_given_share_of_steps():
    # 2000 flips at 0.3: mean 600, sd 20.5; 5 sd either way
    share = flips(XTC(xtc_probability=0.3), rows=4, steps=500).float().sum().item()
    assert 600 - 103 < share < 600 + 103


# --- 4. per-sequence state in a batch of samples on the tiny model ----------------------------------------


def tokens_by_sample(events) -> dict[int, list[int]]:
    return {e.sample: list(e.token_ids) for e in events if isinstance(e, Done)}


def seed_for_alone(seed: int, sample: int) -> int:
    """The run seed under which sample 0 draws exactly the numbers `sample` draws under `seed`, so that
    sample can be decoded alone. sample_seed is affine in the seed with an odd multiplier, so it inverts
    modulo 2**63."""
    modulus, offset = 2**63, sample_seed(0, 0)
    multiplier = (sample_seed(1, 0) - offset) % modulus
    alone = (sample_seed(seed, sample) - offset) * pow(multiplier, -1, modulus) % modulus
    assert sample_seed(alone, 0) == sample_seed(seed, sample)
    return alone


STATEFUL_CHAINS = [
    "mirostat-v2:tau=3:eta=0.5",
    "temp=1.5,mirostat:tau=4:eta=0.3",
    "dry:dry_multiplier=2:dry_allowed_length=1,presence-penalty=1.5,frequency-penalty:penalty_last_n=6,"
    "min-new-tokens=4,top-n-sigma=2,dynatemp=0.7",
]


@pytest.mark.parametrize("chain", STATEFUL_CHAINS)
def test_each_sample_in_a_batch_behaves_as_if_decoded_alone(tiny_lm, chain):
    prompt = encode_prompt(tiny_lm, "ROMEO:\nBut soft")
    config = dict(max_new_tokens=7, min_new_tokens=7, top_n=0)  # no row ends before another
    strategy = build_strategy({}, chain=chain).strategy
    batch = tokens_by_sample(decode(tiny_lm, strategy, prompt, DecodeConfig(num_samples=3, seed=11, **config)))
    batch_mu = list(getattr(strategy.selector, "mu", []))
    assert len({tuple(t) for t in batch.values()}) > 1, "the samples should differ"
    for sample in range(3):
        alone = build_strategy({}, chain=chain).strategy
        events = decode(tiny_lm, alone, prompt, DecodeConfig(num_samples=1, seed=seed_for_alone(11, sample), **config))
        assert tokens_by_sample(events)[0] == batch[sample]
        if batch_mu:
            assert alone.selector.mu == pytest.approx([batch_mu[sample]], rel=1e-6)  # float32 logits


def test_a_strategy_reused_for_a_second_run_starts_afresh(tiny_lm):
    prompt = encode_prompt(tiny_lm, "JULIET:\nO Romeo")
    strategy = build_strategy({}, chain="xtc:xtc_probability=0.5:xtc_threshold=0.01,mirostat-v2:tau=3").strategy
    config = DecodeConfig(num_samples=2, max_new_tokens=6, min_new_tokens=6, seed=3, top_n=0)
    first = tokens_by_sample(decode(tiny_lm, strategy, prompt, config))
    mu_after_first = list(strategy.selector.mu)
    assert tokens_by_sample(decode(tiny_lm, strategy, prompt, config)) == first
    assert strategy.selector.mu == mu_after_first


def test_a_clone_carries_the_state_it_was_taken_in_and_then_goes_its_own_way():
    logits = log_probs(P).repeat(2, 1)
    strategy = build_strategy({}, chain="xtc:xtc_probability=0.5:xtc_threshold=0.19,mirostat-v2:tau=1:eta=1").strategy
    strategy.bind((), seed=9)
    strategy.reset(2)
    probs = strategy.distribution(logits, NO_IDS.expand(2, 0))
    strategy.accept(torch.tensor([0, 1]), probs)  # the rows' mu move apart
    twin = strategy.clone()
    assert twin.selector.mu == strategy.selector.mu and twin.selector.mu is not strategy.selector.mu
    # the twin's coins continue from where the original's are, and flipping them leaves the original's alone
    xtc, twin_xtc = strategy.transforms[0], twin.transforms[0]
    states = [coin.get_state() for coin in xtc._coins]
    assert all(torch.equal(a, b.get_state()) for a, b in zip(states, twin_xtc._coins, strict=True))
    twin_xtc.flips(2)
    assert all(torch.equal(a, b.get_state()) for a, b in zip(states, xtc._coins, strict=True))
    assert not any(torch.equal(a, b.get_state()) for a, b in zip(states, twin_xtc._coins, strict=True))
    twin.accept(torch.tensor([1, 1]), twin.distribution(logits, NO_IDS.expand(2, 0)))
    assert twin.selector.mu != strategy.selector.mu
    twin.transforms[0].values["xtc_threshold"] = 0.3  # a probe's values are its own
    assert strategy.transforms[0].xtc_threshold == 0.19


def test_a_stateless_samplers_clone_has_its_own_values_and_the_same_output():
    top_p = build_strategy({"top_p": 0.7}).strategy
    twin = top_p.clone()
    assert str(twin) == str(top_p)
    assert torch.equal(twin.distribution(log_probs(P), NO_IDS), top_p.distribution(log_probs(P), NO_IDS))
    twin.transforms[-1].values["top_p"] = 0.9
    assert "0.7" in str(top_p) and "0.9" in str(twin)


def test_xtc_sample_does_not_depend_on_the_number_of_samples(tiny_lm):
    prompt = encode_prompt(tiny_lm, "Café, naïve")
    chain = "xtc:xtc_probability=0.5:xtc_threshold=0.005"
    runs = [tokens_by_sample(decode(tiny_lm, build_strategy({}, chain=chain).strategy, prompt,
                                    DecodeConfig(num_samples=n, max_new_tokens=6, min_new_tokens=6, seed=5, top_n=0)))
            for n in (1, 3)]
    assert runs[0][0] == runs[1][0]


def test_mirostat_reports_its_truncated_distribution_in_each_step(tiny_lm):
    prompt = encode_prompt(tiny_lm, "ROMEO:\nBut soft")
    strategy = build_strategy({}, chain="mirostat-v2:tau=2:eta=0.5").strategy
    steps = [e for e in decode(tiny_lm, strategy, prompt, DecodeConfig(max_new_tokens=6, seed=1))
             if isinstance(e, Step)]
    assert all(0 < s.kept < tiny_lm.vocab_size and s.sampled_prob > 0 for s in steps)


def test_min_new_tokens_in_a_chain_bans_eos_in_the_decode_loop(tiny_lm):
    # an EOS bias of +30 makes EOS the greedy pick at once; the chain's min-new-tokens=4 holds it off 4 steps
    head = tiny_lm.model.lm_head
    eos = tiny_lm.eos_token_ids[0]
    original = head.weight[eos].clone()
    try:
        with torch.no_grad():
            head.weight[eos] = 0
        prompt = encode_prompt(tiny_lm, "ROMEO:\nBut soft")
        bias = build_strategy({}, chain=f"logit-bias={eos}=30,min-new-tokens=4,greedy").strategy
        done = [e for e in decode(tiny_lm, bias, prompt, DecodeConfig(max_new_tokens=10)) if isinstance(e, Done)]
        assert done[0].finish_reason == "eos" and done[0].n_tokens == 5
    finally:
        with torch.no_grad():
            head.weight[eos] = original


# --- 5. bad values: one line naming the parameter and the value ---------------------------------------------


@pytest.mark.parametrize(("spec", "fragments"), [
    ("epsilon=1", ["epsilon", "`epsilon_cutoff`", "[0, 1)", "1.0"]),
    ("eta=-0.1", ["eta", "`eta_cutoff`", "-0.1"]),
    ("top-h=0", ["top-h", "`top_h`", "(0, 1]", "0.0"]),
    ("top-n-sigma=-1", ["`top_n_sigma`", ">= 0", "-1.0"]),
    ("top-n-sigma=inf", ["`top_n_sigma`", "inf"]),
    ("xtc=1.5", ["xtc", "`xtc_probability`", "1.5"]),
    ("xtc:xtc_threshold=-0.1", ["`xtc_threshold`", "-0.1"]),
    ("xtc:seed=-2", ["`seed`", "-2"]),
    ("dynatemp=-1", ["dynatemp", "`dynatemp_range`", "-1.0"]),
    ("dynatemp:dynatemp_exponent=nan", ["`dynatemp_exponent`", "nan"]),
    ("presence-penalty=inf", ["presence-penalty", "`presence_penalty`", "inf"]),
    ("frequency-penalty:penalty_last_n=-2", ["`penalty_last_n`", ">= -1", "-2"]),
    ("frequency-penalty:penalty_last_n=1.5", ["`penalty_last_n`", "integer", "1.5"]),
    ("dry:dry_base=0.5", ["dry", "`dry_base`", ">= 1", "0.5"]),
    ("dry:dry_allowed_length=0", ["`dry_allowed_length`", "0"]),
    ("dry:dry_sequence_breakers=a b", ["`dry_sequence_breakers`", "'a b'", "`a` is not a token id"]),
    ("dry:dry_sequence_breakers=1;;2", ["`dry_sequence_breakers`", "empty sequence"]),
    ("logit-bias=15=abc", ["logit-bias", "`logit_bias`", "'15=abc'", "bias `abc` is not a number"]),
    ("logit-bias=15=inf", ["`logit_bias`", "bias inf is not allowed"]),
    ("logit-bias=15=nan", ["`logit_bias`", "nan"]),
    ("logit-bias=x=1", ["`logit_bias`", "`x` is not a token id"]),
    ("logit-bias=-3=1", ["`logit_bias`", "`-3` is not a token id"]),
    ("logit-bias=15=1;15=2", ["`logit_bias`", "token `15` is given twice"]),
    ("logit-bias=15", ["`logit_bias`", "15"]),
    ("sequence-bias=1 2", ["sequence-bias", "`sequence_bias`", "is not KEY=BIAS"]),
    ("bad-words=1.5", ["bad-words", "`bad_words_ids`", "1.5"]),
    ("min-new-tokens=-1", ["min-new-tokens", "`min_new_tokens`", "-1"]),
    ("min-new-tokens:eos_token_id=eos", ["`eos_token_id`", "'eos'"]),
    ("mirostat-v2:tau=0", ["mirostat-v2", "`tau`", "> 0", "0.0"]),
    ("mirostat:eta=-1", ["mirostat", "`eta`", "-1.0"]),
    ("mirostat:m=1", ["mirostat", "`m`", ">= 2", "1"]),
    ("dry:dry_multiplyer=1", ["unknown parameter `dry_multiplyer`", "did you mean `dry_multiplier`"]),
])
def test_a_bad_value_is_one_line_naming_the_parameter_and_the_value(spec, fragments):
    usage_error(lambda: parse_chain(spec), *fragments)


def test_a_token_id_outside_the_vocabulary_is_a_usage_error_when_the_chain_runs():
    for transform in (LogitBias(logit_bias="9=1"), SequenceBias(sequence_bias="1 9=1"), BadWords(bad_words_ids="9"),
                      MinNewTokens(eos_token_id=9)):
        usage_error(lambda t=transform: t(log_probs(P), ids(1)), transform.name, "token id 9",
                    "outside the model's vocabulary (4 tokens)")


def test_min_new_tokens_without_a_known_eos_is_a_usage_error():
    usage_error(lambda: MinNewTokens(min_new_tokens=2)(log_probs(P), ids(1)), "min-new-tokens", "eos_token_id=ID")


# --- 6. never in place -----------------------------------------------------------------------------------

EVERY_NEW_TRANSFORM = [
    Epsilon(epsilon_cutoff=0.02), Eta(eta_cutoff=0.05), TopH(top_h=0.5), TopNSigma(top_n_sigma=1.0),
    XTC(xtc_probability=1.0, xtc_threshold=0.05), DynamicTemperature(dynatemp_range=0.5),
    LogitBias(logit_bias="3=-inf;4=2"), PresencePenalty(presence_penalty=1.0), FrequencyPenalty(frequency_penalty=1.0),
    dry(allowed=1), SequenceBias(sequence_bias="1 2=3;5=-1"), BadWords(bad_words_ids="2 3;6"),
    MinNewTokens(min_new_tokens=10, eos_token_id=0),
]


@pytest.mark.parametrize("transform", EVERY_NEW_TRANSFORM, ids=str)
def test_new_transforms_never_modify_their_input_and_change_something(transform):
    logits, history = logits_and_history()
    logits_before, history_before = logits.clone(), history.clone()
    out = transform(logits, history)
    assert torch.equal(logits, logits_before) and torch.equal(history, history_before)
    assert out.data_ptr() != logits.data_ptr(), "a transform returns a new tensor"
    assert not torch.equal(out, logits), "the parameters chosen here should change something"


@pytest.mark.parametrize("selector", [MirostatV2(tau=3.0), Mirostat(tau=3.0)], ids=str)
def test_mirostat_distribution_and_select_never_modify_their_input(selector):
    logits, _ = logits_and_history()
    selector.reset(3)
    probs = selector.distribution(logits)
    order = torch.sort(logits, descending=True, stable=True).indices
    uniforms = torch.tensor([0.1, 0.5, 0.9])
    before = [t.clone() for t in (logits, probs, order, uniforms)]
    selector.select(logits, probs, order, uniforms)
    assert all(torch.equal(a, b) for a, b in zip((logits, probs, order, uniforms), before, strict=True))
    assert torch.allclose(probs.sum(dim=-1), torch.ones(3)) and ((probs > 0).sum(dim=-1) < 49).all()


# --- 7. the registry, chains and listings ------------------------------------------------------------------


def test_every_new_sampler_is_registered_and_listed_with_kind_source_and_rules():
    rows = {row["name"]: row for row in describe_registry()}
    assert set(NEW) <= set(TRANSFORMS) and {"mirostat", "mirostat-v2"} <= set(SELECTORS)
    for name in (*NEW, "mirostat", "mirostat-v2"):
        row = rows[name]
        assert row["kind"] in ("truncation", "reshaping", "penalty", "stateful", "constraint", "selector")
        assert row["source"] and row["summary"] and row["params"]
        assert all(p["rule"] and p["type"] for p in row["params"])
    assert rows["dry"]["params"][-1] == {"name": "dry_sequence_breakers", "type": "list", "default": [],
                                         "rule": "token id sequences, e.g. \"198;25 11\" (ids, spaces, ';')"}
    assert rows["mirostat-v2"]["kind"] == "selector" and rows["xtc"]["kind"] == "stateful"


def test_samplers_that_read_the_history_say_so_in_their_kind():
    # `score` gives each position its own prefix only for these kinds
    for name in ("presence-penalty", "frequency-penalty", "dry", "sequence-bias", "bad-words", "min-new-tokens"):
        assert TRANSFORMS[name].kind in ("penalty", "stateful")


@pytest.mark.parametrize(("spec", "printed"), [
    ("epsilon_cutoff=0.001,eta-cutoff=0.002,top_h=0.5,top-nsigma=1.5",
     "logits -> epsilon(0.001) -> eta(0.002) -> top-h(0.5) -> top-n-sigma(1.5) -> sample"),
    ("logit_bias=15=-inf;42=2.5,temp=0.7", "logits -> logit-bias({15: -inf, 42: 2.5}) -> temperature(0.7) -> sample"),
    ("bad_words_ids=12 13;15,sequence_bias=3 4=-2", "logits -> bad-words([[12, 13], [15]]) -> "
     "sequence-bias({[3, 4]: -2}) -> sample"),
    ("dry:dry_sequence_breakers=198;25 11", "logits -> dry(0.8, 1.75, 2, -1, [[198], [25, 11]]) -> sample"),
    ("min-tokens=3,mirostat2:tau=4", "logits -> min-new-tokens(3, -1, []) -> mirostat-v2(4, 0.1)"),
    ("temp-ext=0.5,mirostat", "logits -> dynatemp(0.5, 1, 1) -> mirostat(5, 0.1, 100)"),
    ("presence_penalty=0.3,frequency-penalty:penalty_last_n=-1",
     "logits -> presence-penalty(0.3, 64) -> frequency-penalty(0.5, -1) -> sample"),
])
def test_chains_understand_the_new_names_their_aliases_and_list_values(spec, printed):
    assert str(build_strategy({}, chain=spec).strategy) == printed


@pytest.mark.parametrize(("name", "printed"), [
    ("epsilon", "logits -> epsilon(0.0003) -> sample"),
    ("eta", "logits -> eta(0.002) -> sample"),
    ("top-h", "logits -> top-h(0.4) -> sample"),
    ("top-n-sigma", "logits -> top-n-sigma(1) -> sample"),
    ("mirostat", "logits -> mirostat(5, 0.1, 100)"),
    ("mirostat-v2", "logits -> mirostat-v2(5, 0.1)"),
])
def test_new_named_strategies_fill_in_their_defaults(name, printed):
    built = build_strategy({}, strategy=name)
    assert str(built.strategy) == printed and built.strategy.name == name


def test_new_settings_compose_in_order_and_penalty_last_n_reaches_both_penalties():
    # logit bias first and the penalties with the processors, as llama.cpp; then transformers' warper order
    settings = {"top_n_sigma": 2.0, "epsilon_cutoff": 0.001, "temperature": 0.7, "frequency_penalty": 0.2,
                "presence_penalty": 0.5, "penalty_last_n": 16, "logit_bias": "5=-1", "top_h": 0.9}
    assert str(build_strategy(settings).strategy) == (
        "logits -> logit-bias({5: -1}) -> presence-penalty(0.5, 16) -> frequency-penalty(0.2, 16) -> "
        "temperature(0.7) -> top-h(0.9) -> epsilon(0.001) -> top-n-sigma(2) -> sample")


def test_penalties_alone_keep_the_default_sampling_and_off_values_leave_no_stage():
    built = build_strategy({"presence_penalty": 0.5, "frequency_penalty": 0.0, "logit_bias": {}})
    assert str(built.strategy) == "logits -> presence-penalty(0.5, 64) -> temperature(0.8) -> top-p(0.95) -> sample"


def test_penalty_last_n_without_a_penalty_is_validated_and_reported_unused():
    built = build_strategy({"penalty_last_n": 16, "temperature": 0.7})
    assert str(built.strategy) == "logits -> temperature(0.7) -> sample" and built.ignored == {"penalty_last_n": 16}
    usage_error(lambda: build_strategy({"penalty_last_n": -5}), "`penalty_last_n`", "-5")
    usage_error(lambda: build_strategy({"penalty_lastn": 3}), "did you mean `penalty_last_n`")


def test_list_parameters_take_the_structures_a_preset_gives():
    assert LogitBias(logit_bias={"15": "-inf", 42: 2}).logit_bias == {15: float("-inf"), 42: 2.0}
    assert LogitBias(logit_bias=[[15, -1e9]]).logit_bias == {15: -1e9}
    assert BadWords(bad_words_ids=[[1, 2], [3]]).bad_words_ids == ((1, 2), (3,))
    assert BadWords(bad_words_ids=[4, 5]).bad_words_ids == ((4,), (5,))
    assert SequenceBias(sequence_bias=[[[1, 2], -2.0]]).sequence_bias == {(1, 2): -2.0}
    assert SequenceBias(sequence_bias={"1 2": 1}).sequence_bias == {(1, 2): 1.0}
    assert MinNewTokens(eos_token_id="0;2").eos_token_id == (0, 2)


# --- properties on random small distributions ----------------------------------------------------------------

logit_rows = st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=12)
new_chains = st.lists(st.sampled_from([
    Epsilon(epsilon_cutoff=0.1), Eta(eta_cutoff=0.1), TopH(top_h=0.5), TopNSigma(top_n_sigma=0.5),
    XTC(xtc_probability=1.0, xtc_threshold=0.1), DynamicTemperature(dynatemp_range=0.8),
    LogitBias(logit_bias="0=-inf;1=-inf"), PresencePenalty(presence_penalty=2.0), dry(allowed=1),
    BadWords(bad_words_ids="0;1"), MinNewTokens(min_new_tokens=5, eos_token_id=[0, 1]),
]), max_size=4)


@settings(max_examples=60, deadline=None, database=None)
@given(row=logit_rows, chain=new_chains, version=st.sampled_from([MirostatV2, Mirostat]))
def test_every_chain_of_new_samplers_gives_exact_zeros_where_it_filters(row, chain, version):
    logits = torch.tensor([row])
    history = torch.tensor([[0, 1, 0]])
    for selector in (Sample(), _fresh(version(tau=1.0))):
        strategy = Strategy(chain, selector)
        processed = strategy.process(logits, history)
        probs = strategy.distribution(logits, history)
        assert torch.isfinite(processed).any()
        assert abs(probs.sum().item() - 1) < 1e-5
        assert torch.equal(probs[torch.isneginf(processed)], torch.zeros(int(torch.isneginf(processed).sum())))


# --- 8. the command line: --presence-penalty, --frequency-penalty, --penalty-last-n, --logit-bias, --logprob-of -----

CLI = CliRunner()


def cli(*args: str):
    return CLI.invoke(app, list(args), prog_name="samplecli")


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_penalty_and_bias_flags_join_the_chain_before_the_sampling(tiny_model_dir, tiny_lm):
    (the,) = tiny_lm.tokenizer.encode(" the", add_special_tokens=False)
    result = cli("generate", "ROMEO:", "--model", str(tiny_model_dir), "-n", "6", "--seed", "1", "--view", "none",
                 "-f", "jsonl", "--presence-penalty", "0.5", "--frequency-penalty", "0.3", "--penalty-last-n", "8",
                 "--logit-bias", "5=-inf", "--logit-bias", " the=2", "--temp", "0.9")
    assert result.exit_code == 0, result.stderr
    assert (f"logits -> logit-bias({{5: -inf, {the}: 2}}) -> presence-penalty(0.5, 8) -> "
            "frequency-penalty(0.3, 8) -> temperature(0.9) -> sample") in result.stderr
    steps = [r for r in jsonl(result.stdout) if r["type"] == "step"]
    assert len(steps) == 6 and all(r["token_id"] != 5 for r in steps)


def test_a_large_logit_bias_makes_its_token_the_only_choice(tiny_model_dir):
    result = cli("generate", "ROMEO:", "--model", str(tiny_model_dir), "-n", "5", "--seed", "2", "--view", "none",
                 "-f", "jsonl", "--logit-bias", "7=100", "-q")
    assert result.exit_code == 0, result.stderr
    assert [r["token_id"] for r in jsonl(result.stdout) if r["type"] == "step"] == [7] * 5


def test_logprob_of_reports_the_named_tokens_and_the_chosen_rank_at_every_step(tiny_model_dir, tiny_lm):
    (romeo,) = tiny_lm.tokenizer.encode("ROMEO", add_special_tokens=False)
    result = cli("generate", "JULIET:", "--model", str(tiny_model_dir), "-n", "5", "--seed", "3", "--view", "none",
                 "-f", "jsonl", "-q", "--top-n", "300", "--logprob-of", "5", "--logprob-of", "ROMEO", "--top-p", "0.5")
    assert result.exit_code == 0, result.stderr
    steps = [r for r in jsonl(result.stdout) if r["type"] == "step"]
    assert len(steps) == 5
    for step in steps:
        top = {a["token_id"]: a for a in step["top"]}  # --top-n 300: the whole vocabulary, most probable first
        assert [a["token_id"] for a in step["logprob_of"]] == [5, romeo]
        for named in step["logprob_of"]:
            assert named == top[named["token_id"]]
        assert step["rank"] == 1 + sum(a["prob"] > step["prob"] for a in step["top"])
        assert step["rank"] == [a["token_id"] for a in step["top"]].index(step["token_id"]) + 1


def test_without_logprob_of_the_records_have_no_rank():
    record = step_record(Step(sample=0, step=0, token_id=1, token="a", text="a", bytes=(97,), logprob=-1.0,
                              prob=0.37, sampled_prob=0.5, entropy=1.0, sampled_entropy=0.5, kept=2))
    assert "rank" not in record and "logprob_of" not in record


@pytest.mark.parametrize(("args", "fragments"), [
    (["--logit-bias", "5"], ["--logit-bias '5'", "expected TOKEN=BIAS"]),
    (["--logit-bias", "5=abc"], ["--logit-bias '5=abc'", "bias `abc` is not a number"]),
    (["--logit-bias", "5=inf"], ["--logit-bias '5=inf'", "bias inf is not allowed"]),
    (["--logit-bias", "xyzzyq=1"], ["--logit-bias 'xyzzyq'", "tokens of it", "give text that is one token"]),
    (["--logit-bias", "999=1"], ["logit-bias", "token id 999", "vocabulary (300 tokens)"]),
    (["--logprob-of", "999"], ["--logprob-of", "token id 999", "vocabulary (300 tokens)"]),
    (["--presence-penalty", "nan"], ["`presence_penalty`", "nan"]),
    (["--frequency-penalty", "1", "--penalty-last-n", "-3"], ["`penalty_last_n`", "-3"]),
])
def test_bad_new_flags_are_one_red_line_and_exit_2(tiny_model_dir, args, fragments):
    result = cli("generate", "ROMEO:", "--model", str(tiny_model_dir), "-n", "2", "--view", "none", "-f", "jsonl",
                 *args)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    # one error line, last (an id checked against the vocabulary comes after the header naming the model)
    lines = result.stderr.strip().splitlines()
    assert result.stdout == "" and [line for line in lines if "error" in line] == lines[-1:]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, result.stderr)
