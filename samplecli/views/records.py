"""The JSONL contract: `Step` and `Done` events as plain JSON-safe dicts (no NaN or Infinity)."""

from __future__ import annotations

import json
import math
from typing import Any

from samplecli.engine.events import Done, Step, json_number


def step_record(step: Step) -> dict[str, Any]:
    record = {
        "type": "step",
        "sample": step.sample,
        "step": step.step,
        "token_id": step.token_id,
        "token": step.token,
        "text": step.text,
        "bytes": list(step.bytes),
        "logprob": json_number(step.logprob),
        "prob": json_number(step.prob),
        "sampled_prob": json_number(step.sampled_prob),
        "sampled_logprob": json_number(math.log(step.sampled_prob)) if step.sampled_prob > 0 else None,
        "entropy": json_number(step.entropy),
        "sampled_entropy": json_number(step.sampled_entropy),
        "kept": step.kept if step.kept >= 0 else None,
        "kl": json_number(step.kl),
        "column": step.column,
        "distribution": step.distribution,
        **({"entropy_bounds": [json_number(b) for b in step.entropy_bounds], "tail_mass": json_number(step.tail_mass)}
           if step.entropy_bounds is not None else {}),
        "top": [
            {"token_id": a.token_id, "token": a.token, "prob": json_number(a.prob), "logprob": json_number(a.logprob),
             "sampled_prob": json_number(a.sampled_prob)}
            for a in step.top
        ],
    }
    if step.sampled_by != "samplecli":  # drawn by a remote engine: whose probabilities it returned
        record["sampled_by"] = step.sampled_by
        record["probs"] = step.probs
        if step.sampled_entropy_exact is not None:
            record["sampled_entropy_exact"] = step.sampled_entropy_exact
    if step.constraint is not None:  # under a constraint: what its mask allowed, the mass inside, its cost in nats
        record["constraint"] = constraint_record(step.constraint)
    if step.speculation is not None:  # speculative decoding: the round that emitted it and how
        record["speculation"] = speculated_record(step.speculation)
    if step.rank is not None:  # --logprob-of: the chosen token's rank and the named tokens' probabilities
        record["rank"] = step.rank
        record["logprob_of"] = [
            {"token_id": a.token_id, "token": a.token, "prob": json_number(a.prob), "logprob": json_number(a.logprob),
             "sampled_prob": json_number(a.sampled_prob)}
            for a in step.named
        ]
    return record


def constraint_record(constrained) -> dict[str, Any]:
    return {"allowed": constrained.allowed, "mass": json_number(constrained.mass),
            "cost": json_number(constrained.cost), "unmasked_same": constrained.unmasked_same}


def done_record(done: Done) -> dict[str, Any]:
    record = {
        "type": "done",
        "sample": done.sample,
        "text": done.text,
        "token_ids": list(done.token_ids),
        "finish_reason": done.finish_reason,
        "n_tokens": done.n_tokens,
        "logprob_sum": json_number(done.logprob_sum),
        "perplexity": json_number(done.perplexity),
        "seconds": done.seconds,
        "tokens_per_second": done.tokens_per_second,
        "strategy": done.strategy,
        "seed": done.seed,
        "column": done.column,
    }
    if done.score is not None:
        record["score"] = json_number(done.score)
    if done.rank is not None:
        record["rank"] = done.rank
    if done.speculation is not None:
        record["speculation"] = speculation_record(done.speculation, done.n_tokens)
    return record


def speculated_record(s) -> dict[str, Any]:
    """How a token of a speculative run came out of its round (`events.Speculated`)."""
    return {"round": s.round, "drafted": s.drafted, "outcome": s.outcome, "draft_token_id": s.draft_token_id,
            "draft_token": s.draft_token, "draft_prob": json_number(s.draft_prob),
            "target_prob": json_number(s.target_prob), "accept_prob": json_number(s.accept_prob),
            "uniform": json_number(s.uniform)}


def speculation_record(s, tokens: int) -> dict[str, Any]:
    """A speculative run's totals (`events.Speculation`) with what follows from them."""
    return {"draft": s.draft, "draft_tokens": s.draft_tokens, "rounds": s.rounds, "drafted": s.drafted,
            "judged": s.judged, "accepted": s.accepted, "acceptance": json_number(s.acceptance),
            "target_forwards": s.target_forwards,
            "draft_forwards": s.draft_forwards, "tokens_per_forward": json_number(s.tokens_per_forward(tokens)),
            "expected_per_round": json_number(s.expected_per_round)}


def hypothesis_record(h) -> dict[str, Any]:
    """One beam-search hypothesis (samplecli.engine.beam.Hypothesis)."""
    return {"node": h.node, "parent": h.parent, "group": h.group, "token_ids": list(h.token_ids), "text": h.text,
            "cumulative": json_number(h.cumulative), "score": json_number(h.score),
            "logprob_sum": json_number(h.logprob_sum),
            "finish_reason": h.finish_reason}


def beam_step_record(step) -> dict[str, Any]:
    """One step of beam search (samplecli.engine.beam.BeamStep): live and finished hypotheses, best first, and
    the candidates it chose from, each "kept", "finished" or "pruned"."""
    return {
        "type": "beam_step",
        "step": step.step,
        "live": [hypothesis_record(h) for h in step.live],
        "finished": [hypothesis_record(h) for h in step.finished],
        "candidates": [{"parent": c.parent, "group": c.group, "token_id": c.token_id, "token": c.token,
                        "cumulative": json_number(c.cumulative), "status": c.status, "node": c.node}
                       for c in step.candidates],
        "stopped": step.stopped,
    }


def dumps(record: dict[str, Any]) -> str:
    """One line of strict JSON (allow_nan=False: a non-finite number here is a bug, not output)."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)
