"""The peers and limits `bench.py` measures samplecli against: llama.cpp's own decode loop on the same weights
(through llama-cpp-python, when installed), the machine's memory read bandwidth, a busy neighbour process, and
a Llama-family model of ~100M parameters. A sibling of bench.py, imported by it."""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR


def read_bandwidth(mebibytes: int = 1024, runs: int = 7) -> float:
    """Bytes per second the CPU reads from memory: the median time of summing an array far larger than the
    caches (`torch.ones(2**28).sum()` reads 1 GiB). The ceiling of a decode step that reads every weight once."""
    data = torch.ones(mebibytes * 2**20 // 4)
    data.sum()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - started)
    return data.numel() * 4 / statistics.median(times)


def llama_cpp_available() -> str | None:
    """None when llama-cpp-python imports, else why not (the bench's llama.cpp columns say it)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (pip install -e '.[gguf]')"
    return None


class LlamaCppLoop:
    """llama.cpp's own greedy decode loop on a GGUF file: prefill, then per token one `llama_decode` and an
    argmax over the logits (no sampler chain, no per-step record): the fastest way llama.cpp decodes."""

    def __init__(self, gguf: Path, threads: int, context: int = 1024) -> None:
        from samplecli.backends.gguf import _library

        lib, _ = _library()  # the same quiet log callback as samplecli's backend
        self.lib = lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        self.vocab_size = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = context
        cparams.n_batch = cparams.n_ubatch = 512
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        self.memory = lib.llama_get_memory(self.ctx)

    def run(self, prompt: list[int], new_tokens: int) -> float:
        """Seconds to prefill `prompt` and decode `new_tokens` greedily."""
        import numpy as np

        lib = self.lib
        started = time.perf_counter()
        lib.llama_memory_clear(self.memory, True)
        tokens = (lib.llama_token * len(prompt))(*prompt)
        if lib.llama_decode(self.ctx, lib.llama_batch_get_one(tokens, len(prompt))) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        one = (lib.llama_token * 1)()
        for _ in range(new_tokens):
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, -1), shape=(self.vocab_size,))
            one[0] = int(logits.argmax())
            if lib.llama_decode(self.ctx, lib.llama_batch_get_one(one, 1)) != 0:
                raise RuntimeError("llama_decode failed")
        return time.perf_counter() - started

    def close(self) -> None:
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def _spin(stop) -> None:  # pragma: no cover - runs in the child
    while not stop.is_set():
        sum(range(10000))


@contextmanager
def busy_neighbour():
    """One other process keeping a core busy for as long as the block runs (a laptop's browser, a build)."""
    stop = multiprocessing.get_context("spawn").Event()
    child = multiprocessing.get_context("spawn").Process(target=_spin, args=(stop,), daemon=True)
    child.start()
    time.sleep(0.5)
    try:
        yield
    finally:
        stop.set()
        child.join(5)
        if child.is_alive():
            child.kill()


def grown_tokenizer(vocab_size: int):
    """The bundled byte-level tokenizer grown to `vocab_size` by filler tokens (decodable byte strings that no
    merge produces), and its end-of-text id: a tokenizer of a real model's vocabulary size with nothing
    downloaded. Without the bundled tokenizer, the byte alphabet alone is the base."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer.from_file(str(BUNDLED_MODEL_DIR / "tokenizer.json")) \
        if (BUNDLED_MODEL_DIR / "tokenizer.json").is_file() else None
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = dict(base.get_vocab()) if base is not None else {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = []
    if base is not None:
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in json.loads(base.to_str())["model"]["merges"]]
    letters = sorted(alphabet)
    i = 0
    while len(vocab) < vocab_size - ("<|endoftext|>" not in vocab):  # the end-of-text token is the last one
        a, b, c = letters[i % 188], letters[(i // 188) % 188], letters[(i // (188 * 188)) % 188]
        token = "Ġ" + a + b + c
        if token not in vocab:
            vocab[token] = len(vocab)
        i += 1
    vocab.setdefault("<|endoftext|>", len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eos = vocab["<|endoftext|>"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    return tokenizer, eos


def build_llama_100m(path: Path, vocab_size: int = 32000, hidden: int = 768, layers: int = 12, heads: int = 12,
                     kv_heads: int = 4, intermediate: int = 2048, positions: int = 1024) -> Path:
    """A random-init Llama of ~125M parameters (grouped-query attention, 4 key/value heads, untied head) with
    the bundled byte-level tokenizer grown to `vocab_size` by filler tokens, as `bench.py`'s GPT-2 shape is."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if (path / "config.json").is_file():
        return path
    tokenizer, eos = grown_tokenizer(vocab_size)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=positions, bos_token_id=eos, eos_token_id=eos)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class StepParts:
    """Where a GGUF decode step's time goes: llama.cpp's `llama_decode`, copying the logits out, and the rest
    (samplecli's strategy, per-step record and events), in microseconds per step."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.decode_s = self.total_backend_s = 0.0
        self.calls = 0

    @contextmanager
    def watching(self):
        backend, lib = self.backend, self.backend.lib
        original_decode, original_backend = lib.llama_decode, type(backend).decode

        def timed_llama_decode(*args):
            started = time.perf_counter()
            try:
                return original_decode(*args)
            finally:
                self.decode_s += time.perf_counter() - started

        def timed_backend(this, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original_backend(this, *args, **kwargs)
            finally:
                self.total_backend_s += time.perf_counter() - started
                self.calls += 1

        lib.llama_decode = timed_llama_decode
        type(backend).decode = timed_backend
        try:
            yield self
        finally:
            lib.llama_decode = original_decode
            type(backend).decode = original_backend

    def report(self, total_s: float) -> str:
        per = 1e6 / max(self.calls, 1)
        rest = total_s - self.total_backend_s
        return (f"`llama_decode` {self.decode_s * per:.0f} µs, logits out of llama.cpp into a tensor "
                f"{(self.total_backend_s - self.decode_s) * per:.0f} µs, samplecli's own work (strategy, record, "
                f"events) {rest * per:.0f} µs; {total_s * per:.0f} µs a step in all")
