"""`samplecli score`: cross-entropy of a text under the model (and a strategy)."""

from __future__ import annotations

import contextlib
import sys
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
from samplecli.cli.options import SAMPLING_OPTIONS
from samplecli.cli.run import RunOptions, with_run
from samplecli.errors import SampleCliError, UsageError


@app.command()
@with_run(*SAMPLING_OPTIONS)
def score(
    text: Annotated[str | None, typer.Argument(help="The text; or --file, or stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Score this file's text.")] = None,
    model: ModelOpt = None,
    per_token: Annotated[bool, typer.Option("--per-token", help="List each token's probability, "
                                            "surprisal and rank.")] = False,
    stride: Annotated[int | None, typer.Option(parser=INT, help="Sliding-window stride for long texts "
                                               "(default: half the context).")] = None,
    preset: PresetOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", help="text, json or html (one page, the text coloured by "
                                        "surprisal; `table`, the old name of text, is still accepted).")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the json or html report here.")] = None,
    against: Annotated[list[str] | None, typer.Option("--against", metavar="MODEL", help="A second model with the "
                                                      "same tokenizer (a directory, a .gguf, an http:// server): "
                                                      "KL(model || MODEL) at every position, llama.cpp's "
                                                      "--kl-divergence statistics and where the two part most; "
                                                      "repeated, one row per model.")] = None,
    *,
    run: RunOptions,
) -> None:
    """Teacher-forced cross-entropy and perplexity of a text; with a strategy, also under its distribution."""
    with error_boundary():
        from samplecli.config import preflight
        from samplecli.config.inputs import check_text, read_stdin, read_text_file
        from samplecli.strategies import build_strategy
        from samplecli.strategies.schema import SAMPLING_KEYS

        format = "text" if format == "table" else format  # `table`: the name before every command said text
        if format not in ("text", "json", "html"):
            raise UsageError(f"--format: unknown format `{format}`; valid: text, json, html")
        check_report_output(format, output)
        started = run.start(model, preset)
        settings = started.settings
        preflight.check_stride(stride, started.facts)
        strategy, chain = settings.get("strategy"), settings.get("chain")
        wants_strategy = strategy is not None or chain is not None or any(settings.get(k) is not None
                                                                          for k in SAMPLING_KEYS)
        build = (lambda vocab: build_strategy(settings.sampling(vocab), strategy=strategy, chain=chain)) \
            if wants_strategy else (lambda vocab: None)
        built = build(None) if not settings.needs_vocab() else None  # checked before the model loads
        if text is not None and file is not None:
            raise UsageError("give the text as an argument or --file, not both")
        if file is not None:
            text, source = read_text_file(file, "--file"), f"--file {file}"
        elif text is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise SampleCliError("no text: give it as an argument, with --file, or on stdin")
            text, source = read_stdin("the text on standard input"), "the text on standard input"
        else:
            text, source = check_text(text, "the text argument"), "the text argument"
        if not text:
            raise UsageError(f"{source} is empty: there is nothing to score")
        if against:
            if wants_strategy:
                raise UsageError("--against compares the two models' own distributions; drop the sampling settings")
            score_against(started, against, text, stride=stride, per_token=per_token, format=format, output=output)
            return

        from samplecli.analysis.scoring import score as score_text
        from samplecli.views.score_view import score_document, show_score

        lm = started.open()
        if settings.needs_vocab():
            built = build(lm.vocab)
        conversation = started.chat_prompt(None)  # with chat flags, the text is the assistant's reply to it
        with scoring_progress(_err_console()) as progress:
            result = score_text(lm, text, stride=stride, strategy=built.strategy if built else None,
                                per_token=per_token or format == "html",
                                context_ids=conversation.ids if conversation else None,
                                progress=progress)
        if format == "json":
            import json

            write_report(output, json.dumps(score_document(result, lm.name), ensure_ascii=False, allow_nan=False,
                                            indent=1) + "\n")
        elif format == "html":
            from samplecli.views.html import score_page

            write_report(output, score_page(score_document(result, lm.name)))
        else:
            from samplecli.cli.app import stdout_console

            show_score(stdout_console(), result, lm.name)


def score_against(started, against: list[str], text: str, *, stride: int | None, per_token: bool, format: str,
                  output: Path | None) -> None:
    """`score --against`: both models teacher-forced over the text, their divergence reported (json, or text on
    the terminal; with --per-token, one JSON line per position on stdout and the text report on stderr). Several
    --against: each against --model, one row each."""
    import json

    from samplecli.analysis.divergence import check_pair, departures, diverge_many, per_token_records, summarize
    from samplecli.cli.app import stdout_console
    from samplecli.views.divergence import divergence_document, ladder_document, show_divergence, show_ladder

    if len(against) > 1 and (per_token or format == "html"):
        raise UsageError(f"{'--per-token' if per_token else '--format html'} shows one pair's positions; give one "
                         "--against with it")
    lm = started.open()
    if started.chat_prompt(None) is not None:
        raise UsageError("--against scores the text alone; drop the chat flags")
    others = [started.open_model(reference) for reference in against]
    # each model named as given (a GGUF's own name is its resolved path)
    label_a, labels = started.settings.get("model") or lm.name, list(against)
    ids = lm.encode_for_scoring(text, add_special_tokens=False)
    for other in others:  # every pair refused before the first forward pass
        check_pair(lm, other, ids, other.encode_for_scoring(text, add_special_tokens=False))
    with scoring_progress(_err_console()) as progress:  # --model once, beside every --against
        results = diverge_many(lm, others, text, stride=stride, progress=progress)
    if len(others) > 1:
        rows = [(label, summarize(result)) for label, result in zip(labels, results, strict=True)]
        if format != "text":
            write_report(output, json.dumps(ladder_document(rows, model_a=label_a, characters=len(text)),
                                            ensure_ascii=False, allow_nan=False, indent=1) + "\n")
        else:
            show_ladder(stdout_console(), rows, model_a=label_a, characters=len(text))
        return
    result = results[0]
    summary = summarize(result)
    parted = departures(result, lambda ids: lm.vocab.decode(ids, skip_special_tokens=False))
    facts = {"model_a": label_a, "model_b": labels[0], "characters": result.characters, "context": result.context,
             "stride": result.stride, "token_text": lm.vocab.text}
    if format == "html":
        from samplecli.views.html import score_against_page

        document = divergence_document(summary, parted, **facts)
        write_report(output, score_against_page({**document, "per_token": list(per_token_records(result,
                                                                                                 lm.vocab.text))}))
    elif format == "json":
        document = divergence_document(summary, parted, **facts)
        if per_token:
            document["per_token"] = list(per_token_records(result, lm.vocab.text))
        write_report(output, json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1) + "\n")
    elif per_token:
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in per_token_records(result, lm.vocab.text))
        sys.stdout.writelines(lines)
        sys.stdout.flush()
        show_divergence(_err_console(), summary, parted, **facts)
    else:
        show_divergence(stdout_console(), summary, parted, **facts)


@contextlib.contextmanager
def scoring_progress(err):
    """A progress bar of the tokens scored, on stderr where it is a terminal (a long text takes minutes: one
    forward pass per window); None elsewhere."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("score", total=None)
        yield lambda scored, total: bar.update(task, completed=scored, total=total)
