"""`samplecli inspect`: how each strategy reshapes the next-token distribution."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from samplecli.cli.app import (
    INT,
    ModelOpt,
    PresetOpt,
    _err_console,
    app,
    check_report_output,
    error_boundary,
    write_report,
)
from samplecli.cli.chat_options import ChatPrompt
from samplecli.cli.inspect_pair import parse_pair, run_pair
from samplecli.cli.options import SAMPLING_OPTIONS
from samplecli.cli.run import RunOptions, with_run
from samplecli.errors import UsageError


class InspectFormat(StrEnum):
    text = "text"
    json = "json"
    html = "html"


@app.command("inspect")
@with_run(*SAMPLING_OPTIONS, "seed")
def inspect_command(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    temps: Annotated[str | None, typer.Option(help="Temperatures to sweep, comma-separated, e.g. 0.1,0.5,1,2,5 "
                                              "(with the other sampling flags, if any).")] = None,
    draws: Annotated[int | None, typer.Option(parser=INT, help="Real multinomial draws (seeded) from each swept "
                                              "temperature's distribution, or else the strategy's.")] = None,
    sweep: Annotated[list[str] | None, typer.Option(help="Kept set against a setting: top-p=0.5:1.0:0.05, "
                                                    "top-k=1,5,10,40, min-p=0:0.3:0.05 (repeatable).")] = None,
    order_diff: Annotated[bool, typer.Option("--order-diff", help="The same settings in transformers' order "
                                             "(temperature first) and llama.cpp's (temperature last).")] = False,
    at: Annotated[int | None, typer.Option(parser=INT, help="Inspect step K of a seeded generation with the "
                                           "strategy (default: 0, right after the prompt).")] = None,
    top_n: Annotated[int, typer.Option(parser=INT, help="Tokens shown, ranked by raw probability.")] = 10,
    format: Annotated[InspectFormat, typer.Option("--format", "-f", help="text (Rich on a terminal, plain when "
                                                  "piped), json or html (one page).")] = InspectFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the json or html report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the entropy-temperature curve and probability bars to "
                                              "this PNG (needs `pip install 'samplecli[plot]'`).")] = None,
    pair: Annotated[tuple[str, str] | None, typer.Option(
        metavar="<A> <B>", help="Two tokens A B (ids or text): p(A | A or B) as softmax over the pair and as "
                                "sigmoid(z_A - z_B).")] = None,
    *,
    run: RunOptions,
) -> None:
    """Show the next-token distribution and how a strategy reshapes it: stage by stage, swept, sampled."""
    with error_boundary():
        from samplecli.analysis.inspect_plan import make_plan
        from samplecli.config import preflight

        started = run.start(model, preset)
        settings, facts = started.settings, started.facts
        if settings.needs_vocab():
            started.open()
        plan = make_plan(settings.sampling(started.vocab), strategy=settings.get("strategy"),
                         chain=settings.get("chain"), temps=temps, draws=draws, sweeps=sweep or (),
                         order_diff=order_diff, at=at, seed=settings.get("seed"), top_n=top_n,
                         plot=str(plot) if plot is not None else None)
        preflight.check_step(plan.at, facts)
        check_report_output(format, output)
        if pair is not None and format is InspectFormat.html:
            raise UsageError("--pair: its report is text or json; -f html shows the whole distribution")
        pair_tokens = parse_pair(pair, plan) if pair else None
        preflight.check_token_ids([t for t in pair_tokens or () if isinstance(t, int)], facts, "--pair")
        text = started.read_prompt(prompt)
        lm = started.open()
        if pair_tokens is not None:
            return run_pair(text, plan, lm, pair_tokens, json_format=format is InspectFormat.json,
                            chat=started.chat_prompt(text), output=output)
        run_inspect(text, plan, lm, format=format, chat=started.chat_prompt(text), output=output)


def run_inspect(prompt: str, plan, lm, *, format: InspectFormat, chat: ChatPrompt | None = None,
                output: Path | None = None) -> None:
    """`chat`: the prompt through a chat template, which the model reads (and the report shows) instead; `output`:
    where the json or html report goes (standard output when None)."""
    from rich.text import Text

    from samplecli.analysis.inspection import inspect as inspect_at
    from samplecli.cli.app import stdout_console
    from samplecli.views import inspect as view

    err = _err_console()
    for note in plan.notes:
        err.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)
    report = inspect_at(lm, chat.text, plan, chat.ids) if chat is not None else inspect_at(lm, prompt, plan)
    if format is InspectFormat.json:
        write_report(output, view.dumps_document(report) + "\n")
    elif format is InspectFormat.html:
        from samplecli.views.html import page

        write_report(output, page("inspect", view.inspect_document(report)))
    else:
        out = stdout_console()
        if not out.is_terminal and "COLUMNS" not in os.environ:
            out = stdout_console(width=120)  # a pipe or file has no width to fit: keep tables whole
        view.show_report(out, report)
    if plan.plot is not None:
        from samplecli.views.plot import write_plot

        write_plot(report, plan.plot)
        err.print(Text(f"wrote {plan.plot}", style="dim"), soft_wrap=True)
