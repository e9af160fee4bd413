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
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from samplecli import __version__
from samplecli.cli import help_style
from samplecli.cli.options import FLOAT, INT, flag_of, option_for  # noqa: F401 - the commands' number parsers
from samplecli.errors import CutShort, SampleCliError, SettingError, UsageError, stopped_by


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def warn(line: str, console=None) -> None:
    """One warning line on stderr (or `console`), "warning: " in yellow; the line is Text, never markup."""
    from rich.text import Text

    (console or _err_console()).print(Text.assemble(("warning: ", "yellow"), line), soft_wrap=True)


def one_line(message: str) -> str:
    """`message` on one line: a newline becomes a space, and any other control or line-separator character that
    it echoes from the user (a preset name, a path) is shown escaped (`\\x1e`), never obeyed."""
    import unicodedata

    def shown(char: str) -> str:
        if char == "\n":
            return " "
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return char.encode("unicode_escape").decode("ascii")
        return char

    return "".join(shown(char) for char in message)


def fail(message: str, code: int) -> None:
    """Print one red line on stderr and exit: the only place errors are shown."""
    from rich.text import Text

    # Text, not markup: the message echoes what the user wrote, which may look like Rich markup
    _err_console().print(Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False,
                         soft_wrap=True)
    sys.exit(code)


def stdout_console(**options):
    """A Rich console on stdout for a command's payload. When the reader goes away (`| head -c 20`) the command
    ends quietly with exit 0, as `generate` does: Rich's own console would exit 1."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError  # for error_boundary, which ends the command quietly

    return PipeConsole(**{"highlight": False, **options})


def _escape_help(command) -> None:
    """Escape Rich markup in every help text of `command` and its subcommands, once: Typer reads help as markup,
    which would eat `[strategies.NAME]` and `'samplecli[plot]'`."""
    from rich.markup import escape

    if getattr(command, "_help_escaped", False):
        return
    command._help_escaped = True
    if command.help:  # each paragraph reflowed: Rich wraps it to the terminal, not at the docstring's line ends
        paragraphs = command.help.split("\n\n")
        command.help = escape("\n\n".join(" ".join(part.split()) for part in paragraphs))
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
    for sub in getattr(command, "commands", {}).values():
        _escape_help(sub)


def _command_path(group, args: list[str]) -> str:
    """`samplecli generate` for `generate --temp` (a usage error that click raises without its command's context):
    the deepest command that `args` name."""
    path, command = ["samplecli"], group
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            if not arg.startswith("-"):
                break
            continue
        path.append(arg)
        command = sub
    return " ".join(path)


def _standard_streams() -> None:
    """Standard streams as every command needs them. A terminal or pipe whose encoding cannot hold a character
    (PYTHONIOENCODING=ascii or latin-1) gets what it can and the rest escaped (`\\xb7`), never a UnicodeEncodeError;
    a COLUMNS or LINES that is no positive number is ignored; a closed stderr (`2>&-`) becomes /dev/null; a closed
    stdout (`>&-`) is one line, as nothing could be written."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "").replace("_", "")
        if encoding not in ("utf8", "utf8sig") and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")
    for name in ("COLUMNS", "LINES"):  # COLUMNS=0 (or "abc") made every table 0 wide: the terminal's size instead
        value = os.environ.get(name)
        if value is not None and not (value.strip().isdigit() and int(value) > 0):
            del os.environ[name]
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process's lifetime
    if sys.stdout is None:
        fail("standard output is closed (>&-): the result has nowhere to go; redirect it to a file or /dev/null "
             "instead", 2)


BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def _valued_flag(group, options: list[str]) -> str | None:
    """`--quiet true`: a flag that takes no value, followed by a boolean word that would be read as the prompt
    (or another argument) without a word; the one line that says so, or None."""
    command = group.commands.get(options[0]) if options else None
    if command is None:
        return None
    flags = {name for param in command.params if getattr(param, "is_flag", False) for name in param.opts}
    for flag, after in zip(options, options[1:], strict=False):
        if flag in flags and after.lower() in BOOLEAN_WORDS:
            return (f"{flag} is a flag and takes no value: drop {after!r} (it would be read as an argument; "
                    f"see `samplecli {options[0]} --help`)")
    return None


class _OneLineErrors(TyperGroup):
    """Click's usage errors as one line on stderr, like our own errors."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _escape_help(self)
        _standard_streams()
        given = list(args) if args is not None else sys.argv[1:]
        options = given[: given.index("--")] if "--" in given else given
        if "-V" in options or "--version" in options:  # on every command, as `-h` is
            print(f"samplecli {__version__}")
            if standalone_mode:
                sys.exit(0)
            return 0
        valued = _valued_flag(self, options)
        if valued is not None and standalone_mode:
            fail(valued, 2)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            if not standalone_mode:
                raise
            fail("aborted", 130)
        except typer.TyperException as exc:  # typer's vendored click: usage and bad-parameter errors
            if not standalone_mode or not hasattr(exc, "format_message"):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `samplecli`, `samplecli presets`: the help, no error
                if exc.format_message().strip():  # (Rich help has printed itself already)
                    print(exc.format_message())
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            given = list(args) if args is not None else sys.argv[1:]
            name = ctx.command_path if ctx is not None and ctx.parent is not None else _command_path(self, given)
            # typer validates values with pydantic, whose message starts its reason with "Value error, "
            message = exc.format_message().replace("Value error, ", "")
            fail(f"{message} (see `{name} --help`)", getattr(exc, "exit_code", 2))
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


help_style.apply()
app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Generate text from a causal language model and see why a decoding strategy behaves as it does.",
)


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"
    json = "json"
    html = "html"


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
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Generate text from a causal language model and see why a decoding strategy behaves as it does."""
    with error_boundary():  # the plugins load here: Ctrl-C while they do is the same one line as later
        from rich.text import Text

        from samplecli import backends, strategies
        from samplecli.config.environment import unknown_variables

        # a misspelt SAMPLECLI_TEMPRATURE would otherwise do nothing, silently; a broken plugin is skipped, not fatal
        for warning in [*unknown_variables(), *strategies.plugins.PROBLEMS, *backends.PROBLEMS]:
            _err_console().print(Text.assemble(("warning: ", "yellow"), warning), soft_wrap=True)


# Options shared by the commands that load a model.
ModelOpt = option_for("model")
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel="Model")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.", rich_help_panel="Model")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code to run.",
                                        rich_help_panel="Model")]
