"""Sampling on the server: a remote engine draws every token with its own samplers (the strategy translated to its
fields), and this loop turns what it streams into the same `Step` and `Done` events as `decode`. Each sample is
one streamed request with its own seed; several run concurrently (the engine batches them).

A step carries what the server returned and nothing more: the raw model's probabilities (every token's, or its
top N: then the entropy is an interval) or, with `post_sampling`, those of the distribution it drew from (exact
where they sum to 1). What was not returned is NaN (JSON null).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import SAMPLE_LOCALLY, SERVER_SAMPLING
from samplecli.engine.decode import check_prompt_fits, context_room
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import DecodeConfig, Done, Step, build_step, resolved_seed, sample_seed
from samplecli.engine.measure import measure_served
from samplecli.engine.sequence import SequenceState
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy

SEED_RANGE = 2**32 - 1  # llama.cpp's seed is a uint32 and 0xFFFFFFFF means "random"
FINISH = {"stop": "eos", "length": "length"}  # an OpenAI finish_reason: samplecli checks stop strings itself


def can_sample_on(lm: Backend) -> bool:
    return SERVER_SAMPLING in lm.capabilities


def chain_spec(strategy: Strategy) -> tuple[list[tuple[str, dict[str, Any]]], tuple[str, dict[str, Any]]]:
    """The strategy as plain data for a backend: each transform's and the selector's name and values."""
    return ([(t.name, dict(t.values)) for t in strategy.transforms],
            (strategy.selector.name, dict(strategy.selector.values)))


def server_chain(lm: Backend, strategy: Strategy, config: DecodeConfig):
    """What the server will run for `strategy` (printable: the header shows it); UsageError, before any request
    for tokens, for what it cannot run."""
    if config.min_new_tokens:
        way_out = "use --sample-locally" if lm.why_not(SAMPLE_LOCALLY) is None else "drop --min-new-tokens"
        raise UsageError(f"{lm.engine} has no minimum length (--min-new-tokens); {way_out}")
    if config.logprob_of and lm.top_n is not None:
        raise UsageError(f"--logprob-of needs every token's probability; {lm.engine} returns its top "
                         f"{lm.top_n}; add --full-distribution (llama.cpp's server), or use a local model")
    return lm.server_chain(*chain_spec(strategy))


def server_seed(seed: int, sample: int) -> int:
    """Sample i's seed on the server, from (seed, i) alone: sample i does not depend on --num-samples."""
    return sample_seed(seed, sample) % SEED_RANGE


@dataclass
class _Failed:
    error: BaseException


def server_decode(lm: Backend, chain, prompt_ids: list[int], config: DecodeConfig, *, label: str,
                  post_sampling: bool = False) -> Iterator[Step | Done]:
    """Stream `config.num_samples` samples drawn by the server with `chain` (from `server_chain`), at most
    `lm.concurrency` at once; events of different samples interleave as they arrive. A fault ends the run after
    the events that came before it."""
    yield from server_decode_columns(lm, [(chain, label)], prompt_ids, config, post_sampling=post_sampling)


def server_decode_columns(lm: Backend, columns: list[tuple[Any, str]], prompt_ids: list[int], config: DecodeConfig,
                          *, post_sampling: bool = False) -> Iterator[Step | Done]:
    """Several chains (`compare`'s columns: (chain, label) each), `config.num_samples` samples of each, every
    sample one streamed request, at most `lm.concurrency` at once (the engine batches them); each event carries
    its column's index. Sample i of every column has the seed `generate` gives sample i, so a column is what
    `generate` with its strategy and `--seed` returns."""
    check_prompt_fits(lm, prompt_ids)
    seed = resolved_seed(config.seed)
    limit = context_room(lm, len(prompt_ids), config.max_new_tokens)
    at_limit = "context" if limit < config.max_new_tokens else "length"  # what ended a run that reached `limit`

    def one(column: int, sample: int) -> Iterator[Step | Done]:
        chain, label = columns[column]
        return _sample(lm, chain, prompt_ids, config, sample, seed, (limit, at_limit), label, post_sampling,
                       column)

    samples = range(config.first_sample, config.first_sample + config.num_samples)
    streams = [one(column, i) for column in range(len(columns)) for i in samples]
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from _interleaved(streams, max(1, lm.concurrency))


def _interleaved(streams: list[Iterator], workers: int) -> Iterator:
    """The events of several iterators, each run in a worker thread (`workers` at a time), as they arrive."""
    events: queue.Queue = queue.Queue(maxsize=256)
    cancelled = threading.Event()
    pending = iter(streams)
    lock = threading.Lock()

    def work() -> None:
        while not cancelled.is_set():
            with lock:
                stream = next(pending, None)
            if stream is None:
                break
            try:
                for event in stream:
                    if cancelled.is_set():
                        break
                    events.put(event)
            except BaseException as exc:  # handed to the consumer, raised there as itself
                events.put(_Failed(exc))
                break
            finally:
                stream.close()
        events.put(None)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(workers, len(streams)))]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            event = events.get()
            if event is None:
                running -= 1
            elif isinstance(event, _Failed):
                raise event.error
            else:
                yield event
    finally:
        cancelled.set()
        while any(t.is_alive() for t in threads):  # unblock workers waiting on a full queue
            try:
                events.get(timeout=0.05)
            except queue.Empty:
                pass


def _sample(lm: Backend, chain, prompt_ids: list[int], config: DecodeConfig, sample: int, seed: int,
            limits: tuple[int, str], label: str, post_sampling: bool, column: int = 0) -> Iterator[Step | Done]:
    limit, at_limit = limits
    seq = SequenceState(sample, Detokenizer(lm.vocab, config.stop), time.perf_counter())
    eos_ids = set(lm.eos_token_ids or ())
    tokens = lm.sample_stream(prompt_ids, chain, max_new_tokens=limit, seed=server_seed(seed, sample),
                              post_sampling=post_sampling)
    try:
        for t, token in enumerate(tokens):
            measure = measure_served(lm, token, config)
            # a log-probability the server did not return, or returned as -inf, leaves the sum unknown
            logprob = measure.logprob if math.isfinite(measure.logprob) else math.nan
            text = seq.push(token.token_id, logprob, token.token_id in eos_ids, t + 1 == limit, at_limit, token.text)
            yield build_step(lm.vocab, measure, sample=sample, step=t, token_id=token.token_id, text=text,
                             column=column)
            if seq.finish_reason is not None:
                break
        else:  # the server stopped first: at an end of sequence it drew without sending it (an OpenAI `stop`), or
            # at the end of its slot's context; a partial character left is dropped
            seq.finish_reason = FINISH.get(tokens.finish_reason, "context")
            seq.detok.finish()
        yield seq.done(label, seed, sample, column)
    finally:
        tokens.close()


__all__ = ["Done", "Step", "can_sample_on", "chain_spec", "server_chain", "server_decode", "server_decode_columns",
           "server_seed"]
