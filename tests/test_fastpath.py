"""The lean GPT-2 forward computes what the model's own forward computes, and only takes models it can."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from samplecli.backends import lean
from samplecli.backends.gpt2_fast import GPT2Forward, supports
from samplecli.backends.kv_cache import KVCache
from samplecli.backends.lean import forward_for
from samplecli.engine.decode import DecodeConfig, Done, Step, decode
from samplecli.strategies import build_strategy
from tests.forward_steps import beam_schedule, lean_steps, reference_steps


def gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    settings = dict(vocab_size=97, n_positions=400, n_embd=48, n_layer=3, n_head=4, initializer_range=0.2)
    return GPT2LMHeadModel(GPT2Config(**{**settings, **overrides})).eval()


def assert_same_logits(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", [
    {},
    {"activation_function": "gelu"},
    {"activation_function": "relu"},
    {"scale_attn_by_inverse_layer_idx": True},
    {"scale_attn_weights": False},
    {"layer_norm_epsilon": 1e-3, "n_inner": 80},
], ids=["gelu_new", "gelu", "relu", "inverse-layer-scale", "unscaled", "eps-and-inner"])
def test_prefill_and_steps_give_the_models_own_logits(overrides):
    model = gpt2(**overrides)
    assert supports(model)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 97, (1, 9), generator=generator)
    feeds = [torch.randint(0, 97, (1, 1), generator=generator) for _ in range(12)]
    with torch.inference_mode():
        assert_same_logits(lean_steps(GPT2Forward, model, prompt, feeds), reference_steps(model, prompt, feeds))


def test_a_shared_prefill_repeated_and_reordered_as_sampling_and_beam_search_do():
    model = gpt2(seed=2)
    prompt, feeds, reorders = beam_schedule(97)
    with torch.inference_mode():
        ours = lean_steps(GPT2Forward, model, prompt, feeds, repeat=4, reorders=reorders)
        theirs = reference_steps(model, prompt, feeds, repeat=4, reorders=reorders)
    assert_same_logits(ours, theirs)


def test_the_cache_grows_past_its_first_capacity_without_changing_a_logit():
    model = gpt2(seed=4)
    generator = torch.Generator().manual_seed(5)
    prompt = torch.randint(0, 97, (2, 60), generator=generator)  # room for 64 positions at first, then 128, 256
    feeds = [torch.randint(0, 97, (2, 1), generator=generator) for _ in range(140)]
    with torch.inference_mode():
        assert_same_logits(lean_steps(GPT2Forward, model, prompt, feeds), reference_steps(model, prompt, feeds))
        cache = KVCache(n_layers=3, n_positions=400)
        capacities = []
        for length in (60, 61, 64, 65, 129, 200):
            cache.reserve(0, length, torch.zeros(2, 4, length - cache.length, 12))
            cache.length = length
            capacities.append(cache.keys[0].shape[2])
        assert capacities == [64, 64, 64, 128, 256, 256]


def test_several_new_tokens_after_a_cached_prefix_see_the_prefix_and_their_own_past():
    model = gpt2(seed=6)
    generator = torch.Generator().manual_seed(7)
    prompt, more = torch.randint(0, 97, (1, 6), generator=generator), torch.randint(0, 97, (1, 5), generator=generator)
    forward = GPT2Forward(model)
    cache = forward.new_cache()
    with torch.inference_mode():
        forward(input_ids=prompt, cache=cache)
        ours = forward(input_ids=more, cache=cache).logits
        theirs = model(torch.cat([prompt, more], dim=1)).logits[:, 6:]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert cache.length == 11


def test_only_unmodified_gpt2_models_in_eval_mode_with_sdpa_take_the_lean_path():
    from transformers import LlamaConfig, LlamaForCausalLM

    assert supports(gpt2())
    assert not supports(gpt2().train())  # dropout is active
    eager = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, attn_implementation="eager"))
    assert not supports(eager.eval())
    hooked = gpt2()
    hooked.transformer.h[0].mlp.register_forward_hook(lambda module, args, output: output * 2)
    assert not supports(hooked)
    swapped = gpt2()
    swapped.transformer.h[0].mlp.c_fc = torch.nn.Identity()
    assert not supports(swapped)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    assert not supports(llama)
    forward, cache = forward_for(eager.eval())
    assert forward is eager and isinstance(cache, DynamicCache)


@pytest.mark.parametrize("settings", [{"temperature": 0}, {"temperature": 0.9, "top_p": 0.9}, {"top_k": 5}])
def test_decode_yields_the_same_events_through_either_path(tiny_lm, settings, monkeypatch):
    config = DecodeConfig(max_new_tokens=20, num_samples=3, seed=11, top_n=3)

    def events():
        return [e for e in decode(tiny_lm, build_strategy(settings).strategy, tiny_lm.tokenizer.encode("ROMEO:"),
                                  config)]

    fast = events()
    monkeypatch.setattr(lean, "ENABLED", False)
    generic = events()
    assert [type(e) for e in fast] == [type(e) for e in generic]
    for a, b in zip(fast, generic, strict=True):
        if isinstance(a, Step):
            assert (a.sample, a.token_id, a.text) == (b.sample, b.token_id, b.text)
            assert a.prob == pytest.approx(b.prob, abs=1e-6)
            assert a.entropy == pytest.approx(b.entropy, abs=1e-5)
        else:
            assert isinstance(a, Done) and a.token_ids == b.token_ids
