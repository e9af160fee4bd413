"""Specification of beam search (samplecli.engine.beam) and its views (samplecli.views.beam).

The oracle is transformers' own `generate(num_beams=B, do_sample=False, ...)`: returned sequences equal
token for token and scores to 1e-4, over beam widths, length penalties, early-stopping modes, with EOS
reached and not. Tiny random GPT-2s stand in for real models; a bias on the output layer makes EOS likely
(or impossible). Diverse beam search is checked against independent beam searches (L = 0) and for
diversity (L > 0); stochastic beam search against the model's distribution, statistically.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math

import pytest
import torch
from rich.console import Console

from samplecli.analysis.compare import compare_events
from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR, LM, load
from samplecli.cli.options import flag_of
from samplecli.config.beam_plan import BeamPlan, plan_beam
from samplecli.engine.beam import (
    BeamResult,
    BeamSettings,
    BeamStep,
    Candidate,
    Hypothesis,
    beam_decode,
    search,
)
from samplecli.engine.beam_stochastic import truncated_gumbel_keys
from samplecli.engine.decode import DecodeConfig, Done, Step, decode, encode_prompt
from samplecli.errors import SettingError, UsageError
from samplecli.strategies import build_strategy
from samplecli.views.beam import BeamState, beam_tree, hypotheses_table, live_beam_view, ranked_table
from samplecli.views.records import beam_step_record, done_record, dumps
from tests.conftest import strict_loads, with_output_bias

EOS = 0
WIDTHS, PENALTIES, MODES = (1, 2, 4, 8), (-1.0, 0.0, 1.0, 2.0), (True, False, "never")


def raw_model(vocab: int, eos_bias: float = 0.0, seed: int = 0, init: float = 0.5):
    """A tokenizer-free GPT-2 (ids only) whose output layer has a bias on EOS (id 0)."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=init,
                        bos_token_id=EOS, eos_token_id=EOS)
    model = GPT2LMHeadModel(config).eval()
    head = torch.nn.Linear(config.n_embd, vocab, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[EOS] = eos_bias
    model.lm_head = head
    model.generation_config = GenerationConfig(bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)
    return model


def run_search(model, prompt, settings: BeamSettings, eos=(EOS,), strategy=None, **config) -> list:
    return list(search(LM.of(model), prompt, settings, DecodeConfig(**config), eos_token_ids=eos, strategy=strategy))


def result_of(events) -> BeamResult:
    assert isinstance(events[-1], BeamResult)
    return events[-1]


def generated(model, prompt, eos=(EOS,), **kwargs) -> list[tuple[list[int], float | None]]:
    """transformers' beam search: (generated ids up to and including EOS, score) per returned sequence."""
    out = model.generate(torch.tensor([prompt]), do_sample=False, output_scores=True, return_dict_in_generate=True,
                         eos_token_id=list(eos) or None, pad_token_id=EOS, **kwargs)
    scores = getattr(out, "sequences_scores", None)
    rows = []
    for i, ids in enumerate(out.sequences[:, len(prompt):].tolist()):
        if eos and eos[0] in ids:
            ids = ids[: ids.index(eos[0]) + 1]
        rows.append((ids, float(scores[i]) if scores is not None else None))
    return rows


def assert_same_as_generate(model, prompt, num_beams, length_penalty, early_stopping, n, eos=(EOS,), **extra):
    returns = min(num_beams, 3)
    settings = BeamSettings(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                            num_return_sequences=returns)
    penalties = {k: extra[k] for k in ("no_repeat_ngram_size", "repetition_penalty") if k in extra}
    strategy = build_strategy(penalties, strategy="beam").strategy if penalties else None
    ours = result_of(run_search(model, prompt, settings, eos, strategy, max_new_tokens=n,
                                min_new_tokens=extra.get("min_new_tokens", 0)))
    theirs = generated(model, prompt, eos, num_beams=num_beams, length_penalty=length_penalty,
                       early_stopping=early_stopping, num_return_sequences=returns, max_new_tokens=n, **extra)
    case = (num_beams, length_penalty, early_stopping, prompt)
    assert [list(h.token_ids) for h in ours.ranked] == [ids for ids, _ in theirs], case
    for h, (_, score) in zip(ours.ranked, theirs, strict=True):
        if score is not None:  # num_beams = 1 is greedy search, which has no sequence scores
            assert h.score == pytest.approx(score, abs=1e-4), case
    return ours


# --- the oracle: transformers' generate(num_beams=B) ----------------------------------------------------------


ALL = list(itertools.product(WIDTHS, PENALTIES, MODES))
VARIANTS = {  # model shape, generate() extras, the (B, A, early_stopping) grid, prompts, whether EOS must be reached
    "EOS likely": (dict(vocab=16, eos_bias=3.0), {}, ALL, ([3, 4, 5],), True),
    "EOS likely, another prompt": (dict(vocab=16, eos_bias=4.0), {},
                                   list(itertools.product(WIDTHS, PENALTIES, (False,))), ([7],), True),
    "EOS likely, min-new-tokens 3": (dict(vocab=16, eos_bias=3.0), {"min_new_tokens": 3},
                                     list(itertools.product(WIDTHS, (0.0, 1.0), MODES)), ([3, 4, 5],), True),
    "no-repeat-ngram 2": (dict(vocab=16, eos_bias=2.0), {"no_repeat_ngram_size": 2},
                          list(itertools.product(WIDTHS, (1.0,), MODES)), ([3, 4, 5], [7]), True),
    "repetition-penalty 1.3": (dict(vocab=16, eos_bias=3.0), {"repetition_penalty": 1.3},
                               list(itertools.product(WIDTHS, (1.0,), MODES)), ([3, 4, 5], [7]), True),
    "larger vocabulary": (dict(vocab=300, eos_bias=2.0), {}, list(itertools.product(WIDTHS, (-1.0, 2.0), MODES)),
                          ([3, 4, 5],), False),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_search_returns_what_transformers_generate_returns(variant):
    shape, extra, grid, prompts, reaches_eos = VARIANTS[variant]
    model = raw_model(**shape)
    finish = []
    for (num_beams, penalty, mode), prompt in itertools.product(grid, prompts):
        result = assert_same_as_generate(model, prompt, num_beams, penalty, mode, 12, **dict(extra))
        finish += [h.finish_reason for h in result.ranked]
    assert finish.count("length") >= 5
    if reaches_eos:  # the test covers hypotheses that end at EOS, not only at the token limit
        assert finish.count("eos") >= 5, (finish.count("eos"), finish.count("length"))


def test_beam_search_without_eos_returns_what_generate_returns():
    model = raw_model(8)
    for num_beams, penalty, mode in itertools.product(WIDTHS, PENALTIES, MODES):
        result = assert_same_as_generate(model, [3, 4, 5], num_beams, penalty, mode, 6, eos=())
        assert {h.finish_reason for h in result.ranked} == {"length"}


def test_beam_decode_on_a_tokenized_model_equals_generate_with_text_and_ranks(tiny_model_dir):
    lm = with_output_bias(tiny_model_dir)
    with torch.no_grad():
        lm.model.lm_head.bias[EOS] = 4.0
    prompt = encode_prompt(lm, "ROMEO:\nBut soft")
    for num_beams, penalty, mode in ((4, 1.0, False), (8, 2.0, "never"), (2, -1.0, True)):
        settings = BeamSettings(num_beams=num_beams, length_penalty=penalty, early_stopping=mode,
                                num_return_sequences=2)
        events = list(beam_decode(lm, None, prompt, DecodeConfig(max_new_tokens=10), settings))
        dones = [e for e in events if isinstance(e, Done)]
        theirs = generated(lm.model, prompt, num_beams=num_beams, length_penalty=penalty, early_stopping=mode,
                           num_return_sequences=2, max_new_tokens=10)
        assert [list(d.token_ids) for d in dones] == [ids for ids, _ in theirs]
        assert [d.score for d in dones] == pytest.approx([s for _, s in theirs], abs=1e-4)
        assert [d.rank for d in dones] == [0, 1] and [d.sample for d in dones] == [0, 1]
        for done in dones:
            steps = [e for e in events if isinstance(e, Step) and e.sample == done.rank]
            assert [s.token_id for s in steps] == list(done.token_ids)
            assert "".join(s.text for s in steps) == done.text == lm.tokenizer.decode(done.token_ids,
                                                                                      skip_special_tokens=True)
            assert done.logprob_sum == pytest.approx(sum(s.logprob for s in steps), abs=1e-4)
            assert done.score == pytest.approx(done.logprob_sum / done.n_tokens ** penalty, abs=1e-4)


@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="the bundled model is not trained yet")
def test_beam_search_on_the_bundled_model_equals_generate():
    lm = load(None, device="cpu")
    prompt = encode_prompt(lm, "ROMEO:\n")
    for num_beams, penalty, mode in ((2, 1.0, False), (4, 0.0, "never"), (4, 2.0, True)):
        settings = BeamSettings(num_beams=num_beams, length_penalty=penalty, early_stopping=mode,
                                num_return_sequences=2)
        ours = result_of(run_search(lm.model, prompt, settings, tuple(lm.eos_token_ids), max_new_tokens=12))
        theirs = generated(lm.model, prompt, tuple(lm.eos_token_ids), num_beams=num_beams, length_penalty=penalty,
                           early_stopping=mode, num_return_sequences=2, max_new_tokens=12)
        assert [list(h.token_ids) for h in ours.ranked] == [ids for ids, _ in theirs]
        assert [h.score for h in ours.ranked] == pytest.approx([s for _, s in theirs], abs=1e-4)


def test_one_beam_is_greedy_decoding(tiny_lm):
    greedy = build_strategy({"temperature": 0}).strategy
    for prompt in ("ROMEO:", "Café, naïve"):
        ids = encode_prompt(tiny_lm, prompt)
        core = [e for e in decode(tiny_lm, greedy, ids, DecodeConfig(max_new_tokens=12)) if isinstance(e, Done)]
        beam = [e for e in beam_decode(tiny_lm, None, ids, DecodeConfig(max_new_tokens=12), BeamSettings(num_beams=1))
                if isinstance(e, Done)]
        assert beam[0].token_ids == core[0].token_ids and beam[0].text == core[0].text
        assert beam[0].logprob_sum == pytest.approx(core[0].logprob_sum, abs=1e-4)


def test_one_beam_stops_at_eos_like_greedy_whatever_the_early_stopping_mode():
    model = raw_model(16, eos_bias=3.0)
    for mode, penalty in itertools.product(MODES, PENALTIES):
        assert_same_as_generate(model, [3, 4, 5], 1, penalty, mode, 12)


def test_a_beam_as_wide_as_the_space_finds_the_best_of_all_64_sequences():
    model = raw_model(4, seed=3, init=1.0)
    prompt = [1, 2]
    with torch.no_grad():
        every = torch.tensor([prompt + list(s) for s in itertools.product(range(4), repeat=3)])
        logp = torch.log_softmax(model(every).logits.double(), dim=-1)
        totals = logp[:, 1:-1].gather(-1, every[:, 2:, None]).squeeze(-1).sum(-1)  # the 3 generated tokens
    for penalty in PENALTIES:
        normalised = (totals / 3 ** penalty).tolist()
        brute = sorted(range(64), key=lambda i: -normalised[i])
        result = result_of(run_search(model, prompt, BeamSettings(num_beams=16, length_penalty=penalty,
                                                                 num_return_sequences=16), eos=(), max_new_tokens=3))
        assert list(result.ranked[0].token_ids) == every[brute[0], 2:].tolist()
        assert result.ranked[0].score == pytest.approx(normalised[brute[0]], abs=1e-4)
        # and the 16 returned are the 16 best, in order
        assert [list(h.token_ids) for h in result.ranked] == [every[i, 2:].tolist() for i in brute[:16]]


@pytest.mark.parametrize("lean_forward", [True, False], ids=["lean-forward", "model-forward"])
def test_the_prompt_is_prefilled_once_and_the_cache_is_reordered_not_recomputed(lean_forward, monkeypatch):
    from samplecli.backends import gpt2_fast, lean

    model = raw_model(16, eos_bias=1.0)
    shapes = []
    owner, name = (gpt2_fast.GPT2Forward, "__call__") if lean_forward else (model, "forward")
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(lean, "ENABLED", lean_forward)
    monkeypatch.setattr(owner, name, spy)
    result = result_of(run_search(model, [3, 4, 5, 6], BeamSettings(num_beams=4), max_new_tokens=8))
    assert shapes[0] == (1, 4)  # the prompt, once, for all beams
    assert set(shapes[1:]) == {(4, 1)}  # then one new token per beam per step
    assert len(shapes) == result.steps


def test_min_new_tokens_and_no_repeat_ngram_hold_in_every_returned_sequence():
    model = raw_model(16, eos_bias=5.0)
    strategy = build_strategy({"no_repeat_ngram_size": 2}, strategy="beam").strategy
    result = result_of(run_search(model, [3, 4], BeamSettings(num_beams=4, num_return_sequences=4), strategy=strategy,
                                  max_new_tokens=10, min_new_tokens=4))
    for h in result.ranked:
        ids = [3, 4, *h.token_ids]
        assert EOS not in h.token_ids[:4]
        bigrams = list(zip(ids, ids[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))


def test_events_carry_plain_python_values_and_steps_show_the_search():
    model = raw_model(16, eos_bias=2.0)
    events = run_search(model, [3, 4], BeamSettings(num_beams=4, num_return_sequences=2), max_new_tokens=6)
    plain = (int, float, str, bool, type(None))

    def check(value):
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                check(getattr(value, f.name))
        elif isinstance(value, (tuple, list)):
            for v in value:
                check(v)
        else:
            assert isinstance(value, plain), type(value)

    for event in events:
        check(event)
    steps = [e for e in events if isinstance(e, BeamStep)]
    assert [s.step for s in steps] == list(range(len(steps))) and steps[-1].stopped
    assert all(s.stopped is None for s in steps[:-1])
    for s in steps[:-1]:
        assert len(s.live) == 4 and all(h.finish_reason is None for h in s.live)
        assert [h.cumulative for h in s.live] == sorted((h.cumulative for h in s.live), reverse=True)
        kept = {c.node for c in s.candidates if c.status == "kept"}
        assert kept == {h.node for h in s.live}
    assert all(h.finish_reason in ("eos", "length") for h in steps[-1].finished)
    strict_loads(dumps(beam_step_record(steps[-1])))


# --- diverse beam search (Vijayakumar et al. 2016) -----------------------------------------------------------


def test_groups_without_a_diversity_penalty_are_each_the_beam_search_of_their_width():
    model = raw_model(16, eos_bias=2.0)
    for prompt in ([3, 4, 5], [9]):
        grouped = run_search(model, prompt, BeamSettings(num_beams=6, num_beam_groups=3, num_return_sequences=3),
                             max_new_tokens=10)
        alone = run_search(model, prompt, BeamSettings(num_beams=2, num_return_sequences=1), max_new_tokens=10)
        alone_steps = [e for e in alone if isinstance(e, BeamStep)]
        for step, single in zip((e for e in grouped if isinstance(e, BeamStep)), alone_steps, strict=False):
            for group in range(3):
                live = [h for h in step.live if h.group == group]
                assert [h.token_ids for h in live] == [h.token_ids for h in single.live]
                assert [h.cumulative for h in live] == pytest.approx([h.cumulative for h in single.live], abs=1e-5)
        best = result_of(alone).ranked[0]
        assert all(h.token_ids == best.token_ids for h in result_of(grouped).ranked)  # 3 copies of one search


def test_a_diversity_penalty_makes_the_groups_start_differently():
    model = raw_model(16, eos_bias=-5.0)
    plain = run_search(model, [3, 4], BeamSettings(num_beams=4, num_beam_groups=2), max_new_tokens=4)
    first = [{h.token_ids[0] for h in e.live if h.group == g} for e in plain[:1] for g in (0, 1)]
    assert first[0] == first[1]  # L = 0: both groups take the same two first tokens
    diverse = run_search(model, [3, 4], BeamSettings(num_beams=4, num_beam_groups=2, diversity_penalty=50.0),
                         max_new_tokens=4)
    first = [{h.token_ids[0] for h in diverse[0].live if h.group == g} for g in (0, 1)]
    assert first[0].isdisjoint(first[1])


def test_the_hamming_penalty_is_subtracted_once_per_earlier_group_that_chose_the_token():
    model = raw_model(16, eos_bias=-5.0)
    events = run_search(model, [3, 4], BeamSettings(num_beams=6, num_beam_groups=3, diversity_penalty=0.25),
                        max_new_tokens=2)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([[3, 4]])).logits[0, -1].float(), -1).tolist()
    chosen: list[int] = []
    for group in range(3):
        for h in (h for h in events[0].live if h.group == group):
            assert h.cumulative == pytest.approx(logp[h.token_ids[0]] - 0.25 * chosen.count(h.token_ids[0]), abs=1e-5)
            assert h.logprob_sum == pytest.approx(logp[h.token_ids[0]], abs=1e-5)  # raw model, no penalty
        chosen += [h.token_ids[0] for h in events[0].live if h.group == group]


