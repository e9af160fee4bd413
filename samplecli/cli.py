"""The command line: parses flags, picks renderers, and owns the single error boundary.

Heavy imports (torch, transformers) happen inside commands that need a model, so `--help` and
`samplecli strategies` stay instant.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from samplecli import __version__
from samplecli.errors import SampleCliError, UsageError


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
    from samplecli.tokens import parse_token_bias

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
# Beam search (samplecli.beam): transformers' GenerationConfig names.
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


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    strategy: StrategyOpt = None,
    chain: ChainOpt = None,
    temp: TempOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    typical_p: TypicalOpt = None,
    repetition_penalty: RepOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    presence_penalty: PresenceOpt = None,
    frequency_penalty: FrequencyOpt = None,
    penalty_last_n: PenaltyLastNOpt = None,
    logit_bias: LogitBiasOpt = None,
    logprob_of: LogprobOfOpt = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", "-n", parser=INT, help="Stop after this many tokens "
                                 "[default: 100].")
    ] = None,
    min_new_tokens: Annotated[int | None, typer.Option(parser=INT, help="Mask EOS until this many tokens "
                                                        "[default: 0].")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop at this string (repeatable); it is not printed.")] = None,
    num_samples: Annotated[int | None, typer.Option(parser=INT, help="Independent samples, decoded in one batch "
                                                     "[default: 1].")] = None,
    seed: Annotated[int | None, typer.Option(parser=INT, help="Random seed: same seed, same output.")] = None,
    top_n: Annotated[int | None, typer.Option(parser=INT, help="Alternatives recorded per step [default: 5].")] = None,
    num_beams: BeamsOpt = None,
    length_penalty: LengthPenaltyOpt = None,
    early_stopping: EarlyStoppingOpt = None,
    num_return_sequences: ReturnSequencesOpt = None,
    num_beam_groups: BeamGroupsOpt = None,
    diversity_penalty: DiversityOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="text, jsonl (one object per step) or json.")] =
    Format.text,
    view: Annotated[View, typer.Option(help="Terminal view: live panel, per-step table, beam tree, or none.")] =
    View.live,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the text (or JSONL) here as it "
                                                "streams; the terminal keeps the live view.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No header or summary on stderr.")] = False,
    explain_settings: Annotated[bool, typer.Option("--explain-settings", help="Print each resolved setting "
                                                   "with its source (default, preset, env, flag) first.")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Generate text, showing each step's probability, alternatives and entropy."""
    with error_boundary():
        from samplecli.decode import DecodeConfig
        from samplecli.settings import resolve
        from samplecli.strategies import build_strategy

        flags = {**sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size),
                 "strategy": strategy, "chain": chain, "model": model, "max_new_tokens": max_new_tokens,
                 "min_new_tokens": min_new_tokens, "stop_strings": stop, "num_samples": num_samples, "seed": seed,
                 "top_n": top_n, "num_beams": num_beams, "length_penalty": length_penalty,
                 "early_stopping": early_stopping.lower() if early_stopping else None,
                 "num_return_sequences": num_return_sequences, "num_beam_groups": num_beam_groups,
                 "diversity_penalty": diversity_penalty}
        settings = resolve(flags, preset=preset)
        from samplecli.beam_plan import SEARCH_KEYS, plan_beam

        plan = plan_beam(settings.get("strategy"), settings.get("chain"), **{k: settings.get(k) for k in SEARCH_KEYS})
        if view is View.tree and plan.settings is None:
            raise UsageError("--view tree shows the beam search tree; add --num-beams B (> 1) or --strategy beam")
        for line in plan.warnings:
            _err_console().print(f"[yellow]warning:[/] {line}", highlight=False)
        from samplecli.tokens import needs_tokenizer, parse_token, resolve_token

        extra, biases = extra_settings(presence_penalty, frequency_penalty, penalty_last_n, logit_bias)
        named = [parse_token(t) for t in logprob_of or ()]
        lm = settings.get("model")
        if needs_tokenizer([t for t, _ in biases] + named):  # tokens given as text: load the model first
            from samplecli.lm import load

            lm = load(lm, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer, vocab = getattr(lm, "tokenizer", None), getattr(lm, "vocab_size", 2**63)  # ids: checked later
        if biases:
            extra["logit_bias"] = {resolve_token(t, tokenizer, vocab, "--logit-bias"): b for t, b in biases}
        built = build_strategy({**settings.sampling(), **extra}, strategy=plan.strategy, chain=settings.get("chain"))
        config = DecodeConfig(max_new_tokens=settings.get("max_new_tokens"),
                              min_new_tokens=settings.get("min_new_tokens"),
                              stop=tuple(settings.get("stop_strings") or ()),
                              num_samples=plan.num_samples(settings.get("num_samples"), built.strategy),
                              seed=settings.get("seed"), top_n=settings.get("top_n"),
                              logprob_of=tuple(resolve_token(t, tokenizer, vocab, "--logprob-of") for t in named))
        plan.check(config)
        if explain_settings:
            show_settings(settings, built)
        text = read_prompt(prompt)
        run = run_generate if plan.settings is None else functools.partial(run_beam, search=plan.settings)
        run(text, built, config, model=lm, device=device, dtype=dtype,
            trust_remote_code=trust_remote_code, format=format, view=view, output=output, quiet=quiet)


def show_settings(settings, built, console=None) -> None:
    """The resolved settings, each with its source and whether the strategy uses it (stderr by default)."""
    from rich.markup import escape
    from rich.table import Table

    from samplecli.settings import explain

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


def run_generate(prompt: str, built, config, *, model, device, dtype, trust_remote_code, format: Format,
                 view: View, output: Path | None, quiet: bool) -> None:
    from rich.console import Console

    from samplecli import render
    from samplecli.decode import decode, encode_prompt, resolved_seed
    from samplecli.lm import load

    err = _err_console()
    for key, value in built.ignored.items():
        err.print(f"[yellow]warning:[/] {built.strategy.name} ignores {key}={value}", highlight=False)
    # `model` is a name, or the model itself when generate loaded it first (to resolve a token given as text)
    lm = model if hasattr(model, "tokenizer") else load(model, device=device, dtype=dtype,
                                                         trust_remote_code=trust_remote_code)
    prompt_ids = encode_prompt(lm, prompt)
    seed = resolved_seed(config.seed)
    config = type(config)(**{**config.__dict__, "seed": seed})
    if not quiet:
        err.print(f"[dim]{lm.name} · {built.strategy} · seed {seed}[/]", highlight=False, soft_wrap=True)

    stdout_tty = sys.stdout.isatty()
    sinks: list[render.Sink] = []
    file = output.open("w", encoding="utf-8") if output is not None else None
    payload = file if file is not None else (None if (stdout_tty and format is Format.text) else sys.stdout)
    if payload is not None:
        if format is Format.text:
            sinks.append(render.TextSink(payload, config.num_samples))
        elif format is Format.jsonl:
            sinks.append(render.JsonlSink(payload))
        else:
            sinks.append(render.JsonSink(payload, {"model": lm.name, "prompt": prompt, "strategy": str(
                built.strategy), "seed": seed, "max_new_tokens": config.max_new_tokens}))
    if not quiet or (stdout_tty and payload is None):
        out = Console(highlight=False) if (stdout_tty and payload is None) else None
        sinks.append(render.TerminalSink(err, out, str(built.strategy), view.value, summary=not quiet))

    interrupted = True
    try:
        for event in decode(lm, built.strategy, prompt_ids, config):
            for sink in sinks:
                sink.step(event) if isinstance(event, render.Step) else sink.done(event)
        interrupted = False
    finally:
        for sink in sinks:
            with contextlib.suppress(BrokenPipeError):
                sink.close(interrupted=interrupted)
        if file is not None:
            file.close()


def run_beam(prompt: str, built, config, *, search, model, device, dtype, trust_remote_code, format: Format,
             view: View, output: Path | None, quiet: bool) -> None:
    """generate with beam search: the same payload and sinks as run_generate, plus the beam views."""
    from rich.console import Console

    from samplecli import beam_render, render
    from samplecli.beam import beam_decode, describe
    from samplecli.decode import encode_prompt, resolved_seed
    from samplecli.lm import load

    err = _err_console()
    for key, value in built.ignored.items():
        err.print(f"[yellow]warning:[/] {built.strategy.name} ignores {key}={value}", highlight=False)
    lm = model if hasattr(model, "tokenizer") else load(model, device=device, dtype=dtype,
                                                         trust_remote_code=trust_remote_code)
    prompt_ids = encode_prompt(lm, prompt)
    config = type(config)(**{**config.__dict__, "seed": resolved_seed(config.seed)})
    chain = describe(built.strategy, search)
    if not quiet:
        seed = f" · seed {config.seed}" if search.stochastic else ""
        err.print(f"[dim]{lm.name} · {chain}{seed}[/]", highlight=False, soft_wrap=True)

    stdout_tty = sys.stdout.isatty()
    sinks: list[render.Sink] = []
    file = output.open("w", encoding="utf-8") if output is not None else None
    payload = file if file is not None else (None if (stdout_tty and format is Format.text) else sys.stdout)
    if payload is not None:
        if format is Format.text:
            sinks.append(render.TextSink(payload))
        elif format is Format.jsonl:
            sinks.append(beam_render.BeamJsonlSink(payload))
        else:
            sinks.append(beam_render.BeamJsonSink(payload, {"model": lm.name, "prompt": prompt, "strategy": chain,
                                                            "seed": config.seed,
                                                            "max_new_tokens": config.max_new_tokens}))
    if not quiet or (stdout_tty and payload is None):
        out = Console(highlight=False) if (stdout_tty and payload is None) else None
        sinks.append(beam_render.BeamTerminalSink(err, out, chain, view.value, summary=not quiet))

    interrupted = True
    try:
        for event in beam_decode(lm, built.strategy, prompt_ids, config, search):
            beam_render.dispatch(sinks, event)
        interrupted = False
    finally:
        for sink in sinks:
            with contextlib.suppress(BrokenPipeError):
                sink.close(interrupted=interrupted)
        if file is not None:
            file.close()


@app.command()
def score(
    text: Annotated[str | None, typer.Argument(help="The text; or --file, or stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Score this file's text.")] = None,
    model: ModelOpt = None,
    per_token: Annotated[bool, typer.Option("--per-token", help="List each token's probability, "
                                            "surprisal and rank.")] = False,
    stride: Annotated[int | None, typer.Option(parser=INT, help="Sliding-window stride for long texts "
                                               "[default: half the context].")] = None,
    strategy: StrategyOpt = None,
    chain: ChainOpt = None,
    temp: TempOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    typical_p: TypicalOpt = None,
    repetition_penalty: RepOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Teacher-forced cross-entropy and perplexity of a text; with a strategy, also under its distribution."""
    with error_boundary():
        from samplecli.strategies import build_strategy

        if format not in ("table", "json"):
            raise UsageError(f"--format: unknown format `{format}`; valid: table, json")
        settings = sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size)
        wants_strategy = strategy is not None or chain is not None or any(v is not None for v in settings.values())
        built = build_strategy(settings, strategy=strategy, chain=chain) if wants_strategy else None
        if text is not None and file is not None:
            raise UsageError("give the text as an argument or --file, not both")
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SampleCliError(f"--file {file}: cannot read it ({exc.__class__.__name__}: {exc})") from exc
        elif text is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise SampleCliError("no text: give it as an argument, with --file, or on stdin")
            text = sys.stdin.read()
        if not text:
            raise SampleCliError("the text to score is empty")

        from samplecli.lm import load
        from samplecli.render import score_document, show_score
        from samplecli.scoring import score as score_text

        lm = load(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        result = score_text(lm, text, stride=stride, strategy=built.strategy if built else None,
                            per_token=per_token)
        if format == "json":
            import json

            print(json.dumps(score_document(result, lm.name), ensure_ascii=False, allow_nan=False, indent=1))
        else:
            from rich.console import Console

            show_score(Console(highlight=False), result, lm.name)


@app.command()
def strategies(
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """List the strategy registry: named strategies, samplers with their parameters, and the flag order."""
    with error_boundary():
        from samplecli.beam_plan import named_chain
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


class CompareFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


@app.command()
def compare(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    specs: Annotated[list[str] | None, typer.Option("--strategy", "-s", help="A strategy name or chain spec "
                                                    "(repeatable): greedy, \"top-k=40\", \"top-p=0.9,"
                                                    "temperature=0.8\", beam:num_beams=4.")] = None,
    presets: Annotated[list[str] | None, typer.Option("--preset", "-p", help="A preset (repeatable); one with "
                                                      "[strategies.NAME] tables adds each of them.")] = None,
    holtzman: Annotated[bool, typer.Option("--holtzman", help="The strategies of Holtzman et al. 2019, Table 1 "
                                           "(and typical, min-p), against human text.")] = False,
    num_samples: Annotated[int | None, typer.Option(parser=INT, help="Samples per strategy [default: 1; 8 with "
                                                    "--holtzman].")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", parser=INT,
                                                help="Tokens per sample.")] = 100,
    seed: Annotated[int | None, typer.Option(parser=INT, help="Random seed (shared by all columns).")] = None,
    coupled: Annotated[bool, typer.Option("--coupled/--no-coupled", help="Draw step t of every column with the "
                                          "same uniform number.")] = True,
    reference: Annotated[Path | None, typer.Option(help="Human text for a reference row [default: the bundled "
                                                   "model's held-out text, with the bundled model].")] = None,
    format: Annotated[CompareFormat, typer.Option("--format", "-f", help="text, json or markdown.")] =
    CompareFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Run several strategies on one prompt, side by side, batched and coupled, and measure each."""
    with error_boundary():
        from samplecli.compare import HOLTZMAN, column_from_settings, parse_spec
        from samplecli.decode import DecodeConfig
        from samplecli.settings import load_preset

        columns = [parse_spec(spec) for spec in specs or []]
        for ref in presets or []:
            loaded = load_preset(ref)
            tables = loaded.strategies or {loaded.name: loaded.values}
            for name, table in tables.items():
                label = name if not loaded.strategies else f"{loaded.name}/{name}"
                columns.append(column_from_settings(label, {k: v.value for k, v in table.items()}))
        if holtzman:
            columns += [parse_spec(spec, label) for label, spec in HOLTZMAN]
        if len(columns) < 1:
            raise UsageError("nothing to compare: give strategies with -s, presets with --preset, or --holtzman")
        samples = num_samples if num_samples is not None else (8 if holtzman else 1)
        config = DecodeConfig(max_new_tokens=max_new_tokens, num_samples=samples, seed=seed, top_n=0)
        if reference is not None and not reference.is_file():
            raise UsageError(f"--reference {reference}: no such file")
        text = read_prompt(prompt)
        run_compare(text, columns, config, coupled=coupled, reference=reference, format=format, output=output,
                    holtzman=holtzman, model=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


def run_compare(prompt, columns, config, *, coupled, reference, format, output, holtzman, model, device, dtype,
                trust_remote_code) -> None:
    from rich.console import Console
    from rich.live import Live

    from samplecli import compare as cmp
    from samplecli import render_compare as view
    from samplecli.decode import Step, encode_prompt, resolved_seed
    from samplecli.lm import BUNDLED_MODEL_DIR, load

    err = _err_console()
    lm = load(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    prompt_ids = encode_prompt(lm, prompt)
    seed = resolved_seed(config.seed)
    config = type(config)(**{**config.__dict__, "seed": seed})
    err.print(f"[dim]{lm.name} · {len(columns)} strategies × {config.num_samples} samples · seed {seed}"
              f"{' · coupled' if coupled else ''}[/]", highlight=False, soft_wrap=True)

    state = view.CompareState([c.label for c in columns])
    live = None
    terminal = sys.stdout.isatty() and err.is_terminal and format is CompareFormat.text and output is None
    if terminal:
        live = Live(console=err, auto_refresh=False, transient=True)
        live.start()

    def on_event(index, event):
        if isinstance(event, Step) and event.sample == 0:
            state.add(index, event.token_id, event.text, event.prob)
            if live is not None:
                live.update(view.compare_view(state, err.width), refresh=True)

    try:
        results = cmp.collect(lm, columns, prompt_ids, config, coupled=coupled, on_event=on_event)
    finally:
        if live is not None:
            live.stop()

    if reference is None and lm.name == "bundled" and (BUNDLED_MODEL_DIR / "held_out.txt").is_file():
        reference = BUNDLED_MODEL_DIR / "held_out.txt"
    human = None
    if reference is not None:
        length = max(1, round(sum(d.n_tokens for r in results for d in r.dones.values()) /
                              max(1, sum(len(r.dones) for r in results))))
        chunks = cmp.reference_chunks(lm, reference.read_text(encoding="utf-8"), config.num_samples, length)
        human = cmp.human_metrics(lm, chunks)

    first = results[0].token_ids()[0] if results and results[0].dones else []
    sections = []
    for result in results:
        tokens = result.token_ids()
        sections.append({"label": result.column.label, "chain": result.column.chain, "texts": result.texts(),
                         "token_ids": tokens, "metrics": cmp.column_metrics(result),
                         "diverges_at": cmp.divergence_step(first, tokens[0]) if tokens and result is not results[0]
                         else None})
    rows = [(s["label"], s["metrics"]) for s in sections] + ([("human", human)] if human else [])
    columns_shown = view.HOLTZMAN_METRICS if holtzman else view.METRICS

    if format is CompareFormat.json:
        payload = view.json_report({"model": lm.name, "prompt": prompt, "seed": seed, "coupled": coupled,
                                    "num_samples": config.num_samples, "max_new_tokens": config.max_new_tokens,
                                    "strategies": sections, "human": human})
    elif format is CompareFormat.markdown:
        payload = view.markdown_table(rows, columns_shown)
    elif terminal:
        out = Console(highlight=False)
        out.print(view.compare_view(state, out.width, lines=10_000))
        out.print(view.metrics_table(rows, columns_shown, title="Holtzman et al. 2019, Table 1" if holtzman else None))
        return
    else:
        payload = view.plain_report(prompt, seed, sections, human)
        if holtzman:
            payload += "\n" + view.markdown_table(rows, columns_shown)
    if output is not None:
        output.write_text(payload, encoding="utf-8")
    else:
        sys.stdout.write(payload)
        sys.stdout.flush()


class InspectFormat(StrEnum):
    text = "text"
    json = "json"


@app.command("inspect")
def inspect_command(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    strategy: StrategyOpt = None,
    chain: ChainOpt = None,
    temp: TempOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    typical_p: TypicalOpt = None,
    repetition_penalty: RepOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    temps: Annotated[str | None, typer.Option(help="Temperatures to sweep, comma-separated, e.g. 0.1,0.5,1,2,5 "
                                              "(with the other sampling flags, if any).")] = None,
    draws: Annotated[int | None, typer.Option(parser=INT, help="Real multinomial draws (seeded) from each swept "
                                              "temperature's distribution, or else the strategy's.")] = None,
    sweep: Annotated[list[str] | None, typer.Option(help="Kept set against a setting: top-p=0.5:1.0:0.05, "
                                                    "top-k=1,5,10,40, min-p=0:0.3:0.05 (repeatable).")] = None,
    order_diff: Annotated[bool, typer.Option("--order-diff", help="The same settings in transformers' order "
                                             "(temperature first) and llama.cpp's (temperature last).")] = False,
    at: Annotated[int | None, typer.Option(parser=INT, help="Inspect step K of a seeded generation with the "
                                           "strategy [default: 0, right after the prompt].")] = None,
    seed: Annotated[int | None, typer.Option(parser=INT, help="Random seed for --at, --draws and stateful "
                                             "samplers (random when omitted; reported).")] = None,
    top_n: Annotated[int, typer.Option(parser=INT, help="Tokens shown, ranked by raw probability.")] = 10,
    format: Annotated[InspectFormat, typer.Option("--format", "-f", help="text (Rich on a terminal, plain when "
                                                  "piped) or json.")] = InspectFormat.text,
    plot: Annotated[Path | None, typer.Option(help="Write the entropy-temperature curve and probability bars to "
                                              "this PNG (needs `pip install 'samplecli[plot]'`).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Show the next-token distribution and how a strategy reshapes it: stage by stage, swept, sampled."""
    with error_boundary():
        from samplecli.inspect_plan import make_plan
        from samplecli.settings import resolve

        flags = {**sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size),
                 "strategy": strategy, "chain": chain, "model": model, "seed": seed}
        settings = resolve(flags, preset=preset)
        plan = make_plan(settings.sampling(), strategy=settings.get("strategy"), chain=settings.get("chain"),
                         temps=temps, draws=draws, sweeps=sweep or (), order_diff=order_diff, at=at,
                         seed=settings.get("seed"), top_n=top_n, plot=str(plot) if plot is not None else None)
        text = read_prompt(prompt)
        run_inspect(text, plan, format=format, model=settings.get("model"), device=device, dtype=dtype,
                    trust_remote_code=trust_remote_code)


def run_inspect(prompt: str, plan, *, format: InspectFormat, model, device, dtype, trust_remote_code) -> None:
    from rich.console import Console
    from rich.text import Text

    from samplecli import render_inspect as view
    from samplecli.inspection import inspect as inspect_at
    from samplecli.lm import load

    err = _err_console()
    for note in plan.notes:
        err.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)
    lm = load(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    report = inspect_at(lm, prompt, plan)
    if format is InspectFormat.json:
        sys.stdout.write(view.dumps_document(report) + "\n")
        sys.stdout.flush()
    else:
        out = Console(highlight=False)
        if not out.is_terminal and "COLUMNS" not in os.environ:
            out = Console(highlight=False, width=120)  # a pipe or file has no width to fit: keep tables whole
        view.show_report(out, report)
    if plan.plot is not None:
        from samplecli.plot_inspect import write_plot

        write_plot(report, plan.plot)
        err.print(Text(f"wrote {plan.plot}", style="dim"), soft_wrap=True)


presets_app = typer.Typer(help="Built-in, user and file presets (TOML).", no_args_is_help=True)
app.add_typer(presets_app, name="presets")


@presets_app.command("list")
def presets_list() -> None:
    """Built-in and user presets, one line each (a user preset with a built-in's name shadows it)."""
    with error_boundary():
        from samplecli.settings import builtin_presets, load_preset, user_preset_dir, user_presets

        builtin, user = builtin_presets(), user_presets()
        for name in sorted(set(builtin) | set(user)):
            origin = "user" if name in user else "built-in"
            if name in user and name in builtin:
                origin = "user, shadows built-in"
            try:
                description = load_preset(name).description
            except SampleCliError as exc:
                description = f"(invalid: {exc})"
            print(f"{name:<14} {origin:<24} {description}")
        print(f"\nuser presets live in {user_preset_dir()}", file=sys.stderr)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="A preset name or a path to a .toml file.")],
) -> None:
    """The resolved settings of a preset (with its bases, the environment), and where each came from."""
    with error_boundary():
        from rich.console import Console

        from samplecli.settings import resolve
        from samplecli.strategies import build_strategy

        settings = resolve({}, preset=name)
        built = build_strategy(settings.sampling(), strategy=settings.get("strategy"), chain=settings.get("chain"))
        console = Console(highlight=False)
        if settings.preset.description:
            console.print(settings.preset.description, soft_wrap=True, markup=False)
        show_settings(settings, built, console=console)
        for sname, table in settings.preset.strategies.items():
            values = {k: v.value for k, v in table.items()}
            sub = build_strategy({k: values.get(k) for k in settings.sampling()}, strategy=values.get("strategy"),
                                 chain=values.get("chain"))
            console.print(f"strategy {sname}: {sub.strategy}", markup=False)


@presets_app.command("save")
def presets_save(
    name: Annotated[str, typer.Argument(help="The user preset's name.")],
    strategy: StrategyOpt = None,
    chain: ChainOpt = None,
    temp: TempOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    typical_p: TypicalOpt = None,
    repetition_penalty: RepOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", "-n", parser=INT)] = None,
    seed: Annotated[int | None, typer.Option(parser=INT)] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    model: ModelOpt = None,
    description: Annotated[str | None, typer.Option(help="What the preset is for.")] = None,
    extends: Annotated[str | None, typer.Option(help="A preset this one inherits from.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing user preset.")] = False,
) -> None:
    """Write a user preset from flags (atomically; refuses to overwrite without --force)."""
    with error_boundary():
        from samplecli.settings import load_preset, save_preset
        from samplecli.strategies import build_strategy

        values = {**sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size),
                  "strategy": strategy, "chain": chain, "max_new_tokens": max_new_tokens, "seed": seed,
                  "stop_strings": stop or None, "model": model, "description": description}
        values = {k: v for k, v in values.items() if v is not None}
        if not values and extends is None:
            raise SampleCliError("nothing to save: give at least one setting, e.g. --temp 0.7")
        build_strategy({k: values.get(k) for k in sampling_settings(*[None] * 7)}, strategy=values.get("strategy"),
                       chain=values.get("chain"))
        if extends is not None:
            base = load_preset(extends)
            # a path is written absolute: the saved file lives elsewhere, and a relative one would move with it
            looks_like_path = extends.endswith(".toml") or "/" in extends or os.sep in extends
            values = {"extends": str(base.path) if looks_like_path else extends, **values}
        path = save_preset(name, values, force=force)
        print(path)


def main() -> None:
    """The console-script entry point."""
    app()


if __name__ == "__main__":
    main()
