"""`samplecli generate`: the per-token loop and beam search, streamed to the chosen views."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from samplecli.cli.app import (
    INT,
    BeamGroupsOpt,
    BeamsOpt,
    ChainOpt,
    DeviceOpt,
    DiversityOpt,
    DtypeOpt,
    EarlyStoppingOpt,
    Format,
    FrequencyOpt,
    LengthPenaltyOpt,
    LogitBiasOpt,
    LogprobOfOpt,
    MinPOpt,
    ModelOpt,
    NgramOpt,
    PenaltyLastNOpt,
    PresenceOpt,
    PresetOpt,
    RepOpt,
    ReturnSequencesOpt,
    StrategyOpt,
    TempOpt,
    TopKOpt,
    TopPOpt,
    TrustOpt,
    TypicalOpt,
    View,
    _err_console,
    app,
    error_boundary,
    extra_settings,
    read_prompt,
    sampling_settings,
    show_settings,
)
from samplecli.errors import UsageError


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
        from samplecli.config.settings import resolve
        from samplecli.engine.decode import DecodeConfig
        from samplecli.strategies import build_strategy

        flags = {**sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size),
                 "strategy": strategy, "chain": chain, "model": model, "max_new_tokens": max_new_tokens,
                 "min_new_tokens": min_new_tokens, "stop_strings": stop, "num_samples": num_samples, "seed": seed,
                 "top_n": top_n, "num_beams": num_beams, "length_penalty": length_penalty,
                 "early_stopping": early_stopping.lower() if early_stopping else None,
                 "num_return_sequences": num_return_sequences, "num_beam_groups": num_beam_groups,
                 "diversity_penalty": diversity_penalty}
        settings = resolve(flags, preset=preset)
        from samplecli.engine.beam_plan import SEARCH_KEYS, plan_beam

        plan = plan_beam(settings.get("strategy"), settings.get("chain"), **{k: settings.get(k) for k in SEARCH_KEYS})
        if view is View.tree and plan.settings is None:
            raise UsageError("--view tree shows the beam search tree; add --num-beams B (> 1) or --strategy beam")
        for line in plan.warnings:
            _err_console().print(f"[yellow]warning:[/] {line}", highlight=False)
        from samplecli.config.tokens import needs_tokenizer, parse_token, resolve_token

        extra, biases = extra_settings(presence_penalty, frequency_penalty, penalty_last_n, logit_bias)
        named = [parse_token(t) for t in logprob_of or ()]
        lm = settings.get("model")
        if needs_tokenizer([t for t, _ in biases] + named):  # tokens given as text: load the model first
            from samplecli.backends.torch_lm import load

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
        run_generate(text, built, config, model=lm, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                     format=format, view=view, output=output, quiet=quiet, search=plan.settings)


def run_generate(prompt: str, built, config, *, model, device, dtype, trust_remote_code, format: Format,
                 view: View, output: Path | None, quiet: bool, search=None) -> None:
    """Decode (per token, or by beam search when `search` holds its settings) and feed every event to the
    payload sink (stdout or --output) and the terminal views (stderr)."""
    from rich.console import Console

    from samplecli.backends.torch_lm import load
    from samplecli.engine.decode import decode, encode_prompt, resolved_seed
    from samplecli.views import beam as beam_render
    from samplecli.views import render

    err = _err_console()
    for key, value in built.ignored.items():
        err.print(f"[yellow]warning:[/] {built.strategy.name} ignores {key}={value}", highlight=False)
    # `model` is a name, or the model itself when generate loaded it first (to resolve a token given as text)
    lm = model if hasattr(model, "tokenizer") else load(model, device=device, dtype=dtype,
                                                         trust_remote_code=trust_remote_code)
    prompt_ids = encode_prompt(lm, prompt)
    seed = resolved_seed(config.seed)
    config = type(config)(**{**config.__dict__, "seed": seed})
    if search is None:
        chain, seeded = str(built.strategy), True
        events = decode(lm, built.strategy, prompt_ids, config)
        jsonl, json_doc, terminal = render.JsonlSink, render.JsonSink, render.TerminalSink
    else:
        from samplecli.engine.beam import beam_decode, describe

        chain, seeded = describe(built.strategy, search), search.stochastic
        events = beam_decode(lm, built.strategy, prompt_ids, config, search)
        jsonl, json_doc, terminal = beam_render.BeamJsonlSink, beam_render.BeamJsonSink, beam_render.BeamTerminalSink
    if not quiet:
        err.print(f"[dim]{lm.name} · {chain}{f' · seed {seed}' if seeded else ''}[/]", highlight=False,
                  soft_wrap=True)

    stdout_tty = sys.stdout.isatty()
    sinks: list[render.Sink] = []
    file = output.open("w", encoding="utf-8") if output is not None else None
    payload = file if file is not None else (None if (stdout_tty and format is Format.text) else sys.stdout)
    if payload is not None:
        if format is Format.text:
            sinks.append(render.TextSink(payload, config.num_samples))
        elif format is Format.jsonl:
            sinks.append(jsonl(payload))
        else:
            sinks.append(json_doc(payload, {"model": lm.name, "prompt": prompt, "strategy": chain, "seed": seed,
                                            "max_new_tokens": config.max_new_tokens}))
    if not quiet or (stdout_tty and payload is None):
        out = Console(highlight=False) if (stdout_tty and payload is None) else None
        sinks.append(terminal(err, out, chain, view.value, summary=not quiet))

    interrupted = True
    try:
        for event in events:
            beam_render.dispatch(sinks, event)
        interrupted = False
    finally:
        for sink in sinks:
            with contextlib.suppress(BrokenPipeError):
                sink.close(interrupted=interrupted)
        if file is not None:
            file.close()