LogprobOfOpt = Annotated[list[str] | None, typer.Option(
    "--logprob-of", help="TOKEN (repeatable; an id or one token's text): report its probability and the "
    "chosen token's rank at every step (JSONL `logprob_of`, `rank`).", rich_help_panel="Output")]


def check_page_destination(format: str, output: Path | None) -> None:
    """`--format html` writes a page for a browser: to --output, or to a pipe or file, never onto a terminal."""
    if format == "html" and output is None and sys.stdout.isatty():
        raise UsageError("--format html writes a page for a browser: add -o FILE.html (or redirect standard output)")


def check_report_output(format: str, output: Path | None) -> None:
    """`--output` of a command whose text report is drawn for the terminal (score, inspect): it takes json or html,
    and it has to be writable; checked before the model loads."""
    from samplecli.config.inputs import check_output_path

    if output is not None:
        if format == "text":
            raise UsageError(f"--output {output}: writes a json or html report; add -f html or -f json (the text "
                             "report goes to standard output)")
        check_output_path(output, "--output")
    check_page_destination(format, output)


def write_report(output: Path | None, payload: str) -> None:
    """A finished report to --output (said on stderr, as `inspect --plot` says its file), or to standard output."""
    from samplecli.config.inputs import write_report as write_file

    if output is not None:
        from rich.text import Text

        write_file(output, payload)
        _err_console().print(Text(f"wrote {output}", style="dim"), soft_wrap=True)
    else:
        sys.stdout.write(payload)
        sys.stdout.flush()


def read_prompt(prompt: str | None) -> str:
    """The prompt argument, or standard input when it is not given and stdin is not a terminal; either has to be
    valid UTF-8 (refused with the offset of the first bad byte otherwise)."""
    from samplecli.config.inputs import check_text, read_stdin

    if prompt is not None:
        return check_text(prompt, "the prompt argument")
    if sys.stdin is None or sys.stdin.isatty():
        raise SampleCliError("no prompt: give one as an argument (\"\" starts from BOS) or pipe it on stdin")
    text = read_stdin("the prompt on standard input")
    return text[:-1] if text.endswith("\n") else text


