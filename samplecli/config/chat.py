"""Chat prompts and a model's own generation defaults, checked before any model loads.

`--chat` makes the prompt a user message, `--system TEXT` puts a system message first, `--messages FILE` reads
a JSON list of {role, content} (a multi-turn conversation); the backend turns the messages into prompt ids
with the model's chat template. A model directory's `generation_config.json` may suggest sampling values
(instruct models do); they are read here as a settings layer that `--model-defaults` turns on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplecli.config.inputs import SMALL_LIMIT, check_text, not_too_deep, read_text_file
from samplecli.errors import SampleCliError, UsageError

ROLES = ("system", "user", "assistant")
# generation_config.json keys that are samplecli settings of the same name and meaning
SUGGESTED_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty")


@dataclass(frozen=True)
class ChatRequest:
    """What the chat flags ask for: the conversation before the prompt, and a template to use instead of the
    model's own (its Jinja text), if any."""

    messages: tuple[dict[str, str], ...] = ()
    template: str | None = None
    template_path: Path | None = None

    def with_user(self, prompt: str | None) -> list[dict[str, str]]:
        """The conversation with `prompt` (when given and not empty) as the last user message."""
        messages = [dict(m) for m in self.messages]
        if prompt:
            messages.append({"role": "user", "content": prompt})
        return messages


def chat_request(chat: bool, system: str | None, messages_file: Path | None,
                 template_file: Path | None, messages_flag: str = "--messages") -> ChatRequest | None:
    """The chat request the flags make (None for a plain prompt); every mistake is one line, before loading, naming
    the flag that gave the conversation (`messages_flag`: chat's `--continue` reads the same files)."""
    if not (chat or system is not None or messages_file is not None or template_file is not None):
        return None
    messages = read_messages(messages_file, messages_flag) if messages_file is not None else []
    if system is not None:
        check_text(system, "--system")
        if not system.strip():
            raise UsageError("--system: the system message is empty")
        if messages and messages[0]["role"] == "system":
            raise UsageError(f"--system and {messages_flag} {messages_file}: the file already starts with a system "
                             "message; keep one")
        messages.insert(0, {"role": "system", "content": system})
    template = read_template(template_file) if template_file is not None else None
    return ChatRequest(tuple(messages), template, template_file)


def read_messages(path: Path, flag: str = "--messages") -> list[dict[str, str]]:
    """A JSON list of {"role": "system" | "user" | "assistant", "content": str}, not empty; or the JSONL a chat's
    /save writes (a `chat` line with the system message, then a `message` line per message)."""
    where = f"{flag} {path}"
    text = read_text_file(path, flag, SMALL_LIMIT)  # a device such as /dev/zero is refused, not read
    try:
        with not_too_deep(where):
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        saved = saved_chat(text, where)
        if saved is not None:
            return validate_messages(saved, where)
        raise UsageError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); expected a "
                         'list like [{"role": "user", "content": "..."}], or a file a chat\'s /save wrote') from None
    return validate_messages(data, where)


