"""`samplecli score`'s information view: the model's own entropy next to the text's cross-entropy, and how much
of each step's distribution lies outside the model's top 40 (what a top-k of 40 would cut)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def information_fields(score) -> dict[str, Any]:
    """The JSON keys: mean entropy, cross-entropy minus it, and the tail outside the top `tail_k`."""
    fields: dict[str, Any] = {
        "entropy_per_token": score.entropy_per_token,
        "ce_minus_entropy": score.ce_minus_entropy,
    }
    if score.tail_k:
        fields[f"tail{score.tail_k}_mass_per_token"] = score.tail_mass_per_token
        fields[f"outside_top{score.tail_k}_tokens"] = score.outside_top
    return fields


def show_information(console: Console, score) -> None:
    """Two short lines under the summary table: CE = H + (CE - H), and the tail outside the top `tail_k`."""
    console.print(Text(f"cross-entropy {score.nats_per_token:.4f} = mean entropy {score.entropy_per_token:.4f} "
                       f"+ (CE - H) {score.ce_minus_entropy:.4f} nats/token"))
    if score.tail_k:
        console.print(Text(f"outside the top {score.tail_k}: {score.tail_mass_per_token:.4f} of the mass per step, "
                           f"{score.outside_top} of {score.tokens} tokens"))
