"""Specification of the text statistics `compare` reports (samplecli.analysis.metrics), each checked against a value
worked out by hand on a tiny list of token ids; the arithmetic is in the comment next to each number."""

from __future__ import annotations

import importlib.util
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samplecli.analysis.metrics import (
    bleu,
    distinct_n,
    loop_at_end,
    looped_fraction,
    mean_and_spread,
    repeated_ngram_fraction,
    self_bleu,
    zipf_coefficient,
)

# --- distinct-n -------------------------------------------------------------------------------------------------


def test_distinct_1_is_unique_tokens_over_all_tokens():
    # tokens 1 2 1 2 3: 5 unigrams, 3 unique (1, 2, 3) -> 3 / 5
    assert distinct_n([[1, 2, 1, 2, 3]], 1) == pytest.approx(3 / 5)


def test_distinct_2_is_unique_bigrams_over_all_bigrams():
    # bigrams (1,2) (2,1) (1,2) (2,3): 4 in all, 3 unique -> 3 / 4
    assert distinct_n([[1, 2, 1, 2, 3]], 2) == pytest.approx(3 / 4)


def test_distinct_n_pools_the_samples_without_bigrams_across_their_boundary():
    # unigrams 1 2 | 1 3: 4 in all, 3 unique -> 3 / 4; bigrams (1,2) | (1,3): 2, both unique -> 1.0
    # (a bigram (2,1) across the boundary would make it 2 / 3)
    assert distinct_n([[1, 2], [1, 3]], 1) == pytest.approx(3 / 4)
    assert distinct_n([[1, 2], [1, 3]], 2) == 1.0


def test_distinct_n_of_a_text_without_any_n_gram_is_none():
    assert distinct_n([[7], [8]], 2) is None
    assert distinct_n([], 1) is None


# --- repeated n-grams ---------------------------------------------------------------------------------------------


def test_the_repeated_4_gram_fraction_counts_4_grams_seen_before():
    # 1 2 3 4 1 2 3 4 1 has six 4-grams: (1234) (2341) (3412) (4123) (1234) (2341);
    # the 5th and 6th occurred earlier -> 2 / 6
    assert repeated_ngram_fraction([1, 2, 3, 4, 1, 2, 3, 4, 1], 4) == pytest.approx(1 / 3)


def test_a_first_occurrence_is_not_a_repeat():
    # 5 5 5 5 5: two 4-grams, both (5555); only the second is a repeat -> 1 / 2
    assert repeated_ngram_fraction([5, 5, 5, 5, 5], 4) == pytest.approx(1 / 2)
    assert repeated_ngram_fraction([1, 2, 3, 4, 5, 6], 4) == 0.0


def test_the_repeated_bigram_fraction_uses_the_same_rule():
    # bigrams (1,2) (2,1) (1,2): the third repeats the first -> 1 / 3
    assert repeated_ngram_fraction([1, 2, 1, 2], 2) == pytest.approx(1 / 3)


def test_a_text_shorter_than_n_has_no_repeated_n_gram_fraction():
    assert repeated_ngram_fraction([1, 2, 3], 4) is None


# --- the share of a text inside loops, anywhere -------------------------------------------------------------------

# The greedy text of the README's first tour (a line and a speaker's name, written again and again), as token ids:
# A = "I'll tell thee, and I'll not stay." (9 tokens), B = "\n\nROMEO:\n" (4 tokens), then a start of A again.
LINE, NAME = [11, 12, 13, 14, 15, 11, 16, 17, 18], [1, 1, 2, 1]
GREEDY_LIKE = [1] + LINE + NAME + LINE + NAME + LINE[:3]


@pytest.mark.parametrize(("tokens", "share"), [
    (GREEDY_LIKE, 1.0),  # one line and a name written again from the first token: all of it is loop
    ([9] + [1, 2, 3, 4] * 3 + [5], 12 / 14),  # (1 2 3 4) x 3 in the middle: 12 of 14 tokens
    ([1, 2, 3, 4, 5, 6, 7, 8] * 2 + [20, 21, 22, 23], 16 / 20),  # a phrase twice, back to back, then new text
    ([7] * 8 + [1, 2, 3, 4, 5, 6, 7, 8], 8 / 16),  # one token eight times
], ids=["greedy-like", "phrase-x3-inside", "phrase-x2-at-the-start", "token-x8"])
def test_the_looped_fraction_counts_every_token_inside_a_loop_wherever_it_is(tokens, share):
    assert looped_fraction(tokens) == pytest.approx(share)
    assert loop_at_end(tokens) is None  # none of them ends in a loop: the measure of Holtzman et al. says 0


