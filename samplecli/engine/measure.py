"""Measuring a step: what the distributions a token was chosen from say about it, as a `Measure` of plain numbers,
whichever path chose it: the decode loop's own distributions (`measure_rows`), a server that drew the token itself
(`measure_served`), or a beam search's record of its rows (`beam_rows`, then `measure_beam` per returned token).
`events.build_step` turns a Measure into the `Step` every view reads; choosing the token is `engine.choose`'s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.backends.base import distribution_label
from samplecli.engine.events import DecodeConfig, Measure
from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend, ServerToken
    from samplecli.engine.beam_types import TokenStat

EXACT_MASS = 1e-3  # post-sampling probabilities summing to 1 within this are the whole distribution
NAN = math.nan


def alternatives_shown(lm: Backend, config: DecodeConfig) -> int:
    """How many of the most probable tokens a step shows: `config.top_n`, no more than the backend knows per step
    (a top-N engine's others are only -inf), none without `config.record`."""
    return min(config.top_n, lm.top_n or lm.vocab_size, lm.vocab_size) if config.record else 0


def check_logprob_of(lm: Backend, token_ids: tuple[int, ...]) -> None:
    """UsageError where a token id whose probabilities each step should report is outside the vocabulary."""
    if any(token_id >= lm.vocab_size for token_id in token_ids):
        raise UsageError(f"--logprob-of: token id {max(token_ids)} is outside the model's vocabulary "
                         f"({lm.vocab_size} tokens)")


def measure_rows(lm: Backend, raw: torch.Tensor, probs: torch.Tensor, chosen: torch.Tensor, config: DecodeConfig,
                 rows: list[int]) -> list[Measure]:
    """The Measure of each of `rows` (batch rows) after a local choice: `raw` is the backend's logits, `probs` the
    distribution each row drew `chosen` from. Entropies, kept counts, KL and the top alternatives only with
    `config.record`; a top-N backend's raw entropy is an interval, not a number."""
    import torch

    from samplecli.stats import entropy_bounds_nats, entropy_nats, kept_measures
    from samplecli.strategies.ranking import top_ids

    full, record, top_n, named_ids = lm.top_n is None, config.record, alternatives_shown(lm, config), config.logprob_of
    # a top-N backend returns the true log-probabilities of its N tokens (the rest -inf): no renormalising
    logp = torch.log_softmax(raw, dim=-1) if full else raw
    chosen_col = chosen.unsqueeze(-1)
    picked = [logp.gather(-1, chosen_col).squeeze(-1), probs.gather(-1, chosen_col).squeeze(-1)]
    if record:
        picked += [entropy_nats(logp), *kept_measures(probs, logp)]
    if not full and record:  # the raw entropy is bounded, not known
        low, high, tail = entropy_bounds_nats(raw, lm.vocab_size)
        picked[2] = torch.full_like(picked[2], NAN)
        bound_rows = torch.stack([low, high, tail], dim=-1).tolist()
    picked_rows = torch.stack(picked, dim=-1).tolist()
    if top_n:
        alternatives = top_ids(raw, top_n)
        top_id_rows = alternatives.tolist()
        top_lp_rows, top_sp_rows = logp.gather(-1, alternatives).tolist(), probs.gather(-1, alternatives).tolist()
    if named_ids:
        named = torch.tensor(named_ids, device=raw.device)
        rank_rows = ((raw > raw.gather(-1, chosen_col)).sum(dim=-1) + 1).tolist()
        named_lp_rows, named_sp_rows = logp[:, named].tolist(), probs[:, named].tolist()
    distribution = distribution_label(lm)
    measures = []
    for r in rows:
        row = picked_rows[r]
        measures.append(Measure(
            logprob=row[0], sampled_prob=row[1],
            entropy=row[2] if record else NAN, sampled_entropy=row[3] if record else NAN,
            kept=int(row[4]) if record else -1, kl=row[5] if record else NAN,
            top=tuple(zip(top_id_rows[r], top_lp_rows[r], top_sp_rows[r], strict=True)) if top_n else (),
            rank=rank_rows[r] if named_ids else None,
            named=tuple(zip(named_ids, named_lp_rows[r], named_sp_rows[r], strict=True)) if named_ids else (),
            distribution=distribution,
            entropy_bounds=(bound_rows[r][0], bound_rows[r][1]) if not full and record else None,
            tail_mass=bound_rows[r][2] if not full and record else None,
        ))
    return measures


# a step's `distribution` where the engine generated the token but returned no probabilities for it
NOT_RETURNED = "not returned by the engine"


def measure_served(lm: Backend, token: ServerToken, config: DecodeConfig) -> Measure:
    """The Measure of a token a server drew itself: the numbers it returned, NaN for the ones it did not. Its
    probabilities are the raw model's (every token's, or its top N: the entropy is then an interval) or, with
    post-sampling ones, those of the distribution it drew from (exact where they sum to 1)."""
    from samplecli.stats import top_n_entropy_bounds

    if token.held:  # generated, but the engine returned nothing about it (a token inside a UTF-8 character)
        return Measure(logprob=NAN, sampled_prob=NAN, top=(), distribution=NOT_RETURNED, sampled_by="server",
                       probs=token.kind)
    candidates = token.candidates
    probs = [math.exp(lp) for _, lp in candidates]
    top = candidates[: config.top_n] if config.record else ()
    if token.kind == "post-sampling":
        exact = abs(sum(probs) - 1.0) <= EXACT_MASS
        return Measure(logprob=NAN, sampled_prob=math.exp(token.logprob),
                       sampled_entropy=-sum(p * math.log(p) for p in probs if p > 0) if exact else NAN,
                       kept=len(candidates) if exact else -1, top=tuple((i, NAN, math.exp(lp)) for i, lp in top),
                       distribution="full" if exact else f"top-{len(candidates)}", sampled_by="server",
                       probs=token.kind, sampled_entropy_exact=exact)
    full = lm.top_n is None
    bounds = tail = None
    if full:
        entropy = -sum(p * lp for p, (_, lp) in zip(probs, candidates, strict=True) if p > 0)
    else:
        low, high, tail = top_n_entropy_bounds((lp for _, lp in candidates), lm.vocab_size)
        entropy, bounds = NAN, (low, high)
        if token.merged:  # tokens that decode alike came back as one: the mass sums, and so the bounds, are off
            bounds = None
    rank, named = None, ()
    if config.logprob_of:  # only with every token's probability (server_chain refuses the rest)
        logprobs = dict(candidates)
        rank = 1 + sum(1 for _, lp in candidates if lp > token.logprob)
        named = tuple((i, logprobs.get(i, -math.inf), NAN) for i in config.logprob_of)
    merged = f", {token.merged} merged" if token.merged else ""
    return Measure(logprob=token.logprob, sampled_prob=NAN, entropy=entropy, sampled_entropy=NAN,
                   top=tuple((i, lp, NAN) for i, lp in top), rank=rank, named=named,
                   distribution="full" if full else f"top-{lm.top_n}{merged}", entropy_bounds=bounds, tail_mass=tail,
                   sampled_by="server", probs=token.kind)


def beam_rows(raw_logp: torch.Tensor, processed: torch.Tensor, top_n: int) -> list[tuple]:
    """What beam search records of each batch row at a step, for the Measure of the tokens it returns: (the raw
    entropy, how many tokens the strategy's processed scores keep finite, the top (id, raw log-prob) pairs, ties by
    the lowest id as every ranking in samplecli)."""
    import torch

    from samplecli.stats import entropy_nats
    from samplecli.strategies.ranking import top_sorted

    entropy = entropy_nats(raw_logp).tolist()
    kept = torch.isfinite(processed).sum(-1).tolist()
    if top_n:
        values, ids = top_sorted(raw_logp, min(top_n, raw_logp.shape[-1]))
        tops = [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    else:
        tops = [()] * len(entropy)
    return list(zip(entropy, kept, tops, strict=True))


def measure_beam(stat: TokenStat, distribution: str) -> Measure:
    """The Measure of one token of a returned beam hypothesis: its raw log-probability, what it added to the
    search's score (as the strategy's probability, at most 1), and what `beam_rows` recorded of its row."""
    return Measure(logprob=stat.logprob, sampled_prob=min(1.0, math.exp(stat.increment)), entropy=stat.entropy,
                   sampled_entropy=stat.entropy, kept=stat.kept, top=tuple((i, lp, math.exp(lp)) for i, lp in stat.top),
                   distribution=distribution)
