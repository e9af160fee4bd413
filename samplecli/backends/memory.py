"""How much memory a decoding run needs, estimated from a model's config before anything is allocated, and how
much the machine has: the weights, the KV cache of every row at every position, and the per-step buffers.

The constants were measured on the bundled model (6 layers, 256 wide, 2048 tokens) with `--num-samples` 500 and
2000 at 100 new tokens: 1.8 MB a row, of which the KV cache is 1.57 MB and the rest the step's
vocabulary-sized tensors (raw and processed logits, probabilities, log-probabilities, the ranking, top-p's
sorted copy); `STEP_FLOATS` rounds their count up.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from samplecli.backends.facts import DTYPE_BYTES, ModelFacts

STEP_FLOATS = 32  # float32-sized tensors of shape (rows, vocabulary) alive at once in a decode step
ACTIVATION_FLOATS = 16  # ... and of shape (rows, hidden): the layers' activations
RUNTIME_BYTES = 400 * 2**20  # torch, transformers and the interpreter, before any model
# what a run keeps of each generated token until it ends (measured): a `Step` with its top-5 alternatives, a JSON
# record of one, the coloured text of the terminal's summary
STEP_BYTES, RECORD_BYTES, TEXT_BYTES = 1700, 2000, 250
CACHE_START = 64  # the lean GPT-2 cache's first capacity (it doubles as it grows; kv_cache.KVCache)


def gigabytes(size: float) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by what needs them."""

    rows: int
    positions: int
    weights: int
    kv_cache: int
    step_buffers: int
    runtime: int = RUNTIME_BYTES
    kept: int = 0  # results held until the run ends (a JSON document, compare's steps)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.step_buffers + self.runtime + self.kept

    def describe(self) -> str:
        kept = f", results kept to the end {gigabytes(self.kept)}" if self.kept else ""
        return (f"about {gigabytes(self.total)} (KV cache {gigabytes(self.kv_cache)} for {self.rows} rows x "
                f"{self.positions} positions, per-step buffers {gigabytes(self.step_buffers)}{kept}, weights "
                f"{gigabytes(self.weights)}, runtime {gigabytes(self.runtime)})")


def cache_capacity(positions: int, context: int | None) -> int:
    """The positions a KV cache holds once `positions` are in it: the lean cache doubles from 64, up to the
    context (transformers' own cache grows one position at a time, copying, which costs about as much)."""
    capacity = CACHE_START
    while capacity < positions:
        capacity *= 2
    return min(capacity, max(context or capacity, positions))


def estimate(facts: ModelFacts, rows: int, positions: int, dtype: str = "auto", device: str = "cpu", kept: int = 0
             ) -> MemoryEstimate | None:
    """The memory `rows` sequences of up to `positions` tokens need (None when the config lacks the shapes).

    `dtype` is the one asked for; "auto" is float32 on the CPU (as `torch_lm.resolve_dtype` decides) and the
    checkpoint's own elsewhere; `device` is a device kind (`device_kind`)."""
    per_position = facts.kv_bytes_per_position
    if per_position is None or facts.vocab_size is None:
        return None
    saved = DTYPE_BYTES.get(facts.dtype or "", 4)
    if dtype == "auto":
        width = 4 if device == "cpu" else saved
    else:
        width = DTYPE_BYTES.get(dtype, 4)
    capacity = cache_capacity(positions, facts.context_length)
    layer = per_position // (facts.layers or 1)
    kv_cache = (per_position + layer) * width * rows * capacity  # while a layer's cache grows, both copies live
    weights = int((facts.weight_bytes or 0) * width / saved)
    step = rows * (facts.vocab_size * 4 * STEP_FLOATS + (facts.hidden or 0) * 4 * ACTIVATION_FLOATS)
    return MemoryEstimate(rows=rows, positions=positions, weights=weights, kv_cache=kv_cache, step_buffers=step,
                          kept=kept)


def available_ram() -> int | None:
    """The memory the system can give this process now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def device_kind(device: str) -> str:
    """Where `--device` puts the model: "cpu", "cuda" or "mps" ("auto" asks torch, as loading will)."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def available_memory(kind: str) -> tuple[int, str] | None:
    """(bytes free, what they are) on a device kind: system memory for the CPU, the device's free memory for
    CUDA; None where it cannot be told (MPS shares system memory but reports nothing)."""
    if kind == "cpu":
        ram = available_ram()
        return (ram, "system memory available") if ram is not None else None
    if kind == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, "free CUDA memory"
    return None


__all__ = ["MemoryEstimate", "available_memory", "available_ram", "cache_capacity", "device_kind", "estimate",
           "gigabytes", "give_back_freed_memory"]


def give_back_freed_memory(keep: int = 4 * 2**20) -> None:
    """Hand the allocator's free pages back to the system where more than `keep` bytes lie free in its heap
    (glibc's `malloc_trim`; elsewhere nothing). A loop whose buffers change size from one piece to the next
    (`score`: the attention over a prefix that grows with each piece) leaves freed buffers in holes of the heap
    that the next, larger ones do not fit: without this the process's resident memory grew with the text, to
    4.3 GB at V = 128k over 4,000 tokens in one run. `keep` is small, as what lies free in the heap at the peak
    counts in it: `score` at V = 152k over 4,000 tokens peaked at 919-986 MB from one run to the next with 64 MB,
    903-976 MB with 4 MB, in the same time (BENCHMARKS.md, "`score`'s memory")."""
    glibc = _glibc()
    if glibc is not None and glibc.mallinfo2().fordblks > keep:
        glibc.malloc_trim(0)


@functools.cache
def _glibc():
    import ctypes
    import ctypes.util

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc 2.33+ (macOS, musl): the allocator keeps its own counsel
        return None
    return libc