# --- stochastic beam search (Kool et al. 2019) ---------------------------------------------------------------


def test_truncated_gumbel_keys_give_the_maximum_child_its_parents_key():
    parent = torch.tensor([[1.5], [-2.0]], dtype=torch.float64)
    perturbed = torch.tensor([[0.3, 2.0, -1.0, -math.inf], [5.0, 4.0, -3.0, 0.0]], dtype=torch.float64)
    keys = truncated_gumbel_keys(parent, perturbed)
    assert keys[0, 1].item() == pytest.approx(1.5) and keys[1, 0].item() == pytest.approx(-2.0)
    assert keys[0, 3].item() == -math.inf
    assert (keys <= parent + 1e-12).all()
    # the definition, directly: G_i = -log(exp(-T) - exp(-Z) + exp(-G~_i))
    direct = -torch.log(torch.exp(-parent) - torch.exp(-perturbed.amax(-1, keepdim=True)) + torch.exp(-perturbed))
    finite = torch.isfinite(perturbed)
    assert torch.allclose(keys[finite], direct[finite])


def stochastic(model, prompt, seed, beams=4, n=3, eos=(EOS,), returns=None):
    settings = BeamSettings(num_beams=beams, stochastic=True, num_return_sequences=returns or beams)
    return result_of(run_search(model, prompt, settings, eos, seed=seed, max_new_tokens=n, record=False))


