"""`samplecli score --against`'s views: the JSON document and the terminal report of two models on one text
(llama.cpp's KL-divergence table, then the positions where the models part most)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from samplecli.engine.events import json_number
from samplecli.views.fit import TEXT, Col, dropped_note, fit_table, flow
from samplecli.views.tokens import printable, quoted


def divergence_document(summary, departures, *, model_a: str, model_b: str, characters: int, context: int,
                        stride: int, token_text: Callable[[int], str]) -> dict[str, Any]:
    """`score --against -f json`: one object; every probability is a fraction, every KL and cross-entropy in nats
    (null where a number is not finite: an error of one position, a KL where B gives a token of A's probability 0)."""
    return _finite({
        "model": model_a, "against": model_b, "tokens": summary.tokens, "characters": characters,
        "context": context, "stride": stride,
        "nats_per_token": {"model": summary.nats_per_token_a, "against": summary.nats_per_token_b},
        "perplexity": {"model": summary.perplexity_a, "against": summary.perplexity_b,
                       "ratio": summary.ppl_ratio},
        "ln_ppl_ratio": {"mean": summary.ln_ppl_ratio.mean, "error": summary.ln_ppl_ratio.error},
        "kl": {"mean": summary.kl.mean, "error": summary.kl.error, "percentiles": summary.kl_percentiles},
        "delta_p": {"mean": summary.delta_p.mean, "error": summary.delta_p.error, "rms": summary.delta_p_rms,
                    "percentiles": summary.delta_p_percentiles},
        "same_top": {"mean": summary.same_top.mean, "error": summary.same_top.error},
        "departures": [{
            "position": d.position, "token_id": d.token_id, "token": d.token, "kl": d.kl, "prob": d.prob_a,
            "prob_against": d.prob_b, "before": d.before, "after": d.after,
            "top": [{"token_id": i, "token": token_text(i), "prob": p} for i, p in d.top_a],
            "top_against": [{"token_id": i, "token": token_text(i), "prob": p} for i, p in d.top_b],
        } for d in departures],
    })


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return json_number(value) if isinstance(value, float) else value


def _pm(estimate, scale: float = 1.0, digits: int = 4) -> str:
    return f"{estimate.mean * scale:.{digits}f} ± {estimate.error * scale:.{digits}f}"


def kl_text(value: float) -> str:
    """A KL in nats to four significant digits: a quantization's KL runs from 1e-7 (f16) to 1e-1 (q4_0), where
    fixed decimals would show the small ones as 0."""
    return f"{value:.4g}"


def _kl_pm(estimate) -> str:
    return f"{kl_text(estimate.mean)} ± {estimate.error:.2g}"


def _top(tops, token_text: Callable[[int], str]) -> Text:
    token_id, prob = tops[0]
    return Text(f"{quoted(token_text(token_id))} {prob:.3f}")


def show_divergence(console: Console, summary, departures, *, model_a: str, model_b: str, characters: int,
                    context: int, stride: int, token_text: Callable[[int], str]) -> None:
    """The terminal report: each model's cross-entropy and perplexity, the KL and Δp lines, the same-top share,
    and the positions where the models part most."""
    width = console.width
    s = summary
    models = fit_table(
        [Col("", kind=TEXT, justify="left"), Col("nats/token"), Col("perplexity")],
        [[Text(f"A {model_a}"), f"{s.nats_per_token_a:.4f}", f"{s.perplexity_a:.4f}"],
         [Text(f"B {model_b}"), f"{s.nats_per_token_b:.4f}", f"{s.perplexity_b:.4f}"]], width,
        title=f"A against B: {s.tokens} tokens, {characters} characters")
    console.print(models.table)
    console.print(flow([f"PPL(B)/PPL(A) {s.ppl_ratio:.4f}", f"ln ratio {_pm(s.ln_ppl_ratio)}"], width))
    if context and s.tokens + 1 > context:
        console.print(Text(f"sliding window: context {context}, stride {stride}", style="dim"))
    kl = s.kl_percentiles
    console.print(flow([Text("KL(A‖B) nats", style="bold"), f"mean {_kl_pm(s.kl)}",
                        *(f"{'median' if k == '50' else k if k == 'max' else k + '%'} {kl_text(v)}"
                          for k, v in kl.items())], width))
    dp = s.delta_p_percentiles
    console.print(flow([Text("Δp true token (B − A)", style="bold"), f"mean {_pm(s.delta_p, 100, 3)} %",
                        f"RMS {s.delta_p_rms * 100:.3f} %",
                        *(f"{'median' if k == '50' else k if k in ('min', 'max') else k + '%'} {v * 100:+.3f} %"
                          for k, v in dp.items())], width))
    console.print(flow([Text("same top token", style="bold"), f"{_pm(s.same_top, 100, 3)} %"], width))
    if not departures:
        return
    before, after = (24, 16) if width >= 100 else (12, 8)  # the text around each token: one or two lines at most
    rows = [[str(d.position), kl_text(d.kl),
             # the scored token in brackets (reversed too, where there is colour): a pipe shows where it is
             Text.assemble(printable(d.before[-before:]), ("[" + printable(d.token) + "]", "bold reverse"),
                           printable(d.after[:after])),
             f"{d.prob_a:.3f}", f"{d.prob_b:.3f}", _top(d.top_a, token_text), _top(d.top_b, token_text)]
            for d in departures]
    table = fit_table([Col("pos"), Col("KL"), Col("text", kind=TEXT, justify="left"), Col("p A"), Col("p B"),
                       Col("A's top", kind=TEXT, justify="left", drop=1),
                       Col("B's top", kind=TEXT, justify="left", drop=1)],
                      rows, width, title=f"where they part most: the {len(departures)} largest KL(A‖B)")
    console.print(table.table)


def ladder_document(rows: list[tuple[str, Any]], *, model_a: str, characters: int) -> dict[str, Any]:
    """`score --against B --against C ... -f json`: each model's statistics against --model, one entry each."""
    return _finite({"model": model_a, "characters": characters, "against": [
        {"model": name, "tokens": s.tokens, "perplexity": s.perplexity_b, "perplexity_ratio": s.ppl_ratio,
         "kl": {"mean": s.kl.mean, "error": s.kl.error, "percentiles": s.kl_percentiles},
         "delta_p": {"mean": s.delta_p.mean, "error": s.delta_p.error, "rms": s.delta_p_rms,
                     "percentiles": s.delta_p_percentiles},
         "same_top": {"mean": s.same_top.mean, "error": s.same_top.error}} for name, s in rows]})


def show_ladder(console: Console, rows: list[tuple[str, Any]], *, model_a: str, characters: int) -> None:
    """Several models against one (a quantization ladder): one row each, the numbers llama.cpp users compare."""
    first = rows[0][1]
    table = fit_table(
        [Col("against", kind=TEXT, justify="left"), Col("PPL"), Col("PPL ratio"), Col("mean KL"),
         Col("± KL", drop=2), Col("KL 99%"), Col("KL max", drop=1), Col("RMS Δp %"), Col("same top %"),
         Col("± top %", drop=2)],
        [[Text(name), f"{s.perplexity_b:.4f}", f"{s.ppl_ratio:.5f}", kl_text(s.kl.mean), f"{s.kl.error:.2g}",
          kl_text(s.kl_percentiles['99']), kl_text(s.kl_percentiles['max']), f"{s.delta_p_rms * 100:.3f}",
          f"{s.same_top.mean * 100:.2f}", f"{s.same_top.error * 100:.2f}"] for name, s in rows],
        console.width,
        title=f"against {model_a} (PPL {first.perplexity_a:.4f}): {first.tokens} tokens, {characters} characters")
    console.print(table.table)
    if (note := dropped_note(table.dropped, console.width)) is not None:
        console.print(note)
