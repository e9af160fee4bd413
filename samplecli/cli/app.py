"""The command line's shared parts: the Typer app, the single error boundary, and the options
several commands take.

Heavy imports (torch, transformers) happen inside commands that need a model, so `--help` and
`samplecli strategies` stay instant.
"""
from __future__ import annotations

import contextlib
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer
from typer.core import TyperGroup

from samplecli import __version__
from samplecli.errors import SampleCliError


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def fail(message: str, code: int) -> None:
    """Print one red line on stderr and exit: the only place errors are shown."""
    from rich.markup import escape

    console = _err_console()
    # the message echoes what the user wrote (a preset value, a path), which may look like Rich markup
    console.print(f"[bold red]error:[/] {escape(message)}".replace("\n", " "), markup=True, highlight=False,
                  soft_wrap=True)
    sys.exit(code)


class _OneLineErrors(TyperGroup):
    """Click's usage errors as one line on stderr, like our own errors."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            if not standalone_mode:
                raise
            fail("aborted", 130)
        except typer.TyperException as exc:  # typer's vendored click: usage and bad-parameter errors
            if not standalone_mode or not hasattr(exc, "format_message"):
                raise
            ctx = getattr(exc, "ctx", None)
            name = ctx.command_path if ctx is not None else "samplecli"
            fail(f"{exc.format_message()} (see `{name} --help`)", getattr(exc, "exit_code", 2))
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Generate text from a causal language model and see why a decoding strategy behaves as it does.",
)


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"
    json = "json"


class View(StrEnum):
    live = "live"
    steps = "steps"
    tree = "tree"
    none = "none"


def _version(value: bool) -> None:
    if value:
        print(f"samplecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Generate text from a causal language model and see why a decoding strategy behaves as it does."""


def _number(kind: type, noun: str):
    """A typer parser that echoes the bad value: "'abc' is not a valid integer"."""

    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a valid {noun}") from None

    parse.__name__ = noun
    return parse


INT, FLOAT = _number(int, "integer"), _number(float, "number")

# Options shared by the commands that load a model.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Hugging Face model id or local directory "
                                              "[default: the bundled Tiny Shakespeare model]")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code to run.")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="A named strategy (see `samplecli strategies`).")]
ChainOpt = Annotated[str | None, typer.Option(help="An explicit sampler order, e.g. \"top-k=40,top-p=0.95,temp=0.8\".")]
TempOpt = Annotated[
    float | None, typer.Option("--temp", "--temperature", parser=FLOAT, help="Temperature; 0 is greedy.")
]
TopKOpt = Annotated[int | None, typer.Option("--top-k", parser=INT, help="Keep the k most probable tokens; 0 is off.")]
TopPOpt = Annotated[
    float | None, typer.Option("--top-p", parser=FLOAT, help="Nucleus: keep the smallest set with mass >= p.")
]
MinPOpt = Annotated[float | None, typer.Option("--min-p", parser=FLOAT, help="Keep tokens with p >= min_p * p_max.")]
TypicalOpt = Annotated[float | None, typer.Option("--typical-p", parser=FLOAT, help="Locally typical sampling mass.")]
RepOpt = Annotated[
    float | None, typer.Option("--repetition-penalty", parser=FLOAT, help="Penalise tokens already seen; 1 is off.")
]
NgramOpt = Annotated[
    int | None, typer.Option("--no-repeat-ngram-size", parser=INT, help="Ban repeating n-grams of this size.")
]
PresenceOpt = Annotated[float | None, typer.Option(
    "--presence-penalty", parser=FLOAT, help="Subtract this from the logit of every token in the last "
    "--penalty-last-n tokens; 0 is off.")]
FrequencyOpt = Annotated[float | None, typer.Option(
    "--frequency-penalty", parser=FLOAT, help="Subtract this times its count in the last --penalty-last-n "
    "tokens from each token's logit; 0 is off.")]
PenaltyLastNOpt = Annotated[int | None, typer.Option(
    "--penalty-last-n", parser=INT, help="Tokens the presence and frequency penalties count, from the end; "
    "-1 is all [default: 64].")]
