"""`SAMPLECLI_*` variables: one per setting and per alias (`SAMPLECLI_TEMPERATURE`, `SAMPLECLI_TEMP`), their
values read as TOML values, and a warning for a variable that names no setting."""

from __future__ import annotations

import os
import tomllib

from samplecli.config.inputs import not_too_deep
from samplecli.config.keys import ALIASES, KEYS, Setting, check_strategy, validate
from samplecli.errors import UsageError
from samplecli.strategies.base import closest

ENV_PREFIX = "SAMPLECLI_"
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
            values[key] = Setting(check_strategy(key, validate(key, value, at), at), f"env {name}")
    if "strategy" in values and "chain" in values:
        raise UsageError(f"environment: {ENV_PREFIX}STRATEGY and {ENV_PREFIX}CHAIN are both set: use one")
    return values


