"""Two models teacher-forced over one text, and where they part: the statistics of llama.cpp's
`llama-perplexity --kl-divergence` (mean KL with its standard error and percentiles, the true token's Δp, how often
both models rank the same token first, each model's perplexity and their ratio), computed with both models in
memory instead of a file of base logits.

Model A is the reference (llama.cpp's base, usually the unquantized model); B the one measured against it. At
each scored position both distributions are over the same vocabulary, given the same tokens before it:

    KL(A || B) = sum_v p_A(v) (log p_A(v) - log p_B(v))        Δp = p_B(true token) - p_A(true token)

Every number is float64; the scores stream a few positions at a time (`scoring.window_logits`), so memory follows
the text's length in numbers per position, never [n, V].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from samplecli.analysis.scoring import default_stride, window_logits
from samplecli.backends.base import TEACHER_FORCE
from samplecli.engine.events import json_number
from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend

TOP_TOKENS = 3  # each model's most probable tokens kept per position, for the positions shown
KL_PERCENTILES = (50.0, 90.0, 99.0, 99.9)  # then the maximum, as llama.cpp lists them
DELTA_P_PERCENTILES = (1.0, 10.0, 50.0, 90.0, 99.0)  # between the minimum and the maximum: Δp has two tails


@dataclass
class Divergence:
    """Per-position numbers of two models on one text (float64 tensors of length `tokens`), and the text's ids.

    `ids[offset + i]` is the i-th scored token; `top_a`/`top_b` hold each model's TOP_TOKENS most probable ids
    there and `top_prob_a`/`top_prob_b` their probabilities."""

    model_a: str
    model_b: str
    ids: list[int]
    offset: int  # ids[offset] is the text's first token (after BOS)
    characters: int
    context: int
    stride: int
    kl: torch.Tensor
    nats_a: torch.Tensor  # -log p_A(true token)
    nats_b: torch.Tensor
    top_a: torch.Tensor  # (tokens, TOP_TOKENS) ids
    top_b: torch.Tensor
    top_prob_a: torch.Tensor
    top_prob_b: torch.Tensor

    @property
    def tokens(self) -> int:
        return self.kl.numel()

    @property
    def delta_p(self) -> torch.Tensor:
        return (-self.nats_b).exp() - (-self.nats_a).exp()

    @property
    def same_top(self) -> torch.Tensor:
        return self.top_a[:, 0] == self.top_b[:, 0]


@dataclass(frozen=True)
class Estimate:
    """A mean over positions and its standard error (the sample's standard deviation / sqrt(n))."""

    mean: float
    error: float


def mean_with_error(values: torch.Tensor) -> Estimate:
    """The mean of `values` and its standard error, sqrt(var / n) with var the unbiased sample variance
    (llama.cpp's `± ` beside each mean)."""
    n = values.numel()
    mean = float(values.mean())
    if n < 2:
        return Estimate(mean, math.nan)
    return Estimate(mean, float(values.var(correction=1)) ** 0.5 / math.sqrt(n))


def percentiles(values: torch.Tensor, points: tuple[float, ...]) -> list[float]:
    """Each percentile of `values`, linearly interpolated between order statistics (numpy's default)."""
    import torch

    if not values.numel():
        return [math.nan for _ in points]
    ordered = torch.sort(values).values
    n = ordered.numel()
    out = []
    for point in points:
        rank = point / 100 * (n - 1)
        low = math.floor(rank)
        high = min(low + 1, n - 1)
        out.append(float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low)))
    return out


@dataclass(frozen=True)
class Summary:
    """The table llama.cpp users know, from a `Divergence`."""

    tokens: int
    nats_per_token_a: float
    nats_per_token_b: float
    ln_ppl_ratio: Estimate  # mean of nats_b - nats_a = ln(PPL(B) / PPL(A))
    kl: Estimate
    kl_percentiles: dict[str, float]  # "50", "90", "99", "99.9", "max"
    delta_p: Estimate
    delta_p_rms: float
    delta_p_percentiles: dict[str, float]  # "min", "1", ..., "99", "max"
    same_top: Estimate  # a fraction

    @property
    def perplexity_a(self) -> float:
        return math.exp(self.nats_per_token_a)

    @property
    def perplexity_b(self) -> float:
        return math.exp(self.nats_per_token_b)

    @property
    def ppl_ratio(self) -> float:
        return math.exp(self.ln_ppl_ratio.mean)


def _label(point: float) -> str:
    return f"{point:g}"


