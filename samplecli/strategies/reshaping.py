"""Reshaping samplers that change logits without looking at the history: dynamic temperature and logit bias."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.errors import UsageError
from samplecli.strategies.base import Param, Transform, register
from samplecli.strategies.schema import param

if TYPE_CHECKING:
    import torch


def check_ids_in_vocab(owner: str, ids, vocab: int) -> None:
    """Raise a UsageError naming the first id that is not below `vocab` (known only once logits arrive)."""
    outside = sorted(i for i in ids if i >= vocab)
    if outside:
        raise UsageError(f"{owner}: token id {outside[0]} is outside the model's vocabulary ({vocab} tokens)")


def greedy_limit(logits: torch.Tensor) -> torch.Tensor:
    """The T -> 0 limit of logits / T: 0 at the row's top token(s), -inf elsewhere."""
    import torch

    return torch.zeros_like(logits).masked_fill(logits < logits.amax(dim=-1, keepdim=True), float("-inf"))


@register
class DynamicTemperature(Transform):
    """Entropy-scaled temperature: flat distributions get a higher T, peaked ones a lower T.

    As llama.cpp's `temp-ext` (dynamic temperature, after kalomaze 2023): with T0 = temperature and
    r = dynatemp_range, T ranges over [max(0, T0 - r), T0 + r] and is set per row and step from the
    normalised entropy of the tokens still in play (those not already filtered, n of them):

        T = T_min + (T_max - T_min) * (H / ln n) ^ dynatemp_exponent

    Rows with fewer than two candidates are left as they are. A range of 0 is plain temperature T0, and
    T = 0 is the greedy limit (the top token(s) at 0, the rest -inf).

    Args:
        dynatemp_range: a float >= 0 (0: plain temperature).
        temperature: a float >= 0, the middle of the range.
        dynatemp_exponent: a float >= 0.

    Example: probabilities (0.4, 0.3, 0.2, 0.1) have H = 1.279854 and ln 4 = 1.386294, ratio 0.923220;
    temperature 1, range 0.5 and exponent 1 give T = 0.5 + 1.0 * 0.923220 = 1.423220.
    """

    name = "dynatemp"
    llama_cpp = "temperature"  # temp-ext: dynamic where dynatemp_range > 0
    aliases = ("dynamic-temperature", "temp-ext", "dynatemp_range")
    kind = "reshaping"
    source = "llama.cpp temp-ext (dynamic temperature, kalomaze 2023)"
    params = (
        Param("dynatemp_range", float, 0.5, ">= 0 (0 is plain temperature)", lambda v: v >= 0 and math.isfinite(v),
              "half-width of the temperature range", llama_cpp="dynatemp_range"),
        param("temperature"),  # the middle of the range
        Param("dynatemp_exponent", float, 1.0, ">= 0", lambda v: v >= 0 and math.isfinite(v),
              "exponent on the normalised entropy", llama_cpp="dynatemp_exponent"),
    )

    def temperatures(self, logits: torch.Tensor) -> torch.Tensor:
        """The temperature each row gets, shape (rows, 1); NaN for rows left unchanged (< 2 candidates)."""
        import torch

        from samplecli.stats import entropy_nats

        rows = logits.shape[0]
        if self.dynatemp_range == 0.0:
            return torch.full((rows, 1), self.temperature, dtype=torch.float64)
        low = max(0.0, self.temperature - self.dynatemp_range)
        high = self.temperature + self.dynatemp_range
        candidates = torch.isfinite(logits).sum(dim=-1, keepdim=True).double()
        logp = torch.log_softmax(logits.double(), dim=-1)
        entropy = entropy_nats(logp).unsqueeze(-1)
        ratio = (entropy / candidates.log()).clamp(0.0, 1.0)
        temperature = low + (high - low) * ratio.pow(self.dynatemp_exponent)
        return temperature.masked_fill(candidates < 2, float("nan"))

    def __call__(self, logits, input_ids):
        import torch

        temperature = self.temperatures(logits)
        unchanged = torch.isnan(temperature)
        scaled = (logits.double() / temperature.clamp(min=0)).to(logits.dtype)
        # T = 0, or a T so small that the top logits overflow: the T -> 0 limit, as the temperature transform
        limit = (temperature == 0) | (torch.isposinf(scaled) | torch.isnan(scaled)).any(dim=-1, keepdim=True)
        scaled = torch.where(limit & ~unchanged, greedy_limit(logits), scaled)
        return torch.where(unchanged, logits, scaled)


@register
class LogitBias(Transform):
    """Add a fixed bias to the logits of chosen tokens; -inf bans a token.

    As OpenAI's `logit_bias`, llama.cpp's `--logit-bias` and vLLM's `logit_bias`: the bias is added to the
    raw logit before the other transforms that follow it. An id outside the model's vocabulary is a usage
    error when the chain first runs.

    Args:
        logit_bias: a map token id -> bias. In `--chain`: "ID=BIAS;ID=BIAS", e.g.
            `logit-bias=15=-inf;42=2.5`; in a preset, a table {15 = "-inf", 42 = 2.5} or [[15, -1e9]].

    Example: probabilities (0.4, 0.3, 0.2, 0.1) with {0: -inf} become (0, 0.5, 0.333333, 0.166667);
    with {3: ln 4} the last token's weight becomes 0.4, giving (0.307692, 0.230769, 0.153846, 0.307692).
    """

    name = "logit-bias"
    kind = "reshaping"
    source = "OpenAI logit_bias; llama.cpp logit-bias; vLLM logit_bias"
    params = (param("logit_bias"),)

    def __call__(self, logits, input_ids):
        import torch

        if not self.logit_bias:
            return logits.clone()
        check_ids_in_vocab(self.name, self.logit_bias, logits.shape[-1])
        ids = torch.tensor(list(self.logit_bias), device=logits.device)
        bias = torch.tensor(list(self.logit_bias.values()), dtype=logits.dtype, device=logits.device)
        out = logits.clone()
        out[:, ids] = logits[:, ids] + bias
        return out
