"""A lean KV-cached forward pass for the Llama family (Llama, Qwen2, Mistral), for the decode and beam loops.

The same idea as `gpt2_fast`: the arithmetic of transformers' forward on the model's own parameter tensors,
in the same order and with the same kernels, minus the per-step Python of the generic path (mask building,
`DynamicCache` bookkeeping, output dataclasses, keyword plumbing through five module levels). RMSNorm in
float32 as the model does it; rotary embeddings from the model's own `rotary_emb` module at each step's
positions (so every RoPE variant and its scaling come out exactly as the model's); grouped-query attention
through `scaled_dot_product_attention(enable_gqa=True)`, with a mask too (new tokens after a cached prefix),
where transformers repeats the keys and values for every query head first: the kernel computes each head
alone, so the numbers are the same, without the repeated copies (16 MB a layer at 4,000 positions of the
bench's Llama-3 shape); SwiGLU MLP; the LM head on the last position only. Logits equal the model's
forward bit for bit on CPU (tests/test_llama_fast.py).

Only an unmodified model of those three classes in eval mode with SDPA attention takes this path; anything
else stays on `model(...)`. A sliding window (Mistral's, Qwen2's `use_sliding_window`) is applied by cutting
the keys to the window (one new token) or by a mask (several): exact while the text fits in the window, and
within float rounding of the model's masked attention after.
"""

from __future__ import annotations

from typing import Any

from samplecli.backends.kv_cache import KVCache, LeanForward

CLASSES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


class LlamaForward(LeanForward):
    """New tokens in, their logits out, the KV cache extended; built once when decoding starts, holding
    the model's parameter tensors (no copies)."""

    def __init__(self, model: Any) -> None:
        config = model.config
        body = model.model
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.groups = self.heads // self.kv_heads
        self.n_positions = config.max_position_embeddings
        self.embedding = body.embed_tokens.weight
        self.rotary = body.rotary_emb
        window = getattr(config, "sliding_window", None)
        kinds = getattr(config, "layer_types", None) or ["sliding_attention"] * len(body.layers)
        self.windows = [window if kind == "sliding_attention" else None for kind in kinds]
        self.layers = []
        for layer in body.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon,
                attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight, attn.k_proj.bias,
                attn.v_proj.weight, attn.v_proj.bias, attn.o_proj.weight, attn.o_proj.bias,
                attn.head_dim, attn.scaling,
                layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon,
                mlp.gate_proj.weight, mlp.gate_proj.bias, mlp.up_proj.weight, mlp.up_proj.bias,
                mlp.down_proj.weight, mlp.down_proj.bias, mlp.act_fn))
        self.final_norm = (body.norm.weight, body.norm.variance_epsilon)
        self.head = (model.lm_head.weight, model.lm_head.bias)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers), self.n_positions)

    def hidden_states(self, input_ids: Any, cache: KVCache, keep: int = 0) -> Any:
        import torch
        import torch.nn.functional as F

        batch, count = input_ids.shape
        start, end = cache.length, cache.length + count
        hidden = F.embedding(input_ids, self.embedding)
        positions = torch.arange(start, end, device=input_ids.device)[None, :]
        cos, sin = self.rotary(hidden, positions)
        cos, sin = cos[:, None], sin[:, None]
        full_mask = None
        if count > 1 and start > 0:  # new tokens after a cached prefix: each sees the prefix and its past
            full_mask = torch.ones(count, end, dtype=torch.bool, device=input_ids.device).tril(diagonal=start)
        for i, (norm1_w, norm1_eps, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, head_dim, scale,
                norm2_w, norm2_eps, gate_w, gate_b, up_w, up_b, down_w, down_b, act) in enumerate(self.layers):
            x = _rms_norm(hidden, norm1_w, norm1_eps)
            q = F.linear(x, q_w, q_b).view(batch, count, -1, head_dim).transpose(1, 2)
            k = F.linear(x, k_w, k_b).view(batch, count, -1, head_dim).transpose(1, 2)
            v = F.linear(x, v_w, v_b).view(batch, count, -1, head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.reserve(i, end, k)
            cache.keys[i][:, :, start:end] = k
            cache.values[i][:, :, start:end] = v
            keys, values = cache.keys[i][:, :, :end], cache.values[i][:, :, :end]
            mask, window = full_mask, self.windows[i]
            if window is not None and end > window:  # a sliding window: each position sees the last `window`
                if count == 1:
                    keys, values = keys[:, :, end - window:], values[:, :, end - window:]
                else:
                    query_at = torch.arange(start, end, device=input_ids.device)[:, None]
                    key_at = torch.arange(end, device=input_ids.device)[None, :]
                    mask = (key_at <= query_at) & (key_at > query_at - window)
            gqa = self.groups > 1
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=count > 1 and mask is None,
                                                 scale=scale, enable_gqa=gqa)
            out = out.transpose(1, 2).contiguous().reshape(batch, count, -1)
            hidden = hidden + F.linear(out, o_w, o_b)
            x = _rms_norm(hidden, norm2_w, norm2_eps)
            hidden = hidden + F.linear(act(F.linear(x, gate_w, gate_b)) * F.linear(x, up_w, up_b), down_w, down_b)
        cache.length = end
        hidden = _rms_norm(hidden, *self.final_norm)
        return hidden[:, -keep:] if keep else hidden


def _rms_norm(hidden: Any, weight: Any, eps: float) -> Any:
    import torch

    dtype = hidden.dtype
    x = hidden.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def supports(model: Any) -> bool:
    """Whether `LlamaForward` computes exactly what `model(...)` does for this model."""
    import torch

    cls = type(model)
    if cls.__name__ not in CLASSES or not cls.__module__.startswith("transformers.models.") or model.training:
        return False
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") in ("dynamic", "longrope"):  # they depend on the sequence length
        return False
    if config.num_attention_heads % (config.num_key_value_heads or config.num_attention_heads):
        return False
    for module in model.modules():
        if getattr(module, "_hf_hook", None) is not None or module._forward_hooks or module._forward_pre_hooks:
            return False
        name = type(module).__module__
        if name.startswith("transformers.models.") and name.rsplit(".", 1)[-1] in (
                "modeling_llama", "modeling_qwen2", "modeling_mistral"):
            continue
        if type(module) not in (torch.nn.Embedding, torch.nn.Linear, torch.nn.ModuleList) \
                and not name.startswith("transformers.activations") and name != "torch.nn.modules.activation":
            return False
    return all(type(p) in (torch.nn.Parameter, torch.Tensor) for p in model.parameters())
