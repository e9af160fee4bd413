"""`samplecli strategies`: the strategy registry as a table or JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from samplecli.cli.app import (
    app,
    error_boundary,
)
from samplecli.errors import UsageError


@app.command()
def strategies(
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """List the strategy registry: named strategies, samplers with their parameters, and the flag order."""
    with error_boundary():
        from samplecli.config.beam_plan import named_chain
        from samplecli.strategies import DEFAULT_SETTINGS, FLAG_ORDER, NAMED, build_strategy, describe_registry

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
                              "default": {"settings": DEFAULT_SETTINGS, "chain": default}}, indent=1))
            return
        if format != "table":
            raise UsageError(f"--format: unknown format `{format}`; valid: table, json")
        _print_registry(named, samplers, order, default)


def _print_registry(named: list[dict], samplers: list[dict], order: list[str], default: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="strategies (--strategy NAME)", title_justify="left", header_style="bold")
    for column in ("name", "what it does", "chain with its defaults", "source"):
        table.add_column(column)
    for row in named:
        table.add_row(row["name"], row["summary"], row["chain"], row["source"])
    console.print(table)
    table = Table(title="samplers (--chain, flags)", title_justify="left", header_style="bold")
    for column in ("name", "kind", "parameter", "default", "valid", "source"):
        table.add_column(column)
    for row in samplers:
        params = row["params"] or [{"name": "-", "default": "-", "rule": "-"}]
        for i, p in enumerate(params):
            table.add_row(row["name"] if i == 0 else "", row["kind"] if i == 0 else "", p["name"],
                          str(p["default"]), p["rule"], row["source"] if i == 0 else "")
    console.print(table)
    console.print(f"Flags without --strategy compose in transformers' order: {' -> '.join(order)} -> sample.")
    console.print(f"No strategy flags at all: {default}")