def chi_square(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs, strict=True) if p > 0)


def test_stochastic_beam_search_is_reproducible_with_a_seed_and_samples_without_replacement():
    model = raw_model(8, eos_bias=1.0, init=0.3)
    first = stochastic(model, [3, 4], seed=7, n=5)
    assert [h.token_ids for h in first.ranked] == [h.token_ids for h in stochastic(model, [3, 4], seed=7, n=5).ranked]
    assert len({h.token_ids for h in first.ranked}) == 4  # without replacement
    assert [h.score for h in first.ranked] == sorted((h.score for h in first.ranked), reverse=True)
    draws = {tuple(h.token_ids for h in stochastic(model, [3, 4], seed=s, n=5).ranked) for s in range(8)}
    assert len(draws) > 1


def test_the_first_sample_is_drawn_from_the_model_so_its_first_token_follows_the_models_distribution():
    model = raw_model(6, eos_bias=-30.0, init=0.1)  # p = (0, 0.41, 0.19, 0.03, 0.17, 0.20)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[3, 4]])).logits[0, -1].double(), -1).tolist()
    counts = [0] * 6
    runs = 1200
    for seed in range(runs):
        counts[stochastic(model, [3, 4], seed, beams=3, n=2).ranked[0].token_ids[0]] += 1
    # 5 degrees of freedom: the 0.1% critical value is 20.5
    assert chi_square(counts, probs) < 20.5, (counts, [round(p * runs) for p in probs])


