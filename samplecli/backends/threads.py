"""How many CPU threads a model in this process decodes with.

Decoding one token reads every weight once, so a step is a chain of matrix-vector products bound by memory
bandwidth, plus fixed per-step work. On a small model a second thread buys nothing (the work per product is
too small to split well) and costs a lot the moment another process wants the core: the threads wait for each
other at every product, and the bundled model fell from ~300 to 12-48 tokens/s at torch's default of two
threads with one busy process beside it (issue #16; BENCHMARKS.md measures it). Below SMALL_MODEL_BYTES of
weights the default is therefore one thread. Above it, one per core that is free when the model loads: the
cores this process may use less the other processes running right then (`/proc/loadavg`'s running count, read
a few times), at least one. `--threads N` overrides either.
"""

from __future__ import annotations

import os
import statistics
import time

SMALL_MODEL_BYTES = 256 * 2**20


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 5, interval: float = 0.01) -> int:
    """Other processes running now: the median over a few reads of /proc/loadavg's running count, less this
    one; 0 where there is no /proc."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as handle:
                counts.append(int(handle.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)))


def default_threads(weight_bytes: int) -> int:
    if weight_bytes < SMALL_MODEL_BYTES:
        return 1
    return max(1, cores() - busy_cores())


def use_torch_threads(model, requested: int | None) -> int:
    """Set torch's intra-op threads for decoding `model` on the CPU: `requested`, else the size-based default."""
    import torch

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    threads = requested or default_threads(weight_bytes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
