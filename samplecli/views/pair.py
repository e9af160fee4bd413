"""`inspect --pair A B`: the two-token restriction as text and as a JSON document."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from samplecli.analysis.pair import Pair, PairToken


def pair_document(pair: Pair) -> dict[str, Any]:
    """One JSON object: both tokens, the natural parameter and p(A | A or B) computed both ways."""

    def token(t: PairToken) -> dict[str, Any]:
        out = {"token_id": t.token_id, "token": t.token, "logit": t.logit, "prob": t.prob}
        if t.kept is not None:
            out.update(kept=t.kept, strategy_prob=t.strategy_prob)
        return out

    return {
        "model": pair.model, "prompt": pair.prompt, "step": pair.step, "a": token(pair.a), "b": token(pair.b),
        "eta": pair.eta, "log_odds": pair.log_odds, "log_partition": pair.log_partition,
        "p_softmax": pair.p_softmax, "p_sigmoid": pair.p_sigmoid, "difference": pair.difference,
        "mass": pair.mass, "chain": pair.chain, "strategy_p": pair.strategy_p, "notes": pair.notes,
    }


def dumps_pair(pair: Pair) -> str:
    return json.dumps(pair_document(pair), ensure_ascii=False, indent=1)


def show_pair(console: Console, pair: Pair) -> None:
    """The restriction in the order a reader checks it by hand: logits, eta, both formulas, the Bernoulli."""
    a, b = pair.a, pair.b
    lines = [
        f"{pair.model} · the next token after {pair.prompt!r}" + (f", step {pair.step}" if pair.step else ""),
        f"A = {a.token!r} (id {a.token_id}): logit z_A = {a.logit:.6f}, p_A = {a.prob:.6g}",
        f"B = {b.token!r} (id {b.token_id}): logit z_B = {b.logit:.6f}, p_B = {b.prob:.6g}",
        f"the pair holds p_A + p_B = {pair.mass:.6g} of the distribution",
        f"eta = z_A - z_B = {pair.eta:.6f}   (log-odds log(p_A / p_B) = {pair.log_odds:.6f})",
        f"softmax restricted to {{A, B}}: p_A / (p_A + p_B) = {pair.p_softmax:.12f}",
        f"sigmoid(eta) = 1 / (1 + exp(-eta))      = {pair.p_sigmoid:.12f}",
        f"|difference| = {pair.difference:.3g}",
        "Bernoulli in exponential-family form: p(y | eta) = exp(eta * y - A(eta))",
        f"  A(eta) = log(1 + e^eta) = {pair.log_partition:.6f}",
        f"  p(y=1) = exp(eta - A)   = {sigmoid_form(pair.eta, pair.log_partition, 1):.12f}",
        f"  p(y=0) = exp(-A)        = {sigmoid_form(pair.eta, pair.log_partition, 0):.12f}",
    ]
    for line in lines:
        console.print(Text(line), soft_wrap=True)
    if pair.chain is not None:
        shown = f"{pair.strategy_p:.6f}" if pair.strategy_p is not None else "undefined (it keeps neither)"
        console.print(Text(f"under {pair.chain}: q_A / (q_A + q_B) = {shown}"), soft_wrap=True)
    for note in pair.notes:
        console.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)


def sigmoid_form(eta: float, log_partition: float, y: int) -> float:
    import math

    return math.exp(eta * y - log_partition)
