"""A command's run: its settings resolved, the model's facts read and checked, and the model opened once. Every
command that loads a model (`generate`, `compare`, `inspect`, `score`) starts here, so the sequence settings ->
facts -> checks -> open is written once.

    @app.command()
    @with_run(*SAMPLING_OPTIONS, "seed")
    def inspect(prompt: str | None = None, model: ModelOpt = None, *, run: RunOptions) -> None:
        with error_boundary():
            started = run.start(model)  # settings, facts, --device/--dtype and --logit-bias checked
            lm = started.open()
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samplecli.cli.chat_options import ChatOptions, ChatPrompt, with_chat_options
from samplecli.cli.options import with_model_options, with_settings

if TYPE_CHECKING:
    from samplecli.backends.base import Backend, Vocabulary
    from samplecli.backends.facts import ModelFacts
    from samplecli.config.preflight import RunShape
    from samplecli.config.settings import Resolved


@dataclass
class RunOptions:
    """What a command's flags say about its run, nothing checked yet: the settings' flags, how to open `--model`
    (device, dtype, a remote engine's protocol) and the chat flags."""

    flags: dict[str, Any]
    open_model: Callable[[str | None], Backend]
    chat: ChatOptions

    def start(self, model: str | None, preset: str | None = None, *, sample_locally: bool = False,
              post_sampling: bool = False) -> Run:
        """The checks every command makes before its model loads, in this order: --device and --dtype by name, the
        settings (defaults < model defaults < preset < environment < flags), --sample-locally and
        --post-sampling-probs against a model in this process, and --logit-bias's ids against the model's facts."""
        from samplecli.cli.server_sampling import check_local_refusals
        from samplecli.config import preflight

        preflight.check_device_dtype(self.open_model.options["device"], self.open_model.options["dtype"])
        settings = self.chat.resolve({**self.flags, "model": model}, preset=preset)
        if sample_locally or post_sampling:
            check_local_refusals(settings.get("model"), sample_locally=sample_locally, post_sampling=post_sampling)
        facts = preflight.model_facts(settings.get("model"))
        preflight.check_token_ids(preflight.bias_ids(settings.get("logit_bias") or ()), facts, "--logit-bias")
        return Run(settings, facts, self.chat, self.open_model)


@dataclass
class Run:
    """A started run: its resolved settings, the model's facts (None where its config cannot be read here, as for
    a remote engine) and the model, opened once, when the command first asks for it."""

    settings: Resolved
    facts: ModelFacts | None
    chat: ChatOptions
    open_model: Callable[[str | None], Backend]
    lm: Backend | None = None

    def open(self) -> Backend:
        if self.lm is None:
            self.lm = self.open_model(self.settings.get("model"))
        return self.lm

    @property
    def vocab(self) -> Vocabulary | None:
        """The model's vocabulary where it is open already (settings naming tokens as text need it), else None."""
        return self.lm.vocab if self.lm is not None else None

    def check_memory(self, shape: RunShape) -> None:
        """The memory `shape` needs against the machine's, before the model loads."""
        from samplecli.config import preflight

        options = self.open_model.options
        preflight.check_memory(self.facts, shape, options["device"], options["dtype"])

    def read_prompt(self, prompt: str | None) -> str:
        """The prompt argument or stdin; nothing ("") where --messages holds the conversation and no prompt adds
        to it."""
        from samplecli.cli.app import read_prompt

        request = self.chat.request
        return read_prompt(prompt) if request is None or not request.messages or prompt else ""

    def chat_prompt(self, text: str | None) -> ChatPrompt | None:
        """`text` through the chat template (None without chat flags); opens the model."""
        return self.chat.prompt(self.open(), text)


def with_run(*settings: str):
    """A command's options: one for each named setting, the model's (--device, --dtype, ...) and the chat flags;
    the command gets them as one keyword, `run: RunOptions`."""

    def decorate(func):
        signature = inspect.signature(func, eval_str=True)

        @functools.wraps(func)
        def command(*args, flags: dict[str, Any], open_model: Callable[[str | None], Backend], chat: ChatOptions,
                    **kwargs):
            return func(*args, run=RunOptions(flags, open_model, chat), **kwargs)

        injected = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
                    for name, annotation in (("flags", dict[str, Any]), ("open_model", Callable),
                                             ("chat", ChatOptions))]
        params = [*(p for p in signature.parameters.values() if p.name != "run"), *injected]
        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return with_settings(*settings)(with_model_options(with_chat_options(command)))

    return decorate


__all__ = ["Run", "RunOptions", "with_run"]