@pytest.mark.parametrize(("tokens", "share"), [
    ([1, 2, 3, 4, 5, 6, 7, 8], 0.0),  # no repetition
    ([30, 31, 32, 31, 32, 33], 0.0),  # "Romeo, Romeo,": a phrase twice, but 4 tokens are too short for a loop
    ([1, 2, 3, 4, 9, 1, 2, 3, 4, 9, 8], 10 / 11),  # (1 2 3 4 9) x 2: 10 tokens, long enough
    ([1, 2, 3, 4, 9, 5, 1, 2, 3, 4, 9], 0.0),  # the same phrase twice, not back to back
], ids=["none", "too-short", "long-enough", "not-back-to-back"])
def test_a_loop_is_a_phrase_written_again_at_once_over_at_least_eight_tokens(tokens, share):
    assert looped_fraction(tokens) == pytest.approx(share)


def test_an_empty_text_has_no_looped_fraction():
    assert looped_fraction([]) is None


# --- the loop a generation ends in ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens", "loop"), [
    ([5, 7, 7, 7], (1, 3)),  # one token, three times at the end
    ([7, 7, 7, 7, 7, 7], (1, 6)),  # the shortest phrase is reported: (7) x 6, not (7 7) x 3
    ([9, 1, 2, 1, 2, 1, 2], (2, 3)),  # (1 2) x 3 after a different start
    ([1, 2, 1, 2, 1, 2, 1, 2], (2, 4)),  # (1 2) x 4: every repeat is counted
    ([1, 2, 3, 1, 2, 3, 1, 2, 3], (3, 3)),  # (1 2 3) x 3
    ([1, 1, 2, 1, 1, 2, 1, 1, 2], (3, 3)),  # (1 1 2) x 3, with a repeated token inside the phrase
], ids=["token-x3", "shortest-phrase", "bigram-x3", "bigram-x4", "trigram-x3", "phrase-with-a-double"])
def test_a_text_ending_in_a_phrase_repeated_three_times_ends_in_a_loop(tokens, loop):
    assert loop_at_end(tokens) == loop


@pytest.mark.parametrize("tokens", [
    [1, 2, 3, 4],  # no repetition
    [7, 7],  # twice is not a loop
    [1, 2, 3, 1, 2, 3],  # a phrase twice
    [1, 2, 1, 2, 1, 2, 3],  # the loop is not at the end
    [1, 2, 1, 2, 1, 3, 1, 2],  # not back to back
    [],
], ids=["none", "token-x2", "phrase-x2", "loop-not-at-the-end", "not-back-to-back", "empty"])
def test_a_text_without_a_phrase_repeated_three_times_at_the_end_has_no_loop(tokens):
    assert loop_at_end(tokens) is None


def test_min_repeats_sets_how_many_repeats_make_a_loop():
    assert loop_at_end([1, 2, 3, 1, 2, 3], min_repeats=2) == (3, 2)
    assert loop_at_end([5, 7, 7, 7], min_repeats=4) is None


# --- Zipf coefficient ---------------------------------------------------------------------------------------------


def test_the_zipf_coefficient_is_minus_the_least_squares_slope_of_log_count_on_log_rank():
    # counts 4, 2, 1 at ranks 1, 2, 3: x = (0, ln 2, ln 3), y = (ln 4, ln 2, 0) = (2 ln 2, ln 2, 0).
    # mean y = ln 2, so y - mean y = (ln 2, 0, -ln 2), and
    #   Sxy = (0 - mx) ln 2 + (ln 3 - mx)(-ln 2) = -ln 2 ln 3                       = -0.761500
    #   Sxx = ln^2 2 + ln^2 3 - (ln 2 + ln 3)^2 / 3 = 0.480453 + 1.206949 - 1.070134 = 0.617268
    # slope = Sxy / Sxx = -1.233662, so s = 1.233662
    ln2, ln3 = math.log(2), math.log(3)
    by_hand = ln2 * ln3 / (ln2**2 + ln3**2 - (ln2 + ln3) ** 2 / 3)
    tokens = [1, 1, 1, 1, 2, 2, 3]
    assert by_hand == pytest.approx(1.233662, abs=1e-6)
    assert zipf_coefficient([tokens]) == pytest.approx(by_hand, rel=1e-12)


