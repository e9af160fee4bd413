"""`samplecli compare`: strategies side by side, batched and measured."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from samplecli.cli.app import ModelOpt, _err_console, app, check_page_destination, error_boundary, warn
from samplecli.cli.options import CONSTRAINT_OPTIONS, PENALTY_OPTIONS, flag_of
from samplecli.cli.run import RunOptions, with_run
from samplecli.cli.server_sampling import PostSamplingOpt, SampleLocallyOpt, samples_on_server
from samplecli.errors import SampleCliError, UsageError


class CompareFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    html = "html"


@app.command()
@with_run("max_new_tokens", "num_samples", "seed", *PENALTY_OPTIONS, *CONSTRAINT_OPTIONS)
def compare(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    specs: Annotated[list[str] | None, typer.Option("--strategy", "-s", help="A strategy name or chain spec "
                                                    "(repeatable): greedy, \"top-k=40\", \"top-p=0.9,"
                                                    "temperature=0.8\", beam:num_beams=4.")] = None,
    presets: Annotated[list[str] | None, typer.Option("--preset", "-p", help="A preset (repeatable); one with "
                                                      "[strategies.NAME] tables adds each of them.")] = None,
    holtzman: Annotated[bool, typer.Option("--holtzman", help="The strategies of Holtzman et al. 2019, Table 1 "
                                           "(and typical, min-p), against human text.")] = False,
    coupled: Annotated[bool, typer.Option("--coupled/--no-coupled", help="Draw step t of every column with the "
                                          "same uniform number.")] = True,
    reference: Annotated[Path | None, typer.Option(help="Human text for a reference row (default: the bundled "
                                                   "model's held-out text, with the bundled model).")] = None,
    format: Annotated[CompareFormat, typer.Option("--format", "-f", help="text, json, markdown or html (one page).")] =
    CompareFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    model: ModelOpt = None,
    sample_locally: SampleLocallyOpt = False,
    post_sampling_probs: PostSamplingOpt = False,
    against: Annotated[list[str] | None, typer.Option("--against", metavar="MODEL", help="Another model with the "
                                                      "same tokenizer (repeatable): the models become the columns, "
                                                      "one strategy, coupled draws.")] = None,
    *,
    run: RunOptions,
) -> None:
    """Run several strategies on one prompt, side by side, batched and coupled, and measure each.

    The penalty options apply to every strategy (a strategy's own settings win); a constraint (--json-schema,
    --regex, --grammar, --choice) doubles each column: the strategy without it, then with it, side by side;
    --num-samples is 8 with --holtzman unless given. On a remote engine (--model http://...) the server samples
    every column, each sample one concurrent request (uncoupled; column i is what `generate` gives with its
    strategy and --seed); --sample-locally samples in samplecli instead: coupled, beam columns, every sampler;
    --post-sampling-probs has the server return the probabilities it drew from (each column's strategy's) instead
    of the raw model's. With --against, the columns are the models (--model first) under the one strategy given,
sample i of each drawing with the same uniform numbers: the columns part where the models do."""
    with error_boundary():
        from samplecli.analysis.compare import on_server
        from samplecli.config.inputs import check_output_path, read_text_file, same_file
        from samplecli.engine.decode import DecodeConfig

        started = run.start(model, sample_locally=sample_locally, post_sampling=post_sampling_probs)
        settings = started.settings
        columns = compare_columns(settings, specs or [], presets or [], holtzman)
        given = settings.values["num_samples"].source != "default"
        samples = settings.get("num_samples") if given or not holtzman else 8
        config = DecodeConfig(max_new_tokens=settings.get("max_new_tokens"), num_samples=samples,
                              seed=settings.get("seed"), top_n=0)
        if reference is not None and not reference.exists():
            raise UsageError(f"--reference {reference}: no such file")
        reference_text = read_text_file(reference, "--reference") if reference is not None else None
        if output is not None:
            if reference is not None and same_file(reference, output):
                raise UsageError(f"--output {output} is the --reference file: the report would overwrite the "
                                 "reference text; write the report elsewhere")
            check_output_path(output, "--output")
        check_page_destination(format, output)
        text = started.read_prompt(prompt)
        started.check_memory(compare_shape(columns, config, started.facts, text))
        if against:
            if len(columns) != 1:
                raise UsageError(f"--against compares models under one strategy; {len(columns)} are given")
            if post_sampling_probs:
                raise UsageError("--against draws every model's tokens in samplecli (coupled); drop "
                                 "--post-sampling-probs")
            if not coupled:
                raise UsageError("--against draws sample i of every model with the same uniform numbers, which is "
                                 "what makes its columns comparable; drop --no-coupled")
            if reference is not None:
                raise UsageError("--against has no human row (each model would score the reference its own way); "
                                 "drop --reference, or score it with `samplecli score --file FILE --against MODEL`")
        templated = started.chat_prompt(text)  # the report shows it as the prompt
        lm = started.open()
        if against:
            models = opened_models(started, lm, against, text, templated, sample_locally=sample_locally)
            # each column named by the model as given (a GGUF's own name is its resolved path)
            names = [settings.get("model") or lm.name, *against]
            columns = numbered([replace(columns[0], label=name) for name in names])
            run_compare(text, columns, config, coupled=True, reference=None, format=format, output=output,
                        holtzman=False, lm=lm, prompt_ids=templated.ids if templated else None,
                        reference_text=None, models=models)
            return
        # generate's refusals, then each column's the server cannot run: all before any request for tokens
        if samples_on_server(lm, sample_locally=sample_locally, post_sampling=post_sampling_probs,
                             prompt_ids=templated.ids if templated else ()):
            columns, coupled = on_server(lm, columns, config), False
        run_compare(text, columns, config, coupled=coupled, reference=reference, format=format, output=output,
                    holtzman=holtzman, lm=lm, prompt_ids=templated.ids if templated else None,
                    reference_text=reference_text, post_sampling=post_sampling_probs)


def opened_models(started, lm, against: list[str], text: str, templated, *, sample_locally: bool) -> list:
    """--model and each --against, opened and checked before any token is drawn: the same tokenizer (the prompt
    split alike), and each one sampled in samplecli."""
    from samplecli.analysis.divergence import check_same_tokenizer
    from samplecli.engine.decode import encode_prompt

    models = [lm, *(started.open_model(reference) for reference in against)]
    ids = templated.ids if templated else encode_prompt(lm, text)
    for other in models[1:]:
        check_same_tokenizer(lm, other, ids, templated.ids if templated else encode_prompt(other, text), "the prompt",
                             "comparing models")
    for model in models:
        if samples_on_server(model, sample_locally=sample_locally, post_sampling=False, prompt_ids=ids):
            raise UsageError(f"--against: {model.engine} at {model.name} would sample on the server, where draws "
                             "cannot be coupled with the other models'; add --sample-locally")
    return models


def compare_columns(settings, specs: list[str], presets: list[str], holtzman: bool) -> list:
    """The columns to compare, in the order given: -s specs, then --preset tables, then --holtzman's; the penalty
    options apply to every one (a strategy's own settings win)."""
    from samplecli.analysis.compare import HOLTZMAN, column_from_settings, parse_spec
    from samplecli.config.preset_files import load_preset
    from samplecli.strategies.schema import SAMPLING_KEYS

    base = {k: settings.get(k) for k in SAMPLING_KEYS if k in PENALTY_OPTIONS}
    if base.get("logit_bias"):
        from samplecli.config.tokens import bias_table

        base["logit_bias"] = bias_table(base["logit_bias"])
    constraints = {k: settings.get(k) for k in CONSTRAINT_OPTIONS if settings.get(k) is not None}
    columns = []
    for spec in specs:  # with a constraint, each strategy without it and then with it
        columns.append(parse_spec(spec, base=base))
        if constraints:
            with_it = parse_spec(spec, base={**base, **constraints})
            columns.append(replace(with_it, label=f"{spec} + {', '.join(flag_of(k)[2:] for k in constraints)}"))
    for ref in presets:
        loaded = load_preset(ref)
        tables = loaded.strategies or {loaded.name: loaded.values}
        for name, table in tables.items():
            label = name if not loaded.strategies else f"{loaded.name}/{name}"
            columns.append(column_from_settings(label, {k: v.value for k, v in table.items()}, base))
    if holtzman:
        columns += [parse_spec(spec, label, base) for label, spec in HOLTZMAN]
    if len(columns) < 1:
        raise UsageError("nothing to compare: give strategies with -s, presets with --preset, or --holtzman")
    return numbered(columns)


def numbered(columns: list) -> list:
    """Columns with the same label (`-s greedy -s greedy`) numbered "greedy #1", "greedy #2": every row of the
    report names one column (uncoupled, two columns of one strategy differ)."""
    from collections import Counter
    from dataclasses import replace

    counts, seen = Counter(c.label for c in columns), Counter()
    out = []
    for column in columns:
        if counts[column.label] > 1:
            seen[column.label] += 1
            column = replace(column, label=f"{column.label} #{seen[column.label]}")
        out.append(column)
    return out


def compare_shape(columns: list, config, facts, prompt: str):
    """The widest batch compare decodes at once: the token columns' rows of one chunk of samples, or one beam
    column's beams."""
    from samplecli.backends.memory import STEP_BYTES
    from samplecli.config.preflight import run_shape
    from samplecli.engine.beam_types import DEFAULT_NUM_BEAMS
    from samplecli.engine.decode import chunk_samples

    token_columns = sum(c.strategy is not None for c in columns)
    rows = chunk_samples(config.num_samples, token_columns) * token_columns
    beams = [c.search.get("num_beams", DEFAULT_NUM_BEAMS) for c in columns if c.search is not None]
    rows = max([rows, *(b for b in beams if isinstance(b, int))])
    return run_shape(facts, prompt, config.max_new_tokens, rows,
                     f"{len(columns)} strategies x --num-samples {config.num_samples}",
                     "compare fewer strategies, or lower --num-samples or --max-new-tokens",
                     kept_per_token=STEP_BYTES // 2, sequences=config.num_samples * len(columns))


def human_row(lm, results, reference: Path, reference_text: str | None, num_samples: int, err
              ) -> tuple[dict[str, Any] | None, KeyboardInterrupt | None]:
    """The same metrics on spans of the reference text as long as the samples on average, and the signal that
    stopped it (Ctrl-C there skips the row: the samples are decoded). None where the engine cannot score it,
    said in one warning line: the decoded report is not lost for the want of it."""
    from rich.text import Text

    from samplecli.analysis import compare as cmp
    from samplecli.config.inputs import read_text_file

    length = max(1, round(sum(d.n_tokens for r in results for d in r.dones.values()) /
                          max(1, sum(len(r.dones) for r in results))))
    if reference_text is None:
        reference_text = read_text_file(reference, "--reference")
    chunks = cmp.reference_chunks(lm, reference_text, num_samples, length)
    # one forward pass per span after the run: said on a terminal while it lasts
    working = err.status(f"scoring {len(chunks)} spans of the reference text for the human row (Ctrl-C skips it)"
                         ) if err.is_terminal else contextlib.nullcontext()
    try:
        with working:
            return cmp.human_metrics(lm, chunks), None
    except SampleCliError as exc:
        err.print(Text.assemble(("warning: ", "yellow"), f"{exc} ({reference}); the report has no human row"),
                  soft_wrap=True)
        return None, None
    except KeyboardInterrupt as exc:
        err.print(Text.assemble(("warning: ", "yellow"), "interrupted while scoring the reference text; the report "
                                "has no human row"), soft_wrap=True)
        return None, exc


def run_compare(prompt, columns, config, *, coupled, reference, format, output, holtzman, lm,
                prompt_ids=None, reference_text=None, post_sampling=False, models=None) -> None:
    """`prompt_ids`: the prompt as the model reads it (a chat template's), instead of `prompt` encoded.
    `reference_text`: the --reference file's text, read before the run. `post_sampling`: the server samples
    and returns each strategy's probabilities (the live view colours a token by its strategy's probability, and
    the model's entropy, KL and perplexity are not known). `models`: column i's model (--against), in place of
    `lm` for every column; the human row is then left out (each model would score the reference differently)."""
    from samplecli.analysis import compare as cmp
    from samplecli.engine.decode import encode_prompt, resolved_seed
    from samplecli.views import compare as view

    err = _err_console()
    if prompt_ids is None:
        prompt_ids = encode_prompt(lm, prompt)
    else:  # the report shows what the model read
        prompt = lm.vocab.decode(prompt_ids, skip_special_tokens=False)
    config = type(config)(**{**config.__dict__, "seed": resolved_seed(config.seed)})
    server = bool(columns) and columns[0].server_chain is not None
    show_header(err, lm, len(columns), config, coupled=coupled, server=server, post_sampling=post_sampling,
                models=models)
    state = view.CompareState([c.label for c in columns])
    terminal = sys.stdout.isatty() and err.is_terminal and format is CompareFormat.text and output is None
    results = [cmp.ColumnResult(c) for c in columns]
    stop = decode_columns(results, lm, prompt_ids, config, state, err if terminal else None, coupled=coupled,
                          post_sampling=post_sampling, models=models)
    partial = stop is not None and any(r.dones for r in results)
    if stop is not None and not partial:
        raise stop
    if partial:
        warn("interrupted: the report is partial, over the tokens generated so far (each cut sample's "
             "finish_reason is `interrupted`)", err)
    human = None
    if stop is None and models is None:  # after Ctrl-C or SIGTERM, the human row would be more work than asked
        reference = reference if reference is not None else bundled_reference(lm)
        if reference is not None:
            human, stop = human_row(lm, results, reference, reference_text, config.num_samples, err)
    sections = report_sections(results)
    if format in (CompareFormat.json, CompareFormat.html):
        document = {
            "model": lm.name, **({"models": [c.label for c in columns]} if models else {}),
            "prompt": prompt, "seed": config.seed, "coupled": coupled,
            # as generate's JSONL: whose probabilities the server that sampled returned
            **({"probs": "post-sampling" if post_sampling else "raw"} if server else {}),
            "num_samples": config.num_samples, "max_new_tokens": config.max_new_tokens,
            **({"interrupted": True} if partial else {}), "strategies": sections, "human": human}
        write_payload(output, view.json_report(document) if format is CompareFormat.json else
                      compare_page(document, results, holtzman))
    else:
        show_tables(prompt, config.seed, sections, human, format=format, holtzman=holtzman, terminal=terminal,
                    state=state, output=output, partial=partial, err=err)
    if stop is not None:
        raise stop  # the error boundary's one line and exit status (130, or 143 for SIGTERM)


def show_header(err, lm, strategies: int, config, *, coupled: bool, server: bool, post_sampling: bool,
                models=None) -> None:
    """The run's line on stderr: model, strategies x samples, seed, how it samples; and the engine's note on what
    its probabilities leave out, if any."""
    from rich.text import Text

    samples = f"{config.num_samples} sample{'s' if config.num_samples != 1 else ''}"
    what = f"{len(models)} models · 1 strategy" if models else f"{lm.name} · {strategies} strategies"
    err.print(Text(f"{what} × {samples} · seed {config.seed}"
                   f"{' · coupled' if coupled else ''}{' · sampled on the server' if server else ''}"
                   f"{', post-sampling probabilities' if post_sampling else ''}", style="dim"),
              soft_wrap=True)
    if lm.distribution_note is not None:
        err.print(Text(lm.distribution_note, style="dim"), soft_wrap=not err.is_terminal)


def decode_columns(results, lm, prompt_ids, config, state, live_on, *, coupled: bool, post_sampling: bool,
                   models=None) -> KeyboardInterrupt | None:
    """Decode every column into `results`, each column's sample 0 into `state` (drawn live on `live_on`, a
    terminal, where given). Returns the signal that stopped it (Ctrl-C or SIGTERM), every cut sample then ended
    where it stands, or None."""
    from samplecli.analysis import compare as cmp
    from samplecli.engine.decode import Step
    from samplecli.views import compare as view
    from samplecli.views.render import ThrottledLive

    live = None
    if live_on is not None:
        live = ThrottledLive(live_on, lambda: view.compare_view(state, live_on, live_on.height - 1))

    def on_event(index, event):
        if isinstance(event, Step) and event.sample == 0:
            state.add(index, event.token_id, event.text,
                      event.sampled_prob if event.probs == "post-sampling" else event.prob)
            if live is not None:
                live.refresh()

    started = time.perf_counter()
    try:
        if models is None:
            cmp.collect_into(results, lm, prompt_ids, config, coupled=coupled, on_event=on_event,
                             post_sampling=post_sampling)
        else:  # one model at a time; sample i of each draws from the generator seeded (seed, i): coupled
            for index, (model, result) in enumerate(zip(models, results, strict=True)):
                cmp.collect_into([result], model, prompt_ids, config, coupled=coupled,
                                 on_event=lambda _, event, index=index: on_event(index, event))
    except KeyboardInterrupt as exc:  # the report of what was generated so far, said so
        for result in results:
            result.cut_short(time.perf_counter() - started, config.seed)
        return exc
    finally:
        if live is not None:
            live.stop()
    return None


def bundled_reference(lm) -> Path | None:
    """The bundled model's held-out text: the human row's default reference with the bundled model."""
    from samplecli.backends import BUNDLED_MODEL_DIR

    held_out = BUNDLED_MODEL_DIR / "held_out.txt"
    return held_out if lm.name == "bundled" and held_out.is_file() else None


def report_sections(results) -> list[dict[str, Any]]:
    """Each column's part of the report: its texts, token ids, metrics and where it leaves the first column."""
    from samplecli.analysis import compare as cmp

    first = results[0].token_ids()[0] if results and results[0].dones else []
    sections = []
    for result in results:
        tokens = result.token_ids()
        sections.append({"label": result.column.label, "chain": result.column.chain, "texts": result.texts(),
                         "token_ids": tokens, "metrics": cmp.column_metrics(result),
                         "diverges_at": cmp.divergence_step(first, tokens[0]) if tokens and result is not results[0]
                         else None})
    return sections


def compare_page(document: dict[str, Any], results, holtzman: bool) -> str:
    """The report as a page: its JSON document, each section with its samples' steps as generate's page has them."""
    from samplecli.views import compare as view
    from samplecli.views.html import compare_page as page
    from samplecli.views.html import page_step
    from samplecli.views.records import step_record

    for section, result in zip(document["strategies"], results, strict=True):
        section["steps"] = [[page_step(step_record(step)) for step in result.steps.get(sample, ())]
                            for sample in sorted(result.dones)]
    return page(document, view.HOLTZMAN_METRICS if holtzman else view.METRICS)


def show_tables(prompt, seed, sections, human, *, format, holtzman, terminal, state, output, partial, err) -> None:
    """The report as text or markdown: on a terminal the strategies' texts and the metrics table (Rich), else a
    plain report (with --holtzman, its table in markdown too) or the markdown table alone."""
    from rich.text import Text

    from samplecli.cli.app import stdout_console
    from samplecli.views import compare as view

    rows = [(s["label"], s["metrics"]) for s in sections] + ([("human", human)] if human else [])
    columns_shown = view.HOLTZMAN_METRICS if holtzman else view.METRICS
    if format is CompareFormat.markdown:
        for section in sections:  # the table names each strategy as given; its chain says the order it runs in
            err.print(Text(f"{section['label']}: {section['chain']}", style="dim"), soft_wrap=True)
        write_payload(output, view.markdown_table(rows, columns_shown))
    elif terminal:
        out = stdout_console()
        out.print(view.compare_view(state, out))
        out.print(view.metrics_table(rows, columns_shown, title="Holtzman et al. 2019, Table 1" if holtzman else None,
                                     width=out.width))
    else:
        payload = view.plain_report(prompt, seed, sections, human, partial=partial)
        write_payload(output, payload + ("\n" + view.markdown_table(rows, columns_shown) if holtzman else ""))


def write_payload(output: Path | None, payload: str) -> None:
    """The report to --output, or to stdout."""
    from samplecli.config.inputs import write_report

    if output is not None:
        write_report(output, payload)
    else:
        sys.stdout.write(payload)
        sys.stdout.flush()
