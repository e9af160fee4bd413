"""Teacher-forced cross-entropy of a text under a causal LM (and under a strategy's distribution),
with a sliding window for texts longer than the model's context."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from samplecli.backends.base import PROMPT_LOGPROBS, SCORE, TEACHER_FORCE
from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy


@dataclass(frozen=True)
class Window:
    """One forward pass of the sliding window: tokens [start, end) are fed, [score_from, end) are scored."""

    start: int
    end: int
    score_from: int


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Cover positions 1..n_tokens-1 (each predicted from what precedes it) with windows of at most
    `context` tokens that advance by `stride`; every position is scored exactly once, with at least
    `context - stride` tokens of left context once the first window is full.

    Position 0 is never scored: it is the BOS token the caller prepends (or the first token).
    """
    if context < 2:
        raise ValueError(f"`context` has to be an integer >= 2, but is {context}")
    if not 1 <= stride <= context - 1:
        raise ValueError(f"`stride` has to be in [1, context - 1] = [1, {context - 1}], but is {stride}")
    windows: list[Window] = []
    scored_until = 1  # next position that still needs a score
    start = 0
    while scored_until < n_tokens:
        end = min(start + context, n_tokens)
        windows.append(Window(start, end, scored_until))
        scored_until = end
        start += stride
        # keep windows full-length at the end of the text: the last one gets the most context
        if start + context > n_tokens:
            start = max(0, n_tokens - context)
    return windows


def window_logits(lm: Backend, ids: torch.Tensor, context: int, stride: int) -> Iterator[tuple[int, torch.Tensor]]:
    """For each window, (first scored position, logits predicting the scored positions) as float64."""
    if (refusal := lm.why_not(TEACHER_FORCE)) is not None:
        raise UsageError(refusal)
    for w in sliding_windows(ids.numel(), context, stride):
        logits = lm.logits(ids[w.start : w.end].tolist()).double()
        # logits[j] predicts token start + j + 1; keep the rows for positions score_from..end-1
        yield w.score_from, logits[w.score_from - w.start - 1 : w.end - w.start - 1].cpu()


def token_nats(lm: Backend, input_ids: torch.Tensor, context: int, stride: int) -> torch.Tensor:
    """Surprisal (nats) of tokens 1..N-1 of `input_ids` (1-D) given their prefix, as a float64 tensor."""
    import torch

    out = torch.empty(max(input_ids.numel() - 1, 0), dtype=torch.float64)
    for first, logits in window_logits(lm, input_ids, context, stride):
        targets = input_ids[first : first + logits.shape[0]].cpu()
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        out[first - 1 : first - 1 + logits.shape[0]] = nll
    return out


@dataclass(frozen=True)
class TokenScore:
    position: int  # index in the scored text's tokens (0 is the first token of the text)
    token_id: int
    token: str
    nats: float
    prob: float
    rank: int  # 1 is the model's most probable token
    strategy_prob: float | None = None


@dataclass
class Score:
    """The text's cross-entropy under the model; with a strategy, also under the strategy's distribution."""

    tokens: int
    characters: int
    nats: float
    context: int
    stride: int
    per_token: list[TokenScore] = field(default_factory=list)
    strategy: str | None = None
    strategy_nats: float | None = None  # inf when the strategy gives some token probability 0
    impossible: list[int] = field(default_factory=list)  # positions the strategy filters out
    kl_strategy_model: float | None = None  # mean over positions, nats
    entropy_nats: float = 0.0  # sum over the scored positions of the model's own entropy H(q) there
    tail_mass: float = 0.0  # sum over the scored positions of the probability outside the model's top TAIL_K
    outside_top: int = 0  # scored tokens the model ranked below TAIL_K
    tail_k: int = 0  # TAIL_K, 0 when the vocabulary is no larger
    # from an engine's top N only (`prompt-logprobs`): the entropy is an interval, summed over the positions, and
    # entropy_nats is NaN; `distribution` says "top-N"
    entropy_bounds_nats: tuple[float, float] | None = None
    distribution: str = "full"

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.tokens if self.tokens else float("nan")

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.characters if self.characters else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token) if self.tokens else float("nan")

    @property
    def entropy_per_token(self) -> float:
        """The model's mean entropy at the positions scored: what the cross-entropy would be, on average, for
        text the model sampled itself at T = 1."""
        return self.entropy_nats / self.tokens if self.tokens else float("nan")

    @property
    def entropy_bounds_per_token(self) -> tuple[float, float] | None:
        if self.entropy_bounds_nats is None or not self.tokens:
            return None
        low, high = self.entropy_bounds_nats
        return low / self.tokens, high / self.tokens

    @property
    def ce_minus_entropy(self) -> float:
        """Cross-entropy per token minus the mean entropy: about 0 for the model's own samples, negative for
        text more predictable than the model's samples (greedy), positive for text it finds surprising."""
        return self.nats_per_token - self.entropy_per_token

    @property
    def tail_mass_per_token(self) -> float:
        return self.tail_mass / self.tokens if self.tokens else float("nan")


TAIL_K = 40  # the tail a top-k of 40 cuts: what `score` reports it holds


