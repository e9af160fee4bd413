"""Information measures on distributions (rows of a tensor): entropy, KL divergence, cross-entropy."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LN2 = math.log(2)  # nats per bit: bits = nats / LN2


def entropy_nats(x: torch.Tensor, is_log: bool = True) -> torch.Tensor:
    """H(p) = -sum_i p_i log p_i in nats, per row; zero-probability entries contribute 0.

    `x` is log-probabilities (default) or probabilities (`is_log=False`).
    """
    import torch

    if is_log:
        terms = x.exp().mul_(x).nan_to_num_(nan=0.0)  # 0 * -inf is nan: a filtered token adds 0; one temporary
        return -terms.sum(dim=-1)
    return torch.special.entr(x).sum(dim=-1)


def kl_nats(p: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i (log p_i - log q_i) in nats, per row; `p` are probabilities and
    `q_log` log-probabilities. Terms with p_i = 0 contribute 0; p_i > 0 where q_i = 0 gives inf. A KL is never
    negative: where p = q the terms' rounding can sum to -1e-7, which is reported as the 0 it is."""
    import torch

    log_p = torch.log(p)
    terms = torch.where(p > 0, p * (log_p - q_log), torch.zeros_like(p))
    return terms.sum(dim=-1).clamp(min=0.0)


def kept_measures(probs: torch.Tensor, q_log: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of a strategy's distribution `probs` against the model's log-probabilities `q_log`: its entropy
    (nats), how many tokens it keeps (p > 0, as a float) and KL(probs || q), the numbers of
    `entropy_nats(probs, is_log=False)`, `(probs > 0).sum(-1)` and `kl_nats(probs, q_log)`. Where every row
    keeps a small part of the vocabulary (a truncation keeps tens of 152k tokens), the sums run over the kept
    tokens alone, found by one `topk`, instead of three passes over the whole row."""
    import torch

    kept = (probs > 0).sum(dim=-1)
    widest = int(kept.max()) if kept.numel() else 0
    if widest * 8 > probs.shape[-1]:
        return entropy_nats(probs, is_log=False), kept.to(probs.dtype), kl_nats(probs, q_log)
    p, ids = torch.topk(probs, max(widest, 1), dim=-1, sorted=False)  # each row's kept tokens, then zeros
    return entropy_nats(p, is_log=False), kept.to(probs.dtype), kl_nats(p, q_log.gather(-1, ids))


def entropy_bounds_nats(logp: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds on the entropy of a distribution known only through its top N tokens, per row.

    `logp` holds the true log-probabilities of the N returned tokens and -inf elsewhere; the unseen tokens share
    the tail mass m = 1 - sum of the returned probabilities, each at most the smallest returned probability
    p_min (they ranked below it). The known tokens give H_known = -sum p_i log p_i exactly; the tail adds
    - at least what it adds when it is as concentrated as allowed: floor(m / p_min) tokens of p_min and one of
      the remainder r, i.e. -(floor(m / p_min) p_min log p_min + r log r);
    - at most what it adds spread evenly over the V - N unseen tokens: -m log(m / (V - N)).
    Returns (lower, upper, tail mass); where m is 0 (to float precision) both bounds are H_known.
    """
    import torch

    logp = logp.double()
    finite = torch.isfinite(logp)
    p = torch.where(finite, logp.exp(), torch.zeros_like(logp))
    known = -(torch.where(finite, p * logp, torch.zeros_like(logp))).sum(-1)
    tail = (1.0 - p.sum(-1)).clamp(min=0.0)
    p_min = torch.where(finite, p, torch.full_like(p, float("inf"))).amin(-1).clamp(min=1e-300)
    unseen = (vocab_size - finite.sum(-1)).clamp(min=1).double()
    whole = torch.floor(tail / p_min)
    rest = (tail - whole * p_min).clamp(min=0.0)
    low = known - whole * p_min * torch.log(p_min) - torch.special.xlogy(rest, rest)
    high = known - torch.special.xlogy(tail, tail / unseen)
    empty = tail <= 1e-12
    return torch.where(empty, known, low), torch.where(empty, known, high), tail


def top_n_entropy_bounds(logprobs: Iterable[float], vocab_size: int) -> tuple[float, float, float]:
    """`entropy_bounds_nats` for one distribution known through the log-probabilities of its top N tokens, in
    plain floats (no torch: a streamed step from a server needs nothing else). Returns (lower, upper, tail mass).
    """
    p = [math.exp(lp) for lp in logprobs if lp > -math.inf]
    known = -sum(x * math.log(x) for x in p if x > 0)
    tail = max(0.0, 1.0 - sum(p))
    if tail <= 1e-12 or not p:
        return known, known, tail
    p_min = max(min(p), 1e-300)
    unseen = max(vocab_size - len(p), 1)
    whole = math.floor(tail / p_min)
    rest = max(0.0, tail - whole * p_min)
    low = known - whole * p_min * math.log(p_min) - (rest * math.log(rest) if rest > 0 else 0.0)
    return low, known - tail * math.log(tail / unseen), tail
