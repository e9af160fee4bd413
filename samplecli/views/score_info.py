"""`samplecli score`'s information view: the model's own entropy next to the text's cross-entropy, and how much
of each step's distribution lies outside the model's top 40 (what a top-k of 40 would cut). Scored from an engine's
top N only, the entropy is an interval and the tail is the mass outside those N."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def information_fields(score) -> dict[str, Any]:
    """The JSON keys: mean entropy, cross-entropy minus it, and the tail outside the top `tail_k`."""
    bounds = score.entropy_bounds_per_token
    fields: dict[str, Any] = {
        "entropy_per_token": score.entropy_per_token if bounds is None else None,
        "ce_minus_entropy": score.ce_minus_entropy if bounds is None else None,
    }
    if bounds is not None:
        fields["entropy_bounds_per_token"] = list(bounds)
        fields["distribution"] = score.distribution
    if score.tail_k:
        fields[f"tail{score.tail_k}_mass_per_token"] = score.tail_mass_per_token
        fields[f"outside_top{score.tail_k}_tokens"] = score.outside_top
    return fields


def show_information(console: Console, score) -> None:
    """Two short lines under the summary table: CE = H + (CE - H), and the tail outside the top `tail_k`."""
    bounds = score.entropy_bounds_per_token
    if bounds is None:
        console.print(Text(f"cross-entropy {score.nats_per_token:.4f} = mean entropy {score.entropy_per_token:.4f} "
                           f"+ (CE - H) {score.ce_minus_entropy:.4f} nats/token"))
    else:
        low, high = bounds
        console.print(Text(f"cross-entropy {score.nats_per_token:.4f} nats/token; mean entropy in [{low:.4f}, "
                           f"{high:.4f}] (from the engine's {score.distribution}), so CE - H in "
                           f"[{score.nats_per_token - high:.4f}, {score.nats_per_token - low:.4f}]"))
    if score.tail_k:
        console.print(Text(f"outside the top {score.tail_k}: {score.tail_mass_per_token:.4f} of the mass per step, "
                           f"{score.outside_top} of {score.tokens} tokens"))
