"""Teacher-forced cross-entropy of a text under a causal LM (and under a strategy's distribution),
with a sliding window for texts longer than the model's context."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from samplecli.backends.base import PROMPT_LOGPROBS, SCORE, TEACHER_FORCE
from samplecli.backends.memory import give_back_freed_memory
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


HEAD_PIECE = 32  # positions the backend's output head computes at once (`Backend.logit_chunks`): 16 MB at 128k
SCORE_ROWS = 4  # positions scored at once: 4 float64 rows of a 152k vocabulary are 5 MB, with their softmax ~15


def window_logits(lm: Backend, ids: torch.Tensor, context: int, stride: int,
                  rows: int = SCORE_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """For each window, its scored positions a piece of at most `rows` (at least two, where the window scores
    more than one) at a time: (first position of the piece, the logits predicting its positions) as float64.
    The pieces come in order (`Backend.logit_chunks`), so memory follows `rows`, not the window (the freed pages
    given back after each of the backend's pieces); no piece is a lone row, since torch sums a single row's
    vocabulary in parallel halves that round otherwise, and every number must be the one the same rows give
    however they are cut."""
    if (refusal := lm.why_not(TEACHER_FORCE)) is not None:
        raise UsageError(refusal)
    for w in sliding_windows(ids.numel(), context, stride):
        # row j of the window's logits predicts token start + j + 1: rows score_from - start - 1 .. end - start - 2
        pieces = lm.logit_chunks(ids[w.start : w.end].tolist(), first=w.score_from - w.start - 1,
                                 stop=w.end - w.start - 1, rows=max(rows, HEAD_PIECE))
        yield from _without_lone_rows(pieces, w.score_from, rows)


def _without_lone_rows(pieces: Iterator[torch.Tensor], position: int,
                       rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """The backend's pieces as (position, float64 rows) of at most `rows`, a lone row joined to the rows before
    it. Each piece's last rows are held back (a copy of `rows` rows, not the backend's whole piece, which is let go
    before the next is computed: two pieces of 32 rows at 152k are 39 MB) until the next piece shows whether it
    is a lone row."""
    import torch

    held = None
    for piece in pieces:
        if piece.shape[0] == 0:
            continue
        if held is not None and piece.shape[0] == 1:
            held = torch.cat([held, _float64(piece)])
            continue
        if held is not None:
            yield position, held
            position, held = position + held.shape[0], None
        *spans, (last, end) = _spans(piece.shape[0], rows)
        for begin, stop in spans:
            yield position, _float64(piece[begin:stop])
            position += stop - begin
        held = _float64(piece[last:end])
        del piece
        give_back_freed_memory()
    if held is not None:
        yield position, held


def _float64(rows: torch.Tensor) -> torch.Tensor:
    """A float64 copy of `rows` on the CPU, each row contiguous (a backend's piece may be a transposed view)."""
    import torch

    return rows.to(device="cpu", dtype=torch.float64, memory_format=torch.contiguous_format)


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """[begin, end) spans of at most `size` rows covering 0..n, the last one widened rather than left one row."""
    spans = [(begin, min(begin + size, n)) for begin in range(0, n, size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


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
    # under a constraint: whether the text is a sentence of its language, and how many of its tokens stay inside it
    # (the position where it first leaves, where it does)
    accepted: bool | None = None
    inside: int | None = None
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
          per_token: bool = False, context_ids: list[int] | None = None,
          progress: Callable[[int, int], None] | None = None) -> Score:
    """Score `text`: BOS (where the model has one) + the text's tokens, every text token predicted
    from everything before it within the window. `context_ids` (a chat template's conversation, ending where
    the assistant's reply begins) replace BOS: they are context, and only the text's tokens are scored.
    `progress(scored, total)` hears how many of the text's tokens are scored, after each piece."""
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
    if strategy is not None and strategy.constraints:  # the masks follow the text from its first token
        strategy = strategy.clone()
        strategy.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids or ()))
        strategy.reset(1)
        verdicts = [stage.accepts(text_ids) for stage in strategy.constraints]
        result.accepted = all(accepted for accepted, _ in verdicts)
        result.inside = min(inside for _, inside in verdicts)
    # an engine that returns its top N scores the text's own tokens exactly from them; a strategy's distribution
    # needs every token's probability (teacher forcing, where the engine can give it)
    if PROMPT_LOGPROBS in lm.capabilities and (strategy is None or TEACHER_FORCE not in lm.capabilities):
        if strategy is not None:
            raise UsageError(f"scoring under a strategy needs every token's probability; {lm.engine} returns its "
                             f"top {lm.top_n}; drop the sampling settings")
        return _score_from_top_n(lm, ids.tolist(), offset, result, per_token)
    # the first scored position of each window (of the text's): the sums are taken per window, as one window's
    # rows once were, so streaming a window in pieces gives the same floats
    starts = {max(w.score_from, offset) for w in sliding_windows(ids.numel(), context, stride)}
    table = lm.vocab
    strategy_nats, kl_total = 0.0, 0.0
    window: dict[str, list[float]] = {}
    for first, logits in window_logits(lm, ids, context, stride):
        if first + logits.shape[0] <= offset:  # all context: nothing of the text to score here
            continue
        if first < offset:
            logits, first = logits[offset - first :], offset
        if first in starts:  # a new window: the sums of the one before
            strategy_nats, kl_total = _add_window(result, window, strategy_nats, kl_total)
        n = logits.shape[0]
        if progress is not None:
            progress(first + n - max(offset, 1), result.tokens)
        targets = ids[first : first + n]
        logp = torch.log_softmax(logits, dim=-1)
        target_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        per_row = {"target_logp": target_logp, "entropy": entropy_nats(logp)}
        ranks = (logits > logits.gather(-1, targets.unsqueeze(-1))).sum(-1) + 1
        if logits.shape[-1] > TAIL_K:
            result.tail_k = TAIL_K
            per_row["head"] = torch.topk(logp, TAIL_K, dim=-1).values.exp().sum(-1)
            result.outside_top += int((ranks > TAIL_K).sum())
        del logp
        strategy_probs = None
        if strategy is not None:
            strategy_probs = _strategy_probs(strategy, logits.float(), ids, first).double()
            picked = strategy_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            result.impossible += [first + j - offset for j in torch.nonzero(picked == 0).flatten().tolist()]
            per_row["picked"] = picked
            per_row["kl"] = kl_nats(strategy_probs, torch.log_softmax(logits, dim=-1))
        for name, values in per_row.items():  # as Python floats: thousands of small tensors held to the window's
            window.setdefault(name, []).extend(values.tolist())  # end would pin holes in the allocator's heap
        if per_token:
            for j in range(n):
                tid = int(targets[j])
                result.per_token.append(TokenScore(
                    position=first + j - offset, token_id=tid, token=table.text(tid), nats=-float(target_logp[j]),
                    prob=math.exp(float(target_logp[j])), rank=int(ranks[j]),
                    strategy_prob=float(strategy_probs[j, tid]) if strategy_probs is not None else None))
    strategy_nats, kl_total = _add_window(result, window, strategy_nats, kl_total)
    if strategy is not None:
        result.strategy_nats = strategy_nats
        result.kl_strategy_model = kl_total / result.tokens
    return result