def summarize(d: Divergence) -> Summary:
    """The statistics of llama.cpp's `--kl-divergence` run, over every scored position."""
    delta_p = d.delta_p
    kl_points = percentiles(d.kl, (*KL_PERCENTILES, 100.0))
    dp_points = percentiles(delta_p, (0.0, *DELTA_P_PERCENTILES, 100.0))
    same = d.same_top.double()
    return Summary(
        tokens=d.tokens,
        nats_per_token_a=float(d.nats_a.mean()), nats_per_token_b=float(d.nats_b.mean()),
        ln_ppl_ratio=mean_with_error(d.nats_b - d.nats_a),
        kl=mean_with_error(d.kl),
        kl_percentiles={**{_label(p): v for p, v in zip(KL_PERCENTILES, kl_points, strict=False)},
                        "max": kl_points[-1]},
        delta_p=mean_with_error(delta_p),
        delta_p_rms=float(delta_p.square().mean().sqrt()),
        delta_p_percentiles={"min": dp_points[0],
                             **{_label(p): v for p, v in zip(DELTA_P_PERCENTILES, dp_points[1:-1], strict=True)},
                             "max": dp_points[-1]},
        same_top=mean_with_error(same),
    )


def check_pair(a: Backend, b: Backend, text_ids_a: list[int], text_ids_b: list[int]) -> None:
    """Refuse, in one line and before any forward pass, a pair that cannot be compared position by position:
    either model without every token's probability, different vocabularies, BOS or tokenizations of the text."""
    for lm, flag in ((a, "--model"), (b, "--against")):
        if TEACHER_FORCE not in lm.capabilities or lm.top_n is not None:  # a top N leaves the rest at -inf
            given = f"returns its top {lm.top_n} log-probabilities per token" if lm.top_n is not None else \
                "cannot give the scores after every position of a text"
            raise UsageError(f"{flag} {lm.name}: KL between two models needs every token's probability, and "
                             f"{lm.engine or lm.name} {given}; use llama.cpp's server with --full-distribution, or a "
                             "model in process (-m DIR, or -m FILE.gguf)")
    check_same_tokenizer(a, b, text_ids_a, text_ids_b, "the text", "KL")


def check_same_tokenizer(a: Backend, b: Backend, ids_a: list[int], ids_b: list[int], what: str, needs: str) -> None:
    """One line, before any forward pass, where `b` (--against) cannot be read token by token beside `a`: another
    vocabulary size, another BOS, or `what` (the text, the prompt) split into other tokens. `needs` names what
    needs the same tokenizer (KL, coupled columns)."""
    tail = f"{needs} needs two models with the same tokenizer"
    if a.vocab_size != b.vocab_size:
        raise UsageError(f"--against {b.name}: its vocabulary has {b.vocab_size} tokens and {a.name}'s has "
                         f"{a.vocab_size}; {tail}")
    if a.bos_token_id != b.bos_token_id:
        raise UsageError(f"--against {b.name}: its BOS token is {b.bos_token_id} and {a.name}'s is "
                         f"{a.bos_token_id}; {tail}")
    if ids_a != ids_b:
        where = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y),
                     min(len(ids_a), len(ids_b)))
        raise UsageError(f"--against {b.name}: it splits {what} into other tokens than {a.name} (first at token "
                         f"{where}); {tail}")


