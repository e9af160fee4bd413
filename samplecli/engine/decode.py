"""The decode loop: a generator over a backend's batch of rows that yields one `Step` per token and one
`Done` per sequence, in plain Python values (no tensors leave this module)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from samplecli.backends.base import distribution_label
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import Alternative, DecodeConfig, Done, Step, json_number, resolved_seed, sample_seed
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy


def encode_prompt(lm: Backend, prompt: str) -> list[int]:
    """Prompt ids; an empty prompt starts from BOS. Raises UsageError when the model cannot take it."""
    ids = lm.vocab.encode(prompt, add_special_tokens=True) if prompt else []
    if not ids:
        if lm.bos_token_id is None:
            raise UsageError("the prompt is empty and the model has no BOS token to start from; give a prompt")
        ids = [lm.bos_token_id]
    check_prompt_fits(lm, ids)
    return ids


def check_prompt_fits(lm: Backend, ids: list[int]) -> None:
    """Raise UsageError unless the model's context has room for the prompt and at least one new token."""
    context = lm.context_length
    if context is not None and len(ids) >= context:
        raise UsageError(f"the prompt is {len(ids)} tokens, but the model's context is {context} tokens; "
                         "shorten the prompt")


def context_room(lm: Backend, prompt_tokens: int, max_new_tokens: int) -> int:
    """How many new tokens a run can generate: `max_new_tokens`, or fewer where the model's context ends first."""
    if lm.context_length is None:
        return max_new_tokens
    return min(max_new_tokens, lm.context_length - prompt_tokens)


@dataclass
class _Sequence:
    index: int
    detok: Detokenizer
    started: float
    token_ids: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    finish_reason: str | None = None

    def settle(self, is_eos: bool, last: bool, at_limit: str) -> str:
        """After this step's token: set why the sequence ends, if it does (EOS, a stop string, or `last` step:
        `at_limit`), and return the text the detokenizer still held back when it ended at EOS or the limit."""
        if is_eos:
            self.finish_reason = "eos"
        elif self.detok.stopped:
            self.finish_reason = "stop"
        elif last:
            self.finish_reason = at_limit
        return self.detok.finish() if self.finish_reason in ("eos", at_limit) else ""


def column_seed(seed: int, column: int) -> int:
    """Seed of column k's generators when sampling is not coupled (column 0 keeps the run's seed)."""
    return seed if column == 0 else sample_seed(seed ^ 0x5DEECE66D, column + 2**20)


