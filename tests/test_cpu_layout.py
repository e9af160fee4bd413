"""`transpose_storage`: a CPU model's Linear weights (and a tied LM head) stored transposed keep their shapes and
values, give the same logits to float rounding, and the lean forwards still equal `model(...)` bit for bit."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from samplecli.backends.cpu_layout import transpose_storage
from samplecli.backends.gpt2_fast import GPT2Forward
from samplecli.backends.llama_fast import LlamaForward


def models():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=3000, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=3000, hidden_size=64, intermediate_size=1100,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True)).eval()
    return {"gpt2": (gpt2, GPT2Forward), "llama": (llama, LlamaForward)}


def test_relaid_weights_keep_shape_values_and_logits_and_the_lean_forward_stays_exact():
    ids = torch.tensor([[5, 17, 300, 2999, 42, 7]])
    for name, (model, lean) in models().items():
        with torch.inference_mode():
            before = model(ids).logits
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        values = {k: v.clone() for k, v in model.state_dict().items()}
        changed = transpose_storage(model)
        assert changed >= 1, name
        assert not model.lm_head.weight.is_contiguous()  # the tied head: 3000 x 64, stored [64, 3000]
        if name == "llama":
            assert model.model.embed_tokens.weight is model.lm_head.weight
            assert not model.model.layers[0].mlp.up_proj.weight.is_contiguous()  # 1100 x 64
        for key, value in model.state_dict().items():
            assert value.shape == shapes[key] and torch.equal(value, values[key]), (name, key)
        with torch.inference_mode():
            after = model(ids).logits
            torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
            forward = lean(model)
            cache = forward.new_cache()
            ours = forward(input_ids=ids, cache=cache, logits_to_keep=1).logits
            theirs = model(input_ids=ids, logits_to_keep=1).logits
            assert torch.equal(ours, theirs), name
        assert transpose_storage(model) == 0  # already laid out


def test_half_precision_and_small_matrices_are_left_alone():
    model = models()["llama"][0]
    small = torch.nn.Linear(8, 8)
    model.add_module("extra", small)
    half = models()["gpt2"][0].to(torch.bfloat16)
    assert transpose_storage(half) == 0
    transpose_storage(model)
    assert small.weight.is_contiguous()
