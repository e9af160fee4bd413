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
from samplecli.engine.decode import _done, _Sequence, check_prompt_fits
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import Alternative, DecodeConfig, Done, Step, json_number, resolved_seed, sample_seed
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.backends.base import Backend, ServerToken
    from samplecli.strategies import Strategy

EXACT_MASS = 1e-3  # post-sampling probabilities summing to 1 within this are the whole distribution
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
    limit = config.max_new_tokens
    if lm.context_length is not None:
        limit = min(limit, lm.context_length - len(prompt_ids))
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
    detok = ServerText(config.stop)
    seq = _Sequence(sample, Detokenizer(lm.vocab, config.stop), time.perf_counter())
    eos_ids = set(lm.eos_token_ids or ())
    tokens = lm.sample_stream(prompt_ids, chain, max_new_tokens=limit, seed=server_seed(seed, sample),
                              post_sampling=post_sampling)
    try:
        for t, token in enumerate(tokens):
            is_eos = token.token_id in eos_ids
            seq.token_ids.append(token.token_id)
            if token.text is not None:  # the engine's own text for the token (the OpenAI protocol)
                seq.detok = detok
                delta = detok.push_text(token.text)
            else:
                delta = seq.detok.push(token.token_id) if not is_eos else ""
            delta += seq.settle(is_eos, t + 1 == limit, at_limit)
            step = _step(lm, token, sample, t, delta, config, column)
            seq.logprob_sum += step.logprob if step.logprob is not None else math.nan
            yield step
            if seq.finish_reason is not None:
                break
        else:  # the server stopped first: at an end of sequence it drew without sending it (an OpenAI `stop`), or
            # at the end of its slot's context; a partial character left is dropped
            seq.finish_reason = FINISH.get(tokens.finish_reason, "context")
            seq.detok.finish()
        yield _done(seq, label, seed, sample, column)
    finally:
        tokens.close()


class ServerText(Detokenizer):
    """The text an engine streamed for each token, cut at the first stop string as `Detokenizer` cuts it."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        super().__init__(None, stop)

    def push_text(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)


def _step(lm: Backend, token: ServerToken, sample: int, t: int, delta: str, config: DecodeConfig,
          column: int = 0) -> Step:
    """A Step from one streamed token: the numbers the server returned, NaN for the ones it did not."""
    from samplecli.stats import top_n_entropy_bounds

    vocab, nan = lm.vocab, math.nan
    candidates = token.candidates
    probs = [math.exp(lp) for _, lp in candidates]
    top = candidates[: config.top_n] if config.record else ()
    common = dict(sample=sample, step=t, token_id=token.token_id, token=vocab.text(token.token_id), text=delta,
                  bytes=vocab.bytes(token.token_id), sampled_by="server", probs=token.kind, column=column)
    if token.kind == "post-sampling":
        mass = sum(probs)
        exact = abs(mass - 1.0) <= EXACT_MASS
        entropy = -sum(p * math.log(p) for p in probs if p > 0) if exact else nan
        return Step(**common, logprob=None, prob=nan, sampled_prob=math.exp(token.logprob), entropy=nan,
                    sampled_entropy=entropy, kept=len(candidates) if exact else -1,
                    top=tuple(Alternative(i, vocab.text(i), nan, None, math.exp(lp)) for i, lp in top),
                    distribution=f"top-{len(candidates)}" if not exact else "full", sampled_entropy_exact=exact)
    full = lm.top_n is None
    bounds = tail = None
    if full:
        entropy = -sum(p * lp for p, (_, lp) in zip(probs, candidates, strict=True) if p > 0)
    else:
        low, high, tail = top_n_entropy_bounds((lp for _, lp in candidates), lm.vocab_size)
        entropy, bounds = nan, (low, high)
        if token.merged:  # tokens that decode alike came back as one: the mass sums, and so the bounds, are off
            bounds = None
    rank, named = None, ()
    if config.logprob_of:  # only with every token's probability (server_chain refuses the rest)
        logprobs = dict(candidates)
        rank = 1 + sum(1 for _, lp in candidates if lp > token.logprob)
        named = tuple(Alternative(i, vocab.text(i), math.exp(logprobs.get(i, -math.inf)),
                                  json_number(logprobs.get(i, -math.inf)), nan) for i in config.logprob_of)
    return Step(**common, logprob=json_number(token.logprob), prob=math.exp(token.logprob), sampled_prob=nan,
                entropy=entropy, sampled_entropy=nan, kept=-1,
                top=tuple(Alternative(i, vocab.text(i), math.exp(lp), json_number(lp), nan) for i, lp in top),
                distribution="full" if full else f"top-{lm.top_n}{f', {token.merged} merged' if token.merged else ''}",
                entropy_bounds=bounds, tail_mass=tail,
                rank=rank, named=named)


__all__ = ["Done", "Step", "can_sample_on", "chain_spec", "server_chain", "server_decode", "server_decode_columns",
           "server_seed"]
