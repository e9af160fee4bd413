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
from samplecli.cli.options import FLOAT, INT, flag_of, option_for  # noqa: F401 - the commands' number parsers
from samplecli.errors import SampleCliError, SettingError


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


# Options shared by the commands that load a model.
ModelOpt = option_for("model")
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel="Model")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.", rich_help_panel="Model")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code to run.",
                                        rich_help_panel="Model")]
LogprobOfOpt = Annotated[list[str] | None, typer.Option(
    "--logprob-of", help="TOKEN (repeatable; an id or one token's text): report its probability and the "
    "chosen token's rank at every step (JSONL `logprob_of`, `rank`).", rich_help_panel="Output")]


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
    except SettingError as exc:  # the core names settings; the user typed flags
        fail(exc.shown(flag_of), exc.exit_code)
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
                                              "or a path to a .toml file; flags override it.",
                                              rich_help_panel="Sampling")]
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
