"""`samplecli generate`: the per-token loop and beam search, streamed to the chosen views."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from samplecli.backends.base import Backend
from samplecli.cli.app import (
    GENERATED_KEPT,
    Format,
    LogprobOfOpt,
    ModelOpt,
    PresetOpt,
    View,
    _err_console,
    app,
    check_page_destination,
    error_boundary,
    show_settings,
    warn,
)
from samplecli.cli.chat_options import ChatPrompt, show_chat_prompt
from samplecli.cli.options import SAMPLING_OPTIONS
from samplecli.cli.run import RunOptions, with_run
from samplecli.cli.server_sampling import PostSamplingOpt, SampleLocallyOpt, server_chain_for
from samplecli.config.beam_plan import SEARCH_KEYS
from samplecli.config.keys import KEYS
from samplecli.engine.speculative import DRAFT_TOKENS, NGRAM, Drafting
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.backends.base import Vocabulary
    from samplecli.backends.facts import ModelFacts
    from samplecli.config.beam_plan import BeamPlan
    from samplecli.config.preflight import RunShape
    from samplecli.config.settings import Resolved
    from samplecli.engine.events import DecodeConfig
    from samplecli.strategies import Built

BUNDLED_DRAFT = "bundled-draft"  # the small model trained beside the bundled one, as its draft
RUN_OPTIONS = ("max_new_tokens", "min_new_tokens", "stop_strings", "num_samples", "seed", "top_n")


@app.command()
@with_run(*SAMPLING_OPTIONS, *RUN_OPTIONS, *SEARCH_KEYS)
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; read from stdin when omitted.")] = None,
    prompt_file: Annotated[str | None, typer.Option("--prompt-file", help="Read the prompt from this file (`-`: "
                                                    "stdin), as it is: a trailing newline stays part of it.")] = None,
    preset: PresetOpt = None,
    logprob_of: LogprobOfOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="text, jsonl (one object per step), json or html "
                                           "(one page to open in a browser).", rich_help_panel="Output")] = Format.text,
    view: Annotated[View, typer.Option(help="Terminal view: live panel, per-step table, beam tree, or none.",
                                       rich_help_panel="Output")] = View.live,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the text (or JSONL) here as it "
                                                "streams; the terminal keeps the live view.",
                                                rich_help_panel="Output")] = None,
    separator: Annotated[str, typer.Option("--separator", help="With several samples (or returned beams) in "
                                           "the text written to a pipe or file: the line between two of them "
                                           "(default: an empty line).", rich_help_panel="Output")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No header or summary on stderr.",
                                        rich_help_panel="Output")] = False,
    explain_settings: Annotated[bool, typer.Option("--explain-settings", help="Print each resolved setting "
                                                   "with its source (default, preset, env, flag) first.",
                                                   rich_help_panel="Output")] = False,
    model: ModelOpt = None,
    sample_locally: SampleLocallyOpt = False,
    post_sampling_probs: PostSamplingOpt = False,
    draft_model: Annotated[str | None, typer.Option(
        "--draft-model", "--draft", help="Speculative decoding: this draft model (a directory, a hub id, "
        f"`{BUNDLED_DRAFT}`) proposes --draft-tokens tokens a round, the model checks them in one forward; "
        f"`{NGRAM}`: prompt lookup, no second model. The text follows the strategy over the model exactly.",
        rich_help_panel="Speculative decoding")] = None,
    draft_tokens: Annotated[int, typer.Option(
        "--draft-tokens", help="Tokens the draft proposes per round (K).",
        rich_help_panel="Speculative decoding")] = DRAFT_TOKENS.default,
    *,
    run: RunOptions,
) -> None:
    """Generate text, showing each step's probability, alternatives and entropy."""
    with error_boundary(kept=GENERATED_KEPT):
        from samplecli.config import preflight
        from samplecli.config.inputs import check_output_path
        from samplecli.config.tokens import needs_tokenizer, parse_token

        named = [parse_token(t, "--logprob-of") for t in logprob_of or ()]
        started = run.start(model, preset, sample_locally=sample_locally, post_sampling=post_sampling_probs)
        settings, facts = started.settings, started.facts
        preflight.check_token_ids([t for t in named if isinstance(t, int)], facts, "--logprob-of")
        if settings.needs_vocab() or needs_tokenizer(named):  # tokens given as text: load the model first
            started.open()
        plan = plan_generate(settings, named, view, started.vocab)
        if draft_model is not None:
            check_draft_plan(plan, draft_tokens, sample_locally or post_sampling_probs)
        long_run = preflight.run_length(plan.config.num_samples, plan.config.max_new_tokens,
                                        f"--num-samples {plan.config.num_samples}")
        for line in plan.beam.warnings:
            warn(line)
        if explain_settings:
            show_settings(settings, plan.built)
        if output is not None:
            check_output_path(output, "--output")
        check_page_destination(format, output)
        text = read_prompt_file(prompt_file, prompt) if prompt_file is not None else started.read_prompt(prompt)
        preflight.check_prompt_size(text, facts, f"--prompt-file {prompt_file}" if prompt_file else "the prompt")
        if started.lm is None:
            started.check_memory(generate_shape(plan, facts, text, format=format, view=view, quiet=quiet))
        if long_run:  # said once every check has passed: a run refused after it would say two things
            warn(long_run)
        templated = started.chat_prompt(text)
        if explain_settings and templated is not None:
            show_chat_prompt(templated)
        if not quiet and started.chat.suggestion_line():
            _err_console().print(f"[dim]{started.chat.suggestion_line()}[/]", highlight=False, soft_wrap=True)
        lm = started.open()
        if draft_model is not None:
            plan.drafting = open_draft(draft_model, lm, started.open_model, plan, draft_tokens)
        run_generate(text, plan, lm, format=format, view=view, output=output, quiet=quiet,
                     chat=templated, separator=separator, sample_locally=sample_locally,
                     post_sampling=post_sampling_probs)


