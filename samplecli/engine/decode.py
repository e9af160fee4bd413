"""The decode loop: a generator over a backend's batch of rows that yields one `Step` per token and one
`Done` per sequence, in plain Python values (no tensors leave this module)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from samplecli.backends.base import inference_steps
from samplecli.engine.choose import Chooser
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import Constrained, DecodeConfig, Done, Step, build_step, cost_nats, resolved_seed
from samplecli.engine.measure import check_logprob_of, measure_rows
from samplecli.engine.sequence import SequenceState
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


@inference_steps
def decode(lm: Backend, strategy: Strategy | Sequence[Strategy], prompt_ids: list[int], config: DecodeConfig,
           coupled: bool = True) -> Iterator[Step | Done]:
    """Generate `config.num_samples` continuations of `prompt_ids` per strategy, all in one batch.

    Each sample draws its random numbers from its own `torch.Generator` (seeded from the seed and its
    index), so the same seed gives the same output and sample i does not depend on the batch size; the
    batch's samples are the run's `config.first_sample`, ... (`decode_in_chunks` decodes a run in parts).
    With several strategies (`compare`), row (k, i) is strategy k's sample i; the prompt is prefilled
    once and its KV cache shared. `coupled`: sample i of every strategy uses the same uniform number at
    each step (so each column equals that strategy run alone with the same seed); otherwise each
    column has its own generators. A step is chosen (`engine.choose`), measured (`engine.measure`) and
    built (`events.build_step`) as every other path's.
    """
    import torch

    strategies = [strategy] if hasattr(strategy, "selector") else list(strategy)
    check_prompt_fits(lm, prompt_ids)  # ids may come from elsewhere than encode_prompt
    check_logprob_of(lm, config.logprob_of)
    n, prompt_len, seed = config.num_samples, len(prompt_ids), resolved_seed(config.seed)
    limit = context_room(lm, prompt_len, config.max_new_tokens)
    # the model's context, not max_new_tokens, ends a run that reaches `limit` below what was asked
    at_limit = "context" if limit < config.max_new_tokens else "length"
    chooser = Chooser(lm, strategies, config, seed, coupled)
    started = time.perf_counter()
    seqs = [SequenceState(r, Detokenizer(lm.vocab, config.stop), started) for r in range(n * len(strategies))]
    tokens = torch.empty(len(seqs), prompt_len + limit, dtype=torch.long, device=lm.device)
    tokens[:, :prompt_len] = torch.tensor(prompt_ids, device=lm.device)
    names, eos_ids = [str(s) for s in strategies], set(lm.eos_token_ids or ())
    batch, raw = lm.start(prompt_ids, len(seqs))  # one prefill, shared by every row
    for t in range(limit):
        chosen, probs = chooser.choose(raw, tokens[:, : prompt_len + t], t)
        if finished := [seq.index for seq in seqs if seq.finish_reason is not None]:
            # finished rows keep decoding in the batch, fed padding
            chosen = chosen.index_fill(0, torch.tensor(finished, device=lm.device), (lm.eos_token_ids or [0])[0])
        chooser.accept(chosen, probs)
        tokens[:, prompt_len + t] = chosen
        constrained = chooser.constraint_rows()
        for seq in seqs:  # a constraint left nothing the strategy kept: the row ends, no token is drawn
            if seq.finish_reason is None and constrained.get(seq.index, (0, 0.0, False, None))[2]:
                seq.finish_reason, column_sample = "constraint", divmod(seq.index, n)
                yield seq.end(names[column_sample[0]], seed, column_sample[1] + config.first_sample,
                              column_sample[0])
        live = [seq for seq in seqs if seq.finish_reason is None]
        measures = measure_rows(lm, raw, probs, chosen, config, [seq.index for seq in live])
        chosen_ids = chosen.tolist()
        for seq, measure in zip(live, measures, strict=True):
            if seq.index in constrained:
                allowed, mass, _, free = constrained[seq.index]
                measure.constraint = Constrained(allowed, mass, cost_nats(mass), free == chosen_ids[seq.index])
            column, sample = divmod(seq.index, n)
            token_id = chosen_ids[seq.index]
            text = seq.push(token_id, measure.logprob, token_id in eos_ids, t + 1 == limit, at_limit)
            yield build_step(lm.vocab, measure, sample=sample + config.first_sample, step=t, token_id=token_id,
                             text=text, column=column)
            if seq.finish_reason is not None:
                yield seq.done(names[column], seed, sample + config.first_sample, column)
        if all(seq.finish_reason is not None for seq in seqs):
            break
        raw = batch.advance(chosen)


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

