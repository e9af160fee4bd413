"""GGUF models in this process through llama.cpp (`pip install 'samplecli[gguf]'`, which brings
`llama-cpp-python`): llama.cpp computes the logits, samplecli's registry, views, `compare`, `inspect`,
`score` and beam search run on them. Every token's logit comes back, so every number is exact.

The batch's rows are llama.cpp sequences in one unified KV cache: the prompt is prefilled once into sequence 0
and shared by the other rows (`llama_memory_seq_cp` shares the cells, it copies nothing), each step decodes one
token per row in a single `llama_decode`, and beam search's reorder maps rows onto sequences, copying a
sequence only where two rows continue the same parent and dropping the ones no row continues.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import REORDER, TEACHER_FORCE, Backend
from samplecli.errors import SampleCliError

if TYPE_CHECKING:
    import torch

MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'samplecli[gguf]' (it brings llama-cpp-python)"
MAX_SEQUENCES = 64  # rows in flight (beam search grows to its beam count); more need a context made for them
BATCH = 512  # tokens per llama_decode call when prefilling or teacher-forcing
# tokens per llama_decode call where every position's scores are asked (`logits`, `logit_chunks`): llama.cpp's
# output buffer and its graph's logits each hold a batch's scores, 33 MB at V = 128k for 64 positions, 263 MB
# for 512 (`score` of 4,000 tokens peaked at 1.53 GB in batches of 512, 1.08 GB in batches of 64, in the same time)
SCORED_BATCH = 64
MAX_CELLS = 16384  # KV cache positions for every row together (2 GiB of float16 cache for a 7B Llama)


def claims(reference: str) -> bool:
    """A `--model` value naming a GGUF file: the suffix, or a file that starts with GGUF's magic."""
    if reference.lower().endswith(".gguf"):
        return True
    path = Path(reference).expanduser()
    try:
        with path.open("rb") as handle:
            return path.is_file() and handle.read(4) == MAGIC
    except OSError:
        return False


class _Log:
    """llama.cpp's log, kept instead of printed: the last error explains a failed load in one line."""

    def __init__(self, lib: Any) -> None:
        self.lines: list[str] = []

        @lib.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:  # pragma: no cover - called from C
            if level in (2, 3):  # warnings and errors
                line = text.decode("utf-8", "replace").strip()
                if line:
                    self.lines = [*self.lines[-20:], line]

        self.callback = callback  # kept alive: llama.cpp holds the pointer
        lib.llama_log_set(callback, ctypes.c_void_p(0))

    def last_error(self) -> str:
        return self.lines[-1] if self.lines else "llama.cpp gave no reason"


@lru_cache(maxsize=1)
def _library() -> tuple[Any, _Log]:
    try:
        import llama_cpp as lib
    except ImportError as exc:
        raise SampleCliError(f"a GGUF model needs llama.cpp's Python bindings: {INSTALL_HINT}") from exc
    log = _Log(lib)
    lib.llama_backend_init()
    return lib, log


class GGUFVocabulary:
    """The model's own tokenizer (llama.cpp's, read from the GGUF file)."""

    def __init__(self, lib: Any, vocab: Any, size: int) -> None:
        self.lib, self.handle, self.size = lib, vocab, size
        self.special = frozenset(i for i in range(size) if lib.llama_vocab_is_control(vocab, i))
        self.bytes = lru_cache(maxsize=None)(self._bytes)
        self.text = lru_cache(maxsize=None)(self._text)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        tokens = (self.lib.llama_token * room)()
        count = self.lib.llama_tokenize(self.handle, data, len(data), tokens, room, add_special_tokens, True)
        if count < 0:  # pragma: no cover - room is one token per byte and more
            raise SampleCliError(f"llama.cpp could not tokenize the text ({-count} tokens needed)")
        return list(tokens[:count])

    def _bytes(self, token_id: int) -> tuple[int, ...]:
        buffer = ctypes.create_string_buffer(64)
        size = self.lib.llama_token_to_piece(self.handle, token_id, buffer, 64, 0, True)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = self.lib.llama_token_to_piece(self.handle, token_id, buffer, -size, 0, True)
        return tuple(buffer.raw[:size])

    def _text(self, token_id: int) -> str:
        return bytes(self._bytes(token_id)).decode("utf-8", errors="replace")

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return b"".join(bytes(self._bytes(i)) for i in ids
                        if not (skip_special_tokens and i in self.special)).decode("utf-8", errors="replace")


