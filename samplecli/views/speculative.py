"""What a speculative run shows: each token's round in the live panel's caption, each round as one line (its
drafted tokens with q, p, min(1, p/q) and the uniform drawn, kept or rejected, and the token that ended it), and
the run's acceptance in the summary. Pure functions of `Step` and `Done`."""

from __future__ import annotations

import math

from samplecli.engine.events import Done, Step
from samplecli.views.tokens import quoted

KEPT, REJECTED = "✓", "✗"


def _n(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def check_part(step: Step) -> str:
    """One drafted token as the target judged it: `✓ ' the' q 0.41 p 0.62 a 1 u 0.37`."""
    s = step.speculation
    mark = KEPT if s.outcome == "accepted" else REJECTED
    u = "" if s.uniform is None else f" u {_n(s.uniform)}"
    return f"{mark} {quoted(s.draft_token)} q {_n(s.draft_prob)} p {_n(s.target_prob)} a {_n(s.accept_prob)}{u}"


def caption_parts(step: Step) -> list[str]:
    """The live panel's words about the step's round (none outside a speculative run)."""
    s = step.speculation
    if s is None:
        return []
    if s.outcome == "bonus":
        kept = f"{s.drafted}/{s.drafted} drafted kept" if s.drafted else "nothing drafted"
        return [f"round {s.round}", f"{kept}: drawn from the target"]
    parts = [f"round {s.round}", check_part(step)]
    if s.outcome == "resampled":
        parts.append("rejected: drawn from max(0, p - q)")
    return parts


def round_lines(steps: list[Step]) -> list[list[str]]:
    """Each round's parts, in order: `round 3 (K=4)`, each drafted token judged, then the token that ended it."""
    rounds: list[list[str]] = []
    current: tuple[int, int] | None = None
    for step in steps:
        s = step.speculation
        if s is None:
            continue
        if (step.sample, s.round) != current:
            current = (step.sample, s.round)
            rounds.append([f"round {s.round} ({s.drafted or 'none'} drafted)"])
        if s.outcome == "accepted":
            rounds[-1].append(check_part(step))
        elif s.outcome == "resampled":
            rounds[-1] += [check_part(step), f"→ {quoted(step.token)} from the residual"]
        else:
            rounds[-1].append(f"+ {quoted(step.token)} from the target")
    return rounds


def summary_parts(done: Done) -> list[str]:
    """The run's acceptance α, tokens per target forward and the tokens a round emits, expected and measured."""
    s = done.speculation
    if s is None:
        return []
    alpha = "α –" if math.isnan(s.acceptance) else f"α {s.acceptance:.3f} ({s.accepted}/{s.judged} judged kept)"
    per_round = done.n_tokens / s.rounds if s.rounds else math.nan
    return [f"draft {s.draft}, K={s.draft_tokens}", alpha,
            f"{s.tokens_per_forward(done.n_tokens):.2f} tokens per target forward ({s.target_forwards} forwards)",
            f"tokens a round: {per_round:.2f} measured, {s.expected_per_round:.2f} expected from α"]