def check_draft_plan(plan: GeneratePlan, draft_tokens: int, on_server: bool) -> None:
    """What refuses a speculative run before any model loads: --draft-tokens's rule, beam search, a stage whose
    state follows the draws, sampling on a server."""
    from samplecli.engine.speculative import check_speculative

    DRAFT_TOKENS.validate("--draft-tokens", draft_tokens)
    if plan.search is not None:
        raise UsageError("--draft-model: beam search keeps several hypotheses and no single drafted continuation "
                         "to check; drop --num-beams (or --strategy beam), or drop the draft")
    if on_server:
        raise UsageError("--draft-model: speculative decoding draws in samplecli, which checks the drafts against "
                         "the model's distributions; drop --sample-locally and --post-sampling-probs")
    check_speculative(None, None, plan.built.strategy, draft_tokens, "--draft-model")


def open_draft(ref: str, lm: Backend, open_model, plan: GeneratePlan, draft_tokens: int) -> Drafting:
    """The draft as the run uses it: prompt lookup, or the draft model opened as the model is (same device and
    dtype), checked against the model (its vocabulary, both contexts, one forward for K tokens)."""
    from samplecli.engine.speculative import check_speculative

    if ref == NGRAM:
        check_speculative(lm, None, plan.built.strategy, draft_tokens, f"--draft-model {NGRAM}")
        return Drafting(None, draft_tokens)
    if ref == BUNDLED_DRAFT:
        from samplecli.backends.torch_lm import BUNDLED_DRAFT_DIR

        if not (BUNDLED_DRAFT_DIR / "config.json").is_file():
            raise UsageError(f"--draft-model {BUNDLED_DRAFT}: the bundled draft is missing from {BUNDLED_DRAFT_DIR}; "
                             "reinstall samplecli, or pass a draft model directory")
        draft = open_model(str(BUNDLED_DRAFT_DIR))
        draft.name = BUNDLED_DRAFT
    else:
        draft = open_model(ref)
    check_speculative(lm, draft, plan.built.strategy, draft_tokens, f"--draft-model {ref}")
    return Drafting(draft, draft_tokens)