def test_the_second_sample_follows_the_without_replacement_distribution():
    model = raw_model(6, eos_bias=-30.0, init=0.3)
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([[5]])).logits[0, -1].double(), -1).tolist()
    second = [sum(p[i] * p[j] / (1 - p[i]) for i in range(6) if i != j) for j in range(6)]
    counts = [0] * 6
    for seed in range(1200):
        ranked = stochastic(model, [5], seed, beams=2, n=1).ranked
        assert ranked[0].token_ids != ranked[1].token_ids
        counts[ranked[1].token_ids[0]] += 1
    assert chi_square(counts, second) < 20.5, counts


def test_stochastic_samples_that_reach_eos_finish_there():
    model = raw_model(8, eos_bias=2.5, init=0.3)
    reasons = [h.finish_reason for s in range(10) for h in stochastic(model, [3], s, n=6).ranked]
    assert "eos" in reasons
    for s in range(10):
        for h in stochastic(model, [3], s, n=6).ranked:
            assert (h.token_ids[-1] == EOS) == (h.finish_reason == "eos")
            assert EOS not in h.token_ids[:-1]


# --- settings and flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, fragments", [
    ({"num_beams": 0}, ["--num-beams", "0"]),
    ({"num_beams": 2, "num_return_sequences": 3}, ["--num-return-sequences", "3", "--num-beams", "2"]),
    ({"early_stopping": "maybe"}, ["--early-stopping", "maybe"]),
    ({"num_beams": 4, "num_beam_groups": 3}, ["--num-beam-groups", "3", "4"]),
    ({"diversity_penalty": 0.5}, ["--diversity-penalty", "0.5", "--num-beam-groups"]),
    ({"num_beam_groups": 2, "stochastic": True}, ["--num-beam-groups", "stochastic"]),
    ({"length_penalty": math.inf}, ["--length-penalty", "inf"]),
])
def test_bad_beam_settings_are_one_clear_usage_error(kwargs, fragments):
    with pytest.raises(SettingError) as error:
        BeamSettings(**kwargs)
    shown = error.value.shown(flag_of)  # the core names settings; the CLI shows the flags that set them
    assert all(f in shown for f in fragments), shown
    assert all(f"`{s}`" in str(error.value) for s in error.value.settings), str(error.value)
    assert "\n" not in str(error.value)


