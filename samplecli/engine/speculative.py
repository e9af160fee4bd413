"""Speculative decoding, each round shown: a draft proposes K tokens, the target scores them all in one forward,
and each is kept with probability min(1, p/q); the first one rejected is replaced by a draw from the residual
max(0, p - q), normalised, and a round whose K tokens are all kept adds one drawn from the target after them
(Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding"; Chen et al. 2023). p and q are
the strategy's distributions (the same chain applied to the target's and the draft's scores at each position), so
every emitted token follows the strategy's distribution over the target exactly; a greedy strategy keeps a drafted
token exactly when it is the target's own choice, so its output is plain greedy decoding's, token for token.

`verify_round` is the round's arithmetic on given distributions (no model); `speculative_decode` is the loop
around it, yielding a `Step` per emitted token (its `speculation` says how its round made it) and a `Done` whose
`speculation` holds the run's acceptance and forwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from samplecli.backends.base import inference_steps
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import (
    DecodeConfig,
    Done,
    Speculated,
    Speculation,
    Step,
    build_step,
    resolved_seed,
    sample_seed,
)
from samplecli.engine.measure import check_logprob_of, measure_rows
from samplecli.engine.sequence import SequenceState
from samplecli.errors import UsageError
from samplecli.strategies.base import Param

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy

DRAFT_TOKENS = Param("draft_tokens", int, 4, ">= 1", lambda v: v >= 1)
NGRAM = "ngram"  # the draft that needs no model: prompt lookup


@dataclass(frozen=True)
class Drafting:
    """A run's draft: a model (`draft`), or None for prompt lookup, and the tokens it proposes a round."""

    draft: Backend | None
    tokens: int = DRAFT_TOKENS.default


@dataclass(frozen=True)
class Check:
    """One drafted token as the target judged it: q and p its strategy probabilities under the draft and the
    target, min(1, p/q), the uniform drawn against it (None: greedy) and whether it was kept."""

    token_id: int
    draft_prob: float
    target_prob: float
    accept_prob: float
    uniform: float | None
    accepted: bool


@dataclass(frozen=True)
class Round:
    """What a round emits: the kept drafted tokens then one more (`last`, drawn from the residual where a drafted
    token was rejected, else from the target after the last drafted token), and each drafted token's `Check` up
    to and including the first rejected one."""

    checks: tuple[Check, ...]
    last: int

    @property
    def accepted(self) -> int:
        return sum(c.accepted for c in self.checks)

    @property
    def tokens(self) -> list[int]:
        return [c.token_id for c in self.checks if c.accepted] + [self.last]


def verify_round(p: torch.Tensor, q: torch.Tensor, drafted: list[int], uniforms: torch.Tensor | None,
                 greedy: list[int] | None = None) -> Round:
    """Judge `drafted` (K tokens) against the target's strategy distributions `p` (K + 1 rows: at each drafted
    position, then after the last) and the draft's `q` (K rows). `uniforms` holds K + 1 numbers in [0, 1): one per
    drafted token, then the one the last token's inverse-CDF draw uses. `greedy`: a deterministic strategy's own
    choice at each of the K + 1 positions, which then decides instead of the uniforms.

    Token d at position i is kept when u_i < p_i(d) / q_i(d); the first rejected position draws from
    max(0, p_i - q_i) normalised, so that a token's probability, summed over both ways it can come out, is p_i's.
    """

    checks: list[Check] = []
    for i, token in enumerate(drafted):
        p_d, q_d = float(p[i, token]), float(q[i, token])
        ratio = 1.0 if q_d <= 0 else min(1.0, p_d / q_d)
        if greedy is not None:
            kept, u = token == greedy[i], None
        else:
            u = float(uniforms[i])
            kept = u < p_d / q_d if q_d > 0 else False
        checks.append(Check(token, q_d, p_d, ratio, u, kept))
        if not kept:
            if greedy is not None:
                return Round(tuple(checks), greedy[i])
            residual = (p[i].double() - q[i].double()).clamp_min(0.0)
            if float(residual.sum()) <= 0.0:  # p = q to rounding: nothing left over, the target's own draw
                residual = p[i].double()
            return Round(tuple(checks), draw(residual, float(uniforms[len(drafted)])))
    k = len(drafted)
    if greedy is not None:
        return Round(tuple(checks), greedy[k])
    return Round(tuple(checks), draw(p[k].double(), float(uniforms[k]) if uniforms is not None else 0.0))