def read_prompt_file(path: str, prompt: str | None) -> str:
    """`--prompt-file PATH` (`-`: standard input): the file's text as it is, a trailing newline included, as
    `score --file` reads a text."""
    from samplecli.config.inputs import read_stdin, read_text_file

    if prompt is not None:
        raise UsageError("--prompt-file: give the prompt as an argument or with --prompt-file, not both")
    if path == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("--prompt-file -: standard input is a terminal; pipe the prompt in")
        return read_stdin("--prompt-file - (the prompt on standard input)")
    return read_text_file(path, "--prompt-file")


@dataclass
class GeneratePlan:
    """What a `generate` run will do, decided and validated before the model loads (where no token given
    as text needs the vocabulary): the strategy, the run's config, and beam search's settings, if any."""

    built: Built
    config: DecodeConfig
    beam: BeamPlan
    drafting: Drafting | None = None  # speculative decoding: its draft, set once the model is open

    @property
    def search(self):
        return self.beam.settings


def generate_shape(plan: GeneratePlan, facts: ModelFacts | None, prompt: str, *, format: Format = Format.text,
                   view: View = View.none, quiet: bool = True) -> RunShape:
    """The rows and positions a run decodes at once (the beams, or one chunk of the samples), and what it keeps of
    every token to the end: the JSON document's records, the per-step table's steps, the terminal's text."""
    from samplecli.backends.memory import RECORD_BYTES, STEP_BYTES, TEXT_BYTES
    from samplecli.config.preflight import run_shape
    from samplecli.engine.decode import chunk_samples

    n, new = plan.config.num_samples, plan.config.max_new_tokens
    if plan.search is not None:
        # reordering the beams copies every layer's cache while the old one still lives: twice the rows' cache
        beams = plan.search.num_beams
        return run_shape(facts, prompt, new, 2 * beams, f"beam search with --num-beams {beams} (its cache copied at "
                         "each reorder)", "use fewer beams or a lower --max-new-tokens")
    chunk = chunk_samples(n)
    why = f"--num-samples {n} ({chunk} at a time)" if chunk < n else f"--num-samples {n}"
    kept = (RECORD_BYTES if format in (Format.json, Format.html) else 0) + (0 if quiet else TEXT_BYTES) + \
        (STEP_BYTES if view is View.steps and not quiet else 0)
    advice = "lower --max-new-tokens, or use a smaller model" if not kept else \
        "lower --num-samples or --max-new-tokens" + (", or use --format jsonl, which streams" if format is
                                                     Format.json else "")
    return run_shape(facts, prompt, new, chunk, why, advice, kept_per_token=kept, sequences=n)


def plan_generate(settings: Resolved, named: list[int | str], view: View, vocab: Vocabulary | None = None
                  ) -> GeneratePlan:
    """From resolved settings to a plan: every mistake is found here, one line each, before decoding."""
    from samplecli.config.beam_plan import plan_beam
    from samplecli.config.inputs import unescape
    from samplecli.config.keys import CONSTRAINTS, PENALTIES
    from samplecli.config.tokens import resolve_token
    from samplecli.engine.events import DecodeConfig
    from samplecli.strategies import build_strategy
    from samplecli.strategies.schema import SAMPLING_KEYS

    sampling = any(settings.get(k) is not None for k in SAMPLING_KEYS
                   if KEYS[k].group not in (PENALTIES, CONSTRAINTS))
    beam = plan_beam(settings.get("strategy"), settings.get("chain"), **{k: settings.get(k) for k in SEARCH_KEYS},
                     sampling=sampling)
    if view is View.tree and beam.settings is None:
        raise UsageError("--view tree shows the beam search tree; add --num-beams B (> 1) or --strategy beam")
    built = build_strategy(settings.sampling(vocab), strategy=beam.strategy, chain=settings.get("chain"))
    size = vocab.size if vocab is not None else 2**63  # ids alone: checked against the model when it runs
    config = DecodeConfig(max_new_tokens=settings.get("max_new_tokens"),
                          min_new_tokens=settings.get("min_new_tokens"),
                          stop=tuple(unescape(text) for text in settings.get("stop_strings") or ()),
                          num_samples=beam.num_samples(settings.get("num_samples"), built.strategy),
                          seed=settings.get("seed"), top_n=settings.get("top_n"),
                          logprob_of=tuple(resolve_token(t, vocab, size, "--logprob-of") for t in named))
    beam.check(config)
    return GeneratePlan(built, config, beam)


