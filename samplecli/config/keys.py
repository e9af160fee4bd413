"""The settings keys: every setting's type, flag, help panel and rule, the other names presets and `SAMPLECLI_*`
accept (`ALIASES`), and `validate`, the check of a value from a preset, the environment or a flag. A sampler's
setting is derived from `strategies.schema`. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from samplecli.config.inputs import check_text
from samplecli.errors import UsageError
from samplecli.strategies.base import closest
from samplecli.strategies.schema import SAMPLING as SAMPLING_SCHEMA
from samplecli.strategies.schema import SamplingSetting, param_of


@dataclass(frozen=True)
class Key:
    """One setting: its type ("float", "int", "str", "bool", "strings", "biases", "choice"), the CLI flag that sets it
    (and its other spellings), the help panel it is listed under, and the rule a valid value obeys (a
    predicate and its wording)."""

    name: str
    type: str
    flag: str | None
    help: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    choices: tuple[str, ...] = ()
    group: str = "Run"
    flag_aliases: tuple[str, ...] = ()


# the help panels, in the order `--help` shows them
SAMPLING, PENALTIES, BEAM, OUTPUT, MODEL, RUN = "Sampling", "Penalties", "Beam search", "Output", "Model", "Run"


def _sampling_key(setting: SamplingSetting) -> Key:
    """A sampler's setting as a settings key: the registry parameter's type and rule, the schema's flag."""
    group = PENALTIES if setting.penalty or setting.modifies else SAMPLING
    if setting.kind == "biases":
        return Key(setting.name, "biases", setting.flag, setting.help, group=group)
    param = param_of(setting)
    return Key(setting.name, "int" if param.type is int else "float", setting.flag, setting.help,
               setting.check or param.check, setting.rule or param.rule, group=group,
               flag_aliases=setting.flag_aliases)


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("strategy", "str", "--strategy", "A named strategy (see `samplecli strategies`).", group=SAMPLING),
    Key("chain", "str", "--chain", "An explicit sampler order, e.g. \"top-k=40,top-p=0.95,temp=0.8\".",
        group=SAMPLING),
    *(_sampling_key(setting) for setting in SAMPLING_SCHEMA),
    Key("max_new_tokens", "int", "--max-new-tokens", "Stop after this many tokens.", lambda v: v > 0, "> 0"),
    Key("min_new_tokens", "int", "--min-new-tokens", "Mask EOS until this many tokens.", lambda v: v >= 0, ">= 0"),
    Key("stop_strings", "strings", "--stop", "Stop at this string (repeatable); it is not printed.",
        lambda v: all(v), "non-empty strings"),
    Key("num_samples", "int", "--num-samples", "Independent samples, decoded in one batch.", lambda v: v >= 1,
        ">= 1"),
    Key("seed", "int", "--seed", "Random seed: same seed, same output.", lambda v: 0 <= v < 2**63,
        "in [0, 2**63)"),
    Key("top_n", "int", "--top-n", "Alternatives recorded per step.", lambda v: v >= 0, ">= 0", group=OUTPUT),
    Key("num_beams", "int", "--num-beams", "Beam search with B beams; > 1 implies --strategy beam (4 with "
        "--strategy beam alone).", lambda v: v >= 1, ">= 1", group=BEAM),
    # beyond +-20 the length ** A of a long beam soon is no float any more (and no run needs it: 0 to 2 is usual)
    Key("length_penalty", "float", "--length-penalty", "Beam score = log-prob / generated length ** A.",
        lambda v: -20 <= v <= 20, "in [-20, 20]", group=BEAM),
    Key("early_stopping", "choice", "--early-stopping", "When beam search stops: true, false or never, as in "
        "transformers.", None, "", ("true", "false", "never"), group=BEAM),
    Key("num_return_sequences", "int", "--num-return-sequences", "Return the R best beams, R <= B (or R samples).",
        lambda v: v >= 1, ">= 1", group=BEAM),
    Key("num_beam_groups", "int", "--num-beam-groups", "Diverse beam search: G groups of B / G beams "
        "(Vijayakumar et al. 2016).", lambda v: v >= 1, ">= 1", group=BEAM),
    Key("diversity_penalty", "float", "--diversity-penalty", "Diverse beam search: subtracted per earlier group "
        "that chose the same token.", lambda v: v >= 0, ">= 0", group=BEAM),
    Key("model", "str", "--model", "A Hugging Face model id, a local directory, or a server's URL "
        "(http://HOST:PORT, llama.cpp's llama-server) (default: the bundled Tiny Shakespeare model).", group=MODEL),
    Key("description", "str", None, "What the preset is for."),
)}

