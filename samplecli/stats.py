"""Information measures on distributions (rows of a tensor): entropy, KL divergence, cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def entropy_nats(x: torch.Tensor, is_log: bool = True) -> torch.Tensor:
    """H(p) = -sum_i p_i log p_i in nats, per row; zero-probability entries contribute 0.

    `x` is log-probabilities (default) or probabilities (`is_log=False`).
    """
    import torch

    if is_log:
        p = x.exp()
        return -(p * x).nan_to_num(nan=0.0).sum(dim=-1)  # 0 * -inf is nan: a filtered token adds 0
    return torch.special.entr(x).sum(dim=-1)


def kl_nats(p: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i (log p_i - log q_i) in nats, per row; `p` are probabilities and
    `q_log` log-probabilities. Terms with p_i = 0 contribute 0; p_i > 0 where q_i = 0 gives inf."""
    import torch

    log_p = torch.log(p)
    terms = torch.where(p > 0, p * (log_p - q_log), torch.zeros_like(p))
    return terms.sum(dim=-1)
