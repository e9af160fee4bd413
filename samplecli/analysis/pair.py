"""`inspect --pair A B`: the next-token distribution restricted to two tokens, a Bernoulli whose natural
parameter is the logit difference, so that softmax over {A, B} is the sigmoid of z_A - z_B."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.analysis.inspect_plan import Plan
    from samplecli.backends.base import Backend


@dataclass(frozen=True)
class PairToken:
    token_id: int
    token: str
    logit: float  # the model's raw logit z
    prob: float  # its probability under the full softmax over the vocabulary
    kept: bool | None = None  # whether the strategy lets it through (None: no strategy)
    strategy_prob: float | None = None


@dataclass(frozen=True)
class Pair:
    """p(A | A or B) two ways, from the same logits.

    The softmax over the whole vocabulary, renormalised over {A, B}, is e^z_A / (e^z_A + e^z_B); dividing
    through by e^z_A gives 1 / (1 + e^-(z_A - z_B)) = sigmoid(eta) with eta = z_A - z_B. That is the Bernoulli
    in exponential-family form, p(y | eta) = exp(eta * y - A(eta)) with A(eta) = log(1 + e^eta): the logit
    difference is its natural parameter and equals the log-odds log(p_A / p_B).
    """

    model: str
    prompt: str
    step: int
    a: PairToken
    b: PairToken
    eta: float  # z_A - z_B
    p_softmax: float  # p_A / (p_A + p_B) from the full softmax
    p_sigmoid: float  # sigmoid(eta)
    log_partition: float  # A(eta) = log(1 + e^eta)
    log_odds: float  # log(p_A / p_B) from the full softmax: eta again
    mass: float  # p_A + p_B: how much of the distribution the pair holds
    chain: str | None = None
    strategy_p: float | None = None  # q_A / (q_A + q_B) under the strategy; None when it keeps neither
    notes: list[str] = field(default_factory=list)

    @property
    def difference(self) -> float:
        return abs(self.p_softmax - self.p_sigmoid)


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def softplus(x: float) -> float:
    """log(1 + e^x), without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def restrict(logits, a: int, b: int) -> tuple[float, float, float, float]:
    """From one row of raw logits: (log p_A, log p_B) under the full softmax (float64, over the whole
    vocabulary), p(A | A or B) from them, and sigmoid(z_A - z_B)."""
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)
    la, lb = float(logp[a]), float(logp[b])
    top = max(la, lb)  # renormalise in log space so two tiny probabilities keep their ratio
    p_softmax = math.exp(la - top) / (math.exp(la - top) + math.exp(lb - top))
    eta = float(logits[a].double() - logits[b].double())
    return la, lb, p_softmax, sigmoid(eta)


def pair_at(lm: Backend, prompt: str, plan: Plan, a: int, b: int, prompt_ids: list[int] | None = None) -> Pair:
    """The pair (A, B) at step `plan.at` of the seeded generation (0: right after the prompt)."""
    import torch

    from samplecli.analysis.inspect_position import next_token_logits, reach
    from samplecli.engine.decode import encode_prompt, resolved_seed

    if a == b:
        raise UsageError(f"--pair: both tokens are id {a} ({lm.vocab.text(a)!r}); give two different tokens")
    seed = resolved_seed(plan.seed)
    ids = encode_prompt(lm, prompt) if prompt_ids is None else list(prompt_ids)
    generation = plan.generation.clone()
    ids = ids + reach(lm, ids, generation, plan.at, seed)
    logits = next_token_logits(lm, ids)  # (1, V)
    row = logits[0]
    for t in (a, b):
        if not bool(torch.isfinite(row[t])):  # a top-N backend leaves the tokens it did not return at -inf
            raise UsageError(f"--pair: the backend gives no logit for {lm.vocab.text(t)!r} (id {t}): it returns only "
                             f"its top {lm.top_n} tokens here; pick tokens among them")
    log_a, log_b, p_softmax, p_sigmoid = restrict(row, a, b)
    eta = float(row[a].double() - row[b].double())
    strategy_p, chain, notes = None, None, []
    kept = {a: None, b: None}
    q = {a: None, b: None}
    if plan.traced is not None:
        chain = str(generation)
        processed = generation.clone().process(logits, torch.tensor([ids]))[0]
        probs = generation.clone().distribution(logits, torch.tensor([ids]))[0].double()
        for t in (a, b):
            kept[t] = bool(torch.isfinite(processed[t]))
            q[t] = float(probs[t])
        filtered = [t for t in (a, b) if not kept[t]]
        for t in filtered:
            notes.append(f"the strategy ({chain}) filters {lm.vocab.text(t)!r} (id {t}): it can never be drawn")
        if q[a] + q[b] > 0:
            strategy_p = q[a] / (q[a] + q[b])
    table = lm.vocab

    def token(t: int, logp: float) -> PairToken:
        return PairToken(t, table.text(t), float(row[t]), math.exp(logp), kept[t], q[t])

    return Pair(model=lm.name, prompt=prompt, step=plan.at, a=token(a, log_a), b=token(b, log_b), eta=eta,
                p_softmax=p_softmax, p_sigmoid=p_sigmoid, log_partition=softplus(eta),
                log_odds=log_a - log_b, mass=math.exp(log_a) + math.exp(log_b),
                chain=chain, strategy_p=strategy_p, notes=notes)