def _add_window(result: Score, window: dict[str, list[float]], strategy_nats: float,
                kl_total: float) -> tuple[float, float]:
    """Add one window's per-position numbers (its pieces' rows, joined) to the totals, each summed over the
    window as one float64 tensor; empty `window` for the next. Returns the strategy's running sums."""
    import torch

    if not window:
        return strategy_nats, kl_total
    rows = {name: torch.tensor(values, dtype=torch.float64) for name, values in window.items()}
    window.clear()
    result.nats -= float(rows["target_logp"].sum())
    result.entropy_nats += float(rows["entropy"].sum())
    if "head" in rows:
        result.tail_mass += float((1.0 - rows["head"]).clamp(min=0.0).sum())
    if "picked" in rows:
        strategy_nats -= float(torch.log(rows["picked"]).sum())
        kl_total += float(rows["kl"].sum())
    return strategy_nats, kl_total


def _score_from_top_n(lm: Backend, ids: list[int], offset: int, result: Score, per_token: bool) -> Score:
    """`score` from an engine's prompt log-probabilities (the text's tokens exactly, the rest of each distribution
    as its top N): the cross-entropy is exact; the entropy is an interval (`stats.top_n_entropy_bounds`); the
    tail is the mass outside the top N; a rank is the engine's."""
    from samplecli.stats import top_n_entropy_bounds

    low_sum = high_sum = 0.0
    result.tail_k, result.distribution = lm.top_n, f"top-{lm.top_n}"
    for w in sliding_windows(len(ids), result.context, result.stride):
        first = max(w.score_from, offset, 1)
        scored = lm.prompt_logprobs(ids[w.start : w.end], first=first - w.start)  # scored[j]: token first + j
        for position in range(first, w.end):
            token = scored[position - first]
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

    needs_history = any(t.kind in ("penalty", "stateful", "constraint") for t in strategy.transforms)
    if not needs_history:
        return strategy.distribution(logits, ids[:first].unsqueeze(0).expand(logits.shape[0], -1))
    if strategy.constraints:  # each position's mask is the one after the text's tokens before it
        rows = []
        for j in range(logits.shape[0]):
            rows.append(strategy.distribution(logits[j : j + 1], ids[: first + j].unsqueeze(0)))
            strategy.accept(ids[first + j : first + j + 1], rows[-1])
        return torch.cat(rows)
    rows = [strategy.distribution(logits[j : j + 1], ids[: first + j].unsqueeze(0)) for j in range(logits.shape[0])]
    return torch.cat(rows)
