"""The core transforms: temperature, top-k, top-p, min-p, typical, repetition penalty, no-repeat n-gram.

Each one matches the transformers warper or processor of the same parameters (checked in the tests on
random logits), except where a cut falls between tied tokens: here ties are broken by the lowest
token id, so a cut never keeps more tokens than asked for.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.strategies.base import Transform, mask_at, register
from samplecli.strategies.ranking import PARTIAL_MIN_COLUMNS, descending, top_ids, top_sorted
from samplecli.strategies.schema import param

if TYPE_CHECKING:
    import torch


PREFIX_START = 256  # the first guess of how many top tokens a cut needs; it grows 4x until the cut is inside


def _prefix(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of `descending(x)`: `top_sorted` while k is a small part of the row, else the whole sort."""
    return top_sorted(x, k) if 4 * k <= x.shape[-1] else descending(x)


def _keep_sorted(logits: torch.Tensor, order: torch.Tensor, keep_sorted: torch.Tensor) -> torch.Tensor:
    """Filter `logits` to the tokens whose position in `order` is marked in `keep_sorted`."""
    import torch

    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


@register
class Temperature(Transform):
    """Divide the logits by T: p_i = exp(z_i / T) / sum_j exp(z_j / T) (Hinton et al. 2015).

    The ranking of tokens is unchanged; T < 1 sharpens the distribution, T > 1 flattens it, and
    T -> 0 approaches the argmax, and T = 0 is that limit: the top token(s) alone (`--temp 0` and a preset's
    `temperature = 0` choose the `greedy` selector instead of this stage).

    Args:
        temperature: a float >= 0.

    Example: `Temperature(temperature=0.5)` doubles every logit.
    """

    name = "temperature"
    llama_cpp = "temperature"
    kind = "reshaping"
    source = "Hinton et al. 2015; transformers TemperatureLogitsWarper"
    params = (param("temperature"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.temperature == 0:
            return _top_alone(logits)
        scaled = logits / self.temperature
        # A tiny T overflows the top logits to +inf (or, below float32's smallest T, gives 0 / 0), and softmax
        # would return NaN; such a row takes the T -> 0 limit instead.
        overflowed = (torch.isposinf(scaled) | torch.isnan(scaled)).any(dim=-1, keepdim=True)
        if overflowed.any():
            scaled = torch.where(overflowed, _top_alone(logits), scaled)
        return scaled


def _top_alone(logits: torch.Tensor) -> torch.Tensor:
    """The T -> 0 limit of `logits / T`: each row's top token(s) at 0, the rest -inf."""
    import torch

    return torch.zeros_like(logits).masked_fill(logits < logits.amax(dim=-1, keepdim=True), float("-inf"))


@register
class TopK(Transform):
    """Keep the k most probable tokens (Fan et al. 2018). k = 0, or k >= vocabulary size, is off.

    Args:
        top_k: an integer >= 0.
    """

    name = "top-k"
    llama_cpp = "top_k"
    kind = "truncation"
    source = "Fan et al. 2018; transformers TopKLogitsWarper"
    params = (param("top_k"),)

    def __call__(self, logits, input_ids):

        vocab = logits.shape[-1]
        if self.top_k == 0 or self.top_k >= vocab:
            return logits.clone()
        return logits.masked_fill(~mask_at(logits, top_ids(logits, self.top_k)), float("-inf"))


@register
class TopP(Transform):
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most probable tokens whose
    probability mass reaches p. A token is kept when the mass of the tokens ranked above it is < p,
    so the token that crosses the threshold stays. p = 1 is off.

    Args:
        top_p: a float in (0, 1].

    Example: probabilities (0.4, 0.3, 0.2, 0.1) with p = 0.6 keep the first two, renormalised to
    (0.571429, 0.428571).
    """

    name = "top-p"
    llama_cpp = "top_p"
    aliases = ("nucleus",)
    kind = "truncation"
    source = "Holtzman et al. 2019; transformers TopPLogitsWarper"
    params = (param("top_p"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.top_p >= 1.0:
            return logits.clone()
        # the nucleus from the top k alone, k growing until the cut falls inside it: the probabilities against
        # the whole row's sum, the mass above each token by the same running sum a full sort would take
        total = None
        size = logits.shape[-1]
        # the first guess: what the last call kept (a model's next distributions are alike from step to step)
        k = min(max(PREFIX_START, self.__dict__.get("_guess", 0)), size) if size >= PARTIAL_MIN_COLUMNS else size
        while True:
            sorted_logits, order = _prefix(logits, k)
            if order.shape[-1] == size:  # the whole row sorted: its softmax
                probs = torch.softmax(sorted_logits.double(), dim=-1)
            else:
                if total is None:
                    total = torch.logsumexp(logits.double(), dim=-1, keepdim=True)
                probs = torch.exp(sorted_logits.double() - total)
            mass_above = probs.cumsum(dim=-1) - probs
            keep_sorted = mass_above < self.top_p
            keep_sorted[..., 0] = True
            short = keep_sorted[..., -1]  # the rows whose cut lies beyond the k found
            if order.shape[-1] == size or not bool(short.any()):
                break
            # the tokens past the k found are each no more probable than the k-th: reaching p takes at least
            # (p - their mass) / p_k more of them (a flat row, a random-init model's, goes to the whole sort at once)
            missing = (self.top_p - probs.sum(dim=-1)) / probs[..., -1]
            more = float(torch.where(short, missing, torch.zeros_like(missing)).max())
            k = min(size, max(2 * k, k + math.ceil(more) if math.isfinite(more) else size))
        self._guess = int(keep_sorted.sum(dim=-1).max()) * 5 // 4 + 1
        return _keep_sorted(logits, order, keep_sorted)


@register
class MinP(Transform):
    """Keep tokens whose probability is at least min_p times the top token's (Nguyen et al. 2024).
    min_p = 0 is off; min_p = 1 keeps only the tokens tied with the top.

    Args:
        min_p: a float in [0, 1].
    """

    name = "min-p"
    llama_cpp = "min_p"
    kind = "truncation"
    source = "Nguyen et al. 2024; llama.cpp min_p; transformers MinPLogitsWarper"
    params = (param("min_p"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.min_p == 0.0:
            return logits.clone()
        probs = torch.softmax(logits, dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        remove.scatter_(-1, logits.argmax(dim=-1, keepdim=True), False)
        return logits.masked_fill(remove, float("-inf"))


@register
class Typical(Transform):
    """Locally typical sampling (Meister et al. 2023): rank tokens by how far their surprisal is from
    the distribution's entropy, |-log p_i - H|, and keep the closest ones until their mass reaches
    typical_p. typical_p = 1 is off.

    Args:
        typical_p: a float in (0, 1].
    """

    name = "typical"
    llama_cpp = "typ_p"
    kind = "truncation"
    source = "Meister et al. 2023; transformers TypicalLogitsWarper"
    params = (param("typical_p"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.typical_p >= 1.0:
            return logits.clone()
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).nansum(dim=-1, keepdim=True)
        distance = (-logp - entropy).abs()
        # the closest tokens first (the stable ascending order of distance is the descending order of -distance),
        # k of them, k growing until the mass reaches typical_p inside them; then every token as close as the
        # last one needed stays (a threshold over the row, so ties beyond the k found stay too)
        k = PREFIX_START if logits.shape[-1] >= PARTIAL_MIN_COLUMNS else logits.shape[-1]
        while True:
            negative_distance, order = _prefix(-distance, k)
            sorted_probs = logp.gather(-1, order).exp()
            last = (sorted_probs.cumsum(dim=-1) < self.typical_p).sum(dim=-1, keepdim=True)
            if order.shape[-1] == logits.shape[-1] or bool((last < order.shape[-1]).all()):
                break
            k *= 4
        last = last.clamp(max=order.shape[-1] - 1)
        keep = distance <= -negative_distance.gather(-1, last)
        keep.scatter_(-1, order[..., :1], True)
        return logits.masked_fill(~keep, float("-inf"))


@register
class RepetitionPenalty(Transform):
    """Penalise every token already in the sequence, prompt included (Keskar et al. 2019, CTRL):
    its logit is divided by the penalty when positive and multiplied by it when negative.
    A penalty of 1 is off; > 1 discourages repetition, < 1 encourages it.

    Args:
        repetition_penalty: a float > 0.
    """

    name = "repetition-penalty"
    llama_cpp = "penalties"
    kind = "penalty"
    source = "Keskar et al. 2019; transformers RepetitionPenaltyLogitsProcessor"
    params = (param("repetition_penalty"),)

    def __call__(self, logits, input_ids):
        import torch

        if input_ids.shape[-1] == 0 or self.repetition_penalty == 1.0:
            return logits.clone()
        seen = logits.gather(-1, input_ids)
        seen = torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
        return logits.scatter(-1, input_ids, seen)


@register
class NoRepeatNGram(Transform):
    """Ban any token that would repeat an n-gram already in the sequence (prompt included), as in
    transformers' NoRepeatNGramLogitsProcessor (Paulus et al. 2017).

    Args:
        no_repeat_ngram_size: an integer >= 1 (the n of the n-grams); 0 is off.
    """

    name = "no-repeat-ngram"
    kind = "penalty"
    source = "Paulus et al. 2017; transformers NoRepeatNGramLogitsProcessor"
    params = (param("no_repeat_ngram_size"),)

    def __call__(self, logits, input_ids):
        n = self.no_repeat_ngram_size
        out = logits.clone()
        if n == 0 or input_ids.shape[-1] + 1 < n:
            return out
        for row, ids in enumerate(input_ids.tolist()):
            prefix = tuple(ids[len(ids) - n + 1 :]) if n > 1 else ()
            banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix]
            if banned:
                out[row, banned] = float("-inf")
        return out
