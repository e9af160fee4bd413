"""Stochastic beam search (Kool et al. 2019): Gumbel-top-k over whole sequences, with the backend's rows
reordered per step; it samples B sequences without replacement and yields the same events as beam search."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from samplecli.backends.base import inference_steps
from samplecli.engine.beam_types import (
    BeamResult,
    BeamStep,
    Candidate,
    Hypothesis,
    Nodes,
    process_scores,
    setup,
    token_stats,
)
from samplecli.engine.events import resolved_seed
from samplecli.engine.measure import alternatives_shown, beam_rows

if TYPE_CHECKING:
    import torch


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurately on both sides of -log 2 (Maechler 2012)."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def truncated_gumbel_keys(parent_keys: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Kool et al. 2019, eq. (23) and appendix B: the children's Gumbels conditioned on their maximum
    being the parent's key T: G_i = -log(exp(-T) - exp(-Z) + exp(-G~_i)), computed stably.

    `parent_keys` is (rows, 1) and `perturbed` (rows, vocab): log-prob of each child plus Gumbel noise.
    The child holding the row's maximum gets exactly the parent's key; a -inf child stays -inf.
    """
    import torch

    maximum = perturbed.amax(dim=-1, keepdim=True)
    v = parent_keys - perturbed + _log1mexp(perturbed - maximum)
    return parent_keys - torch.clamp(v, min=0) - torch.log1p(torch.exp(-v.abs()))


@dataclass
class _Sampled:
    node: int
    parent: int
    ids: list[int]
    rows: list[int]
    logps: list[float]
    incs: list[float]
    phi: float  # log-prob under the (processed) sampling distribution
    key: float  # Gumbel key
    finish_reason: str | None = None


@inference_steps
def stochastic_search(backend, prompt_ids, settings, config, eos_token_ids, strategy, text_of, token_of,
                      context_length):
    """Gumbel-top-k over whole sequences: each step keeps the B nodes with the largest keys among the
    live hypotheses' children and the finished ones; the B hypotheses at the end are B sequences
    sampled without replacement, ranked in the order they would have been drawn."""
    import torch

    device, prompt, limit, eos = setup(backend, prompt_ids, config, eos_token_ids, context_length)
    text_of = text_of or (lambda ids: "")
    token_of = token_of or str
    eos_set = set(eos_token_ids)
    beams = settings.num_beams
    generator = torch.Generator().manual_seed(resolved_seed(config.seed))
    nodes, stats = Nodes(), []
    live = [_Sampled(0, -1, [], [], [], [], 0.0, 0.0)]
    finished: list[_Sampled] = []
    stopped = ""
    batch, raw = backend.start(prompt_ids, 1)
    for t in range(limit):
        raw_logp = torch.log_softmax(raw, dim=-1)
        history = torch.tensor([prompt_ids + h.ids for h in live], dtype=torch.long, device=device)
        processed = process_scores(strategy, raw, history, eos, t, config.min_new_tokens)
        logp = torch.log_softmax(processed.double(), dim=-1)
        if config.record:
            stats.append(beam_rows(raw_logp, processed, alternatives_shown(backend, config)))
        phi = torch.tensor([h.phi for h in live], dtype=torch.float64, device=device)[:, None] + logp
        gumbel = -torch.log(torch.empty(phi.shape, dtype=torch.float64).exponential_(generator=generator))
        keys = truncated_gumbel_keys(torch.tensor([[h.key] for h in live], dtype=torch.float64, device=device),
                                     phi + gumbel.to(device))
        vocab = keys.shape[-1]
        shown = min(2 * beams, keys.numel())
        top_keys, top_index = torch.topk(keys.reshape(-1), k=shown)
        gathered = [x.reshape(-1)[top_index].tolist() for x in (phi, raw_logp.double(), logp)]
        top = list(zip(top_keys.tolist(), top_index.tolist(), *gathered, strict=True))
        pool = [(c[0], "child", c) for c in top if c[0] > -math.inf] + [(h.key, "done", h) for h in finished]
        pool.sort(key=lambda x: -x[0])
        selected = pool[:beams]
        chosen_children = {c[1] for _, kind, c in selected if kind == "child"}
        new_live, new_finished, candidates = [], [], []
        for key, index, child_phi, raw_lp, inc in top:
            row, token = divmod(index, vocab)
            parent = live[row]
            if index not in chosen_children:
                candidates.append(Candidate(parent.node, 0, token, token_of(token), child_phi, "pruned"))
                continue
            child = _Sampled(nodes.new(), parent.node, parent.ids + [token], parent.rows + [row],
                             parent.logps + [raw_lp], parent.incs + [inc], child_phi, key)
            if token in eos_set:
                child.finish_reason = "eos"
            elif t + 1 == limit:
                child.finish_reason = "context" if limit < config.max_new_tokens else "length"
            (new_finished if child.finish_reason else new_live).append(child)
            candidates.append(Candidate(parent.node, 0, token, token_of(token), child_phi,
                                        "finished" if child.finish_reason else "kept", child.node))
        finished = sorted([h for _, kind, h in selected if kind == "done"] + new_finished, key=lambda h: -h.key)
        live = sorted(new_live, key=lambda h: -h.key)
        if not live:
            stopped = (f"{beams} sequences sampled without replacement, all finished"
                       if t + 1 < limit else f"the token limit ({limit}) ended every sample")
        if config.record or stopped:
            yield BeamStep(t, tuple(_sampled_hypothesis(h, text_of) for h in live),
                           tuple(_sampled_hypothesis(h, text_of) for h in finished), tuple(candidates),
                           stopped or None)
        if stopped:
            break
        order = torch.tensor([h.rows[-1] for h in live], dtype=torch.long, device=device)
        batch.reorder(order)
        raw = batch.advance(torch.tensor([h.ids[-1] for h in live], device=device))

    ranked = finished[: settings.num_return_sequences]
    tokens = tuple(token_stats(stats, h.rows, h.logps, h.incs, config.record) for h in ranked)
    yield BeamResult(tuple(_sampled_hypothesis(h, text_of) for h in ranked), tokens, stopped, t + 1)


def _sampled_hypothesis(h: _Sampled, text_of) -> Hypothesis:
    return Hypothesis(h.node, h.parent, 0, tuple(h.ids), text_of(h.ids), h.phi, h.key, sum(h.logps),
                      h.finish_reason)
