"""Settings: defaults < the model's own defaults < preset (with its bases) < SAMPLECLI_* environment < command-line
flags, each resolved value remembering where it came from, so `presets show` and `--explain-settings` can say.
The keys and their validation are `config.keys`; presets are `config.preset_files`, the environment
`config.environment`. Everything here is validated before a model loads, and nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from samplecli.config.environment import from_env
from samplecli.config.inputs import check_text
from samplecli.config.keys import DEFAULTS, KEYS, Setting, check_strategy, overlay, validate
from samplecli.config.preset_files import Preset, load_preset
from samplecli.strategies.schema import SAMPLING_KEYS


@dataclass
class Resolved:
    """The settings a command runs with, each with its source."""

    values: dict[str, Setting]
    preset: Preset | None = None

    def get(self, key: str, default: Any = None) -> Any:
        setting = self.values.get(key)
        return setting.value if setting is not None else default

    def sampling(self, vocab: Any = None) -> dict[str, Any]:
        """The sampling settings for `build_strategy`; `--logit-bias` tokens given as text need `vocab`."""
        return sampling_values({k: self.get(k) for k in SAMPLING_KEYS}, vocab)

    def needs_vocab(self) -> bool:
        """Whether a setting names a token by its text, so the model's vocabulary must be loaded to build."""
        from samplecli.config.tokens import needs_tokenizer, parse_token_bias

        return needs_tokenizer(parse_token_bias(e)[0] for e in self.get("logit_bias") or ())


def sampling_values(values: dict[str, Any], vocab: Any = None) -> dict[str, Any]:
    """Settings as `build_strategy` takes them: `logit_bias` entries ("TOKEN=BIAS") become {token id: bias}."""
    from samplecli.config.tokens import bias_table

    entries = values.get("logit_bias")
    if entries is None or isinstance(entries, dict):
        return values
    return {**values, "logit_bias": bias_table(entries, vocab)}


def resolve(flags: dict[str, Any], preset: str | None = None, environ: dict[str, str] | None = None,
            model_defaults: dict[str, Any] | None = None) -> Resolved:
    """Merge defaults < the model's own defaults (`--model-defaults`) < preset < environment < flags (a flag is
    given when its value is not None)."""
    values = {k: Setting(v, "default") for k, v in DEFAULTS.items()}
    for key, value in (model_defaults or {}).items():
        values[key] = Setting(validate(key, value, "the model's generation_config.json"), "model defaults")
    loaded = load_preset(preset) if preset is not None else None
    if loaded is not None:
        values.update({k: v for k, v in loaded.values.items() if k != "description"})
    values = overlay(values, from_env(environ))
    given: dict[str, Setting] = {}
    for key, value in flags.items():
        if value is None or (key == "stop_strings" and not value):
            continue
        flag = KEYS[key].flag or key
        if key == "stop_strings":  # an empty stop string is the decode config's to refuse, naming the setting
            value = [check_text(v, f"flag {flag}") for v in value]
        else:
            value = validate(key, value, f"flag {flag}")
        if key == "chain":  # its stages' errors name --chain, as a preset's name the file
            value = check_strategy(key, value, f"flag {flag}")
        given[key] = Setting(value, f"flag {flag}")
    return Resolved(values=overlay(values, given), preset=loaded)


def explain(resolved: Resolved, ignored: dict[str, Any], strategy: str) -> list[tuple[str, str, str, str]]:
    """Rows (key, value, source, note) for `presets show` and `--explain-settings`."""
    rows = []
    for key in KEYS:
        if key in resolved.values:
            setting = resolved.values[key]
            note = f"ignored by {strategy}" if key in ignored else ""
            rows.append((key, _show(setting.value), setting.source, note))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


