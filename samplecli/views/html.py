"""`--format html`: one self-contained page of a run or a report (generate, compare, inspect, score), to open from
disk and share. Jinja2 (autoescaped) writes the page's frame and its tables; the run's records travel inside it as
JSON and the page's own script draws the interactive parts from them (the text token by token, the step under the
cursor, the charts) with `textContent`, never as markup. The page loads nothing: its Content-Security-Policy is
`default-src 'none'` with the hashes of its one script and its one style sheet."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from importlib import resources
from typing import IO, TYPE_CHECKING, Any

from samplecli.views.records import beam_step_record
from samplecli.views.sinks import JsonSink

if TYPE_CHECKING:
    from samplecli.engine.beam_types import BeamStep

# the page's data: each step's alternatives as rows of these fields (a dict per alternative would make a 2,000-token
# run with 20 alternatives per step weigh 4 MB instead of 2)
TOP_COLUMNS = ("token_id", "token", "prob", "sampled_prob")
# floats in the page keep 6 significant digits (9, or all, where fewer would print otherwise at the 1 to 4 decimals
# the page shows, as 0.66775002 would at 4): every number the page prints is the one the JSONL gives at that precision
DIGITS = (6, 9)
PRINTED = (1, 2, 3, 4)
KINDS = ("generate", "compare", "inspect", "score")


def rounded(value: Any) -> Any:
    """`value` with every float cut to the fewest of DIGITS significant digits that print as it does at each of
    PRINTED decimals; lists and dicts walked."""
    if isinstance(value, float):
        for digits in DIGITS:
            short = float(f"{value:.{digits}g}")
            if all(f"{short:.{places}f}" == f"{value:.{places}f}" for places in PRINTED):
                return short
        return value
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    return value


def page_step(record: dict[str, Any]) -> dict[str, Any]:
    """A JSONL step record as the page carries it: its alternatives as rows of TOP_COLUMNS, its bytes left out
    (the page shows the text)."""
    step = {key: value for key, value in record.items() if key not in ("bytes", "top")}
    step["top"] = [[alt[column] for column in TOP_COLUMNS] for alt in record.get("top", ())]
    return step


def embedded_json(data: Any) -> str:
    """`data` as JSON that is safe inside `<script type="application/json">`: ASCII only (a lone surrogate or
    U+2028 travels as an escape), and `<`, `>` and `&` escaped, so no token can close the element."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("samplecli.views", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["number"] = number
    env.filters["visible"] = visible
    return env


@cache
def _asset(name: str) -> str:
    return resources.files("samplecli.views").joinpath("templates", name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def number(value: Any, pattern: str = "{:.4f}") -> str:
    """A number as a table shows it; an em dash for none."""
    if value is None:
        return "—"
    return pattern.format(value)


def visible(text: str) -> str:
    """Text with its whitespace and control characters made visible, as the page's script shows a token."""
    out = []
    for char in text:
        if char == " ":
            out.append("·")
        elif char == "\n":
            out.append("↵")
        elif char == "\t":
            out.append("→")
        elif ord(char) < 32 or ord(char) == 127 or 0xD800 <= ord(char) <= 0xDFFF:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def page(kind: str, data: dict[str, Any], **context: Any) -> str:
    """The page of `kind` (one of KINDS) for `data`, the command's JSON document (generate's: JsonSink's, its steps
    through `page_step`); `context`: what the kind's template needs besides (compare's metrics)."""
    if kind not in KINDS:
        raise ValueError(f"kind has to be one of {', '.join(KINDS)}, but is {kind!r}")
    script, style = _asset("page.js"), _asset("page.css")
    csp = (f"default-src 'none'; script-src '{_hash(script)}'; style-src '{_hash(style)}'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    from markupsafe import Markup

    data = rounded(data)
    html = _environment().get_template(f"{kind}.html.j2").render(
        **context, kind=kind, data=data, csp=csp, script=Markup(script), style=Markup(style),
        payload=Markup(embedded_json({"kind": kind, "top_columns": TOP_COLUMNS, **data})))
    # a lone surrogate in a model's text (a token cut inside a UTF-16 pair) cannot be UTF-8: it shows as U+FFFD
    return html.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(html) else html


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def score_page(document: dict[str, Any], worst: int = 10) -> str:
    """`score -f html`: the score's JSON document (with its per-token list) and its `worst` most surprising
    positions."""
    ranked = sorted(enumerate(document.get("per_token") or ()), key=lambda pair: -pair[1]["nats"])[:worst]
    return page("score", document, worst=[{**token, "index": index} for index, token in ranked])


def score_against_page(document: dict[str, Any]) -> str:
    """`score --against -f html`: the two-model document (`views.divergence`) with its per-token list, the text
    coloured by KL, and its departures (the positions where the models part most) as the list under it."""
    first = document["per_token"][0]["position"] if document["per_token"] else 0
    worst = [{**d, "index": d["position"] - first} for d in document["departures"]]
    return page("score", document, worst=worst)


def compare_page(document: dict[str, Any], metrics: tuple[tuple[str, str, str], ...]) -> str:
    """`compare -f html`: the report's JSON document, each strategy's section with its samples' steps (`steps`,
    as `page_step` has them), and the metrics table's columns (key, heading, format)."""
    return page("compare", document, metrics=metrics)


class HtmlSink(JsonSink):
    """`generate -f html`: the JSON document's records, gathered as JsonSink gathers them (with beam search, its
    steps under "beam_steps" as BeamJsonSink has them), written as one page when the run ends (also after Ctrl-C,
    marked interrupted)."""

    def __init__(self, stream: IO[str], header: dict[str, Any], beam: bool = False) -> None:
        super().__init__(stream, {**header, "beam_steps": []} if beam else header)

    def beam_step(self, step: BeamStep) -> None:
        self.header["beam_steps"].append(beam_step_record(step))

    def close(self, interrupted: bool = False) -> None:
        document = self.document(interrupted)
        for sample in document["samples"]:
            sample["steps"] = [page_step(step) for step in sample.get("steps", ())]
        self.stream.write(page("generate", document))
        self.stream.flush()
