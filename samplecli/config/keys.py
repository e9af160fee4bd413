"""The settings keys: every setting's type, flag, help panel, other names and rule, and `validate`, the one check
of a value from a preset, the environment or a flag.

A sampler's setting is derived from its declaration in `strategies.schema`; the run settings a `DecodeConfig`
carries take their rules from `engine.events`. Presets keys, `SAMPLECLI_*` variables, the command-line options
(`cli.options`) and `--explain-settings` all come from `KEYS`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from samplecli.config.inputs import check_text
from samplecli.engine.events import MAX_NEW_TOKENS, MIN_NEW_TOKENS, NUM_SAMPLES, RUN_PARAMS, SEED, TOP_N
from samplecli.errors import UsageError
from samplecli.strategies.base import Param, closest, type_name
from samplecli.strategies.schema import SAMPLING as SAMPLING_SCHEMA
from samplecli.strategies.schema import SamplingSetting

# the help panels, in the order `--help` shows them
SAMPLING, PENALTIES, BEAM, OUTPUT, MODEL, RUN = "Sampling", "Penalties", "Beam search", "Output", "Model", "Run"
CONSTRAINTS = "Constraints"


@dataclass(frozen=True)
class Key:
    """One setting: its type ("float", "int", "str", "bool", "strings", "biases", "choice"), the CLI flag that sets it
    (and its other spellings), the help panel it is listed under, its other names in presets and `SAMPLECLI_*`
    (llama.cpp's and Ollama's), and the rule a valid value obeys: a number's `param`, else a predicate and its
    wording."""

    name: str
    type: str
    flag: str | None
    help: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    choices: tuple[str, ...] = ()
    group: str = RUN
    flag_aliases: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    param: Param | None = None


def _number(param: Param, flag: str, help: str, group: str = RUN, aliases: tuple[str, ...] = (),
            flag_aliases: tuple[str, ...] = ()) -> Key:
    """A number setting: its type and rule are `param`'s."""
    return Key(param.name, "int" if param.type is int else "float", flag, help, group=group,
               flag_aliases=flag_aliases, aliases=aliases, param=param)


def _sampling_key(setting: SamplingSetting) -> Key:
    """A sampler's setting as a settings key, from its one declaration."""
    group = PENALTIES if setting.penalty or setting.modifies else SAMPLING
    if setting.constraint:  # a string, or strings: checked by its parameter (compiled)
        return Key(setting.name, "strings" if setting.kind == "texts" else "str", setting.flag, setting.help,
                   group=CONSTRAINTS, aliases=setting.aliases, rule=setting.rule, param=setting.param)
    if setting.kind == "biases":
        return Key(setting.name, "biases", setting.flag, setting.help, group=group, aliases=setting.aliases)
    return _number(setting.param, setting.flag, setting.help, group, setting.aliases, setting.flag_aliases)


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("strategy", "str", "--strategy", "A named strategy (see `samplecli strategies`).", group=SAMPLING),
    Key("chain", "str", "--chain", "An explicit sampler order, e.g. \"top-k=40,top-p=0.95,temp=0.8\".",
        group=SAMPLING),
    *(_sampling_key(setting) for setting in SAMPLING_SCHEMA),
    _number(MAX_NEW_TOKENS, "--max-new-tokens", "Stop after this many tokens.", aliases=("num_predict", "n_predict")),
    _number(MIN_NEW_TOKENS, "--min-new-tokens", "Mask EOS until this many tokens."),
    Key("stop_strings", "strings", "--stop", "Stop at this string (repeatable; \\n, \\t, \\xHH read as llama.cpp "
        "reads them); it is not printed.",
        lambda v: all(v), "non-empty strings", aliases=("stop",)),
    _number(NUM_SAMPLES, "--num-samples", "Independent samples, decoded in one batch."),
    _number(SEED, "--seed", "Random seed: same seed, same output (default: a fresh one, printed in the header)."),
    _number(TOP_N, "--top-n", "Alternatives recorded per step.", OUTPUT),
    _number(Param("num_beams", int, None, ">= 1", lambda v: v >= 1), "--num-beams", "Beam search with B beams; > 1 "
            "implies --strategy beam (4 with --strategy beam alone).", BEAM),
    # beyond +-20 the length ** A of a long beam soon is no float any more (and no run needs it: 0 to 2 is usual)
    _number(Param("length_penalty", float, None, "in [-20, 20]", lambda v: -20 <= v <= 20), "--length-penalty",
            "Beam score = log-prob / generated length ** A.", BEAM),
    Key("early_stopping", "choice", "--early-stopping", "When beam search stops: true, false or never, as in "
        "transformers.", None, "", ("true", "false", "never"), group=BEAM),
    _number(Param("num_return_sequences", int, None, ">= 1", lambda v: v >= 1), "--num-return-sequences",
            "Return the R best beams, R <= B (or R samples).", BEAM),
    _number(Param("num_beam_groups", int, None, ">= 1", lambda v: v >= 1), "--num-beam-groups",
            "Diverse beam search: G groups of B / G beams (Vijayakumar et al. 2016).", BEAM),
    _number(Param("diversity_penalty", float, None, ">= 0", lambda v: v >= 0), "--diversity-penalty",
            "Diverse beam search: subtracted per earlier group that chose the same token.", BEAM),
    Key("model", "str", "--model", "A Hugging Face model id, a local directory, or a server's URL "
        "(http://HOST:PORT, llama.cpp's llama-server) (default: the bundled Tiny Shakespeare model).", group=MODEL),
    Key("description", "str", None, "What the preset is for."),
)}

# Every other name a setting has (`temp`, `repeat_penalty`, `num_predict`), derived from the declarations.
ALIASES: dict[str, str] = {alias: key.name for key in KEYS.values() for alias in key.aliases}

DEFAULTS: dict[str, Any] = {p.name: p.default for p in RUN_PARAMS if p.default is not None}


def validate(key: str, value: Any, where: str) -> Any:
    """Check one value's type and rule; return it normalised (an int where a float is expected is fine).
    `where` says where it came from, for the error message. A number is checked by its `Param`."""
    spec = KEYS[key]
    bad = f"{where}: `{key}` has to be"
    if spec.param is not None:
        return spec.param.validate(where, value)
    if spec.type == "str":
        if not isinstance(value, str):
            raise UsageError(f"{bad} a string, but is {type_name(value)} ({value!r})")
        check_text(value, f"{where}: `{key}`")
    elif spec.type == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{bad} true or false, but is {type_name(value)} ({value!r})")
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
            parse_chain(value)  # a bare constraint (`regex`) is placed when the strategy is built, with its flag
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