def test_num_beams_above_one_implies_beam_search_and_beam_only_flags_with_one_beam_warn():
    plan = plan_beam(num_beams=3, length_penalty=2.0, early_stopping="never", num_return_sequences=2)
    assert plan.strategy == "beam" and plan.warnings == ()
    assert plan.settings == BeamSettings(num_beams=3, length_penalty=2.0, early_stopping="never",
                                         num_return_sequences=2)
    assert plan_beam(strategy="beam").settings.num_beams == 4
    assert plan_beam(strategy="stochastic-beam").settings.stochastic
    one = plan_beam(strategy="beam", num_beams=1, length_penalty=2.0)
    assert one.settings.num_beams == 1 and "--length-penalty" in one.warnings[0] and "--num-beams 1" in one.warnings[0]
    alone = plan_beam(num_beams=1, early_stopping="true", length_penalty=2.0)  # one beam is greedy search
    assert alone.settings.num_beams == 1 and len(alone.warnings) == 2 and "--num-beams 1" in alone.warnings[0]
    none = plan_beam(num_beams=1, early_stopping="true", diversity_penalty=1.0, sampling=True)
    assert none.settings is None and len(none.warnings) == 2


def test_plan_rejects_what_beam_search_cannot_do():
    with pytest.raises(UsageError, match="--num-beams 4 runs beam search.*--strategy top-k"):
        plan_beam(strategy="top-k", num_beams=4)
    with pytest.raises(UsageError, match="--chain"):
        plan_beam(chain="top-k=4", num_beams=4)
    with pytest.raises(UsageError, match="--early-stopping.*'sometimes'"):
        plan_beam(num_beams=2, early_stopping="sometimes")
    with pytest.raises(UsageError, match="--num-return-sequences \\(3\\).*--num-beams \\(1\\)"):
        plan_beam(num_beams=1, num_return_sequences=3, sampling=True)
    with pytest.raises(UsageError, match="`num_return_sequences` \\(3\\).*`num_beams` \\(1\\)"):
        plan_beam(num_beams=1, num_return_sequences=3)