class GGUFBatch:
    """Rows of one prompt as llama.cpp sequences: `owned[i]` is row i's sequence id. The sequences go back to the
    backend when the batch is dropped, so several batches (and teacher forcing) can share one context."""

    def __init__(self, backend: GGUFBackend, rows: list[int], length: int) -> None:
        self.backend, self.length = backend, length
        self.owned = rows  # the list the finalizer releases: kept the same object as rows change
        weakref.finalize(self, backend.release, self.owned)

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        tokens = token_ids.tolist()
        logits = self.backend.decode([(t, self.length, seq) for t, seq in zip(tokens, self.owned, strict=True)],
                                     every=True)
        self.length += 1
        return logits

    def reorder(self, parents: torch.Tensor) -> None:
        """Row i continues old row `parents[i]`: the first row to continue a sequence takes it over, each
        further one gets a copy, and sequences no row continues are dropped."""
        backend = self.backend
        old = list(self.owned)
        wanted = [old[p] for p in parents.tolist()]
        backend.release([seq for seq in old if seq not in set(wanted)])
        taken: set[int] = set()
        new: list[int] = []
        for seq in wanted:
            if seq in taken:
                copy = backend.take(1)[0]
                backend.lib.llama_memory_seq_cp(backend.memory, seq, copy, -1, -1)
                new.append(copy)
            else:
                taken.add(seq)
                new.append(seq)
        self.owned[:] = new


