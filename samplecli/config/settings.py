"""Settings: defaults < preset (with its bases) < SAMPLECLI_* environment < command-line flags.

Every resolved value remembers where it came from, so `presets show` and `--explain-settings` can say.
Presets are TOML files; their keys are transformers' GenerationConfig names where one exists, plus ours,
with llama.cpp's and Ollama's spellings accepted as aliases. Everything here is validated before a
model loads, and nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samplecli.config.inputs import check_text, not_too_deep
from samplecli.errors import SampleCliError, UsageError
from samplecli.strategies.base import closest
from samplecli.strategies.schema import SAMPLING as SAMPLING_SCHEMA
from samplecli.strategies.schema import SAMPLING_KEYS, SamplingSetting, param_of

BUILTIN_DIR = Path(__file__).resolve().parent / "presets"


def shown_path(path: Path) -> str:
    """A preset's path as the user reads it, never tied to the machine: a built-in as `presets/NAME.toml`, a file
    under the working directory relative to it, one under the home directory as `~/...`."""
    path = Path(path)
    for base, shown in ((BUILTIN_DIR.resolve(), "presets"), (Path.cwd().resolve(), None), (Path.home(), "~")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return str(Path(shown) / relative) if shown else str(relative)
    return str(path)


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
    Key("stop_strings", "strings", "--stop", "Stop at this string (repeatable; \\n, \\t, \\xHH read as llama.cpp "
        "reads them); it is not printed.",
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

ENV_PREFIX = "SAMPLECLI_"


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


def _check_strategy(key: str, value: Any, where: str) -> Any:
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


@dataclass
class Preset:
    """A loaded preset with its bases merged in: the values, where each came from, the aliases it used,
    and any named strategies for `compare`."""

    name: str
    path: Path
    values: dict[str, Setting] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> key, as written in the file(s)
    strategies: dict[str, dict[str, Setting]] = field(default_factory=dict)
    description: str = ""
    chain: list[Path] = field(default_factory=list)  # this file, then its bases


def user_config_dir() -> Path:
    """SAMPLECLI_CONFIG_DIR, else $XDG_CONFIG_HOME/samplecli, else the platform's config directory."""
    if os.environ.get("SAMPLECLI_CONFIG_DIR"):
        return Path(os.environ["SAMPLECLI_CONFIG_DIR"]).expanduser()
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]).expanduser() / "samplecli"
    import typer

    return Path(typer.get_app_dir("samplecli", force_posix=False))


def user_preset_dir() -> Path:
    return user_config_dir() / "presets"


def builtin_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}


def user_presets() -> dict[str, Path]:
    folder = user_preset_dir()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def find_preset(ref: str, relative_to: Path | None = None) -> Path:
    """A preset by name (user presets shadow built-ins) or by path to a .toml file."""
    if not ref.strip():
        raise UsageError(f"preset {ref!r}: a preset is a name (`samplecli presets list`) or a path to a .toml file, "
                         "not empty")
    looks_like_path = ref.endswith(".toml") or "/" in ref or os.sep in ref
    if looks_like_path:
        try:
            path = Path(ref).expanduser()
            if not path.is_absolute() and relative_to is not None:
                path = relative_to.parent / path
            found, folder = path.is_file(), path.is_dir()
        except (OSError, RuntimeError) as exc:  # a name too long, no permission, `~nouser`
            raise UsageError(f"preset file {ref}: cannot open it ({exc})") from exc
        if folder:
            raise UsageError(f"preset {path} is a directory; give a .toml file or a preset name")
        if not found and path.exists():
            raise UsageError(f"preset {path} is not a file (a device or a pipe); give a .toml file")
        if not found:
            raise UsageError(f"preset file {path} does not exist")
        return path
    user, builtin = user_presets(), builtin_presets()
    if ref in user:
        return user[ref]
    if ref in builtin:
        return builtin[ref]
    names = sorted(set(user) | set(builtin))
    with contextlib.suppress(OSError, ValueError):
        if Path(ref).is_dir():
            raise UsageError(f"preset {ref} is a directory; give a .toml file or a preset name")
    raise UsageError(f"unknown preset `{ref}`{closest(ref, names)}; valid: {', '.join(names) or 'none'}")


_TABLE_HEADER = re.compile(r"^[ \t]*\[", flags=re.M)