def decode(lm: Backend, strategy: Strategy | Sequence[Strategy], prompt_ids: list[int], config: DecodeConfig,
           coupled: bool = True) -> Iterator[Step | Done]:
    """Generate `config.num_samples` continuations of `prompt_ids` per strategy, all in one batch.

    Each sample draws its random numbers from its own `torch.Generator` (seeded from the seed and its
    index), so the same seed gives the same output and sample i does not depend on the batch size; the
    batch's samples are the run's `config.first_sample`, ... (`decode_in_chunks` decodes a run in parts).
    With several strategies (`compare`), row (k, i) is strategy k's sample i; the prompt is prefilled
    once and its KV cache shared. `coupled`: sample i of every strategy uses the same uniform number at
    each step (so each column equals that strategy run alone with the same seed); otherwise each
    column has its own generators.
    """
    import torch

    from samplecli.stats import entropy_bounds_nats, entropy_nats, kept_measures
    from samplecli.strategies.ranking import drawing_order, top_ids

    strategies = [strategy] if hasattr(strategy, "selector") else list(strategy)
    check_prompt_fits(lm, prompt_ids)  # ids may come from elsewhere than encode_prompt
    device = lm.device
    n, columns, prompt_len = config.num_samples, len(strategies), len(prompt_ids)
    rows = n * columns
    seed = resolved_seed(config.seed)
    eos = torch.tensor(lm.eos_token_ids or [-1], device=device)
    pad_id = int(eos[0]) if lm.eos_token_ids else 0
    limit = context_room(lm, prompt_len, config.max_new_tokens)
    # the model's context, not max_new_tokens, ends a run that reaches `limit` below what was asked
    at_limit = "context" if limit < config.max_new_tokens else "length"
    table = lm.vocab
    stochastic = any(s.stochastic for s in strategies)
    first = config.first_sample  # this batch's samples are the run's first, first + 1, ...
    if coupled:
        generators = [torch.Generator().manual_seed(sample_seed(seed, first + i)) for i in range(n)]
    else:
        generators = [torch.Generator().manual_seed(sample_seed(column_seed(seed, k), first + i))
                      for k in range(columns) for i in range(n)]
    started = time.perf_counter()
    seqs = [_Sequence(r, Detokenizer(table, config.stop), started) for r in range(rows)]
    tokens = torch.empty(rows, prompt_len + limit, dtype=torch.long, device=device)
    tokens[:, :prompt_len] = torch.tensor(prompt_ids, device=device)
    # the alternatives shown: no more than the backend knows per step (a top-N engine's others are only -inf)
    top_n = min(config.top_n, lm.top_n or lm.vocab_size, lm.vocab_size) if config.record else 0
    if any(token_id >= lm.vocab_size for token_id in config.logprob_of):
        raise UsageError(f"--logprob-of: token id {max(config.logprob_of)} is outside the model's vocabulary "
                         f"({lm.vocab_size} tokens)")
    for s in strategies:
        s.bind(tuple(lm.eos_token_ids or ()), seed)  # EOS ids and the run's seed, for samplers that use them
        s.reset(n, first)
    names = [str(s) for s in strategies]
    groups = [slice(k * n, (k + 1) * n) for k in range(columns)]
    no_uniforms = torch.zeros(rows, device=device)  # what deterministic selectors are handed (and ignore)
    eos_ids = set(lm.eos_token_ids or ())
    distribution = distribution_label(lm)
    full = lm.top_n is None

    with torch.inference_mode():
        batch, last_logits = lm.start(prompt_ids, rows)  # one prefill, shared by every row
        for t in range(limit):
            raw = last_logits
            history = tokens[:, : prompt_len + t]
            masked = raw.index_fill(-1, eos, float("-inf")) if t < config.min_new_tokens and eos_ids else raw
            scores_parts, probs_parts = [], []
            for s, rows_k in zip(strategies, groups, strict=True):
                scores_k = s.process(masked[rows_k], history[rows_k])
                scores_parts.append(scores_k)
                probs_parts.append(s.selector.distribution(scores_k))
            probs = probs_parts[0] if columns == 1 else torch.cat(probs_parts)
            # the raw ranking of the tokens some row may draw: the common order of coupled inverse-CDF sampling
            order = drawing_order(raw, probs) if stochastic else None
            if not stochastic:
                u = no_uniforms
            elif coupled:
                u = torch.cat([torch.rand(1, generator=g) for g in generators]).repeat(columns).to(device)
            else:
                u = torch.cat([torch.rand(1, generator=g) for g in generators]).to(device)
            chosen = torch.cat([
                s.selector.select(scores_parts[k], probs_parts[k], order[groups[k]] if order is not None else None,
                                  u[groups[k]])
                for k, s in enumerate(strategies)
            ]) if columns > 1 else strategies[0].selector.select(scores_parts[0], probs_parts[0], order, u)
            finished = [s.index for s in seqs if s.finish_reason is not None]
            if finished:  # finished rows keep decoding in the batch, fed padding
                chosen = chosen.index_fill(0, torch.tensor(finished, device=device), pad_id)
            for k, (s, rows_k) in enumerate(zip(strategies, groups, strict=True)):
                s.accept(chosen[rows_k], probs_parts[k])
            tokens[:, prompt_len + t] = chosen

            # a top-N backend returns the true log-probabilities of its N tokens (the rest -inf): no renormalising
            logp = torch.log_softmax(raw, dim=-1) if full else raw
            chosen_col = chosen.unsqueeze(-1)
            picked = [logp.gather(-1, chosen_col).squeeze(-1), probs.gather(-1, chosen_col).squeeze(-1)]
            if config.record:
                picked += [entropy_nats(logp), *kept_measures(probs, logp)]
            if not full and config.record:  # the raw entropy is bounded, not known
                low, high, tail = entropy_bounds_nats(raw, lm.vocab_size)
                picked[2] = torch.full_like(picked[2], float("nan"))
                bound_rows = torch.stack([low, high, tail], dim=-1).tolist()
            picked_rows = torch.stack(picked, dim=-1).tolist()
            if top_n:
                alternatives = top_ids(raw, top_n)
                top_rows = torch.stack([logp.gather(-1, alternatives), probs.gather(-1, alternatives)], dim=-1).tolist()
                top_id_rows = alternatives.tolist()
            if config.logprob_of:
                named_ids = torch.tensor(config.logprob_of, device=device)
                rank_rows = ((raw > raw.gather(-1, chosen_col)).sum(dim=-1) + 1).tolist()
                named_rows = torch.stack([logp[:, named_ids], probs[:, named_ids]], dim=-1).tolist()
            chosen_ids = chosen.tolist()

            for seq in seqs:
                if seq.finish_reason is not None:
                    continue
                r, token_id = seq.index, chosen_ids[seq.index]
                column, sample = divmod(r, n)
                sample += first
                row = picked_rows[r]
                seq.token_ids.append(token_id)
                seq.logprob_sum += row[0]
                is_eos = token_id in eos_ids
                delta = seq.detok.push(token_id) if not is_eos else ""
                delta += seq.settle(is_eos, t + 1 == limit, at_limit)
                top: tuple[Alternative, ...] = ()
                if top_n:
                    top = tuple(
                        Alternative(tid, table.text(tid), math.exp(lp), json_number(lp), sp)
                        for tid, (lp, sp) in zip(top_id_rows[r], top_rows[r], strict=True)
                    )
                yield Step(
                    sample=sample, step=t, token_id=token_id, token=table.text(token_id), text=delta,
                    bytes=table.bytes(token_id), logprob=json_number(row[0]), prob=math.exp(row[0]),
                    sampled_prob=row[1],
                    entropy=row[2] if config.record else float("nan"),
                    sampled_entropy=row[3] if config.record else float("nan"),
                    kept=int(row[4]) if config.record else -1, top=top,
                    kl=row[5] if config.record else float("nan"), column=column,
                    rank=rank_rows[r] if config.logprob_of else None,
                    named=tuple(Alternative(tid, table.text(tid), math.exp(lp), json_number(lp), sp)
                                for tid, (lp, sp) in zip(config.logprob_of, named_rows[r], strict=True))
                    if config.logprob_of else (),
                    distribution=distribution,
                    entropy_bounds=(bound_rows[r][0], bound_rows[r][1]) if not full and config.record else None,
                    tail_mass=bound_rows[r][2] if not full and config.record else None,
                )
                if seq.finish_reason is not None:
                    yield _done(seq, names[column], seed, sample, column)
            if all(s.finish_reason is not None for s in seqs):
                break
            last_logits = batch.advance(chosen)