def clamped_line(asked: int, context: int, room: int, prompt_tokens: int) -> str:
    """The one line saying that the model's context cuts `-n` short (the run then ends with `context`)."""
    return (f"-n {asked}: the model's context ({context}) leaves room for {room} new tokens after the "
            f"{prompt_tokens}-token prompt; the run ends there with finish_reason `context`")


def run_generate(prompt: str, plan: GeneratePlan, lm: Backend, *, format: Format, view: View,
                 output: Path | None, quiet: bool, chat: ChatPrompt | None = None, separator: str = "",
                 sample_locally: bool = False, post_sampling: bool = False) -> None:
    """Decode (per token, or by beam search when the plan has its settings) and feed every event to the
    payload sink (stdout or --output) and the terminal views (stderr). `chat`: the prompt through a chat
    template, which the model reads instead of `prompt`."""
    from rich.text import Text

    from samplecli.cli.sinks import open_sinks
    from samplecli.engine.decode import context_room, encode_prompt, resolved_seed
    from samplecli.views import render

    built, config, search = plan.built, plan.config, plan.search
    err = _err_console()
    for key, value in built.ignored.items():
        warn(f"{built.strategy.name} ignores {key}={value}", err)
    prompt_ids = chat.ids if chat is not None else encode_prompt(lm, prompt)
    on_server = server_chain_for(lm, built.strategy, config, search, sample_locally=sample_locally,
                                 post_sampling=post_sampling, prompt_ids=prompt_ids)  # before any request for tokens
    room = context_room(lm, len(prompt_ids), config.max_new_tokens)
    if room < config.max_new_tokens:
        warn(clamped_line(config.max_new_tokens, lm.context_length, room, len(prompt_ids)), err)
    seed = resolved_seed(config.seed)
    config = type(config)(**{**config.__dict__, "seed": seed})
    events, chain, seeded = decode_events(lm, plan, prompt_ids, config, on_server, post_sampling)
    if not quiet:  # a seed is shown only where something random runs: a greedy run never draws
        render.print_flowed(err, render.header_parts(lm.name, chain, seed if seeded else None), " ")
        if lm.distribution_note is not None:
            err.print(Text(lm.distribution_note, style="dim"), soft_wrap=not err.is_terminal)
    document = {"model": lm.name, "prompt": chat.text if chat else prompt, **({"chat": True} if chat else {}),
                "strategy": chain, "seed": seed, "max_new_tokens": config.max_new_tokens}
    with open_sinks(err, format=format, view=view, output=output, quiet=quiet, beam=search is not None,
                    chain=chain, num_samples=config.num_samples, separator=separator, document=document) as sink:
        for event in events:
            sink.send(event)


def decode_events(lm: Backend, plan: GeneratePlan, prompt_ids: list[int], config: DecodeConfig,
                  on_server: Any, post_sampling: bool) -> tuple[Iterator[Any], str, bool]:
    """The run's events, the chain its header shows and whether it draws at random: decoded per token here, or by
    the engine (`on_server`: its chain, in its order), or by beam search."""
    if plan.drafting is not None:
        from samplecli.engine.speculative import speculative_decode

        return (speculative_decode(lm, plan.drafting.draft, plan.built.strategy, prompt_ids, config,
                                   plan.drafting.tokens),
                str(plan.built.strategy), plan.built.strategy.stochastic)
    if plan.search is not None:
        from samplecli.engine.beam import beam_decode, describe

        return (beam_decode(lm, plan.built.strategy, prompt_ids, config, plan.search),
                describe(plan.built.strategy, plan.search), plan.search.stochastic)
    if on_server is not None:
        from samplecli.engine.server_decode import server_decode

        chain = str(on_server)
        return (server_decode(lm, on_server, prompt_ids, config, label=chain, post_sampling=post_sampling), chain,
                plan.built.strategy.stochastic)
    from samplecli.engine.decode import decode_in_chunks

    return (decode_in_chunks(lm, plan.built.strategy, prompt_ids, config), str(plan.built.strategy),
            plan.built.strategy.stochastic)
