"""Mirostat v1 and v2 (Basu et al. 2021): selectors that steer each sequence's surprise towards a target.

Both keep one number per sequence, mu (the surprise cut, in bits), set to 2 * tau by `reset` and updated
by `accept` after every step: mu <- mu - eta * (surprise - tau), where surprise = -log2 p of the chosen
token under the truncated, renormalised distribution it was drawn from (both handed to `accept`; nothing is
kept from `select`). Each row of a batch has its own mu, so samples decoded together behave exactly as if
decoded alone; `clone` copies it. `distribution` only reads mu, so the decode loop, `inspect` and `score` may
call it freely; like `sample`, the draw is an inverse CDF over the raw model's order, so mirostat couples
with other strategies in `compare`. Follows llama.cpp's `mirostat` and `mirostat-v2` samplers (src/llama-sampling.cpp).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.strategies.base import Param, argmax_mask, register
from samplecli.strategies.selectors import Sample

if TYPE_CHECKING:
    import torch

TAU = Param("tau", float, 5.0, "> 0", lambda v: v > 0 and math.isfinite(v), "target surprise, in bits",
            llama_cpp="mirostat_tau")
ETA = Param("eta", float, 0.1, "> 0", lambda v: v > 0 and math.isfinite(v), "learning rate of mu",
            llama_cpp="mirostat_eta")


class _Mirostat(Sample):
    """The per-sequence state and update shared by both versions; subclasses define the truncation."""

    stochastic = True

    def __init__(self, **values) -> None:
        super().__init__(**values)
        self.mu: list[float] = []

    def reset(self, batch_size, first_row=0):
        self.mu = [2.0 * self.tau] * batch_size

    def clone(self):
        twin = super().clone()
        twin.mu = list(self.mu)
        return twin

    def _mu(self, rows: int) -> list[float]:
        if len(self.mu) != rows:  # used outside a decode run (inspect, score): start fresh
            self.reset(rows)
        return self.mu

    def accept(self, token_ids, probs):
        """mu <- mu - eta * (surprise - tau), per row, with the surprise of the accepted token under `probs`, the
        distribution it was drawn from (this selector's truncated one). A token that distribution gave no mass
        (a finished row's padding) leaves mu as it is."""
        picked = probs.double().gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).tolist()
        mu = self._mu(len(picked))
        for row, prob in enumerate(picked):
            if prob > 0:
                mu[row] -= self.eta * (-math.log2(prob) - self.tau)

    def _renormalised(self, probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        kept = probs.masked_fill(~keep, 0.0)
        return (kept / kept.sum(dim=-1, keepdim=True)).float()


@register
class MirostatV2(_Mirostat):
    """Mirostat 2.0: drop the tokens whose surprise exceeds mu, sample, and move mu towards tau.

    Per row: surprise_i = -log2 p_i; keep the tokens with surprise_i <= mu (the most probable token
    when none qualifies), renormalise, draw, then mu <- mu - eta * (surprise - tau) with the chosen token's
    surprise under the renormalised distribution; mu starts at 2 * tau (Basu et al. 2021, algorithm 2;
    llama.cpp's `mirostat-v2`).

    Args:
        tau: a float > 0, the target surprise in bits (llama.cpp's default 5).
        eta: a float > 0, the learning rate (default 0.1).

    Example: probabilities (0.4, 0.3, 0.2, 0.1) have surprises (1.321928, 1.736966, 2.321928, 3.321928);
    tau 0.6 gives mu = 1.2, below them all, so only the top token stays; choosing it (surprise 0) with
    eta 1 moves mu to 1.2 - (0 - 0.6) = 1.8, and the next step keeps (0.4, 0.3) / 0.7.
    """

    name = "mirostat-v2"
    aliases = ("mirostat2",)
    source = "Basu et al. 2021 (Mirostat 2.0); llama.cpp mirostat-v2"
    params = (TAU, ETA)

    def distribution(self, logits):
        import torch

        probs = torch.softmax(logits.double(), dim=-1)
        mu = torch.tensor(self._mu(logits.shape[0]), dtype=torch.float64, device=logits.device).unsqueeze(-1)
        keep = -torch.log2(probs) <= mu
        keep = torch.where(keep.any(dim=-1, keepdim=True), keep, argmax_mask(logits))
        return self._renormalised(probs, keep)


@register
class Mirostat(_Mirostat):
    """Mirostat (v1): estimate the Zipf exponent, keep the top k tokens that hit the target surprise.

    Per row (Basu et al. 2021, algorithm 1; llama.cpp's `mirostat`): from the m most probable tokens,
    s = sum(t_i b_i) / sum(t_i^2) with t_i = ln((i + 2) / (i + 1)) and b_i = ln(p_i / p_(i+1)); then
    with e = s - 1 and N the vocabulary size, k = (e * 2^mu / (1 - N^-e))^(1 / s); keep the top
    max(floor(k), 1) tokens, renormalise, draw, and update mu as v2 does. Where k is not a finite number
    (a flat top, or mu so large that 2^mu overflows) every token still in play stays.

    Args:
        tau: a float > 0, the target surprise in bits.
        eta: a float > 0, the learning rate.
        m: an integer >= 2, how many top tokens estimate s (llama.cpp fixes it at 100).

    Example: probabilities (0.4, 0.3, 0.2, 0.1) give s = 0.563214 / 0.727616 = 0.774054; tau 0.85
    (mu = 1.7) gives k = (0.614262 * 2^1.7)^(1 / 0.774052) = 2.4418, so the top 2 stay: (0.4, 0.3) / 0.7.
    """

    name = "mirostat"
    aliases = ("mirostat-v1", "mirostat1")
    source = "Basu et al. 2021 (Mirostat); llama.cpp mirostat"
    params = (TAU, ETA, Param("m", int, 100, ">= 2", lambda v: v >= 2, "top tokens used to estimate s"))

    def cutoff(self, top_probs: list[float], mu: float, vocab: int) -> float:
        """k for one row, from its most probable tokens' probabilities (descending, all > 0)."""
        terms = range(min(self.m - 1, len(top_probs) - 1))
        t = [math.log((i + 2) / (i + 1)) for i in terms]
        b = [math.log(top_probs[i] / top_probs[i + 1]) for i in terms]
        try:
            s = sum(ti * bi for ti, bi in zip(t, b, strict=True)) / sum(ti * ti for ti in t)
            e = s - 1
            k = ((e * 2.0 ** mu) / (1 - vocab ** -e)) ** (1 / s)
        except (ZeroDivisionError, OverflowError):
            return math.inf
        return k if isinstance(k, float) and not math.isnan(k) else math.inf

    def distribution(self, logits):
        import torch

        probs = torch.softmax(logits.double(), dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        candidates = (sorted_probs > 0).sum(dim=-1).tolist()
        tops = sorted_probs[:, : self.m].tolist()
        keep_sorted = torch.zeros_like(probs, dtype=torch.bool)
        for row, mu in enumerate(self._mu(logits.shape[0])):
            k = self.cutoff(tops[row][: candidates[row]], mu, logits.shape[-1])
            keep_sorted[row, : min(max(int(k), 1), candidates[row]) if math.isfinite(k) else candidates[row]] = True
        keep = keep_sorted.scatter(-1, order, keep_sorted)
        return self._renormalised(probs, keep)