def saved_chat(text: str, where: str) -> list[dict[str, str]] | None:
    """The messages of a conversation `samplecli chat`'s /save wrote, or None when `text` is not one (its first line
    is not a `chat` record); each message's other fields (the reply's steps, strategy, seed) are left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        with not_too_deep(where):
            head = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        return None
    if not isinstance(head, dict) or head.get("type") != "chat":
        return None
    messages = [{"role": "system", "content": head["system"]}] if isinstance(head.get("system"), str) else []
    for number, line in enumerate(lines[1:], start=2):
        try:
            with not_too_deep(where):
                record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or record.get("type") != "message":
            raise UsageError(f"{where}: line {number} is not a message record of a saved chat")
        messages.append({"role": record.get("role"), "content": record.get("content")})
    return messages


def validate_messages(data: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(data, list):
        raise UsageError(f'{where}: expected a JSON list of {{"role", "content"}} objects, but it holds '
                         f"{type(data).__name__ if not isinstance(data, dict) else 'an object'}")
    if not data:
        raise UsageError(f"{where}: the list of messages is empty")
    messages = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) - {"role", "content"} or "role" not in item \
                or "content" not in item:
            raise UsageError(f'{where}: message {i} has to be an object with "role" and "content" only, '
                             f"but is {json.dumps(item, ensure_ascii=False)[:80]}")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise UsageError(f"{where}: message {i} has role {role!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UsageError(f"{where}: message {i}'s content has to be a string, but is {content!r}")
        check_text(content, f"{where}: message {i}'s content")
        if role == "system" and i != 0:
            raise UsageError(f"{where}: message {i} is a system message; only the first message may be one")
        messages.append({"role": role, "content": content})
    return messages


def read_template(path: Path) -> str:
    where = f"--chat-template {path}"
    text = read_text_file(path, "--chat-template", SMALL_LIMIT)
    if not text.strip():
        raise UsageError(f"{where}: the template is empty")
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:  # its syntax is known before the model loads (as transformers reads it: with loop controls)
        ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
                                      ).parse(text)
    except TemplateSyntaxError as exc:
        if "unknown tag" in (exc.message or ""):  # a tag of transformers' own ({% generation %}): its to judge
            return text
        raise UsageError(f"{where}: not a valid Jinja template (line {exc.lineno}: {exc.message})") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply to read") from None
    return text


def model_directory(reference: str | None) -> Path | None:
    """The local directory a `--model` value names (the bundled model for None), or None for anything else."""
    from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME

    if reference is None or reference == BUNDLED_MODEL_NAME:
        return BUNDLED_MODEL_DIR
    if "://" in reference:
        return None
    local = Path(reference).expanduser()
    return local if local.is_dir() else None


def check_rendered_size(template: str, messages: list[dict[str, str]], limit: int, where: str,
                        **variables: Any) -> None:
    """Render `template` in Jinja2's sandbox, streamed, and stop with one line naming `where` as soon as it writes
    more than `limit` characters (a template that renders 50 million words would otherwise be tokenized whole, and
    end in a panic of the tokenizer). A template this render cannot run (a variable only the model's tokenizer
    gives) is left to the real rendering, which says what is wrong with it."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "")
    try:
        compiled = environment.from_string(template)
        written = 0
        for chunk in compiled.generate(messages=messages, add_generation_prompt=True, **variables):
            written += len(chunk)
            if written > limit:
                raise UsageError(f"{where}: the template renders more than {limit} characters for these messages, "
                                 "more than the model's context can hold; check its loops")
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError):
        return


def check_chat_template(reference: str | None, request: ChatRequest | None, command: str = "generate") -> None:
    """A chat (--chat, --system, --messages) with the model's own template, for a model directory whose tokenizer
    files hold none: refused from tokenizer_config.json before the weights load (where the files cannot be read
    here, a hub id or a server, the model says when it opens)."""
    if request is None or request.template is not None:
        return
    folder = model_directory(reference)
    if folder is None or not (folder / "tokenizer_config.json").is_file():
        return
    if any((folder / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        return
    try:
        with not_too_deep(f"model `{reference}`: {folder / 'tokenizer_config.json'}"):
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # the tokenizer's own loading says what is wrong with it
    if isinstance(config, dict) and not config.get("chat_template"):
        shown = reference if reference is not None else "bundled"
        if command == "chat":
            raise SampleCliError(f"model `{shown}` has no chat template (none in {folder / 'tokenizer_config.json'}); "
                                 "chat needs a chat model (-m DIR, a .gguf file or a server URL) or a template "
                                 "(--chat-template FILE)")
        raise SampleCliError(f"model `{shown}` has no chat template (none in {folder / 'tokenizer_config.json'}); give "
                             "a plain prompt (without --chat, --system or --messages), or a template with "
                             "--chat-template FILE")  # exit 1, as the model's own refusal after loading was


def model_suggestions(reference: str | None) -> dict[str, Any]:
    """The sampling values the model's generation_config.json suggests (no weights are read); {} when none."""
    folder = model_directory(reference)
    path = folder / "generation_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        with not_too_deep(f"model `{reference}`: {path}"):
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"model `{reference}`: {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in SUGGESTED_KEYS
            if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool)}


def describe_suggestions(suggested: dict[str, Any]) -> str:
    """"temperature 0.7, top_p 0.8" (in generation_config's own names)."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in suggested.items())


__all__ = ["ROLES", "ChatRequest", "chat_request", "check_chat_template", "check_rendered_size", "describe_suggestions",
           "model_suggestions", "read_messages", "validate_messages"]
