"""The terminal samplers: greedy (argmax) and sample (multinomial, by inverse CDF)."""

from __future__ import annotations

from samplecli.strategies.base import Selector, argmax_mask, register


@register
class Greedy(Selector):
    """Pick the most probable token after the chain (ties: the lowest token id). Its distribution
    is the one-hot at that token; it is the T -> 0 limit of sampling."""

    name = "greedy"
    source = "argmax"

    def select(self, logits, probs, order, uniforms):
        return logits.argmax(dim=-1)

    def distribution(self, logits):
        import torch

        return argmax_mask(logits).to(torch.float32)


@register
class Sample(Selector):
    """Draw from the chain's distribution (multinomial / ancestral sampling).

    The draw is an inverse CDF: tokens are laid out in the raw model's order (most probable first)
    and the token whose cumulative interval contains the row's uniform number is chosen. With the
    same uniforms, two strategies with nearly the same distribution pick nearly the same token.
    """

    name = "sample"
    source = "multinomial sampling"
    stochastic = True

    def select(self, logits, probs, order, uniforms):
        import torch

        cdf = probs.gather(-1, order).double().cumsum(dim=-1)
        target = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
        position = torch.searchsorted(cdf, target, right=True).clamp(max=order.shape[-1] - 1)
        return order.gather(-1, position).squeeze(-1)
