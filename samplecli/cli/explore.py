"""`samplecli explore`: step through generation by hand in a full-screen terminal app."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from samplecli.backends.base import Backend  # at run time: the options' signature names it
from samplecli.cli.app import ModelOpt, PresetOpt, app, error_boundary
from samplecli.cli.options import SAMPLING_OPTIONS, flag_of, with_model_options, with_settings
from samplecli.errors import UsageError

NOT_A_TERMINAL = ("`explore` needs an interactive terminal (stdin, stdout and stderr); without one, `samplecli inspect "
                  "PROMPT` shows the next-token distribution and `samplecli generate PROMPT --view steps` each step")


def check_terminal() -> None:
    """explore draws a full-screen app on the terminal through stderr (Textual's driver) and reads keys on stdin:
    all three streams have to be a terminal that can draw (not TERM=dumb), or it would draw escape codes into a
    file or a pipe."""
    import os

    streams = (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    missing = [name for name, stream in streams if stream is None or not stream.isatty()]
    if missing:
        raise UsageError(f"{NOT_A_TERMINAL} ({' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                         "a terminal)")
    if os.environ.get("TERM", "") in ("dumb", "unknown"):
        raise UsageError(f"{NOT_A_TERMINAL} (TERM={os.environ['TERM']} cannot draw the screen)")


@app.command("explore")
@with_settings(*(name for name in SAMPLING_OPTIONS if name != "chain"), "seed")  # its keys adjust settings, not orders
@with_model_options
def explore_command(
    prompt: Annotated[str | None, typer.Argument(help="The prompt (\"\" starts from BOS); not with --load.")] = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    load: Annotated[Path | None, typer.Option("--load", help="Reopen a session saved with `s` (its prompt, "
                                              "strategy, seed and tree).")] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Where `s` writes the session (default: the --load "
                                              "file, else ./explore.json).")] = None,
    *,
    flags: dict[str, Any],
    open_model: Callable[[str | None], Backend],
) -> None:
    """Step through generation by hand: sample, argmax or pick each token, turn the temperature and watch the
    next-token distribution move, undo, branch, save."""
    with error_boundary():
        from samplecli.analysis.explore_document import read_document
        from samplecli.analysis.explore_settings import starting_settings
        from samplecli.config.inputs import check_text
        from samplecli.config.settings import resolve
        from samplecli.engine.events import resolved_seed

        seed = flags["seed"]
        flags = {**flags, "model": model}
        settings = resolve(flags, preset=preset)
        if settings.get("chain") is not None:
            raise UsageError("--chain fixes an order of samplers, which explore's keys cannot adjust; give the "
                             "settings as flags (--temp, --top-k, --top-p, --min-p, ...) or --strategy NAME")
        document = start = None
        if load is not None:
            given = [name for name, value in (("PROMPT", prompt), ("--preset", preset), ("--seed", seed))
                     if value is not None] + [flag_of(k) for k, v in flags.items()
                                               if v is not None and k not in ("model", "seed")]
            if given:
                raise UsageError(f"--load restores the prompt, strategy and seed saved in {load}; drop "
                                 f"{', '.join(given)}")
            document = read_document(load)
            if model is not None and model != document["model"]:
                raise UsageError(f"--load {load}: the session was explored with model `{document['model']}`; "
                                 f"drop --model or pass --model {document['model']}")
            model_name = document["model"]
        else:
            if prompt is None:
                raise UsageError("no prompt: give one as an argument (\"\" starts from BOS), or --load a session")
            check_text(prompt, "the prompt argument")
            if not settings.needs_vocab():  # else a --logit-bias token given as text waits for the vocabulary
                start = starting_settings(settings.sampling(), settings.get("strategy"))
            model_name = settings.get("model")
        check_terminal()

        lm = open_model(model_name)
        if document is None and start is None:
            start = starting_settings(settings.sampling(lm.vocab), settings.get("strategy"))
        text = run_explore(lm, prompt, start, document, seed=resolved_seed(settings.get("seed")), save=save or load)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def run_explore(lm, prompt: str | None, start: dict | None, document: dict | None, *, seed: int,
                save: Path | None) -> str:
    """Run the app on `lm` until `q` (a new session from `prompt` and `start`, or the saved `document`), and
    return the text at the cursor."""
    from samplecli.analysis.exploration import Session
    from samplecli.analysis.explore_document import restore
    from samplecli.views.explore_app import ExploreApp

    session = restore(lm, document) if document is not None else Session(lm, prompt, start, seed)
    ExploreApp(session, save_path=save).run()
    return session.text()