def draw(weights: torch.Tensor, u: float) -> int:
    """The token whose interval of the cumulative `weights` (in token-id order, not normalised) holds u * total."""
    import torch

    cdf = weights.cumsum(dim=-1)
    at = torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=cdf.dtype), right=True)
    position = int(at.clamp(max=cdf.shape[-1] - 1))
    while float(weights[position]) <= 0.0 and position > 0:  # u * total on a boundary of a zero-weight run
        position -= 1
    return position


def stateful_stage(strategy: Strategy) -> str | None:
    """The first stage of `strategy` whose state moves with each drawn token (it overrides `accept` or `clone`:
    mirostat's mu, XTC's coins, a constraint's automaton), which a drafted position cannot replay; None if none.
    Penalties read the tokens so far at every position, and need nothing of the sort."""
    from samplecli.strategies.base import Configurable

    for stage in (*strategy.transforms, strategy.selector):
        if type(stage).accept is not Configurable.accept or type(stage).clone is not Configurable.clone:
            return stage.name
    return None


def check_speculative(lm: Backend, draft: Backend | None, strategy: Strategy, draft_tokens: int, label: str) -> None:
    """Raise UsageError, one line, where this run cannot be speculative: a stage with state that follows the
    draws, a backend that cannot score several tokens at once and forget some, a draft with another vocabulary,
    or `draft_tokens` beyond the context."""
    from samplecli.backends.base import VERIFY

    draft_tokens = DRAFT_TOKENS.validate("--draft-tokens", draft_tokens)
    stage = stateful_stage(strategy)
    if stage is not None:
        raise UsageError(f"{label}: `{stage}` keeps state that moves with every drawn token, which speculative "
                         "decoding cannot replay at each drafted position; drop it, or drop the draft")
    for backend in (lm, draft):
        if backend is not None and (why := backend.why_not(VERIFY)) is not None:
            raise UsageError(why)
    for backend in (lm, draft):
        context = backend.context_length if backend is not None else None
        if context is not None and draft_tokens >= context:
            raise UsageError(f"--draft-tokens {draft_tokens}: model `{backend.name}`'s context is {context} tokens; "
                             "draft fewer tokens per round")
    if draft is not None:
        check_same_vocabulary(lm, draft, label)


def check_same_vocabulary(lm: Backend, draft: Backend, label: str) -> None:
    """The draft must name every token as the target does: the same width of scores and each id's same bytes."""
    if draft.vocab_size != lm.vocab_size:
        raise UsageError(f"{label}: the draft `{draft.name}` scores {draft.vocab_size} tokens and the model "
                         f"`{lm.name}` {lm.vocab_size}; a draft must share the model's tokenizer")
    for token_id in range(min(lm.vocab.size, draft.vocab.size)):
        if lm.vocab.bytes(token_id) != draft.vocab.bytes(token_id):
            raise UsageError(f"{label}: the draft `{draft.name}`'s token {token_id} is {draft.vocab.text(token_id)!r} "
                             f"and the model's {lm.vocab.text(token_id)!r}; a draft must share the model's tokenizer")


class ModelDraft:
    """A draft model with its own KV cache, kept in step with the sequence: before each proposal it forgets the
    positions the sequence no longer has (rejected drafts) and feeds the ones it has not seen, in one forward."""

    def __init__(self, lm: Backend) -> None:
        self.lm, self.name = lm, lm.name
        self.batch = None
        self.fed: list[int] = []
        self.last = None  # the scores after `fed`
        self.forwards = 0

    def start(self, prompt_ids: list[int]) -> None:
        self.batch, self.last = self.lm.start(prompt_ids, 1)
        self.fed, self.forwards = list(prompt_ids), 1

    def propose(self, context: list[int], k: int, distribution, uniform) -> tuple[list[int], torch.Tensor]:
        """K tokens drawn one at a time from `distribution(scores, history)` (the strategy over the draft's
        scores after `history`), with `uniform()` numbers; returns them and their K distribution rows."""
        import torch

        common = 0
        for a, b in zip(self.fed, context, strict=False):
            if a != b:
                break
            common += 1
        if common == len(context) == len(self.fed) and self.last is not None:  # the prefill's scores
            scores = self.last
        else:
            if common == len(context):  # the scores after `context` are needed: feed its last token again
                common -= 1
            if common < len(self.fed):
                self.batch.rewind(len(self.fed) - common)
                self.fed = self.fed[:common]
            missing = context[common:]
            scores = self.batch.extend(torch.tensor([missing], device=self.lm.device))[:, -1]
            self.fed += missing
            self.forwards += 1
        self.last = None  # what follows is fed drafts: the next proposal feeds what the sequence kept
        drafted, rows = [], []
        for i in range(k):
            q = distribution(scores, context + drafted)
            token = draw(q[0].double(), uniform())
            drafted.append(token)
            rows.append(q[0])
            if i + 1 < k:
                scores = self.batch.advance(torch.tensor([token], device=self.lm.device))
                self.fed.append(token)
                self.forwards += 1
        return drafted, torch.stack(rows) if rows else torch.empty(0)