def test_return_sequences_without_beams_need_sampling():
    sampling = build_strategy({"temperature": 0.8}).strategy
    greedy = build_strategy({"temperature": 0}).strategy
    plan = plan_beam(num_return_sequences=3)
    assert plan.num_samples(1, sampling) == 3
    with pytest.raises(UsageError, match="--num-return-sequences 3 needs beam search"):
        plan.num_samples(1, greedy)
    with pytest.raises(UsageError, match="disagree"):
        plan.num_samples(2, sampling)
    assert BeamPlan(None, None).num_samples(5, greedy) == 5


def test_done_records_carry_score_and_rank_only_for_beams():
    done = Done(sample=1, text="x", token_ids=(1,), finish_reason="eos", n_tokens=1, logprob_sum=-1.0, perplexity=None,
                seconds=0.1, tokens_per_second=10.0, strategy="s", seed=0)
    assert "score" not in done_record(done) and "rank" not in done_record(done)
    record = done_record(dataclasses.replace(done, score=-0.5, rank=1))
    assert record["score"] == -0.5 and record["rank"] == 1


def test_compare_columns_get_as_many_beams_as_samples(tiny_lm):
    ids = encode_prompt(tiny_lm, "ROMEO:")
    events = list(compare_events(tiny_lm, {"strategy": "beam", "num_beams": 4}, ids,
                                 DecodeConfig(max_new_tokens=5, num_samples=3)))
    assert [e.rank for e in events if isinstance(e, Done)] == [0, 1, 2]
    with pytest.raises(UsageError, match="num_beam"):
        list(compare_events(tiny_lm, {"strategy": "beam", "num_beam": 4}, ids, DecodeConfig(max_new_tokens=5)))


