"""How many CPU threads a model in this process decodes with.

Decoding one token reads every weight once, so a step is a chain of matrix-vector products bound by memory
bandwidth, plus fixed per-step work. On a small model a second thread buys nothing (the work per product is
too small to split well) and costs a lot the moment another process wants the core: the threads wait for each
other at every product, and the bundled model fell from ~300 to 12-48 tokens/s at torch's default of two
threads with one busy process beside it (issue #16; BENCHMARKS.md measures it). Below SMALL_MODEL_BYTES of
weights the default is therefore one thread; above, one per core, as torch and llama.cpp choose. `--threads N`
overrides either.
"""

from __future__ import annotations

import os

SMALL_MODEL_BYTES = 256 * 2**20


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(weight_bytes: int) -> int:
    return 1 if weight_bytes < SMALL_MODEL_BYTES else cores()


def use_torch_threads(model, requested: int | None) -> int:
    """Set torch's intra-op threads for decoding `model` on the CPU: `requested`, else the size-based default."""
    import torch

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    threads = requested or default_threads(weight_bytes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
