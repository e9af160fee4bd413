"""`samplecli strategies`: the strategy registry as a table or JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from samplecli.cli.app import app, error_boundary
from samplecli.errors import UsageError


@app.command()
def strategies(
    format: Annotated[str, typer.Option("--format", "-f", help="text or json (`table`, the old name of text, is "
                                        "still accepted).")] = "text",
) -> None:
    """List the strategy registry: named strategies, samplers with their parameters, and the flag order."""
    with error_boundary():
        from samplecli.config.beam_plan import named_chain
        from samplecli.strategies import DEFAULT_SETTINGS, FLAG_ORDER, NAMED, build_strategy, describe_registry
        from samplecli.strategies.build import strategy_aliases

        def chain_of(n) -> str:
            return named_chain(n.name) if n.loop == "beam" else str(build_strategy({}, strategy=n.name).strategy)

        named = [{"name": n.name, "summary": n.summary, "chain": chain_of(n), "source": n.source}
                 for n in NAMED.values()]
        samplers = describe_registry()
        order = [transform for _, transform in FLAG_ORDER]
        default = str(build_strategy({}).strategy)
        if format == "json":
            import json

            print(json.dumps({"strategies": named, "samplers": samplers, "flag_order": order,
                              "default": {"settings": DEFAULT_SETTINGS, "chain": default},
                              "strategy_aliases": strategy_aliases()}, indent=1))
            return
        if format not in ("text", "table"):  # `table`: the name before every command said text
            raise UsageError(f"--format: unknown format `{format}`; valid: text, json")
        _print_registry(named, samplers, order, default, strategy_aliases())


def _print_registry(named: list[dict], samplers: list[dict], order: list[str], default: str,
                    aliases: dict[str, str]) -> None:
    from samplecli.cli.app import stdout_console
    from samplecli.views.fit import TEXT, Col, fit_table

    console = stdout_console()
    text = [Col(name, kind=TEXT, justify="left", fold_to=10, words=True)
            for name in ("name", "what it does", "chain with its defaults", "source")]
    rows = [[row["name"], row["summary"], row["chain"], row["source"]] for row in named]
    console.print(fit_table(text, rows, console.width, title="strategies (--strategy NAME)").table)
    columns = [Col("name", kind=TEXT, justify="left", words=True),
               Col("kind", kind=TEXT, justify="left", fold_to=6, words=True),
               Col("parameter", kind=TEXT, justify="left", words=True),
               Col("default", kind=TEXT, justify="left", fold_to=4, words=True),
               Col("valid", kind=TEXT, justify="left", words=True),
               Col("source", kind=TEXT, justify="left", drop=1, words=True)]
    rows = []
    for row in samplers:
        params = row["params"] or [{"name": "-", "default": "-", "rule": "-"}]
        for i, p in enumerate(params):
            rows.append([row["name"] if i == 0 else "", row["kind"] if i == 0 else "", p["name"], str(p["default"]),
                         p["rule"], row["source"] if i == 0 else ""])
    fitted = fit_table(columns, rows, console.width, title="samplers (--chain, flags)")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(f"(the sources are in `samplecli strategies --format json`; {console.width} columns are too "
                      "few for them)", style="dim", markup=False)
    console.print(f"Flags without --strategy compose in transformers' order: {' -> '.join(order)} -> sample.",
                  markup=False)
    console.print(f"No strategy flags at all: {default}", markup=False)
    console.print("--strategy also takes the common names " + ", ".join(f"{a} (= {n})" for a, n in aliases.items())
                  + ".", markup=False)