# --- the views -------------------------------------------------------------------------------------------------


def render(renderable, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def hyp(node, ids, text, score, logp, finish=None, group=0, parent=0):
    return Hypothesis(node, parent, group, tuple(ids), text, score * len(ids), score, logp, finish)


STEP0 = BeamStep(0, (hyp(1, [5], "Hello", -0.5, -0.5), hyp(2, [6], "[bold]Hi", -1.0, -1.0)), (),
                 (Candidate(0, 0, 5, "Hello", -0.5, "kept", 1), Candidate(0, 0, 6, "[bold]Hi", -1.0, "kept", 2),
                  Candidate(0, 0, 9, "Yo", -2.0, "pruned")))
STEP1 = BeamStep(1, (hyp(3, [5, 7], "Hello world", -0.4, -0.8),),
                 (hyp(4, [6, 0], "[bold]Hi", -0.9, -1.8, "eos", parent=2),),
                 (Candidate(1, 0, 7, " world", -0.8, "kept", 3), Candidate(2, 0, 0, "<eos>", -1.8, "finished", 4),
                  Candidate(1, 0, 8, " there", -2.5, "pruned")), stopped="the token limit (2) ended every hypothesis")


def test_the_live_view_lists_live_and_finished_hypotheses_with_log_probs_and_scores():
    out = render(live_beam_view(BeamState(steps=[STEP0, STEP1]), "beam(num_beams=2)"))
    assert "beam(num_beams=2)" in out and "live after step 2" in out and "finished" in out
    assert "Hello world" in out and "-0.80" in out and "-0.400" in out
    assert "[bold]Hi" in out and "eos" in out  # model text is shown as written, never as markup
    assert "3 candidates, 1 kept, 1 pruned" in out
    assert "prefill" in render(live_beam_view(BeamState(), "beam"))


def test_the_ranked_view_says_why_the_search_stopped():
    dones = [Done(sample=r, text=t, token_ids=(1,) * n, finish_reason=f, n_tokens=n, logprob_sum=lp, perplexity=None,
                  seconds=1.0, tokens_per_second=1.0, strategy="beam", seed=0, score=s, rank=r)
             for r, (t, n, f, lp, s) in enumerate([("best [x]", 3, "eos", -1.5, -0.5), ("second", 4, "length", -3.0,
                                                                                          -0.75)])]
    out = render(ranked_table(list(reversed(dones)), "the token limit (4) ended every hypothesis"))
    assert out.index("best [x]") < out.index("second")
    assert "-0.5000" in out and "-0.7500" in out and "stopped: the token limit (4)" in out


def test_the_tree_shows_what_was_expanded_kept_finished_and_pruned_at_each_step():
    out = render(beam_tree([STEP0, STEP1]))
    assert "step 1: expanded #0" in out and "step 2: expanded #1 #2" in out
    assert "✓ kept 'Hello' -> #1" in out and "✗ pruned 'Yo'" in out
    assert "■ finished '<eos>' -> #4" in out and "✗ pruned ' there'" in out
    assert "stopped: the token limit (2)" in out


def test_a_hypothesis_with_no_kept_continuation_is_marked_a_dead_end():
    dead = BeamStep(1, (hyp(3, [5, 7], "Hello world", -0.4, -0.8),), (),
                    (Candidate(1, 0, 7, " world", -0.8, "kept", 3),))
    out = render(beam_tree([STEP0, dead]))
    assert "#2 [bold]Hi  dead end" in out


def test_group_columns_appear_only_with_groups():
    assert "group" not in render(hypotheses_table(STEP0.live, "live"))
    assert "group" in render(hypotheses_table([hyp(1, [5], "a", -1, -1, group=1)], "live", groups=True))


# --- the benchmark script --------------------------------------------------------------------------------------


def test_the_beam_benchmark_runs_on_a_tiny_shape_and_prints_a_markdown_table(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_beam.py"
    spec = importlib.util.spec_from_file_location("bench_beam", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--vocab-size", "64", "--n-positions", "64",
            "--prompt-tokens", "5", "--new-tokens", "4", "--runs", "1", "--warmup", "0", "--threads", "1"]
    assert module.main(argv) == 0  # 0: every implementation returned generate's best sequence
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| implementation | median s | tokens/s | ms/step | vs generate | same best sequence |"
    assert len(table) == 5 and "generate(num_beams=4)" in table[2] and all(r.endswith("| yes |") for r in table[2:])
