"""One style for `--help`, set on Typer's Rich help once at import (Typer 0.29 draws the panels):

- a flag that takes no value shows no type: `--quiet` alone, never `--quiet <bool>` (which reads as if it took
  `true`, and `samplecli generate --trust-remote-code true` then takes "true" for the prompt);
- a repeatable option shows its value's type and `...`, `<str>...`, not Python's `<list[str]>`; a long list of
  choices shows as the option's name (`<format>`: its help lists them), so that no column squeezes the help;
- a default reads as samplecli's own help texts write it, `(default: 100)`, never also `[default: text]`;
- an option's other spellings are listed as a list is written, `--temp, --temperature` (Typer joins them with a
  bare comma).
"""

from __future__ import annotations

from typer import core, rich_utils

DEFAULT_STYLE = "(default: {})"
CHOICES_SHOWN = 12  # the longest `<a|b|c>` shown in the type column; a longer one shows as `<name>`


def _display_type(original):
    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        shown = original(self, ctx)
        if isinstance(shown, str) and shown.startswith("<list[") and shown.endswith("]>"):
            return f"<{shown[6:-2]}>..."  # a repeatable option: `<str>...`, as click writes nargs
        if isinstance(shown, str) and "|" in shown and len(shown) > CHOICES_SHOWN:
            return f"<{self.name}>"  # the choices are in the help text; a long list here squeezes every help
        return shown

    return display_type_rich


class _SpacedNames:
    """Typer's option-name highlighter, given `--a, --b` where Typer writes `--a,--b`."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, text):
        return self.inner(text.replace(",-", ", -") if isinstance(text, str) else text)


def apply() -> None:
    """Idempotent: the settings above, on Typer's option class and its Rich help."""
    if not getattr(core.TyperOption, "_samplecli_help_style", False):
        core.TyperOption.display_type_rich = _display_type(core.TyperOption.display_type_rich)
        core.TyperOption._samplecli_help_style = True
    if not isinstance(rich_utils.highlighter, _SpacedNames):
        rich_utils.highlighter = _SpacedNames(rich_utils.highlighter)
    rich_utils.DEFAULT_STRING = DEFAULT_STYLE


__all__ = ["DEFAULT_STYLE", "apply"]
