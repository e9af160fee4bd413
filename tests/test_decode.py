"""Specification of the decode loop (samplecli.engine.decode) and model loading (samplecli.backends.torch_lm), on
the tiny
random-init GPT-2: greedy matches transformers' generate(), sampling draws from the strategy's
distribution, seeds reproduce, every stop condition ends a sequence, and events carry plain values."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch

from samplecli.backends.torch_lm import load
from samplecli.backends.vocabulary import HFVocabulary as TokenTable
from samplecli.engine.decode import DecodeConfig, Done, Step, decode, encode_prompt
from samplecli.engine.events import Alternative
from samplecli.errors import SampleCliError, UsageError
from samplecli.strategies import build_strategy
from tests.conftest import with_output_bias

PROMPTS = ["ROMEO:\nBut soft", "Café, naïve", "JULIET:\nO Romeo"]


@pytest.fixture(scope="module")
def eos_lm(tiny_model_dir):
    """A fresh copy of the tiny model whose output layer has a bias, so a test can make EOS likely
    (or impossible) with `set_eos_bias`; generate() and the decode loop see the same model."""
    return with_output_bias(tiny_model_dir)


def set_eos_bias(lm, bias: float):
    with torch.no_grad():
        lm.model.lm_head.bias.zero_()
        lm.model.lm_head.bias[lm.eos_token_ids[0]] = bias
    return lm


def strategy_of(**settings):
    name = settings.pop("strategy", None)
    return build_strategy(settings, strategy=name).strategy


def run(lm, prompt, strategy, **config) -> list[Step | Done]:
    ids = encode_prompt(lm, prompt) if isinstance(prompt, str) else prompt
    return list(decode(lm, strategy, ids, DecodeConfig(**config)))


def steps_of(events, sample: int = 0) -> list[Step]:
    return [e for e in events if isinstance(e, Step) and e.sample == sample]


def done_of(events, sample: int = 0) -> Done:
    (done,) = [e for e in events if isinstance(e, Done) and e.sample == sample]
    return done


def generate(lm, prompt: str, **kwargs) -> list[int]:
    ids = encode_prompt(lm, prompt)
    out = lm.model.generate(torch.tensor([ids]), pad_token_id=lm.eos_token_ids[0], **kwargs)
    return out[0, len(ids):].tolist()


def through_first_eos(ids, eos: int) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(eos) + 1] if eos in ids else ids


# --- greedy is transformers' greedy ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_equals_transformers_generate_token_for_token(tiny_lm, prompt):
    expected = generate(tiny_lm, prompt, do_sample=False, max_new_tokens=20)
    events = run(tiny_lm, prompt, strategy_of(strategy="greedy"), max_new_tokens=20)
    eos = tiny_lm.eos_token_ids[0]
    assert list(done_of(events).token_ids) == through_first_eos(expected, eos)


def test_a_tiny_temperature_samples_the_greedy_output(tiny_lm):
    greedy = done_of(run(tiny_lm, PROMPTS[0], strategy_of(strategy="greedy"), max_new_tokens=20))
    cold = done_of(run(tiny_lm, PROMPTS[0], strategy_of(temperature=1e-4), max_new_tokens=20, seed=3))
    assert cold.token_ids == greedy.token_ids
    assert cold.text == greedy.text


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_with_penalties_equals_generate_with_the_same_penalties(tiny_lm, prompt):
    expected = generate(tiny_lm, prompt, do_sample=False, max_new_tokens=24, repetition_penalty=1.3,
                        no_repeat_ngram_size=2)
    strategy = strategy_of(strategy="greedy", repetition_penalty=1.3, no_repeat_ngram_size=2)
    events = run(tiny_lm, prompt, strategy, max_new_tokens=24)
    assert list(done_of(events).token_ids) == through_first_eos(expected, tiny_lm.eos_token_ids[0])


def test_greedy_with_min_new_tokens_equals_generate_with_min_new_tokens(eos_lm):
    set_eos_bias(eos_lm, 20.0)  # EOS is the argmax everywhere
    expected = generate(eos_lm, PROMPTS[0], do_sample=False, max_new_tokens=10, min_new_tokens=4)
    done = done_of(run(eos_lm, PROMPTS[0], strategy_of(strategy="greedy"), max_new_tokens=10, min_new_tokens=4))
    assert list(done.token_ids) == through_first_eos(expected, eos_lm.eos_token_ids[0])
    assert len(done.token_ids) == 5


# --- sampling draws from the strategy's distribution -------------------------------------------------------


def _entropy(p: torch.Tensor) -> float:
    p = p[p > 0].double()
    return float(-(p * p.log()).sum())


def test_step_zero_statistics_equal_the_oracle_distribution(tiny_lm):
    strategy = strategy_of(temperature=0.7, top_k=50, top_p=0.9)
    ids = encode_prompt(tiny_lm, PROMPTS[1])
    events = run(tiny_lm, ids, strategy, max_new_tokens=1, num_samples=4, seed=11, top_n=5)

    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = tiny_lm.model(input_ids).logits[0, -1].float()
    raw = torch.softmax(logits, dim=-1)
    probs = strategy.distribution(logits.unsqueeze(0), input_ids)[0]
    top_ids = torch.sort(logits, descending=True, stable=True).indices[:5].tolist()
    kept = int((probs > 0).sum())
    assert 1 < kept < 50  # the chain really truncates here

    steps = [e for e in events if isinstance(e, Step)]
    assert len(steps) == 4
    for step in steps:
        token = step.token_id
        assert step.step == 0
        assert step.sampled_prob == pytest.approx(float(probs[token]), abs=1e-5)
        assert step.sampled_prob > 0
        assert step.prob == pytest.approx(float(raw[token]), abs=1e-5)
        assert step.logprob == pytest.approx(math.log(float(raw[token])), abs=1e-5)
        assert step.entropy == pytest.approx(_entropy(raw), abs=1e-5)
        assert step.sampled_entropy == pytest.approx(_entropy(probs), abs=1e-5)
        assert step.kept == kept
        assert step.token == tiny_lm.tokenizer.decode([token])
        assert step.bytes == TokenTable(tiny_lm.tokenizer).bytes(token)
        assert [a.token_id for a in step.top] == top_ids
        for alt in step.top:
            assert alt.prob == pytest.approx(float(raw[alt.token_id]), abs=1e-5)
            assert alt.logprob == pytest.approx(math.log(float(raw[alt.token_id])), abs=1e-5)
            assert alt.sampled_prob == pytest.approx(float(probs[alt.token_id]), abs=1e-5)
            assert alt.token == tiny_lm.tokenizer.decode([alt.token_id])


def test_sampled_tokens_follow_the_strategy_distribution(tiny_lm):
    n = 3000
    strategy = strategy_of(temperature=0.05, top_k=4)
    ids = encode_prompt(tiny_lm, PROMPTS[0])
    with torch.no_grad():
        logits = tiny_lm.model(torch.tensor([ids])).logits[0, -1].float()
    probs = strategy.distribution(logits.unsqueeze(0), torch.tensor([ids]))[0]
    events = run(tiny_lm, ids, strategy, max_new_tokens=1, num_samples=n, seed=5, top_n=0, record=False)
    counts = Counter(e.token_id for e in events if isinstance(e, Step))
    assert sum(counts.values()) == n
    support = set(torch.nonzero(probs).flatten().tolist())
    assert len(support) == 4
    assert set(counts) <= support
    for token in support:
        p = float(probs[token])
        assert abs(counts[token] / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, (token, counts[token], p)


# --- seeds -------------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_output(tiny_lm):
    first = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=16, seed=1234, num_samples=2)
    again = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=16, seed=1234, num_samples=2)
    for sample in range(2):
        assert [(s.token_id, s.text) for s in steps_of(first, sample)] == \
            [(s.token_id, s.text) for s in steps_of(again, sample)]
        assert done_of(first, sample).text == done_of(again, sample).text
        assert done_of(first, sample).token_ids == done_of(again, sample).token_ids


def test_different_seeds_give_different_outputs(tiny_lm):
    outputs = {done_of(run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=16, seed=seed)).token_ids
               for seed in (1, 2, 3)}
    assert len(outputs) == 3


def test_a_run_without_a_seed_reports_the_seed_that_redoes_it(tiny_lm):
    first = done_of(run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=12))
    again = done_of(run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=12, seed=first.seed))
    assert again.token_ids == first.token_ids


def test_sample_i_does_not_depend_on_the_number_of_samples(tiny_lm):
    batches = {n: run(tiny_lm, PROMPTS[2], strategy_of(), max_new_tokens=12, seed=7, num_samples=n)
               for n in (1, 2, 4)}
    for n, events in batches.items():
        assert sorted(e.sample for e in events if isinstance(e, Done)) == list(range(n))
        for i in range(n):
            assert done_of(events, i).token_ids == done_of(batches[4], i).token_ids
            assert done_of(events, i).text == done_of(batches[4], i).text
    assert len({done_of(batches[4], i).token_ids for i in range(4)}) == 4  # each sample has its own draws


# --- stopping ----------------------------------------------------------------------------------------------


def test_a_sequence_that_samples_eos_ends_with_eos(eos_lm):
    set_eos_bias(eos_lm, 5.0)  # P(EOS) is about 1/3 per step
    eos = eos_lm.eos_token_ids[0]
    events = run(eos_lm, PROMPTS[0], strategy_of(strategy="sample"), max_new_tokens=60, num_samples=6, seed=0)
    for i in range(6):
        done = done_of(events, i)
        assert done.finish_reason == "eos"
        assert done.token_ids[-1] == eos and eos not in done.token_ids[:-1]
        assert done.n_tokens == len(done.token_ids) == len(steps_of(events, i))
        assert steps_of(events, i)[-1].token_id == eos


def test_greedy_stops_at_eos_when_it_is_the_most_probable_token(eos_lm):
    set_eos_bias(eos_lm, 20.0)
    events = run(eos_lm, PROMPTS[0], strategy_of(strategy="greedy"), max_new_tokens=10)
    done = done_of(events)
    assert (done.finish_reason, done.token_ids, done.text, done.n_tokens) == ("eos", (eos_lm.eos_token_ids[0],), "", 1)


@pytest.mark.parametrize("max_new_tokens", [1, 7])
def test_max_new_tokens_ends_with_length_after_exactly_that_many_tokens(eos_lm, max_new_tokens):
    set_eos_bias(eos_lm, -50.0)  # EOS is never chosen
    events = run(eos_lm, PROMPTS[0], strategy_of(), max_new_tokens=max_new_tokens, num_samples=2, seed=0)
    for i in range(2):
        assert [s.step for s in steps_of(events, i)] == list(range(max_new_tokens))
        done = done_of(events, i)
        assert done.finish_reason == "length"
        assert done.n_tokens == len(done.token_ids) == max_new_tokens


def test_min_new_tokens_masks_eos_until_reached(eos_lm):
    set_eos_bias(eos_lm, 20.0)  # EOS would be chosen at once
    eos = eos_lm.eos_token_ids[0]
    events = run(eos_lm, PROMPTS[0], strategy_of(strategy="sample"), max_new_tokens=10, min_new_tokens=4,
                 num_samples=3, seed=0, top_n=3)
    for i in range(3):
        steps = steps_of(events, i)
        assert [s.token_id == eos for s in steps] == [False] * 4 + [True]
        assert done_of(events, i).finish_reason == "eos"
        for step in steps[:4]:
            (eos_alt,) = [a for a in step.top if a.token_id == eos]
            assert eos_alt.prob > 0.99  # the raw model wants EOS ...
            assert eos_alt.sampled_prob == 0.0  # ... but the strategy may not pick it yet
        assert steps[4].sampled_prob > 0.99


def test_a_stop_string_ends_the_sequence_and_is_never_shown(tiny_lm):
    unstopped = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=30, seed=21)
    full = done_of(unstopped)
    assert full.finish_reason == "length"
    stop = full.text[12:15]
    cut = full.text.find(stop)
    assert cut > 0
    # the first k such that the decoded first k tokens contain the stop string
    decoded = [tiny_lm.tokenizer.decode(list(full.token_ids[:k]), skip_special_tokens=True) for k in range(31)]
    stop_at = next(k for k in range(31) if stop in decoded[k])

    events = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=30, seed=21, stop=(stop,))
    done, steps = done_of(events), steps_of(events)
    assert done.finish_reason == "stop"
    assert done.text == full.text[:cut]
    assert "".join(s.text for s in steps) == done.text
    assert all(stop not in s.text for s in steps)
    assert done.token_ids == full.token_ids[:stop_at] and len(steps) == stop_at


def test_each_sample_stops_on_its_own(tiny_lm):
    base = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=20, seed=4, num_samples=3)
    stop = done_of(base, 1).text[5:8]
    events = run(tiny_lm, PROMPTS[0], strategy_of(), max_new_tokens=20, seed=4, num_samples=3, stop=(stop,))
    for i in range(3):
        full, done = done_of(base, i), done_of(events, i)
        if stop in full.text:
            assert (done.finish_reason, done.text) == ("stop", full.text[: full.text.find(stop)])
        else:
            assert (done.finish_reason, done.token_ids) == (full.finish_reason, full.token_ids)
    assert done_of(events, 1).finish_reason == "stop"


# --- streaming ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_streamed_text_adds_up_to_the_final_text(eos_lm, prompt):
    set_eos_bias(eos_lm, 3.0)  # some samples end with EOS, some with length
    events = run(eos_lm, prompt, strategy_of(temperature=1.5), max_new_tokens=24, num_samples=4, seed=2)
    reasons = set()
    for i in range(4):
        steps, done = steps_of(events, i), done_of(events, i)
        reasons.add(done.finish_reason)
        assert "".join(s.text for s in steps) == done.text
        assert done.text == eos_lm.tokenizer.decode(list(done.token_ids), skip_special_tokens=True)
        assert [s.token_id for s in steps] == list(done.token_ids)
        assert [s.step for s in steps] == list(range(done.n_tokens))
        assert events.index(done) > max(events.index(s) for s in steps)  # Done comes after its last Step
    assert reasons <= {"eos", "length"}


def test_streamed_text_is_never_half_a_character(tiny_lm):
    """The tiny vocabulary is mostly single bytes, so random text splits multi-byte characters often."""
    events = run(tiny_lm, PROMPTS[1], strategy_of(temperature=2.0), max_new_tokens=40, num_samples=3, seed=8)
    for i in range(3):
        done = done_of(events, i)
        shown = ""
        for step in steps_of(events, i):
            shown += step.text
            assert done.text.startswith(shown)


# --- the context window and the prompt ---------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_is_a_usage_error(tiny_lm):
    with pytest.raises(UsageError, match=r"the prompt is \d+ tokens, but the model's context is 64 tokens"):
        encode_prompt(tiny_lm, "But soft, what light through yonder window breaks? " * 10)


@pytest.mark.parametrize("prompt_len", [64, 70])
def test_decode_itself_refuses_prompt_ids_that_fill_the_context(tiny_lm, prompt_len):
    with pytest.raises(UsageError, match=rf"the prompt is {prompt_len} tokens, but the model's context is 64"):
        run(tiny_lm, [5] * prompt_len, strategy_of(), max_new_tokens=3)


def test_an_empty_prompt_starts_from_bos(tiny_lm):
    assert encode_prompt(tiny_lm, "") == [tiny_lm.bos_token_id]
    done = done_of(run(tiny_lm, "", strategy_of(), max_new_tokens=5, seed=0))
    assert done.n_tokens >= 1


@pytest.mark.parametrize("prompt_len", [60, 63])
def test_a_generation_cut_short_by_the_context_ends_with_context(eos_lm, prompt_len):
    set_eos_bias(eos_lm, -50.0)
    ids = eos_lm.tokenizer("Deny thy father and refuse thy name. " * 4)["input_ids"][:prompt_len]
    assert len(ids) == prompt_len
    events = run(eos_lm, ids, strategy_of(), max_new_tokens=100, num_samples=2, seed=0)
    for i in range(2):
        done = done_of(events, i)
        assert done.finish_reason == "context"
        assert done.n_tokens == 64 - prompt_len
    # asking for exactly the room left is not cut short: the run ends where it was asked to
    exact = done_of(run(eos_lm, ids, strategy_of(), max_new_tokens=64 - prompt_len, seed=0))
    assert (exact.finish_reason, exact.n_tokens) == ("length", 64 - prompt_len)


# --- configuration errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "parameter", "value"), [
    ({"max_new_tokens": 0}, "`max_new_tokens`", "0"),
    ({"max_new_tokens": -3}, "`max_new_tokens`", "-3"),
    ({"max_new_tokens": 5, "min_new_tokens": 6}, "`min_new_tokens`", "6"),
    ({"stop": ("ok", "")}, "`stop_strings`", "''"),
    ({"num_samples": 0}, "`num_samples`", "0"),
])
def test_a_bad_decode_config_is_a_usage_error_naming_parameter_and_value(settings, parameter, value):
    with pytest.raises(UsageError) as error:
        DecodeConfig(**settings)
    message = str(error.value)
    assert parameter in message and value in message


# --- events carry plain values -----------------------------------------------------------------------------


def _assert_plain(value, where: str):
    if isinstance(value, (Alternative,)):
        for f in dataclasses.fields(value):
            _assert_plain(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, tuple):
        for k, item in enumerate(value):
            _assert_plain(item, f"{where}[{k}]")
    else:
        assert type(value) in (int, float, str, type(None)), f"{where} is {type(value).__name__}"


def test_every_event_field_is_a_plain_python_value_and_every_number_is_finite(eos_lm):
    set_eos_bias(eos_lm, 3.0)
    events = run(eos_lm, PROMPTS[1], strategy_of(temperature=0.9, top_k=20), max_new_tokens=12, num_samples=3,
                 seed=1, stop=("th",))
    assert {type(e) for e in events} == {Step, Done}
    for event in events:
        for f in dataclasses.fields(event):
            _assert_plain(getattr(event, f.name), f"{type(event).__name__}.{f.name}")
    for step in (e for e in events if isinstance(e, Step)):
        assert all(math.isfinite(x) for x in (step.prob, step.sampled_prob, step.entropy, step.sampled_entropy))
        assert step.logprob is None or math.isfinite(step.logprob)
        assert all(a.logprob is None or math.isfinite(a.logprob) for a in step.top)
        assert all(math.isfinite(a.prob) and math.isfinite(a.sampled_prob) for a in step.top)
        assert type(step.kept) is int and step.kept >= 1
    for done in (e for e in events if isinstance(e, Done)):
        assert math.isfinite(done.logprob_sum)
        assert done.perplexity is None or math.isfinite(done.perplexity)
        assert math.isfinite(done.seconds) and math.isfinite(done.tokens_per_second)


# --- loading -----------------------------------------------------------------------------------------------


def test_an_unknown_model_id_offline_is_a_one_line_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    name = "samplecli-tests/no-such-model"
    with pytest.raises(SampleCliError) as error:
        load(name, device="cpu")
    message = str(error.value)
    assert name in message
    assert "\n" not in message


def test_a_directory_without_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(SampleCliError, match="config.json") as error:
        load(str(tmp_path), device="cpu")
    assert str(tmp_path) in str(error.value)
    assert "\n" not in str(error.value)

