"""`samplecli score`'s views: the JSON document and the terminal report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from samplecli.engine.events import json_number
from samplecli.views.fit import TEXT, Col, fit_table
from samplecli.views.score_info import information_fields, show_information
from samplecli.views.tokens import quoted


def score_document(score, model: str) -> dict[str, Any]:
    """`samplecli score --format json`: one object (the strategy's cross-entropy is null when infinite)."""
    document: dict[str, Any] = {
        "model": model, "tokens": score.tokens, "characters": score.characters, "nats": score.nats,
        "nats_per_token": score.nats_per_token, "nats_per_char": score.nats_per_char,
        "bits_per_char": score.bits_per_char, "perplexity": score.perplexity,
        "context": score.context, "stride": score.stride,
    }
    document.update(information_fields(score))
    if score.strategy is not None:
        document["strategy"] = {
            "chain": score.strategy, "nats": json_number(score.strategy_nats),
            "nats_per_token": json_number(score.strategy_nats / score.tokens),
            "impossible_tokens": len(score.impossible), "impossible_positions": score.impossible,
            "kl_strategy_model": json_number(score.kl_strategy_model),
        }
        if score.accepted is not None:
            document["strategy"]["constraint"] = {"accepted": score.accepted, "tokens_inside": score.inside}
    if score.per_token:
        document["per_token"] = [
            {"position": t.position, "token_id": t.token_id, "token": t.token, "prob": t.prob, "nats": t.nats,
             "rank": t.rank, **({"strategy_prob": t.strategy_prob} if t.strategy_prob is not None else {})}
            for t in score.per_token
        ]
    return document


def show_score(console: Console, score, model: str) -> None:
    """`samplecli score` on a terminal: the summary table, the strategy's view, and per-token rows."""
    width = console.width
    summary = fit_table([Col(name) for name in ("nats", "nats/token", "nats/char", "bits/char", "perplexity")],
                        [[f"{score.nats:.2f}", f"{score.nats_per_token:.4f}", f"{score.nats_per_char:.4f}",
                          f"{score.bits_per_char:.4f}", f"{score.perplexity:.3f}"]], width,
                        title=f"{model}: {score.tokens} tokens, {score.characters} characters")
    console.print(summary.table)
    show_information(console, score)
    if score.context and score.tokens + 1 > score.context:
        console.print(Text(f"sliding window: context {score.context}, stride {score.stride}", style="dim"))
    if score.strategy is not None:
        impossible = len(score.impossible)
        per_token = (score.strategy_nats / score.tokens) if score.strategy_nats is not None else float("nan")
        line = Text(f"under {score.strategy}: ")
        if impossible:
            line.append("impossible", style="red")
            line.append(f": it gives probability 0 to {impossible} of {score.tokens} tokens (first at position "
                        f"{score.impossible[0]})")
        else:
            line.append(f"{per_token:.4f} nats/token")
        line.append(f"; mean KL(strategy || model) {score.kl_strategy_model:.4f} nats")
        console.print(line)
        if score.accepted is not None:
            verdict = "in the constraint's language" if score.accepted else \
                f"leaves the constraint's language at token {score.inside}" if score.inside < score.tokens else \
                "a prefix of a sentence of the constraint's language, not a whole one"
            console.print(Text(f"the text is {verdict}", style="green" if score.accepted else "red"))
    if score.per_token:
        least_likely = sorted(score.per_token, key=lambda t: -t.nats)[: max(1, len(score.per_token) // 20)]
        worst = {t.position for t in least_likely}
        columns = [Col("pos"), Col("token", kind=TEXT, justify="left"), Col("prob"), Col("surprisal"), Col("rank")]
        if score.strategy is not None:
            columns.append(Col("p strategy"))
        rows, styles = [], []
        for t in score.per_token:
            cells = [str(t.position), Text(quoted(t.token)), f"{t.prob:.4f}", f"{t.nats:.3f}", str(t.rank)]
            if t.strategy_prob is not None:
                cells.append(Text(f"{t.strategy_prob:.4f}", style="red" if t.strategy_prob == 0 else ""))
            rows.append(cells)
            styles.append("bold red" if t.position in worst else "")
        console.print(fit_table(columns, rows, width, row_styles=styles).table)
