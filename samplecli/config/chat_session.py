"""`samplecli chat`'s settings between turns: the flags it started with, changed by slash commands (`/temp 0.5`,
`/top-p 0.9`, `/strategy min-p`, `/chain ...`, `/preset NAME`), each checked as a flag would be; no UI here."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from samplecli.config.inputs import not_too_deep
from samplecli.config.keys import ALIASES, KEYS, validate
from samplecli.config.settings import Resolved, resolve
from samplecli.errors import UsageError
from samplecli.strategies import DEFAULT_SETTINGS
from samplecli.strategies.base import closest
from samplecli.strategies.schema import KEPT, SAMPLING_KEYS

# what a slash command may set, besides every sampler's setting
RUN_KEYS = ("strategy", "chain", "max_new_tokens", "min_new_tokens", "seed", "top_n")
# the commands that are not settings, with what they do (for /help and the unknown-command line)
ACTIONS = {"show": "print the current chain", "reset": "clear the conversation (the system message stays)",
           "save": "FILE: write the conversation and each reply's steps as JSONL",
           "load": "FILE: go on from a conversation /save wrote (or a JSON list of messages)",
           "help": "list the commands", "exit": "leave (or Ctrl-D)"}


def help_rows() -> list[tuple[str, str]]:
    """(command, what it does) for /help: the actions, then each setting once under its flag's name, its other
    names after it ("/temp, /temperature"); a setting's help is its flag's."""
    rows = [(f"/{action}", what) for action, what in ACTIONS.items()]
    names: dict[str, list[str]] = {}
    for name, key in setting_commands().items():
        names.setdefault(key, []).append(name)
    for key, spelled in names.items():
        help_text = "load a preset's settings (samplecli presets list)" if key == "preset" else KEYS[key].help
        rows.append((", ".join(f"/{n}" for n in spelled[:2]), help_text))
    return rows


def setting_commands() -> dict[str, str]:
    """{command name: setting}: each setting's flag without its dashes (`top-p`), its other flags, its aliases."""
    names: dict[str, str] = {}
    for key in (*RUN_KEYS[:2], *SAMPLING_KEYS, *RUN_KEYS[2:]):
        spec = KEYS[key]
        for flag in (spec.flag, *spec.flag_aliases):
            if flag:
                names.setdefault(flag.lstrip("-"), key)
        names.setdefault(key.replace("_", "-"), key)
    for alias, key in ALIASES.items():
        if key in names.values():
            names.setdefault(alias.replace("_", "-"), key)
    names["preset"] = "preset"
    return names


@dataclass(frozen=True)
class ChatSettings:
    """The settings a chat session decodes with: flags over a preset over the model's defaults (when asked)."""

    flags: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    model_defaults: dict[str, Any] | None = None

    def resolved(self) -> Resolved:
        return resolve(self.flags, preset=self.preset, model_defaults=self.model_defaults)

    def command(self, name: str, argument: str) -> ChatSettings:
        """The settings after `/name argument`; UsageError (one line) for an unknown command or a bad value."""
        commands = setting_commands()
        if name not in commands:
            valid = sorted({*commands, *ACTIONS})
            raise UsageError(f"unknown command /{name}{closest(name, valid)}; type /help for the list")
        key = commands[name]
        if not argument:
            raise UsageError(f"/{name} needs a value, e.g. /{name} {example(key)}")
        if key == "preset":
            changed = replace(self, preset=argument)
        else:
            value = parse_value(key, argument, f"/{name}")
            flags = dict(self.flags)
            if key in SAMPLING_KEYS and key not in KEPT and self.uses_default_chain():
                # `/top-k 20` adds a stage to the chain the chat was using: the defaults stay, as they would
                # with the flags `--temp 0.8 --top-p 0.95 --top-k 20`
                flags = {**DEFAULT_SETTINGS, **flags}
            if key in ("strategy", "chain"):  # one says what the other says: the new one replaces both
                flags.pop("strategy", None)
                flags.pop("chain", None)
            flags[key] = value
            changed = replace(self, flags=flags)
        changed.resolved()  # a preset that does not load, or an env conflict, fails here
        return changed


    def uses_default_chain(self) -> bool:
        """Whether no strategy, chain or sampler setting was given: samplecli's default chain decodes."""
        resolved = self.resolved()
        return all(resolved.get(k) is None for k in ("strategy", "chain", *SAMPLING_KEYS) if k not in KEPT)


def parse_value(key: str, argument: str, where: str) -> Any:
    """A slash command's argument as the setting's value, read as TOML where it parses (as SAMPLECLI_* are)."""
    spec = KEYS[key]
    value: Any = argument
    if spec.type in ("int", "float"):
        try:
            with not_too_deep(where):
                value = tomllib.loads(f"v = {argument}")["v"]
        except tomllib.TOMLDecodeError:
            raise UsageError(f"{where}: {argument!r} is not a number") from None
    elif spec.type in ("strings", "biases"):
        value = argument.split()
    elif spec.type == "choice":
        value = argument.lower()
    return validate(key, value, where)  # a strategy's name and a chain are checked there too


def example(key: str) -> str:
    return {"strategy": "min-p", "chain": "top-k=40,temp=0.8", "preset": "NAME"}.get(
        key, "0.9" if key in KEYS and KEYS[key].type == "float" else "NAME" if key == "preset" else "40")


__all__ = ["ACTIONS", "RUN_KEYS", "ChatSettings", "help_rows", "parse_value", "setting_commands"]
