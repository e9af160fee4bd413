"""Weights laid out for the CPU's matrix-vector kernel.

A decode step multiplies one activation vector by every weight matrix. `nn.Linear` stores its weight as
[out, in] and computes `x @ W.T`; MKL's kernel for that layout reads memory at about half the speed of the one
for `x @ W` with W stored [in, out] (13 against 22-25 GB/s on the AMD EPYC of issue #16; GPT-2's `Conv1D` layers
are stored [in, out] already, its tied LM head is not). `transpose_storage` keeps every such weight's shape and
values and only swaps its memory order (a Parameter whose storage is the transposed matrix, viewed back as
[out, in]), so `F.linear` takes the fast kernel, for the lean forward and the model's own forward alike. The
rounding of a product changes in the last bits (the sums run in another order), the same for every path that
reads the model, so the lean forward still equals `model(...)` bit for bit.
"""

from __future__ import annotations

from typing import Any

MIN_ELEMENTS = 1 << 16  # small matrices sit in the caches: their layout does not matter


def transpose_storage(model: Any) -> int:
    """Relayout the float32 `nn.Linear` weights (and the tied embedding that is one) of a CPU model; returns the
    number of matrices changed. Quantised, offloaded or already transposed weights are left alone."""
    import torch

    changed = 0
    seen: set[int] = set()
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        weight = module.weight
        if id(weight) in seen or type(weight) is not torch.nn.Parameter or weight.device.type != "cpu" \
                or weight.dtype != torch.float32 or not weight.is_contiguous() or weight.numel() < MIN_ELEMENTS:
            continue
        seen.add(id(weight))
        with torch.no_grad():
            weight.data = weight.data.t().contiguous().t()
        changed += 1
    return changed