def test_a_perfect_zipf_law_has_its_own_exponent():
    # counts 12/r at ranks 1..4 (12, 6, 4, 3): log count = ln 12 - 1 * ln r exactly -> s = 1
    zipf_1 = [1] * 12 + [2] * 6 + [3] * 4 + [4] * 3
    assert zipf_coefficient([zipf_1]) == pytest.approx(1.0, abs=1e-12)
    # counts 36/r^2 (36, 9, 4): log count = ln 36 - 2 ln r -> s = 2
    zipf_2 = [1] * 36 + [2] * 9 + [3] * 4
    assert zipf_coefficient([zipf_2]) == pytest.approx(2.0, abs=1e-12)


def test_the_zipf_coefficient_pools_samples_and_ignores_token_order():
    assert zipf_coefficient([[3, 1, 2, 1], [1, 2, 1]]) == zipf_coefficient([[1, 1, 1, 1, 2, 2, 3]])


def test_equal_counts_have_a_zipf_coefficient_of_zero_and_one_token_type_has_none():
    value = zipf_coefficient([[1, 2, 3, 4]])
    assert value == 0.0 and math.copysign(1.0, value) == 1.0  # 0.0, never shown as "-0.00"
    assert zipf_coefficient([[5, 5, 5]]) is None
    assert zipf_coefficient([]) is None


# --- BLEU and Self-BLEU -------------------------------------------------------------------------------------------


def test_bleu_of_a_hypothesis_against_itself_is_one():
    assert bleu([1, 2, 3, 4, 5], [[1, 2, 3, 4, 5]]) == pytest.approx(1.0)


def test_bleu_smooths_a_missing_n_gram_order_with_a_tenth_of_a_count():
    # hypothesis 1 2 3 4 5 against 1 9 9 9 9: only the unigram 1 matches.
    # p1 = 1/5; p2, p3, p4 have no match: (0 + 0.1) / 4, 0.1 / 3, 0.1 / 2 (Chen & Cherry's method 1).
    # equal lengths, so no brevity penalty: BLEU = (0.2 * 0.025 * 0.0333 * 0.05) ** (1/4) = 0.05373
    by_hand = (0.2 * 0.025 * (0.1 / 3) * 0.05) ** 0.25
    assert by_hand == pytest.approx(0.05373, abs=1e-5)
    assert bleu([1, 2, 3, 4, 5], [[1, 9, 9, 9, 9]]) == pytest.approx(by_hand, rel=1e-12)


def test_bleu_clips_each_n_gram_at_its_count_in_a_reference():
    # hypothesis 7 7 7 7 against 7 1 2 3: the reference has one 7, so p1 = 1/4 (not 4/4);
    # (7,7) x 3, (7,7,7) x 2, (7,7,7,7) x 1 never occur there: 0.1 / 3, 0.1 / 2, 0.1 / 1.
    # BLEU = (0.25 * 0.0333 * 0.05 * 0.1) ** (1/4) = 0.08034
    by_hand = (0.25 * (0.1 / 3) * 0.05 * 0.1) ** 0.25
    assert by_hand == pytest.approx(0.08034, abs=1e-5)
    assert bleu([7, 7, 7, 7], [[7, 1, 2, 3]]) == pytest.approx(by_hand, rel=1e-12)


def test_bleu_of_samples_with_no_token_in_common_is_zero():
    # NLTK's sentence_bleu returns 0 when no unigram matches, before any smoothing; without that rule,
    # smoothing alone would give (0.1/5 * 0.1/4 * 0.1/3 * 0.1/2) ** (1/4) = 0.0302
    assert bleu([1, 2, 3, 4, 5], [[6, 7, 8, 9, 10]]) == 0.0


def test_a_hypothesis_shorter_than_four_tokens_counts_its_missing_4_grams_as_0_of_1():
    # 1 2 3 against itself: p1 = p2 = p3 = 1; no 4-gram at all is 0 of max(1, 0) = 1, smoothed to 0.1 / 1
    # BLEU = 0.1 ** (1/4) = 0.5623 (as NLTK computes it)
    assert bleu([1, 2, 3], [[1, 2, 3]]) == pytest.approx(0.1**0.25, rel=1e-12)