LogitBiasOpt = Annotated[list[str] | None, typer.Option(
    "--logit-bias", help="TOKEN=BIAS (repeatable): add BIAS to TOKEN's logit; -inf bans it. TOKEN is an id, "
    "or text the tokenizer makes one token of (' the=-2').")]
LogprobOfOpt = Annotated[list[str] | None, typer.Option(
    "--logprob-of", help="TOKEN (repeatable; an id or one token's text): report its probability and the "
    "chosen token's rank at every step (JSONL `logprob_of`, `rank`).")]


def extra_settings(presence_penalty, frequency_penalty, penalty_last_n, logit_bias) -> tuple[dict, list]:
    """The sampling settings of the flags presets do not carry yet, and the --logit-bias entries parsed
    into (token, bias) pairs, their tokens ids or text still to resolve with the tokenizer."""
    from samplecli.config.tokens import parse_token_bias

    settings = {"presence_penalty": presence_penalty, "frequency_penalty": frequency_penalty,
                "penalty_last_n": penalty_last_n}
    return settings, [parse_token_bias(entry) for entry in logit_bias or ()]


def sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size) -> dict:
    return {"temperature": temp, "top_k": top_k, "top_p": top_p, "min_p": min_p, "typical_p": typical_p,
            "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}


def read_prompt(prompt: str | None) -> str:
    """The prompt argument, or standard input when it is not given and stdin is not a terminal."""
    if prompt is not None:
        return prompt
    if sys.stdin is None or sys.stdin.isatty():
        raise SampleCliError("no prompt: give one as an argument (\"\" starts from BOS) or pipe it on stdin")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


@contextlib.contextmanager
def error_boundary():
    """Turn the project's errors, Ctrl-C and a closed pipe into one line and an exit code."""
    try:
        yield
    except SampleCliError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _err_console().print("[yellow]interrupted[/]")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="A preset name (`samplecli presets list`) "
                                              "or a path to a .toml file; flags override it.")]
# Beam search (samplecli.engine.beam): transformers' GenerationConfig names.
BeamsOpt = Annotated[int | None, typer.Option("--num-beams", parser=INT, help="Beam search with B beams; > 1 implies "
                                              "--strategy beam [default: 1, or 4 with --strategy beam].")]
LengthPenaltyOpt = Annotated[float | None, typer.Option("--length-penalty", parser=FLOAT, help="Beam score = "
                                                        "log-prob / generated length ** A [default: 1].")]
EarlyStoppingOpt = Annotated[str | None, typer.Option("--early-stopping", help="When beam search stops: true, false "
                                                      "or never, as in transformers [default: false].")]
ReturnSequencesOpt = Annotated[int | None, typer.Option("--num-return-sequences", parser=INT, help="Return the R "
                                                        "best beams, R <= B (or R samples) [default: 1].")]
BeamGroupsOpt = Annotated[int | None, typer.Option("--num-beam-groups", parser=INT, help="Diverse beam search: G "
                                                   "groups of B / G beams (Vijayakumar et al. 2016).")]
DiversityOpt = Annotated[float | None, typer.Option("--diversity-penalty", parser=FLOAT, help="Diverse beam search: "
                                                    "subtracted per earlier group that chose the same token.")]


def show_settings(settings, built, console=None) -> None:
    """The resolved settings, each with its source and whether the strategy uses it (stderr by default)."""
    from rich.markup import escape
    from rich.table import Table

    from samplecli.config.settings import explain

    console = console or _err_console()
    title = f"settings for {built.strategy}"
    if settings.preset is not None:
        title += f" (preset {settings.preset.name}: {settings.preset.path})"
    # values and paths come from preset files: escaped, so that `[/x]` in a stop string is not markup
    table = Table(title=escape(title), title_justify="left", header_style="bold")
    for column in ("setting", "value", "source", ""):
        table.add_column(column)
    for key, value, source, note in explain(settings, built.ignored, built.strategy.name):
        table.add_row(key, escape(value), escape(source), note, style="dim" if note else "")
    if settings.preset is not None and settings.preset.aliases:
        table.caption = escape("aliases: " + ", ".join(f"{a} = {k}" for a, k in settings.preset.aliases.items()))
    console.print(table)