# llama.cpp's and Ollama's names for the same settings.
ALIASES = {"temp": "temperature", "repeat_penalty": "repetition_penalty", "num_predict": "max_new_tokens",
           "n_predict": "max_new_tokens", "stop": "stop_strings", "repeat_last_n": "penalty_last_n",
           "typical": "typical_p", "top_nsigma": "top_n_sigma"}

DEFAULTS: dict[str, Any] = {"max_new_tokens": 100, "min_new_tokens": 0, "num_samples": 1, "top_n": 5}


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def validate(key: str, value: Any, where: str) -> Any:
    """Check one value's type and range; return it normalised (an int where a float is expected is fine).
    `where` says where it came from, for the error message."""
    spec = KEYS[key]
    bad = f"{where}: `{key}` has to be"
    if spec.type in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{bad} {'an integer' if spec.type == 'int' else 'a number'} {spec.rule}, "
                             f"but is {_type_name(value)} ({value!r})")
        if spec.type == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise UsageError(f"{bad} an integer {spec.rule}, but is {value!r}")
                value = int(value)
        else:
            finite = "a finite number" + (f" {spec.rule}" if spec.rule and spec.rule != "finite" else "")
            try:
                value = float(value)
            except OverflowError:  # a TOML integer beyond float's range
                raise UsageError(f"{bad} {finite}, but is {value}") from None
            if not math.isfinite(value):
                raise UsageError(f"{bad} {finite}, but is {value}")
    elif spec.type == "str":
        if not isinstance(value, str):
            raise UsageError(f"{bad} a string, but is {_type_name(value)} ({value!r})")
        check_text(value, f"{where}: `{key}`")
    elif spec.type == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{bad} true or false, but is {_type_name(value)} ({value!r})")
    elif spec.type in ("strings", "biases"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{bad} a string or an array of strings, but is {value!r}")
        for entry in value:
            check_text(entry, f"{where}: `{key}`")
        if spec.type == "biases":  # each "TOKEN=BIAS" parses (its tokens are looked up when a model is loaded)
            from samplecli.config.tokens import parse_token_bias

            label = where[len("flag "):] if where.startswith("flag ") else f"{where}: `{key}`"
            for entry in value:
                parse_token_bias(entry, label)
    elif spec.type == "choice":
        if isinstance(value, bool):
            value = "true" if value else "false"
        if value not in spec.choices:
            raise UsageError(f"{bad} one of {', '.join(spec.choices)}, but is {value!r}")
    if spec.check is not None and not spec.check(value):
        raise UsageError(f"{bad} {spec.rule}, but is {value!r}")
    return value


def check_strategy(key: str, value: Any, where: str) -> Any:
    """A preset's or the environment's `strategy` and `chain` are checked on loading, so that the error
    names the file (flags are checked where the strategy is built)."""
    if key not in ("strategy", "chain"):
        return value
    from samplecli.strategies import NAMED, parse_chain, strategy_name

    if key == "strategy":
        value = strategy_name(value)
    if key == "strategy" and value not in NAMED:
        valid = sorted(NAMED)
        raise UsageError(f"{where}: unknown strategy `{value}`{closest(value, valid)}; valid: {', '.join(valid)}")
    if key == "chain":
        try:
            parse_chain(value)
        except UsageError as exc:
            raise UsageError(f"{where}: `chain` {value!r} is not a valid chain: {exc}") from None
    return value


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "default", "preset NAME (PATH)", "env SAMPLECLI_X", "flag --x"


def overlay(lower: dict[str, Setting], upper: dict[str, Setting]) -> dict[str, Setting]:
    """`upper` over `lower`; `strategy` and `chain` say the same thing two ways, so either one replaces both."""
    merged = dict(lower)
    if "strategy" in upper or "chain" in upper:
        merged.pop("strategy", None)
        merged.pop("chain", None)
    merged.update(upper)
    return merged