class NgramDraft:
    """Prompt lookup (as transformers' `prompt_lookup_num_tokens` and llama.cpp's lookup decoding): the tokens that
    followed the latest earlier occurrence of the sequence's last n tokens (n from `longest` down to 1). It is
    deterministic: q is 1 on the proposed token, so the target keeps it with probability p(d)."""

    name = NGRAM
    forwards = 0

    def __init__(self, vocab_size: int, longest: int = 3) -> None:
        self.vocab_size, self.longest = vocab_size, longest

    def start(self, prompt_ids: list[int]) -> None:
        pass

    def propose(self, context: list[int], k: int, distribution, uniform) -> tuple[list[int], torch.Tensor]:
        import torch

        found: list[int] = []
        for n in range(min(self.longest, len(context) - 1), 0, -1):
            tail = context[-n:]
            for start in range(len(context) - n - 1, -1, -1):
                if context[start:start + n] == tail:
                    found = context[start + n:start + n + k]
                    break
            if found:
                break
        q = torch.zeros(len(found), self.vocab_size)
        if found:
            q[torch.arange(len(found)), torch.tensor(found)] = 1.0
        return found, q


def speculative_decode(lm: Backend, draft: Backend | None, strategy: Strategy, prompt_ids: list[int],
                       config: DecodeConfig, draft_tokens: int = DRAFT_TOKENS.default) -> Iterator[Step | Done]:
    """`decode`'s events for one strategy, each sample in turn, drafted by `draft` (None: prompt lookup) K =
    `draft_tokens` tokens a round and verified by `lm` in one forward per round."""
    from samplecli.engine.decode import check_prompt_fits, context_room

    label = "--draft-model" if draft is not None else f"--draft-model {NGRAM}"
    check_speculative(lm, draft, strategy, draft_tokens, label)
    check_prompt_fits(lm, prompt_ids)
    check_logprob_of(lm, config.logprob_of)
    if draft is not None:
        check_prompt_fits(draft, prompt_ids)
    seed = resolved_seed(config.seed)
    limit = context_room(lm, len(prompt_ids), config.max_new_tokens)
    if draft is not None:
        limit = min(limit, context_room(draft, len(prompt_ids), config.max_new_tokens))
    at_limit = "context" if limit < config.max_new_tokens else "length"
    strategy.bind(tuple(lm.eos_token_ids or ()), seed)
    for sample in range(config.first_sample, config.first_sample + config.num_samples):
        drafter = ModelDraft(draft) if draft is not None else NgramDraft(lm.vocab_size)
        yield from _one_sequence(lm, drafter, strategy, prompt_ids, config, draft_tokens, seed, sample, limit,
                                 at_limit)


