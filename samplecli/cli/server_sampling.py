"""Where a run samples: on a remote engine (the default for `--model http://...`) or in samplecli (a local model,
or `--sample-locally`). The options live here; the refusals come before any request for tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from samplecli.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from samplecli.backends.base import Backend
    from samplecli.engine.events import DecodeConfig
    from samplecli.strategies import Strategy

PANEL = "Model"
SampleLocallyOpt = Annotated[bool, typer.Option(
    "--sample-locally", help="With a remote engine (--model http://...): ask it only for each next-token "
    "distribution and sample in samplecli (every sampler, any order, beam search), instead of letting the server "
    "sample.", rich_help_panel=PANEL)]
PostSamplingOpt = Annotated[bool, typer.Option(
    "--post-sampling-probs", help="Sampling on a remote engine: return the probabilities of the distribution the "
    "server drew from (the strategy's) instead of the raw model's.", rich_help_panel=PANEL)]


def check_local_refusals(model: str | None, *, sample_locally: bool, post_sampling: bool) -> None:
    """Before a model loads: --sample-locally and --post-sampling-probs name a remote engine's ways of sampling,
    so for a model in this process (the bundled one, a directory, a hub id, a GGUF file) they are refused."""
    from samplecli.backends.remote import claims

    if model is not None and claims(model):
        return
    shown = f"--model {model}" if model is not None else "the bundled model"
    for flag, given in (("--sample-locally", sample_locally), ("--post-sampling-probs", post_sampling)):
        if given:
            what = "sampling on a remote engine" if flag == "--post-sampling-probs" else "a remote engine"
            raise UsageError(f"{flag} is for {what} (--model http://...); {shown} runs in samplecli, which always "
                             "samples locally: drop the flag")


def samples_on_server(lm: Backend, *, sample_locally: bool, post_sampling: bool,
                      prompt_ids: Sequence[int] = ()) -> bool:
    """Whether the engine draws the tokens (a remote engine without --sample-locally); UsageError, before any
    request for tokens, for --post-sampling-probs where the engine does not sample or returns the raw model's
    probabilities only, and for --sample-locally where the engine gives no distribution by token id after
    `prompt_ids` (tokens named by text, a chat it templates itself)."""
    from samplecli.backends.base import POST_SAMPLING, SAMPLE_LOCALLY
    from samplecli.engine.server_decode import can_sample_on

    on_server = can_sample_on(lm) and not sample_locally
    if post_sampling and not on_server:
        raise UsageError("--post-sampling-probs is for sampling on a remote engine (--model http://... without "
                         "--sample-locally)")
    refusal = lm.why_not(POST_SAMPLING) if post_sampling else None
    refusal = refusal or (lm.why_not(SAMPLE_LOCALLY, prompt_ids) if sample_locally else None)
    if refusal is not None:
        raise UsageError(refusal)
    return on_server


def server_chain_for(lm: Backend, strategy: Strategy, config: DecodeConfig, beam: object | None, *,
                     sample_locally: bool, post_sampling: bool, prompt_ids: Sequence[int] = ()):
    """The chain the server will run, or None where samplecli samples; UsageError for what the server cannot
    run (one line naming the engine and the setting, with --sample-locally as the way out)."""
    from samplecli.engine.server_decode import server_chain

    on_server = samples_on_server(lm, sample_locally=sample_locally, post_sampling=post_sampling,
                                  prompt_ids=prompt_ids)
    if not on_server:
        return None
    if beam is not None:
        from samplecli.backends.base import search_on_server

        raise UsageError(search_on_server(lm, "beam", prompt_ids))
    return server_chain(lm, strategy, config)