def default_stride(context: int) -> int:
    """Half the context: each token after the first window is scored with at least context/2 tokens before it."""
    return max(1, context // 2)


def score(lm: Backend, text: str, stride: int | None = None, strategy: Strategy | None = None,
          per_token: bool = False, context_ids: list[int] | None = None) -> Score:
    """Score `text`: BOS (where the model has one) + the text's tokens, every text token predicted
    from everything before it within the window. `context_ids` (a chat template's conversation, ending where
    the assistant's reply begins) replace BOS: they are context, and only the text's tokens are scored."""
    import torch

    from samplecli.stats import entropy_nats, kl_nats

    if (refusal := lm.why_not(SCORE)) is not None:
        raise UsageError(refusal)  # before any request: the engine's own reason, and the way out
    # an engine that tells its tokenization only in its answer (SGLang's `echo`) encodes the text its own way
    text_ids = lm.encode_for_scoring(text, add_special_tokens=False)
    bos = lm.bos_token_id
    prefix = list(context_ids) if context_ids is not None else ([bos] if bos is not None else [])
    ids = torch.tensor(prefix + text_ids, dtype=torch.long)
    offset = len(prefix)  # ids[offset] is the text's first token
    context = lm.context_length or 1024
    stride = default_stride(context) if stride is None else stride
    if not 1 <= stride <= context - 1:
        raise UsageError(f"--stride has to be in [1, {context - 1}] for a context of {context}, but is {stride}")
    if ids.numel() < 2:
        raise UsageError("the text is too short to score: it needs at least one token after BOS")

    result = Score(tokens=ids.numel() - max(offset, 1), characters=len(text), nats=0.0, context=context, stride=stride,
                   strategy=str(strategy) if strategy is not None else None)
    if TEACHER_FORCE not in lm.capabilities and PROMPT_LOGPROBS in lm.capabilities:
        if strategy is not None:
            raise UsageError(f"scoring under a strategy needs every token's probability; {lm.engine} returns its "
                             f"top {lm.top_n}; drop the sampling settings")
        return _score_from_top_n(lm, ids.tolist(), offset, result, per_token)
    table = lm.vocab
    strategy_nats, kl_total = 0.0, 0.0
    for first, logits in window_logits(lm, ids, context, stride):
        if first + logits.shape[0] <= offset:  # all context: nothing of the text to score here
            continue
        if first < offset:
            logits, first = logits[offset - first :], offset
        n = logits.shape[0]
        targets = ids[first : first + n]
        logp = torch.log_softmax(logits, dim=-1)
        target_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        result.nats -= float(target_logp.sum())
        result.entropy_nats += float(entropy_nats(logp).sum())
        ranks = (logits > logits.gather(-1, targets.unsqueeze(-1))).sum(-1) + 1
        if logits.shape[-1] > TAIL_K:
            result.tail_k = TAIL_K
            head = torch.topk(logp, TAIL_K, dim=-1).values.exp().sum(-1)
            result.tail_mass += float((1.0 - head).clamp(min=0.0).sum())
            result.outside_top += int((ranks > TAIL_K).sum())
        strategy_probs = None
        if strategy is not None:
            strategy_probs = _strategy_probs(strategy, logits.float(), ids, first).double()
            picked = strategy_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            result.impossible += [first + j - offset for j in torch.nonzero(picked == 0).flatten().tolist()]
            strategy_nats -= float(torch.log(picked).sum())
            kl_total += float(kl_nats(strategy_probs, logp).sum())
        if per_token:
            for j in range(n):
                tid = int(targets[j])
                result.per_token.append(TokenScore(
                    position=first + j - offset, token_id=tid, token=table.text(tid), nats=-float(target_logp[j]),
                    prob=math.exp(float(target_logp[j])), rank=int(ranks[j]),
                    strategy_prob=float(strategy_probs[j, tid]) if strategy_probs is not None else None))
    if strategy is not None:
        result.strategy_nats = strategy_nats
        result.kl_strategy_model = kl_total / result.tokens
    return result


def _score_from_top_n(lm: Backend, ids: list[int], offset: int, result: Score, per_token: bool) -> Score:
    """`score` from an engine's prompt log-probabilities (the text's tokens exactly, the rest of each distribution
    as its top N): the cross-entropy is exact; the entropy is an interval (`stats.top_n_entropy_bounds`); the
    tail is the mass outside the top N; a rank is the engine's."""
    from samplecli.stats import top_n_entropy_bounds

    low_sum = high_sum = 0.0
    result.tail_k, result.distribution = lm.top_n, f"top-{lm.top_n}"
    for w in sliding_windows(len(ids), result.context, result.stride):
        scored = lm.prompt_logprobs(ids[w.start : w.end])  # scored[j] is token w.start + j + 1
        for position in range(max(w.score_from, offset, 1), w.end):
            token = scored[position - w.start - 1]
            low, high, tail = top_n_entropy_bounds((lp for _, lp in token.candidates), lm.vocab_size)
            result.nats -= token.logprob
            low_sum, high_sum = low_sum + low, high_sum + high
            result.tail_mass += tail
            top_ids = {i for i, _ in token.candidates}
            rank = token.rank if token.rank is not None else \
                1 + sum(1 for _, lp in token.candidates if lp > token.logprob)
            result.outside_top += token.token_id not in top_ids
            if per_token:
                result.per_token.append(TokenScore(
                    position=position - offset, token_id=token.token_id, token=lm.vocab.text(token.token_id),
                    nats=-token.logprob, prob=math.exp(token.logprob), rank=rank))
    result.entropy_nats, result.entropy_bounds_nats = math.nan, (low_sum, high_sum)
    return result


def _strategy_probs(strategy: Strategy, logits: torch.Tensor, ids: torch.Tensor, first: int) -> torch.Tensor:
    """The strategy's distribution at each scored position, each seeing its own prefix (penalties need it)."""
    import torch

    needs_history = any(t.kind in ("penalty", "stateful") for t in strategy.transforms)
    if not needs_history:
        return strategy.distribution(logits, ids[:first].unsqueeze(0).expand(logits.shape[0], -1))
    rows = [strategy.distribution(logits[j : j + 1], ids[: first + j].unsqueeze(0)) for j in range(logits.shape[0])]
    return torch.cat(rows)