def _line_of(text: str, key: str, table: str | None = None) -> str:
    """' (line N)' where `key` is set: at the top level, or in `[strategies.TABLE]`; '' when not found."""
    start, end = 0, len(text)
    if table is not None:
        header = re.search(rf"^[ \t]*\[[ \t]*strategies[ \t]*\.[ \t]*[\"']?{re.escape(table)}[\"']?[ \t]*\]",
                           text, flags=re.M)
        if header is None:
            return ""
        start = header.end()
    following = _TABLE_HEADER.search(text, start)
    end = following.start() if following else len(text)
    # [ \t], not \s: a blank line before the key must not count as the key's line
    match = re.compile(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=", flags=re.M).search(text, start, end)
    return f" (line {text[: match.start()].count(chr(10)) + 1})" if match else ""


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"preset {path}: cannot read it ({exc})") from exc
    try:
        with not_too_deep(f"preset {path}"):
            return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"preset {path}: malformed TOML: {exc}") from exc


def _table(data: dict[str, Any], path: Path, text: str, source: str, aliases: dict[str, str],
           table: str | None = None) -> dict[str, Setting]:
    where = f" [strategies.{table}]" if table is not None else ""
    values: dict[str, Setting] = {}
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in KEYS:
            valid = sorted([*KEYS, *ALIASES])
            raise UsageError(f"preset {path}{_line_of(text, raw_key, table)}{where}: unknown key `{raw_key}`"
                             f"{closest(raw_key, valid)}; valid keys: {', '.join(sorted(KEYS))}")
        if key in values:
            raise UsageError(f"preset {path}{_line_of(text, raw_key, table)}{where}: `{raw_key}` and another "
                             f"spelling of `{key}` are both set; keep one")
        if raw_key != key:
            aliases[raw_key] = key
        at = f"preset {path}{_line_of(text, raw_key, table)}{where}"
        values[key] = Setting(_check_strategy(key, validate(key, value, at), at), source)
    if "strategy" in values and "chain" in values:
        raise UsageError(f"preset {path}{where}: `strategy` and `chain` are both set: use one "
                         "(a chain names its own order)")
    return values


def _overlay(lower: dict[str, Setting], upper: dict[str, Setting]) -> dict[str, Setting]:
    """`upper` over `lower`; `strategy` and `chain` say the same thing two ways, so either one replaces both."""
    merged = dict(lower)
    if "strategy" in upper or "chain" in upper:
        merged.pop("strategy", None)
        merged.pop("chain", None)
    merged.update(upper)
    return merged


def load_preset(ref: str, relative_to: Path | None = None, _seen: tuple[Path, ...] = ()) -> Preset:
    """Load a preset and its `extends` chain (a name or a path, relative to the file that names it)."""
    path = find_preset(ref, relative_to).resolve()
    if path in _seen:
        cycle = " -> ".join(str(p) for p in (*_seen, path))
        raise UsageError(f"preset {path}: `extends` makes a cycle: {cycle}")
    data, text = _read_toml(path)
    name = path.stem
    source = f"preset {name} ({shown_path(path)})"
    base: Preset | None = None
    if "extends" in data:
        parent = data.pop("extends")
        if not isinstance(parent, str) or not parent:
            raise UsageError(f"preset {path}{_line_of(text, 'extends')}: `extends` has to be a preset name or "
                             f"path, but is {parent!r}")
        try:
            base = load_preset(parent, relative_to=path, _seen=(*_seen, path))
        except UsageError as exc:
            if str(exc).startswith("preset ") and "cycle" in str(exc):
                raise
            raise UsageError(f"preset {path}: its base `{parent}` cannot be loaded: {exc}") from exc
    strategies_data = data.pop("strategies", {})
    if not isinstance(strategies_data, dict) or not all(isinstance(v, dict) for v in strategies_data.values()):
        raise UsageError(f"preset {path}: `strategies` has to hold tables ([strategies.NAME])")
    aliases: dict[str, str] = dict(base.aliases) if base else {}
    values = _overlay(base.values if base else {}, _table(data, path, text, source, aliases))
    strategies = dict(base.strategies) if base else {}
    for sname, table in strategies_data.items():
        strategies[sname] = _table(table, path, text, source, aliases, sname)
    # a description speaks for its own file only: it is not inherited
    own = values.get("description")
    description = own.value if own is not None and own.source == source else ""
    if own is not None and own.source != source:
        del values["description"]
    return Preset(name=name, path=path, values=values, aliases=aliases, strategies=strategies,
                  description=description, chain=[path, *(base.chain if base else [])])