# A batch of more rows than this decodes in chunks (`decode_in_chunks`): the KV cache and the per-step buffers grow
# with the rows, while a batch this wide already keeps the vectorised step busy.
CHUNK_ROWS = 256


def chunk_samples(num_samples: int, columns: int = 1, rows: int | None = None) -> int:
    """How many samples (of every column) one chunk decodes: all of them when they fit in `rows` (CHUNK_ROWS)."""
    return max(1, min(num_samples, (rows or CHUNK_ROWS) // max(columns, 1)))


def decode_in_chunks(lm: Backend, strategy: Strategy | Sequence[Strategy], prompt_ids: list[int],
                     config: DecodeConfig, coupled: bool = True, chunk: int | None = None) -> Iterator[Step | Done]:
    """`decode`, `chunk` samples at a time (by default as many as fit in CHUNK_ROWS rows), so that memory
    follows the chunk, not `--num-samples`.

    Sample i's random numbers come from a generator seeded from (seed, i) alone, and its stateful samplers
    from its own row index, so every sample's events are the ones the single batch yields; only their
    interleaving differs (each chunk's steps come after the chunk before finishes)."""
    columns = 1 if hasattr(strategy, "selector") else len(list(strategy))
    size = chunk if chunk is not None else chunk_samples(config.num_samples, columns)
    if size >= config.num_samples:
        yield from decode(lm, strategy, prompt_ids, config, coupled)
        return
    from dataclasses import replace

    config = replace(config, seed=resolved_seed(config.seed))  # one seed for every chunk
    for first in range(0, config.num_samples, size):
        part = replace(config, num_samples=min(size, config.num_samples - first),
                       first_sample=config.first_sample + first)
        yield from decode(lm, strategy, prompt_ids, part, coupled)


def _done(seq: _Sequence, strategy: str, seed: int, sample: int, column: int) -> Done:
    seconds = time.perf_counter() - seq.started
    count = len(seq.token_ids)
    perplexity = math.exp(-seq.logprob_sum / count) if count and math.isfinite(seq.logprob_sum) else None
    return Done(
        sample=sample, text=seq.detok.text, token_ids=tuple(seq.token_ids), finish_reason=seq.finish_reason,
        n_tokens=count, logprob_sum=seq.logprob_sum, perplexity=perplexity, seconds=seconds,
        tokens_per_second=count / seconds if seconds > 0 else 0.0, strategy=strategy, seed=seed, column=column,
    )