@inference_steps
def _one_sequence(lm: Backend, drafter: ModelDraft | NgramDraft, strategy: Strategy, prompt_ids: list[int],
                  config: DecodeConfig, k_max: int, seed: int, sample: int, limit: int,
                  at_limit: str) -> Iterator[Step | Done]:
    import torch

    generator = torch.Generator().manual_seed(sample_seed(seed, sample))
    stochastic = strategy.stochastic
    eos_ids = set(lm.eos_token_ids or ())
    eos = torch.tensor(sorted(eos_ids) or [-1], device=lm.device)
    strategy.reset(1, sample)
    no_uniform = torch.zeros(1, device=lm.device)

    def scored(raw: torch.Tensor, history: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(processed scores, strategy distribution) of one row of scores after `history` (EOS banned before
        min_new_tokens new tokens, as the plain loop bans it)."""
        if len(history) - len(prompt_ids) < config.min_new_tokens and eos_ids:
            raw = raw.index_fill(-1, eos, float("-inf"))
        ids = torch.tensor([history], device=lm.device)
        scores = strategy.process(raw, ids)
        return scores, strategy.selector.distribution(scores)

    def uniform() -> float:
        return float(torch.rand(1, generator=generator)) if stochastic else 0.0

    started = time.perf_counter()
    seq = SequenceState(0, Detokenizer(lm.vocab, config.stop), started)
    tokens = list(prompt_ids)
    batch, after = lm.start(prompt_ids, 1)
    drafter.start(prompt_ids)
    pending: list[int] = []  # the last emitted token, not yet fed to the target
    forwards, rounds, drafted_total, judged_total, accepted_total, t = 1, 0, 0, 0, 0, 0
    while t < limit and seq.finish_reason is None:
        k = min(k_max, limit - t - 1)
        drafted, q = drafter.propose(tokens, k, lambda s, h: scored(s, h)[1], uniform) if k else \
            ([], torch.empty(0))
        feed = pending + drafted
        rows = [after] if not pending else []
        if feed:
            rows.append(batch.extend(torch.tensor([feed], device=lm.device))[0])
            forwards += 1
        raw = torch.cat(rows)  # the target's scores at each drafted position, then after the last
        processed = [scored(raw[i:i + 1], tokens + drafted[:i]) for i in range(len(drafted) + 1)]
        p = torch.cat([probs for _, probs in processed])
        # a deterministic selector (greedy) decides by its own choice at each position
        greedy = None if stochastic else [int(strategy.selector.select(s, probs, None, no_uniform))
                                          for s, probs in processed]
        u = torch.tensor([uniform() for _ in range(len(drafted) + 1)]) if stochastic else None
        outcome = verify_round(p, q.to(p.device), drafted, u, greedy)
        emitted = outcome.tokens
        drafted_total, accepted_total, rounds = drafted_total + len(drafted), accepted_total + outcome.accepted, \
            rounds + 1
        judged_total += len(outcome.checks)
        for i, token in enumerate(emitted):
            yield from _emit(lm, seq, config, raw[i:i + 1], p[i:i + 1], token, sample, t, limit, at_limit,
                             eos_ids, _speculated(lm, outcome, i, rounds - 1, len(drafted)))
            tokens.append(token)
            t += 1
            if seq.finish_reason is not None:
                break
        # the target has seen every drafted token: forget the rejected ones; the last emitted is fed next round
        if len(drafted) > outcome.accepted:
            batch.rewind(len(drafted) - outcome.accepted)
        after, pending = raw[-1:], [emitted[-1]]
    totals = Speculation(draft=drafter.name, draft_tokens=k_max, rounds=rounds, drafted=drafted_total,
                         judged=judged_total, accepted=accepted_total, target_forwards=forwards,
                         draft_forwards=drafter.forwards)
    if seq.finish_reason is None:  # cut by the model's context before any token (cannot happen past the checks)
        seq.finish_reason = at_limit
    yield replace(seq.done(str(strategy), seed, sample, 0), speculation=totals)


def _speculated(lm: Backend, outcome: Round, i: int, round_index: int, drafted: int) -> Speculated:
    """The record of the i-th token a round emits."""
    if i < len(outcome.checks):
        check = outcome.checks[i]
        return Speculated(round=round_index, drafted=drafted, outcome="accepted" if check.accepted else "resampled",
                          draft_token_id=check.token_id, draft_token=lm.vocab.text(check.token_id),
                          draft_prob=check.draft_prob, target_prob=check.target_prob,
                          accept_prob=check.accept_prob, uniform=check.uniform)
    return Speculated(round=round_index, drafted=drafted, outcome="bonus")


def _emit(lm: Backend, seq: SequenceState, config: DecodeConfig, raw: torch.Tensor, probs: torch.Tensor, token: int,
          sample: int, t: int, limit: int, at_limit: str, eos_ids: set[int],
          speculated: Speculated) -> Iterator[Step | Done]:
    """The Step of an emitted token, measured as the plain loop measures one (the target's raw scores, the
    strategy's distribution), and its sequence's end where it ends it (Done comes from the caller)."""
    import torch

    [measure] = measure_rows(lm, raw, probs, torch.tensor([token], device=raw.device), config, [0])
    measure.speculation = speculated
    text = seq.push(token, measure.logprob, token in eos_ids, t + 1 == limit, at_limit)
    yield build_step(lm.vocab, measure, sample=sample, step=t, token_id=token, text=text)
