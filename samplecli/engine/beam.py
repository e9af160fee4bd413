"""Beam search as its own loop over a backend's rows (reordered every step): deterministic beam search
with transformers' semantics, diverse beam search (Vijayakumar et al. 2016) and stochastic beam search
(Kool et al. 2019).

`search` works on token ids and yields one `BeamStep` per step (the live and finished hypotheses, and
which continuations were kept, finished or pruned) and a final `BeamResult`; `beam_decode` adds text
and turns the result into the same `Step`/`Done` events as the core decode loop, one `Done` per
returned sequence with its `score` and `rank`. Events carry plain Python values, never tensors.

    from samplecli.engine.beam import BeamSettings, beam_decode
    events = beam_decode(lm, strategy, prompt_ids, DecodeConfig(max_new_tokens=20), BeamSettings(num_beams=4))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from samplecli.backends.base import REORDER, distribution_label, inference_steps
from samplecli.engine.beam_stochastic import stochastic_search
from samplecli.engine.beam_types import (
    MASKED,
    PLACEHOLDER,
    BeamResult,
    BeamSettings,
    BeamStep,
    Candidate,
    Hypothesis,
    Nodes,
    TokenStat,
    process_scores,
    setup,
    token_stats,
)
from samplecli.engine.decode import check_prompt_fits
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import DecodeConfig, Done, Step, build_step, resolved_seed
from samplecli.engine.measure import alternatives_shown, beam_rows, measure_beam
from samplecli.errors import SettingError, UsageError

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy

__all__ = ["BeamResult", "BeamSettings", "BeamStep", "Candidate", "Hypothesis", "TokenStat", "beam_decode",
           "check_config", "describe", "search"]


class _Group:
    """One beam search of `width` beams over batch rows [offset, offset + width), step for step as
    transformers 5.24's `GenerationMixin._beam_search` with a batch of one prompt (same tensor
    operations, so the same ties, the same -1e9 masks, and the same stopping rules)."""

    def __init__(self, index: int, width: int, prompt: torch.Tensor, limit: int, settings: BeamSettings,
                 n_eos: int, at_limit: str = "length") -> None:
        import torch

        device = prompt.device
        self.index, self.width, self.offset = index, width, index * width
        self.prompt_len, self.limit, self.settings = prompt.numel(), limit, settings
        self.at_limit = at_limit  # the finish reason at `limit`: "context" where the model's context set it
        self.keep = max(2, 1 + n_eos) * width  # enough candidates that `width` of them do not finish
        self.top_mask = torch.arange(self.keep, device=device) < width
        self.seqs = prompt.new_zeros(width, self.prompt_len + limit)
        self.seqs[:, : self.prompt_len] = prompt
        self.scores = torch.full((width,), MASKED, device=device)
        self.scores[0] = 0.0  # only the first beam expands at step 0: the rows are identical
        self.rows = torch.full((width, limit), -1, dtype=torch.long, device=device)  # batch row per step
        self.logps = torch.zeros(width, limit, device=device)  # raw log-prob of each token
        self.incs = torch.zeros(width, limit, device=device)  # its processed score
        self.nodes = [0] * width  # tree node of each live beam (0: the prompt)
        self.parents = [-1] * width
        self.fin_seqs, self.fin_rows, self.fin_logps, self.fin_incs = (
            self.seqs.clone(), self.rows.clone(), self.logps.clone(), self.incs.clone())
        self.fin_scores = torch.full((width,), MASKED, device=device)
        self.fin_done = torch.zeros(width, dtype=torch.bool, device=device)
        self.fin_lens = [0] * width
        self.fin_nodes = [0] * width
        self.fin_parents = [0] * width
        self.unsatisfied = True
        self.done = False
        self.stopped = ""

    def step(self, t: int, processed: torch.Tensor, raw_logp: torch.Tensor, eos: torch.Tensor,
             nodes: Nodes) -> list[tuple[int, int, float, str, int]]:
        """Advance by one token. `processed` and `raw_logp` are this group's rows (width x vocab).
        Returns the candidates as (parent node, token id, cumulative, status, node)."""
        import torch

        settings, width = self.settings, self.width
        vocab = processed.shape[-1]
        accumulated = (processed + self.scores[:, None]).reshape(-1)
        top_scores, top_index = torch.topk(accumulated, k=self.keep)
        parent = top_index // vocab
        token = top_index % vocab
        position = self.prompt_len + t
        cand_seqs = self.seqs[parent]
        cand_seqs[:, position] = token
        cand_rows = self.rows[parent]
        cand_rows[:, t] = parent + self.offset
        cand_logps = self.logps[parent]
        cand_logps[:, t] = raw_logp[parent, token]
        cand_incs = self.incs[parent]
        cand_incs[:, t] = processed[parent, token]
        hits = torch.isin(token, eos) | (t + 1 >= self.limit)

        # the live beams: the best `width` candidates that did not finish
        running = top_scores + hits.to(torch.float32) * MASKED
        chosen = torch.topk(running, k=width).indices
        # the finished list: the best `width` of the old list and the candidates among the top `width`
        # that just finished, scored with the length penalty
        just = hits & self.top_mask
        finished = top_scores / ((t + 1) ** settings.length_penalty)
        full = bool(self.fin_done.all()) and settings.early_stopping is True
        finished = finished + float(full) * MASKED
        finished = finished + float(not self.unsatisfied) * MASKED
        finished = finished + (~just) * MASKED
        merged = torch.cat((self.fin_scores, finished))
        best = torch.topk(merged, k=width).indices

        parent_ids, token_ids, chosen_ids, best_ids, top_list, hit_list = (
            x.tolist() for x in (parent, token, chosen, best, top_scores, hits))
        # the tree: a node for each kept or finished candidate
        just_list = just.tolist()
        kept = {c for c in chosen_ids if not hit_list[c] and top_list[c] > PLACEHOLDER}
        entered = {b - width for b in best_ids if b >= width and just_list[b - width]}
        new_node = {c: nodes.new() for c in sorted(kept | entered)}
        old_nodes = self.nodes
        candidates = []
        for c in range(self.keep):
            if top_list[c] <= PLACEHOLDER:
                continue
            status = "finished" if c in entered else "kept" if c in kept else "pruned"
            candidates.append((old_nodes[parent_ids[c]], token_ids[c], top_list[c], status, new_node.get(c, -1)))

        self.nodes = [new_node.get(c, 0) for c in chosen_ids]
        self.parents = [old_nodes[parent_ids[c]] for c in chosen_ids]
        self.seqs, self.scores = cand_seqs[chosen], running[chosen]
        self.rows, self.logps, self.incs = cand_rows[chosen], cand_logps[chosen], cand_incs[chosen]

        merged_done = torch.cat((self.fin_done, just))
        self.fin_seqs = torch.cat((self.fin_seqs, cand_seqs))[best]
        self.fin_rows = torch.cat((self.fin_rows, cand_rows))[best]
        self.fin_logps = torch.cat((self.fin_logps, cand_logps))[best]
        self.fin_incs = torch.cat((self.fin_incs, cand_incs))[best]
        self.fin_scores, self.fin_done = merged[best], merged_done[best]
        lens, fin_nodes, fin_parents = self.fin_lens, self.fin_nodes, self.fin_parents
        self.fin_lens = [lens[b] if b < width else t + 1 for b in best_ids]
        self.fin_nodes = [fin_nodes[b] if b < width else new_node.get(b - width, 0) for b in best_ids]
        self.fin_parents = [fin_parents[b] if b < width else old_nodes[parent_ids[b - width]] for b in best_ids]

        # can a live beam still beat the worst finished one? (transformers' early-stop heuristic)
        penalty, mode = settings.length_penalty, settings.early_stopping
        length = self.limit if (mode == "never" and penalty > 0.0) else t + 1
        best_possible = self.scores[:1] / (length ** penalty)
        worst = torch.where(self.fin_done, torch.min(self.fin_scores), MASKED)
        self.unsatisfied = self.unsatisfied and bool(torch.any(best_possible > worst))
        all_finished = bool(self.fin_done.all())
        if bool(hits.all()):
            self.done, self.stopped = True, f"the token limit ({self.limit}) ended every hypothesis"
        elif all_finished and mode is True:
            self.done, self.stopped = True, f"{width} hypotheses finished (early_stopping=True)"
        elif not self.unsatisfied:
            self.done, self.stopped = True, (
                f"no live hypothesis can beat the worst of the {width} finished ones (early_stopping={mode}, "
                f"judged at length {length})")
        return candidates

    def live(self, t: int, text_of: Callable[[list[int]], str]) -> list[Hypothesis]:
        seqs = self.seqs[:, self.prompt_len : self.prompt_len + t + 1].tolist()
        scores, logps = self.scores.tolist(), self.logps[:, : t + 1].sum(-1).tolist()
        norm = (t + 1) ** self.settings.length_penalty
        return [Hypothesis(self.nodes[i], self.parents[i], self.index, tuple(seqs[i]), text_of(seqs[i]), scores[i],
                           scores[i] / norm, logps[i]) for i in range(self.width) if scores[i] > PLACEHOLDER]

    def finished(self, eos: set[int], text_of: Callable[[list[int]], str]) -> list[Hypothesis]:
        done, scores = self.fin_done.tolist(), self.fin_scores.tolist()
        out = []
        for i in range(self.width):
            if not done[i] or scores[i] <= PLACEHOLDER:
                continue
            n = self.fin_lens[i]
            ids = self.fin_seqs[i, self.prompt_len : self.prompt_len + n].tolist()
            cumulative = float(self.fin_incs[i, :n].sum())
            out.append(Hypothesis(self.fin_nodes[i], self.fin_parents[i], self.index, tuple(ids), text_of(ids),
                                  cumulative, scores[i], float(self.fin_logps[i, :n].sum()),
                                  "eos" if ids and ids[-1] in eos else self.at_limit))
        return out

    def token_rows(self, i: int) -> tuple[list[int], list[float], list[float]]:
        """Batch row, raw log-prob and processed score of each token of finished hypothesis `i`."""
        n = self.fin_lens[i]
        return self.fin_rows[i, :n].tolist(), self.fin_logps[i, :n].tolist(), self.fin_incs[i, :n].tolist()


def _hamming_penalty(chosen: list[torch.Tensor], vocab: int, penalty: float, like: torch.Tensor) -> torch.Tensor:
    """-L times how often each token was chosen at this step by the groups before this one
    (transformers 4's HammingDiversityLogitsProcessor)."""
    import torch

    if not chosen or penalty == 0.0:
        return torch.zeros(vocab, device=like.device, dtype=like.dtype)
    counts = torch.bincount(torch.cat(chosen), minlength=vocab).to(like.dtype)
    return -penalty * counts


def search(backend: Backend, prompt_ids: list[int], settings: BeamSettings, config: DecodeConfig, *,
           eos_token_ids: list[int] | tuple[int, ...] = (), strategy: Strategy | None = None,
           text_of: Callable[[list[int]], str] | None = None, token_of: Callable[[int], str] | None = None,
           context_length: int | None = None) -> Iterator[BeamStep | BeamResult]:
    """Search for continuations of `prompt_ids` on `backend`'s rows; works on token ids (no tokenizer needed).

    `strategy`'s transforms process the log-probs, as transformers' logits processors do in beam
    search (penalties; deterministic beam search ignores sampling transforms, the CLI reports them);
    for stochastic beam search they shape the distribution that is sampled. EOS is masked until
    `config.min_new_tokens`. With `config.record` off, only the last `BeamStep` is yielded.
    """
    stateful = [str(t) for t in (strategy.transforms if strategy is not None else [])
                if t.kind in ("stateful", "constraint")]
    if stateful:
        raise UsageError(f"{stateful[0]} keeps per-sequence state, which beam search (reordering its hypotheses "
                         "every step) cannot carry; use it without --num-beams")
    if (refusal := backend.why_not(REORDER)) is not None:
        raise UsageError(refusal)
    if settings.stochastic:
        yield from stochastic_search(backend, prompt_ids, settings, config, eos_token_ids, strategy, text_of, token_of,
                                     context_length)
    else:
        yield from _deterministic(backend, prompt_ids, settings, config, eos_token_ids, strategy, text_of, token_of,
                                  context_length)


@inference_steps
def _deterministic(backend, prompt_ids, settings, config, eos_token_ids, strategy, text_of, token_of,
                   context_length):
    import torch

    device, prompt, limit, eos = setup(backend, prompt_ids, config, eos_token_ids, context_length)
    text_of = text_of or (lambda ids: "")
    token_of = token_of or str
    eos_set = set(eos_token_ids)
    width = settings.num_beams // settings.num_beam_groups
    at_limit = "context" if limit < config.max_new_tokens else "length"
    groups = [_Group(g, width, prompt, limit, settings, len(eos_token_ids), at_limit)
              for g in range(settings.num_beam_groups)]
    nodes, stats = Nodes(), []
    if settings.num_beams == 1:  # transformers runs greedy search for one beam: stop once it finishes
        settings = BeamSettings(num_beams=1, length_penalty=settings.length_penalty, early_stopping=True)
        groups[0].settings = settings
    stopped = ""
    batch, raw = backend.start(prompt_ids, 1)
    for t in range(limit):
        if t == 0:  # one prefill row stands for the B identical rows
            raw = raw.expand(settings.num_beams, -1)
        raw_logp = torch.log_softmax(raw, dim=-1)
        history = torch.cat([g.seqs[:, : len(prompt_ids) + t] for g in groups])
        if settings.num_beams > 1:  # transformers' beam search processes log-probs
            processed = process_scores(strategy, raw_logp, history, eos, t, config.min_new_tokens)
        else:  # and its greedy search logits (a repetition penalty acts differently on them)
            processed = torch.log_softmax(process_scores(strategy, raw, history, eos, t, config.min_new_tokens), -1)
        if config.record:
            stats.append(beam_rows(raw_logp, processed, alternatives_shown(backend, config)))
        chosen: list[torch.Tensor] = []
        candidates: list[Candidate] = []
        for g in groups:
            rows = slice(g.offset, g.offset + width)
            if g.done:
                continue
            group_scores = processed[rows] + _hamming_penalty(chosen, processed.shape[-1],
                                                              settings.diversity_penalty, processed)
            for parent, token, cumulative, status, node in g.step(t, group_scores, raw_logp[rows], eos, nodes):
                candidates.append(Candidate(parent, g.index, token, token_of(token), cumulative, status, node))
            chosen.append(g.seqs[:, len(prompt_ids) + t])
        if all(g.done for g in groups):
            stopped = "; ".join(dict.fromkeys(g.stopped for g in groups))
        if config.record or stopped:
            live = tuple(h for g in groups if not g.done for h in g.live(t, text_of))
            finished = tuple(sorted((h for g in groups for h in g.finished(eos_set, text_of)),
                                    key=lambda h: -h.score))
            yield BeamStep(t, live, finished, tuple(candidates), stopped or None)
        if stopped:
            break
        order = torch.cat([g.rows[:, t] if not g.done else torch.arange(g.offset, g.offset + width, device=device)
                           for g in groups])
        batch.reorder(order if t > 0 else torch.zeros_like(order))
        raw = batch.advance(torch.cat([g.seqs[:, len(prompt_ids) + t] for g in groups]))

    pool = sorted(((h, g, i) for g in groups for i, h in _indexed_finished(g, eos_set, text_of)),
                  key=lambda x: -x[0].score)[: settings.num_return_sequences]
    tokens = []
    for _, g, i in pool:
        rows, logps, incs = g.token_rows(i)
        tokens.append(token_stats(stats, rows, logps, incs, config.record))
    yield BeamResult(tuple(h for h, _, _ in pool), tuple(tokens), stopped, t + 1)


def _indexed_finished(group: _Group, eos: set[int], text_of) -> list[tuple[int, Hypothesis]]:
    done, scores = group.fin_done.tolist(), group.fin_scores.tolist()
    index = [i for i in range(group.width) if done[i] and scores[i] > PLACEHOLDER]
    hyps = group.finished(eos, text_of)
    return list(zip(index, hyps, strict=True))


# ------------------------------------------------------------------------------------- with a tokenizer


def check_config(config: DecodeConfig) -> None:
    """What the core loop's config may ask for that beam search cannot do: a SettingError naming it."""
    if config.stop:
        raise SettingError("{stop_strings} is not supported with beam search (a stop string would end a hypothesis "
                           "outside the search's scoring); use {max_new_tokens} or EOS",
                           "stop_strings", "max_new_tokens")
    if config.num_samples != 1:
        raise SettingError(f"{{num_samples}} {config.num_samples}: beam search returns {{num_return_sequences}} "
                           "sequences instead", "num_samples", "num_return_sequences")
    if getattr(config, "logprob_of", ()):
        raise SettingError("{logprob_of} is not supported with beam search", "logprob_of")


def beam_decode(lm: Backend, strategy: Strategy | None, prompt_ids: list[int], config: DecodeConfig,
                settings: BeamSettings) -> Iterator[BeamStep | Step | Done]:
    """Beam search on a loaded model: `BeamStep` per step, then for the returned sequences (best first,
    `sample` = rank) their `Step` events, all ranks' steps before the first `Done`, and one `Done` each
    with `score` and `rank`."""
    check_config(config)
    check_prompt_fits(lm, prompt_ids)
    seed = resolved_seed(config.seed)
    config = DecodeConfig(**{**config.__dict__, "seed": seed})
    table = lm.vocab

    def text_of(ids: list[int]) -> str:
        return table.decode(ids, skip_special_tokens=True)

    name, distribution = describe(strategy, settings), distribution_label(lm)
    started = time.perf_counter()
    result = None
    for event in search(lm, prompt_ids, settings, config, eos_token_ids=lm.eos_token_ids, strategy=strategy,
                        text_of=text_of, token_of=table.text, context_length=lm.context_length):
        if isinstance(event, BeamResult):
            result = event
        else:
            yield event
    seconds = time.perf_counter() - started
    dones = []
    for rank, (hyp, stats) in enumerate(zip(result.ranked, result.tokens, strict=True)):
        detok = Detokenizer(table)
        for step, (token_id, stat) in enumerate(zip(hyp.token_ids, stats, strict=True)):
            last = step == len(hyp.token_ids) - 1
            is_eos = token_id in lm.eos_token_ids and hyp.finish_reason == "eos" and last
            delta = detok.push(token_id) if not is_eos else ""
            if last:
                delta += detok.finish()
            yield build_step(table, measure_beam(stat, distribution), sample=rank, step=step, token_id=token_id,
                             text=delta)
        count = len(hyp.token_ids)
        perplexity = math.exp(-hyp.logprob_sum / count) if count and math.isfinite(hyp.logprob_sum) else None
        dones.append(Done(sample=rank, text=detok.text, token_ids=hyp.token_ids, finish_reason=hyp.finish_reason,
                          n_tokens=count, logprob_sum=hyp.logprob_sum, perplexity=perplexity, seconds=seconds,
                          tokens_per_second=count / seconds if seconds > 0 else 0.0, strategy=name, seed=seed,
                          score=hyp.score, rank=rank))
    yield from dones


def describe(strategy: Strategy | None, settings: BeamSettings) -> str:
    """The search as a chain: "logits -> no-repeat-ngram(3) -> beam(num_beams=4, ...)"."""
    return " -> ".join(["logits", *(str(t) for t in (strategy.transforms if strategy else [])), str(settings)])