# A value starting with one of these is TOML or nothing: a broken one is refused, not taken as a bare string.
TOML_OPENERS = ("[", "{", '"', "'")
# SAMPLECLI_* variables that are not settings: the user configuration directory, the remote engines' key and
# timeout (--timeout), the llama.cpp build cache and its source, and the test suite's own switches.
OTHER_VARIABLES = ("CONFIG_DIR", "API_KEY", "TIMEOUT", "CACHE", "LLAMA_SDIST", "UPDATE_SNAPSHOTS", "FUZZ_EXAMPLES",
                   "FUZZ_SEED", "FUZZ_LOG")


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """A warning for each SAMPLECLI_* variable that is neither a setting nor one of OTHER_VARIABLES (a typo such as
    SAMPLECLI_TEMPRATURE would otherwise be ignored without a word), with the closest known name."""
    environ = os.environ if environ is None else environ
    settings = [ENV_PREFIX + key.upper() for key in KEYS if key != "description"]
    known = set(settings) | {ENV_PREFIX + name for name in (*OTHER_VARIABLES, *(a.upper() for a in ALIASES))}
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            hint = closest(name, sorted(known))
            warnings.append(f"{name} is not a samplecli setting and is ignored{hint}")
    return warnings


def from_env(environ: dict[str, str] | None = None) -> dict[str, Setting]:
    """SAMPLECLI_TEMPERATURE=0.7 and friends; values are read as TOML values (strings may be bare)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Setting] = {}
    for key in KEYS:
        # a preset's aliases name the same settings here: SAMPLECLI_STOP is SAMPLECLI_STOP_STRINGS
        names = [n for n in (ENV_PREFIX + k.upper() for k in (key, *(a for a, k in ALIASES.items() if k == key)))
                 if n in environ]
        if len(names) > 1:
            raise UsageError(f"environment: {' and '.join(names)} both set `{key}`; keep one")
        if names and key != "description":
            name = names[0]
            raw = environ[name]
            try:
                with not_too_deep(f"environment {name}"):
                    value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError as exc:
                if raw.lstrip()[:1] in TOML_OPENERS:  # meant as TOML (an array, a quoted string), and broken
                    why = str(exc).split(" (at ")[0]
                    raise UsageError(f"environment {name}: {raw!r} is not a valid TOML value ({why}); write a bare "
                                     "string, a quoted one (\"...\") or an array ([\"a\", \"b\"])") from None
                value = raw
            if KEYS[key].type in ("str", "strings", "biases", "choice") and not isinstance(value, (str, list, bool)):
                value = raw
            at = f"environment {name}"
            values[key] = Setting(_check_strategy(key, validate(key, value, at), at), f"env {name}")
    if "strategy" in values and "chain" in values:
        raise UsageError(f"environment: {ENV_PREFIX}STRATEGY and {ENV_PREFIX}CHAIN are both set: use one")
    return values


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
    values = _overlay(values, from_env(environ))
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
            value = _check_strategy(key, value, f"flag {flag}")
        given[key] = Setting(value, f"flag {flag}")
    return Resolved(values=_overlay(values, given), preset=loaded)


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


def to_toml(values: dict[str, Any]) -> str:
    """Write settings as TOML (the types here are the ones KEYS allows)."""
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _is_control(char: str) -> bool:
    # TOML's basic strings allow no raw control character (tab aside): they are written as \uXXXX
    return ord(char) < 0x20 or ord(char) == 0x7F


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _is_control(c) else c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def save_preset(name: str, values: dict[str, Any], force: bool = False) -> Path:
    """Write a user preset atomically (temp file + rename); refuse to overwrite unless `force`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsageError(f"preset name {name!r}: use letters, digits, '.', '_' and '-'")
    for key, value in values.items():
        if key != "extends":
            validate(key, value, f"preset {name}")
    try:
        encoded = to_toml(values).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, from an argument that was not UTF-8
        raise UsageError(f"preset {name}: {exc.object[exc.start:exc.end]!r} is not valid text") from None
    folder = user_preset_dir()
    path = folder / f"{name}.toml"
    if path.exists() and not force:
        raise UsageError(f"preset {path} exists; pass --force to overwrite it")
    tmp = path.with_suffix(f".toml.tmp{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encoded)
        os.replace(tmp, path)
    except OSError as exc:
        raise SampleCliError(f"preset {path}: cannot write it ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