def _quiet_stdout() -> None:
    """The reader went away (`| head`): send what is left to /dev/null, so Python does not complain at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _server_answer_fault(exc: BaseException) -> str | None:
    """The line for an exception raised while reading a remote engine's answer (a `/props` that is a list, an
    `n_vocab` that is a string, a log-probability of +3): the server answered something samplecli cannot read, which
    is the server's fault, not samplecli's. None where the exception did not come from reading an answer."""
    http = sys.modules.get("samplecli.backends.remote.http")
    servers = getattr(http, "SERVERS", None)
    if not servers:
        return None
    frame, from_remote = exc.__traceback__, False
    while frame is not None:
        from_remote |= "/backends/remote/" in frame.tb_frame.f_code.co_filename.replace(os.sep, "/")
        frame = frame.tb_next
    if not from_remote:
        return None
    why = " ".join(str(exc).split())[:200] or type(exc).__name__
    return (f"{servers[-1]}: the server's answer is not what its protocol sends ({type(exc).__name__}: {why}); is "
            "this llama.cpp's server, Ollama or an OpenAI-compatible one, and is this its address? (--api names the "
            "protocol)")


GENERATED_KEPT = "what was generated so far is kept"  # `generate` writes its tokens as they come


@contextlib.contextmanager
def error_boundary(kept: str | None = None):
    """Turn the project's errors, Ctrl-C and a closed pipe into one line and an exit code; anything else (a bug)
    is one line too, unless Python runs in development mode (`python -X dev -m samplecli ...`), which shows
    the traceback. `kept`: what the command keeps when an engine's answer is cut short (`CutShort`), said after
    the engine's line; None where it keeps nothing (`score` has no result until its last token)."""
    try:
        yield
        sys.stdout.flush()  # a payload still buffered meets a closed pipe here, not at exit
    except SettingError as exc:  # the core names settings; the user typed flags
        fail(exc.shown(flag_of), exc.exit_code)
    except SampleCliError as exc:
        fail(f"{exc}; {kept}" if kept and isinstance(exc, CutShort) else str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated)
        word, status = stopped_by(exc)
        _err_console().print(f"[yellow]{word}[/]")
        sys.exit(status)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(0)
    except OSError as exc:  # the terminal or a pipe failing under us (ENOSPC on stdout, EIO)
        import errno

        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a disk or /dev/full under stdout
        where = f" {exc.filename}" if exc.filename else (" writing standard output:" if full else "")
        kept = "; what was written before stays" if full else ""
        fail(f"cannot go on:{where} {exc.strerror or exc}{kept}", 1)
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # click's own: the group's main turns them into an exit code or one line
    except Exception as exc:
        if sys.flags.dev_mode:
            raise
        server = _server_answer_fault(exc)
        if server is not None:
            fail(server, 1)
        if isinstance(exc, MemoryError) or (isinstance(exc, ImportError) and "failed to map" in str(exc)):
            # `ulimit -v 300000`: torch's libraries cannot even be mapped; a tensor larger than what is left
            why = " ".join(str(exc).split())[:200] or "no memory left"
            fail(f"out of memory ({type(exc).__name__}: {why}); the machine, or this shell's limit on memory "
                 "(`ulimit -v`), leaves too little for torch and the model: raise the limit, or ask for less "
                 "(--num-samples, -n)", 1)
        fail(f"internal error ({type(exc).__name__}: {exc}); please report it, with the command line "
             "(`python -X dev -m samplecli ...` shows the traceback)", 1)


PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="A preset name (`samplecli presets list`) "
                                              "or a path to a .toml file; flags override it.",
                                              rich_help_panel="Sampling")]
def show_settings(settings, built, console=None) -> None:
    """The resolved settings, each with its source and whether the strategy uses it (stderr by default)."""
    from rich.text import Text

    from samplecli.config.preset_files import shown_path
    from samplecli.config.settings import explain
    from samplecli.views.fit import TEXT, Col, fit_table

    console = console or _err_console()
    title = f"settings for {built.strategy}"
    if settings.preset is not None:
        title += f" (preset {settings.preset.name}: {shown_path(settings.preset.path)})"
    # values and paths come from preset files: Text, never markup, so that `[/x]` in a stop string stays as it is
    rows = [[Text(key), Text(value), Text(source), Text(note)]
            for key, value, source, note in explain(settings, built.ignored, built.strategy.name)]
    styles = ["dim" if note.plain else "" for *_, note in rows]
    columns = [Col("setting", kind=TEXT, justify="left"), Col("value", kind=TEXT, justify="left", fold_to=12),
               Col("source", kind=TEXT, justify="left", fold_to=12), Col("note", kind=TEXT, justify="left")]
    if not any(note.plain for *_, note in rows):  # a column of nothing but blanks says nothing
        columns, rows = columns[:3], [row[:3] for row in rows]
    caption = None
    if settings.preset is not None and settings.preset.aliases:
        caption = Text("aliases: " + ", ".join(f"{a} = {k}" for a, k in settings.preset.aliases.items()))
    console.print(fit_table(columns, rows, console.width, title=Text(title), row_styles=styles, caption=caption,
                            caption_justify="left").table)
