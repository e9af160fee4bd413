"""The Llama-family lean forward (Llama, Qwen2, Mistral) gives the transformers model's own logits: prefill,
single steps, a shared prefill repeated for several rows, beam-search reorders, cache growth and several new
tokens after a cached prefix, on random-init configs with grouped-query attention and tied embeddings."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from samplecli.backends import lean
from samplecli.backends.kv_cache import KVCache
from samplecli.backends.lean import forward_for
from samplecli.backends.llama_fast import LlamaForward, supports
from samplecli.engine.decode import DecodeConfig, Done, Step, decode
from samplecli.strategies import build_strategy
from tests.forward_steps import beam_schedule, lean_steps, reference_steps

VOCAB = 101
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2)
FAMILIES = {
    "llama-gqa": (LlamaForCausalLM, LlamaConfig, {}),
    "llama-mha-tied-bias": (LlamaForCausalLM, LlamaConfig, dict(num_key_value_heads=4, tie_word_embeddings=True,
                                                                  attention_bias=True, mlp_bias=True)),
    "llama-head-dim-rope-scaling": (LlamaForCausalLM, LlamaConfig, dict(
        head_dim=8, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})),
    "llama-mqa-llama3-rope": (LlamaForCausalLM, LlamaConfig, dict(num_key_value_heads=1, rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 10000.0})),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, dict(tie_word_embeddings=True)),
    "mistral": (MistralForCausalLM, MistralConfig, dict(sliding_window=None)),
    "mistral-window-4096": (MistralForCausalLM, MistralConfig, {}),
}


def build(name: str, seed: int = 0, **overrides):
    cls, config_cls, extra = FAMILIES[name]
    torch.manual_seed(seed)
    return cls(config_cls(**{**BASE, **extra, **overrides})).eval()


def assert_identical(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_prefill_and_steps_give_the_models_own_logits_bit_for_bit(name):
    model = build(name)
    assert supports(model)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, VOCAB, (1, 9), generator=generator)
    feeds = [torch.randint(0, VOCAB, (1, 1), generator=generator) for _ in range(12)]
    with torch.inference_mode():
        assert_identical(lean_steps(LlamaForward, model, prompt, feeds), reference_steps(model, prompt, feeds))


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2", "mistral"])
def test_a_shared_prefill_repeated_and_reordered_as_sampling_and_beam_search_do(name):
    model = build(name, seed=2)
    prompt, feeds, reorders = beam_schedule(VOCAB)
    with torch.inference_mode():
        ours = lean_steps(LlamaForward, model, prompt, feeds, repeat=4, reorders=reorders)
        theirs = reference_steps(model, prompt, feeds, repeat=4, reorders=reorders)
    assert_identical(ours, theirs)


def test_the_cache_grows_past_its_first_capacity_without_changing_a_logit():
    model = build("llama-gqa", seed=4)
    generator = torch.Generator().manual_seed(5)
    prompt = torch.randint(0, VOCAB, (2, 60), generator=generator)  # capacity 64 at first, then 128, 256
    feeds = [torch.randint(0, VOCAB, (2, 1), generator=generator) for _ in range(75)]
    with torch.inference_mode():
        assert_identical(lean_steps(LlamaForward, model, prompt, feeds), reference_steps(model, prompt, feeds))


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2", "llama-mqa-llama3-rope"])
def test_several_new_tokens_after_a_cached_prefix_see_the_prefix_and_their_own_past(name, monkeypatch):
    """A mask (`score`'s pieces, speculative verification): the attention gets the cache's own keys and values
    with `enable_gqa`, never a copy repeated for every query head (16 MB a layer at 4,000 positions of the
    bench's Llama-3 shape), and gives the model's logits."""
    import torch.nn.functional as F

    model = build(name, seed=6)
    generator = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=generator)
    more = torch.randint(0, VOCAB, (1, 5), generator=generator)
    forward = LlamaForward(model)
    cache = forward.new_cache()
    calls: list[tuple[int, int, bool, bool]] = []  # (query heads, key heads, a mask given, enable_gqa)
    attention = F.scaled_dot_product_attention

    def recorded(q, k, v, **kwargs):
        calls.append((q.shape[1], k.shape[1], kwargs.get("attn_mask") is not None, kwargs.get("enable_gqa", False)))
        return attention(q, k, v, **kwargs)

    with torch.inference_mode():
        forward(input_ids=prompt, cache=cache)
        monkeypatch.setattr(F, "scaled_dot_product_attention", recorded)
        ours = forward(input_ids=more, cache=cache).logits
        monkeypatch.undo()
        reference = DynamicCache(config=model.config)
        model(input_ids=prompt, cache=reference, use_cache=True)
        theirs = model(input_ids=more, cache=reference, use_cache=True).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert cache.length == 11
    config = model.config
    kv_heads = config.num_key_value_heads
    assert calls == [(config.num_attention_heads, kv_heads, True, kv_heads < config.num_attention_heads)] * \
        config.num_hidden_layers


def test_a_sliding_window_narrower_than_the_text_matches_the_models_masked_attention():
    """Mistral with an 8-token window: a 12-token prefill (a mask) and 10 steps past the window (the keys cut
    to the last 8) against the model's own sliding-window mask."""
    model = build("mistral", seed=8, sliding_window=8)
    generator = torch.Generator().manual_seed(9)
    prompt = torch.randint(0, VOCAB, (1, 12), generator=generator)
    feeds = [torch.randint(0, VOCAB, (1, 1), generator=generator) for _ in range(10)]
    with torch.inference_mode():
        ours, theirs = lean_steps(LlamaForward, model, prompt, feeds), reference_steps(model, prompt, feeds)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # the window matters: without it the logits would differ
    with torch.inference_mode():
        unwindowed = reference_steps(build("mistral", seed=8), prompt, feeds)
    assert not torch.allclose(theirs[-1], unwindowed[-1], atol=1e-3)


def test_only_unmodified_llama_family_models_in_eval_mode_with_sdpa_take_the_lean_path():
    assert supports(build("llama-gqa"))
    assert not supports(build("llama-gqa").train())
    eager = build("llama-gqa", attn_implementation="eager")
    assert not supports(eager)
    hooked = build("qwen2")
    hooked.model.layers[0].mlp.register_forward_hook(lambda module, args, output: output * 2)
    assert not supports(hooked)
    swapped = build("mistral")
    swapped.model.layers[0].mlp = torch.nn.Identity()
    assert not supports(swapped)
    dynamic = build("llama-gqa", rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    assert not supports(dynamic)
    forward, cache = forward_for(build("qwen2"))
    assert isinstance(forward, LlamaForward) and isinstance(cache, KVCache)
    forward, cache = forward_for(eager)
    assert forward is eager and isinstance(cache, DynamicCache)


@pytest.mark.parametrize("settings", [{"temperature": 0}, {"temperature": 0.9, "top_p": 0.9}])
def test_decode_yields_the_same_events_through_either_path(settings, monkeypatch, tiny_lm):
    from samplecli.backends.torch_lm import LM

    tokenizer = tiny_lm.tokenizer
    lm = LM.of(build("llama-gqa", seed=10, vocab_size=len(tokenizer)), tokenizer)
    config = DecodeConfig(max_new_tokens=16, num_samples=3, seed=11, top_n=3)

    def events():
        return list(decode(lm, build_strategy(settings).strategy, tokenizer.encode("ROMEO:"), config))

    fast = events()
    monkeypatch.setattr(lean, "ENABLED", False)
    generic = events()
    assert [type(e) for e in fast] == [type(e) for e in generic]
    for a, b in zip(fast, generic, strict=True):
        if isinstance(a, Step):
            assert (a.sample, a.token_id) == (b.sample, b.token_id)
            assert a.prob == b.prob and a.entropy == b.entropy
        else:
            assert isinstance(a, Done) and a.token_ids == b.token_ids
