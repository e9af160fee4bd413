"""The chat options shared by generate, compare, inspect and score (--chat, --system, --messages, --chat-template)
and --model-defaults; the command gets `chat: ChatOptions`, which resolves the settings (with the model's own
defaults as a layer when asked) and turns a prompt into prompt ids through the backend's chat template."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from samplecli.cli.options import option_group

if TYPE_CHECKING:
    from samplecli.backends.base import Backend
    from samplecli.config.chat import ChatRequest
    from samplecli.config.settings import Resolved

CHAT_PANEL = "Chat"
MODEL_DEFAULTS_HELP = ("Use the sampling values the model's generation_config.json suggests (temperature, top_p, "
                       "...) as a settings layer between samplecli's defaults and the preset.")
ChatOpt = Annotated[bool, typer.Option("--chat", help="Apply the model's chat template: the prompt is a user message, "
                                       "the output the assistant's reply.", rich_help_panel=CHAT_PANEL)]
SystemOpt = Annotated[str | None, typer.Option("--system", help="A system message first (implies --chat).",
                                               rich_help_panel=CHAT_PANEL)]
MessagesOpt = Annotated[Path | None, typer.Option("--messages", help="A JSON list of {role, content} before the "
                                                  "prompt: a multi-turn conversation (implies --chat).",
                                                  rich_help_panel=CHAT_PANEL)]
ChatTemplateOpt = Annotated[Path | None, typer.Option("--chat-template", help="A Jinja chat template to use instead "
                                                      "of the model's (implies --chat).", rich_help_panel=CHAT_PANEL)]
ModelDefaultsOpt = Annotated[bool, typer.Option("--model-defaults", help=MODEL_DEFAULTS_HELP,
                                                rich_help_panel="Sampling")]
CHAT_OPTIONS: dict[str, tuple[Any, Any]] = {  # name: (annotation, default)
    "chat": (ChatOpt, False), "system": (SystemOpt, None), "messages": (MessagesOpt, None),
    "chat_template": (ChatTemplateOpt, None), "model_defaults": (ModelDefaultsOpt, False),
}


@dataclass
class ChatPrompt:
    """A prompt through a chat template: its ids and their text with every special token, as the model reads it."""

    ids: list[int]
    text: str
    templated_by: str | None = None  # an engine that applies its own template to the messages (OpenAI protocol)


@dataclass
class ChatOptions:
    """The chat flags, checked (the --messages file read) before any model loads."""

    request: ChatRequest | None
    model_defaults: bool = False
    suggestions: dict[str, Any] = field(default_factory=dict)

    def resolve(self, flags: dict[str, Any], preset: str | None) -> Resolved:
        """Settings: defaults < the model's generation_config (with --model-defaults) < preset < env < flags."""
        from samplecli.config.chat import check_chat_template, model_suggestions
        from samplecli.config.settings import resolve

        settings = resolve(flags, preset=preset)
        check_chat_template(settings.get("model"), self.request)
        self.suggestions = model_suggestions(settings.get("model"))
        if self.model_defaults and self.suggestions:
            settings = resolve(flags, preset=preset, model_defaults=self.suggestions)
        return settings

    def suggestion_line(self) -> str | None:
        """"model suggests: temperature 0.7, ... (--model-defaults to use them)", where it suggests and is unused."""
        from samplecli.config.chat import describe_suggestions

        if self.model_defaults or not self.suggestions:
            return None
        return f"model suggests: {describe_suggestions(self.suggestions)} (--model-defaults to use them)"

    def prompt(self, lm: Backend, prompt: str | None) -> ChatPrompt | None:
        """The templated prompt (None without chat flags); the backend's end-of-turn tokens then stop decoding."""
        if self.request is None:
            return None
        return chat_prompt(lm, self.request.with_user(prompt), self.request.template)


def chat_prompt(lm: Backend, messages: list[dict[str, str]], template: str | None) -> ChatPrompt:
    from samplecli.backends.base import CHAT
    from samplecli.engine.decode import check_prompt_fits
    from samplecli.errors import UsageError

    if (refusal := lm.why_not(CHAT)) is not None:
        raise UsageError(refusal)
    if not messages:
        raise UsageError("--chat: there is no message to answer; give a prompt or --messages FILE")
    own = lm.local_chat_template()
    jinja = template if template is not None else (own[0] if own is not None else None)
    if jinja is not None:  # a template this process renders: capped before it is tokenized
        from samplecli.config.chat import check_rendered_size
        from samplecli.config.inputs import SMALL_LIMIT
        from samplecli.config.preflight import MAX_TOKEN_BYTES

        which = "--chat-template" if template is not None else f"model `{lm.name}`'s chat template"
        limit = lm.context_length * MAX_TOKEN_BYTES if lm.context_length else SMALL_LIMIT
        bos, eos = (own[1], own[2]) if own is not None else ("", "")
        check_rendered_size(jinja, messages, limit, which, bos_token=bos, eos_token=eos)
    ids = lm.chat(messages, template)
    if lm.chat_warning is not None:
        from samplecli.cli.app import warn

        warn(lm.chat_warning)
    if not ids:  # a model reads at least one token; an empty prompt here is the template's doing
        which = "--chat-template" if template is not None else f"model `{lm.name}`'s chat template"
        raise UsageError(f"{which}: the template renders nothing (0 tokens) for these messages; check that it writes "
                         "the messages (`{% for message in messages %}...`)")
    check_prompt_fits(lm, ids)
    return ChatPrompt(ids, lm.vocab.decode(ids, skip_special_tokens=False), lm.engine if lm.templates_chats else None)


def show_chat_prompt(prompt: ChatPrompt, console=None) -> None:
    """The templated prompt on stderr, verbatim (model text is never Rich markup)."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console(stderr=True, highlight=False)
    if prompt.templated_by is not None:
        console.print(f"the conversation, as {prompt.templated_by} gets it (it applies its chat template):",
                      style="bold")
    else:
        console.print(f"prompt as the model reads it ({len(prompt.ids)} tokens):", style="bold")
    console.print(Text(prompt.text), soft_wrap=True)


def _chat_options(values: dict[str, Any]) -> ChatOptions:
    from samplecli.cli.app import error_boundary
    from samplecli.config.chat import chat_request

    with error_boundary():
        request = chat_request(values["chat"], values["system"], values["messages"], values["chat_template"])
    return ChatOptions(request, values["model_defaults"])


# Add --chat, --system, --messages, --chat-template and --model-defaults; the command gets `chat`.
with_chat_options = option_group("chat", CHAT_OPTIONS, _chat_options)


__all__ = ["CHAT_OPTIONS", "ChatOptions", "ChatPrompt", "ChatTemplateOpt", "MessagesOpt", "ModelDefaultsOpt",
           "SystemOpt", "chat_prompt", "show_chat_prompt", "with_chat_options"]