def kl_from_logs(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """KL(A || B) per row from both log-probabilities: sum of p_A (log p_A - log p_B) over the tokens A gives
    probability > 0. Taken from the logs themselves (not log(exp(.)) again), so a model against itself is 0 exactly."""
    import torch

    p_a = logp_a.exp()
    return torch.where(p_a > 0, p_a * (logp_a - logp_b), torch.zeros_like(p_a)).sum(dim=-1)


def aligned_rows(*streams: Iterator[tuple[int, torch.Tensor]]) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Streams of (first position, rows) over the same positions, each cut into pieces of its own sizes,
    regrouped as (first position, [each stream's rows]) of equal length."""
    held: list[tuple[int, torch.Tensor] | None] = [None] * len(streams)  # what each stream gave, not yet yielded
    while True:
        held = [h if h is not None else next(stream, None) for h, stream in zip(held, streams, strict=True)]
        if any(h is None for h in held):
            if not all(h is None for h in held):
                raise RuntimeError("the models scored different numbers of positions")
            return
        firsts = {first for first, _ in held}
        if len(firsts) != 1:
            raise RuntimeError(f"the models' scores are out of step: positions {sorted(firsts)}")
        first = firsts.pop()
        n = min(rows.shape[0] for _, rows in held)
        yield first, [rows[:n] for _, rows in held]
        held = [(first + n, rows[n:]) if n < rows.shape[0] else None for _, rows in held]


def diverge(a: Backend, b: Backend, text: str, stride: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> Divergence:
    """Teacher-force `text` (BOS where the models have one, then its tokens) through both models, window by
    window with the same windows (the smaller of their contexts), and measure every scored position."""
    return diverge_many(a, [b], text, stride, progress)[0]


def diverge_many(a: Backend, others: list[Backend], text: str, stride: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Divergence]:
    """`diverge` of `a` against each of `others`, `a` run once: one forward pass per window for each model."""
    import torch

    text_ids = a.encode_for_scoring(text, add_special_tokens=False)
    for b in others:
        check_pair(a, b, text_ids, b.encode_for_scoring(text, add_special_tokens=False))
    prefix = [a.bos_token_id] if a.bos_token_id is not None else []
    ids = torch.tensor(prefix + text_ids, dtype=torch.long)
    offset = len(prefix)
    context = min(lm.context_length or 1024 for lm in (a, *others))
    stride = default_stride(context) if stride is None else stride
    if not 1 <= stride <= context - 1:
        raise UsageError(f"--stride has to be in [1, {context - 1}] for a context of {context}, but is {stride}")
    if ids.numel() < 2:
        raise UsageError("the text is too short to score: it needs at least one token after BOS")
    tokens = ids.numel() - max(offset, 1)
    first_scored = max(offset, 1)
    own: dict[str, list[torch.Tensor]] = {}  # a's numbers
    pairs: list[dict[str, list[torch.Tensor]]] = [{} for _ in others]  # each other model's, and its KL
    streams = [window_logits(lm, ids, context, stride) for lm in (a, *others)]
    for first, rows in aligned_rows(*streams):
        if first + rows[0].shape[0] <= first_scored:
            continue
        if first < first_scored:
            rows, first = [r[first_scored - first :] for r in rows], first_scored
        targets = ids[first : first + rows[0].shape[0]].unsqueeze(-1)
        logp_a = torch.log_softmax(rows[0], dim=-1)
        top_a = torch.topk(logp_a, TOP_TOKENS, dim=-1)
        for name, values in (("nats_a", -logp_a.gather(-1, targets).squeeze(-1)), ("top_a", top_a.indices),
                             ("top_prob_a", top_a.values.exp())):
            own.setdefault(name, []).append(values)
        for pair, rows_b in zip(pairs, rows[1:], strict=True):
            logp_b = torch.log_softmax(rows_b, dim=-1)
            top_b = torch.topk(logp_b, TOP_TOKENS, dim=-1)
            for name, values in (("kl", kl_from_logs(logp_a, logp_b)),
                                 ("nats_b", -logp_b.gather(-1, targets).squeeze(-1)), ("top_b", top_b.indices),
                                 ("top_prob_b", top_b.values.exp())):
                pair.setdefault(name, []).append(values)
            del logp_b
        del rows, logp_a
        if progress is not None:
            progress(first + targets.shape[0] - first_scored, tokens)
    joined_a = {name: torch.cat(pieces) for name, pieces in own.items()}
    return [Divergence(model_a=a.name, model_b=b.name, ids=ids.tolist(), offset=offset, characters=len(text),
                       context=context, stride=stride, **joined_a,
                       **{name: torch.cat(pieces) for name, pieces in pair.items()})
            for b, pair in zip(others, pairs, strict=True)]


@dataclass(frozen=True)
class Departure:
    """One position where the models part: the scored token, the text before and after it, and each model's
    most probable tokens there."""

    position: int  # index in the text's tokens (0 is the text's first)
    token_id: int
    kl: float
    prob_a: float
    prob_b: float
    before: str
    token: str
    after: str
    top_a: tuple[tuple[int, float], ...]
    top_b: tuple[tuple[int, float], ...]


def departures(d: Divergence, decode: Callable[[list[int]], str], count: int = 10,
               around: int = 8) -> list[Departure]:
    """The `count` positions of largest KL(A || B), largest first, each with `around` tokens of text either side."""
    import torch

    ranked = torch.argsort(d.kl, descending=True, stable=True)[:count].tolist()
    first_scored = max(d.offset, 1)
    out = []
    for i in ranked:
        at = first_scored + i  # index in ids
        out.append(Departure(
            position=at - d.offset, token_id=d.ids[at], kl=float(d.kl[i]),
            prob_a=math.exp(-float(d.nats_a[i])), prob_b=math.exp(-float(d.nats_b[i])),
            before=decode(d.ids[max(d.offset, at - around) : at]), token=decode([d.ids[at]]),
            after=decode(d.ids[at + 1 : at + 1 + around]),
            top_a=tuple(zip(d.top_a[i].tolist(), d.top_prob_a[i].tolist(), strict=True)),
            top_b=tuple(zip(d.top_b[i].tolist(), d.top_prob_b[i].tolist(), strict=True))))
    return out


def per_token_records(d: Divergence, token_text: Callable[[int], str]) -> Iterator[dict]:
    """`--per-token`: one record per scored position (JSONL), in text order: the token, KL(A || B) there, each
    model's probability and surprisal of it (`_against`: B's), Δp, and each model's most probable token. A KL that
    is not finite (B gives a token of A's probability 0) is None: JSON has no Infinity."""
    first_scored = max(d.offset, 1)
    for i in range(d.tokens):
        token_id, top_a, top_b = d.ids[first_scored + i], int(d.top_a[i, 0]), int(d.top_b[i, 0])
        nats_a, nats_b = float(d.nats_a[i]), float(d.nats_b[i])
        yield {"position": first_scored + i - d.offset, "token_id": token_id, "token": token_text(token_id),
               "kl": json_number(float(d.kl[i])), "prob": math.exp(-nats_a), "prob_against": math.exp(-nats_b),
               "nats": nats_a, "nats_against": nats_b, "delta_p": math.exp(-nats_b) - math.exp(-nats_a),
               "top_id": top_a, "top_token": token_text(top_a), "top_id_against": top_b,
               "top_token_against": token_text(top_b)}