def test_the_brevity_penalty_uses_the_closest_reference_length():
    # hypothesis 1 2 3 4 is a prefix of the 6-token reference: every precision is 1;
    # c = 4 < r = 6, so BP = exp(1 - 6/4) = exp(-0.5) = 0.6065
    assert bleu([1, 2, 3, 4], [[1, 2, 3, 4, 5, 6]]) == pytest.approx(math.exp(-0.5), rel=1e-12)
    # references of 3 and 7 tokens are equally close to c = 5: the shorter wins, c > 3, so BP = 1
    # (with r = 7 it would be exp(1 - 7/5) = 0.67); every n-gram of 1 2 3 4 5 is in the 7-token reference
    assert bleu([1, 2, 3, 4, 5], [[1, 2, 3], [1, 2, 3, 4, 5, 6, 7]]) == pytest.approx(1.0)


def test_self_bleu_of_identical_samples_is_one():
    assert self_bleu([[1, 2, 3, 4, 5]] * 3) == pytest.approx(1.0)


def test_self_bleu_of_disjoint_samples_is_zero():
    assert self_bleu([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]) == 0.0


def test_self_bleu_is_the_mean_bleu_of_each_sample_against_the_others():
    # A = B = 1 2 3 4 5, C = 6 7 8 9 10: BLEU(A | B, C) = 1, BLEU(B | A, C) = 1, BLEU(C | A, B) = 0 -> 2/3
    a, c = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    assert self_bleu([a, list(a), c]) == pytest.approx(2 / 3)
    # two samples: the smoothed value of each against the other, as worked out above (0.05373 both ways)
    assert self_bleu([[1, 2, 3, 4, 5], [1, 9, 9, 9, 9]]) == pytest.approx(
        ((0.2 * 0.025 * (0.1 / 3) * 0.05) ** 0.25 + (0.2 * 0.025 * (0.1 / 3) * 0.05) ** 0.25) / 2)


def test_self_bleu_needs_two_samples():
    assert self_bleu([[1, 2, 3, 4]]) is None
    assert self_bleu([]) is None


tokens = st.lists(st.integers(0, 4), min_size=1, max_size=12)


@pytest.mark.skipif(importlib.util.find_spec("nltk") is None, reason="nltk is not installed (an optional oracle)")
@settings(max_examples=200, deadline=None)
@given(hypothesis=tokens, references=st.lists(tokens, min_size=1, max_size=3))
def test_bleu_equals_nltk_sentence_bleu_with_smoothing_method_1(hypothesis, references):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    expected = sentence_bleu(references, hypothesis, smoothing_function=SmoothingFunction().method1)
    assert bleu(hypothesis, references) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


# --- mean and spread ----------------------------------------------------------------------------------------------


def test_mean_and_spread_is_the_mean_and_the_sample_standard_deviation():
    # 1, 2, 3: mean 2; squared deviations 1 + 0 + 1 = 2, over n - 1 = 2 -> variance 1, sd 1
    assert mean_and_spread([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    # 2, 4: mean 3; (1 + 1) / 1 = 2 -> sd sqrt(2)
    assert mean_and_spread([2.0, 4.0]) == pytest.approx((3.0, math.sqrt(2)))


def test_mean_and_spread_skips_missing_and_non_finite_values():
    assert mean_and_spread([1.0, None, 3.0, float("nan"), float("inf")]) == pytest.approx((2.0, math.sqrt(2)))


def test_one_value_has_a_mean_but_no_spread_and_none_has_neither():
    assert mean_and_spread([5.0]) == (5.0, None)
    assert mean_and_spread([None]) == (None, None)
    assert mean_and_spread([]) == (None, None)


def test_self_bleu_equals_each_sample_against_all_the_others_by_the_definition():
    """The linear-time Self-BLEU equals the mean of `bleu(sample, every other sample)` on random samples: short,
    empty, repeated, of equal and different lengths, from small alphabets (shared n-grams, ties in the counts)."""
    import random

    from samplecli.analysis.metrics import bleu

    rng = random.Random(0)
    for _ in range(300):
        samples = [[rng.randrange(rng.randint(1, 6)) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13]))]
                   for _ in range(rng.randint(2, 10))]
        samples += [list(samples[0])] * rng.randint(0, 2)  # exact duplicates: the largest count held twice
        by_definition = [bleu(s, [o for j, o in enumerate(samples) if j != i]) for i, s in enumerate(samples)]
        assert self_bleu(samples) == pytest.approx(sum(by_definition) / len(by_definition), rel=1e-12, abs=1e-15)