class GGUFBackend(Backend):
    """A GGUF file loaded by llama.cpp in this process; see the module's docstring."""

    capabilities = frozenset({REORDER, TEACHER_FORCE})
    top_n = None

    def __init__(self, path: Path, threads: int | None = None, context: int | None = None) -> None:
        lib, log = _library()
        self.lib, self.log, self.path, self.name = lib, log, path, str(path)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        log.lines = []
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise SampleCliError(f"model `{path}`: llama.cpp could not load it ({log.last_error()}); is the file "
                                 "complete (not truncated) and a GGUF model llama.cpp supports?")
        self.handle = lib.llama_model_get_vocab(self.model)
        self._vocab_size = lib.llama_vocab_n_tokens(self.handle)
        self.vocab = GGUFVocabulary(lib, self.handle, self._vocab_size)
        self._context = lib.llama_model_n_ctx_train(self.model) or None
        from samplecli.backends.threads import default_threads

        self.threads = threads or default_threads(path.stat().st_size)
        # samplecli's per-step work on llama.cpp's logits (softmaxes, top-N, the strategy) runs on torch between two
        # decodes: with one intra-op thread no torch worker spins on a core that llama.cpp's threads need next
        # (torch's default pool beside them made a greedy step of a V = 128k model 2-3x slower on 2 cores, #26)
        import torch

        torch.set_num_threads(1)
        self.per_row = min(self._context or 4096, 4096)  # positions a row may need
        self.cells = context or self.per_row * 4
        self.sequences = MAX_SEQUENCES
        self.ctx = None
        self._make_context()

    def take(self, count: int) -> list[int]:
        """`count` free sequence ids (their cells empty)."""
        if count > len(self.free):
            raise SampleCliError(f"model `{self.name}`: more than {self.sequences} rows at once (llama.cpp "
                                 "sequences); use fewer samples, beams or columns")
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def release(self, ids: list[int]) -> None:
        """Drop the sequences' cells and return their ids."""
        if not self.ctx:
            return
        for seq in ids:
            self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
        self.free = sorted({*self.free, *ids})

    def _make_context(self) -> None:
        lib = self.lib
        if self.ctx:
            lib.llama_batch_free(self._batch)
            lib.llama_free(self.ctx)
        params = lib.llama_context_default_params()
        params.n_ctx = self.cells
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = self.sequences
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True
        params.no_perf = True
        self.log.lines = []
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise SampleCliError(f"model `{self.name}`: llama.cpp could not make a context of {self.cells} "
                                 f"positions ({self.log.last_error()})")
        self.memory = lib.llama_get_memory(self.ctx)
        self._batch = lib.llama_batch_init(BATCH, 0, 1)
        self.free = list(range(self.sequences))

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    vocab_size = property(lambda self: self._vocab_size)
    context_length = property(lambda self: self._context)

    @property
    def eos_token_ids(self) -> list[int]:
        ids = [self.lib.llama_vocab_eos(self.handle), self.lib.llama_vocab_eot(self.handle)]
        return list(dict.fromkeys(i for i in ids if i >= 0))

    @property
    def bos_token_id(self) -> int | None:
        bos = self.lib.llama_vocab_bos(self.handle)
        return bos if bos >= 0 else None

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def decode(self, entries: list[tuple[int, int, int]], every: bool = False) -> torch.Tensor:
        """Decode (token, position, sequence) entries in chunks of BATCH (SCORED_BATCH with `every`); return the
        logits of every entry (`every`) or of the last one only, shape (n, vocab)."""
        import numpy as np
        import torch

        lib, batch = self.lib, self._batch
        out = []
        size = SCORED_BATCH if every else BATCH
        for begin in range(0, len(entries), size):
            chunk = entries[begin:begin + size]
            last_chunk = begin + size >= len(entries)
            batch.n_tokens = len(chunk)
            for i, (token, position, seq) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = every or (last_chunk and i == len(chunk) - 1)
            code = lib.llama_decode(self.ctx, batch)
            if code != 0:
                why = "the KV cache is full" if code == 1 else self.log.last_error()
                raise SampleCliError(f"model `{self.name}`: llama.cpp could not decode ({why}; {self.cells} "
                                     "positions for every row together)")
            wanted = len(chunk) if every else int(last_chunk)
            if wanted:
                pointer = lib.llama_get_logits(self.ctx)
                values = np.ctypeslib.as_array(pointer, shape=(wanted * self._vocab_size,))
                out.append(torch.from_numpy(values.copy()).view(wanted, self._vocab_size))
        return torch.cat(out) if len(out) > 1 else out[0]

    def _decode_outputs(self, entries: list[tuple[int, int, int]], wanted: int, size: int,
                        rows: int) -> Iterator[torch.Tensor]:
        """Decode (token, position, sequence) entries in batches of at most `size`, llama.cpp computing the scores
        of the entries from index `wanted` on only; yield them `rows` entries at a time (shape (n, vocab)), each
        copied out of llama.cpp's buffer as it is handed on."""
        import numpy as np
        import torch

        lib, batch = self.lib, self._batch
        for begin in range(0, len(entries), size):
            chunk = entries[begin:begin + size]
            batch.n_tokens = len(chunk)
            for i, (token, position, seq) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = begin + i >= wanted
            code = lib.llama_decode(self.ctx, batch)
            if code != 0:
                why = "the KV cache is full" if code == 1 else self.log.last_error()
                raise SampleCliError(f"model `{self.name}`: llama.cpp could not decode ({why}; {self.cells} "
                                     "positions for every row together)")
            count = len(chunk) - max(0, wanted - begin)
            if count > 0:
                values = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx), shape=(count, self._vocab_size))
                for piece in range(0, count, rows):
                    yield torch.from_numpy(values[piece:piece + rows].copy())

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[GGUFBatch, torch.Tensor]:
        cells = min(max(rows * self.per_row, self.cells), MAX_CELLS)
        if (rows > self.sequences or cells > self.cells) and len(self.free) == self.sequences:
            self.sequences, self.cells = max(min(rows, 256), self.sequences), cells  # no batch alive: make room
            self._make_context()
        seqs = self.take(rows)
        try:
            logits = self.decode([(t, i, seqs[0]) for i, t in enumerate(prompt_ids)])
        except BaseException:
            self.release(seqs)
            raise
        for seq in seqs[1:]:
            self.lib.llama_memory_seq_cp(self.memory, seqs[0], seq, -1, -1)
        return GGUFBatch(self, seqs, len(prompt_ids)), logits.expand(rows, -1)

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        seq = self.take(1)
        try:
            scores = self.decode([(t, i, seq[0]) for i, t in enumerate(ids)], every=True)
        finally:
            self.release(seq)
        return scores[-keep:] if keep else scores

    def logit_chunks(self, ids: Sequence[int], first: int = 0, stop: int | None = None,
                     rows: int = 128) -> Iterator[torch.Tensor]:
        """`logits(ids)[first:stop]`, `rows` at a time: the window goes through llama.cpp in the batches
        `logits` uses (SCORED_BATCH tokens: llama.cpp's rounding depends on a batch's size, so these are the same
        rows bit for bit), which ask the scores only of positions first.. (llama.cpp then computes the output
        head for those alone), and each batch's scores are handed on `rows` at a time."""
        stop = len(ids) if stop is None else stop
        seq = self.take(1)
        try:
            entries = [(t, i, seq[0]) for i, t in enumerate(ids[:stop])]
            yield from self._decode_outputs(entries, first, SCORED_BATCH, rows)
        finally:
            self.release(seq)


def open_gguf(reference: str, *, threads: int | None = None, **_: Any) -> GGUFBackend:
    """Open a `.gguf` path; a missing file, a file that is not GGUF and a truncated one are each one line."""
    path = Path(reference).expanduser()
    if not path.exists():
        raise SampleCliError(f"model `{reference}`: no such file")
    if not path.is_file():
        raise SampleCliError(f"model `{reference}`: not a file (a GGUF model is one .gguf file)")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise SampleCliError(f"model `{reference}`: cannot read it ({exc.strerror or exc})") from None
    if magic != MAGIC:
        raise SampleCliError(f"model `{reference}`: not a GGUF file (it does not start with the bytes `GGUF`)")
    return GGUFBackend(path.resolve(), threads=threads)
