"""`samplecli explore`'s plain data: the tree's nodes (each token and how it was chosen), a position's candidates
under the raw model and the strategy, the pieces of the text, and the branches (`analysis.exploration`'s `Session`
makes them; `views.explore` shows them; `explore_document` saves the nodes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from samplecli.stats import LN2


@dataclass
class Node:
    """One token of the text (the root holds the prompt), and how it was chosen.

    The numbers are of the position it was chosen at: `prob`/`logprob`/`rank` under the raw model (T = 1),
    `strategy_prob` under the strategy that chose it (`strategy`, as it prints, with its `settings`),
    the entropies of both distributions there, KL(strategy || model) and the strategy's kept count.
    `logits` (not saved) are the raw scores for the token after this one, once computed.
    """

    id: int
    parent: int | None
    token_id: int | None
    token: str
    chosen_by: str  # "prompt", "sample", "argmax" or "pick"
    strategy: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    prob: float | None = None
    logprob: float | None = None
    rank: int | None = None
    strategy_prob: float | None = None
    entropy_nats: float | None = None
    strategy_entropy_nats: float | None = None
    kl_nats: float | None = None
    kept: int | None = None
    draw: int | None = None  # which draw of the session's generator chose it, 1 the first ("sample" only)
    children: list[int] = field(default_factory=list)
    last_child: int | None = None  # the child visited last: where redoing would go
    selected_row: int = 0  # the candidate row selected here when the cursor left
    end: str | None = None  # "eos" or "context": no token can follow
    logits: Any = None  # torch.Tensor (1, V) or None


@dataclass(frozen=True)
class Candidate:
    """One of the position's most probable tokens under the raw model; `strategy_rank` None: filtered out."""

    token_id: int
    token: str
    raw_prob: float
    raw_rank: int
    strategy_prob: float
    strategy_rank: int | None

    @property
    def kept(self) -> bool:
        return self.strategy_rank is not None


@dataclass(frozen=True)
class Position:
    """The next-token distribution at the cursor under the raw model and under the strategy, as plain data."""

    node_id: int
    step: int  # tokens generated before it
    chain: str
    candidates: list[Candidate]
    entropy_nats: float
    strategy_entropy_nats: float
    kept: int
    vocab_size: int
    mass_removed: float  # raw probability of the tokens the strategy filters out
    kl_nats: float  # KL(strategy || model)
    distribution: str  # "full", or "top-N" where the backend gives only N tokens' scores
    flags: tuple[str, ...] = ()
    outside: tuple[tuple[str, float], ...] = ()  # (token, strategy prob) kept but outside the raw top rows

    @property
    def entropy_bits(self) -> float:
        return self.entropy_nats / LN2

    @property
    def strategy_entropy_bits(self) -> float:
        return self.strategy_entropy_nats / LN2

    @property
    def effective(self) -> float:
        return math.exp(self.entropy_nats)

    @property
    def strategy_effective(self) -> float:
        return math.exp(self.strategy_entropy_nats)


@dataclass(frozen=True)
class Segment:
    """A piece of the text: the prompt (`prob` None), a generated token coloured by its raw probability, or
    a token of the continuation the cursor backed out of (`ghost`)."""

    text: str
    prob: float | None
    node_id: int
    ghost: bool = False


@dataclass(frozen=True)
class Branch:
    """A leaf of the tree and the text from the prompt to it. `shared` is how many generated tokens it has in
    common with an earlier branch (where it forks); `current`: the cursor is on it (at its end, or backed out
    of it and redoing would return to it)."""

    number: int
    leaf: int
    tokens: int
    shared: int
    text: str
    logprob: float
    perplexity: float | None
    current: bool
