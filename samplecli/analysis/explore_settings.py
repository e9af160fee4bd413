"""`samplecli explore`'s strategy settings: where exploring starts, the steps its keys move a setting by, and
settings in and out of JSON. Plain dicts of sampling settings (`temperature`, `top_k`, ...), built into a
Strategy by the registry; nothing here imports torch or a UI."""

from __future__ import annotations

import math
from typing import Any

from samplecli.errors import UsageError
from samplecli.strategies import DEFAULT_SETTINGS, NAMED, Strategy, build_strategy
from samplecli.strategies.schema import KEPT

# The settings the keys adjust, in the order the strategy panel lists them, and their "off" values.
KNOBS = ("temperature", "top_k", "top_p", "min_p")
KNOB_OFF: dict[str, Any] = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
TOP_K_STEPS = (1, 2, 3, 5, 10, 20, 40, 100, 1000)
MIN_P_STEPS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75)
TOP_P_STEP = 0.05
TEMPERATURE_FACTOR = 1.25  # `T` multiplies by it, `t` by its inverse (0.8)
TEMPERATURE_RANGE = (0.01, 100.0)


# --- the strategy's settings ----------------------------------------------------------------------------------


def starting_settings(sampling: dict[str, Any], strategy: str | None = None) -> dict[str, Any]:
    """The settings exploring starts from, every one explicit so that a key can change it: the flags and
    preset given, a named strategy's own setting at its default, or samplecli's default strategy when
    nothing is given. Raises UsageError for what explore cannot step through (beam search, mirostat)."""
    given = {k: v for k, v in sampling.items() if v is not None}
    if strategy is not None:
        if strategy not in NAMED:
            build_strategy(given, strategy=strategy)  # the registry's own error, with a close match
        named = NAMED[strategy]
        if named.loop != "token":
            raise UsageError(f"--strategy {strategy}: explore steps through one sequence token by token; "
                             f"{strategy} searches many at once (use `samplecli generate --strategy {strategy}`)")
        if named.selector not in ("sample", "greedy"):
            raise UsageError(f"--strategy {strategy}: its selector keeps a state along the text it generated, "
                             "which explore's undo and branches would not carry; use `samplecli generate "
                             f"--strategy {strategy} --view steps`")
        if named.selector == "greedy":
            given["temperature"] = 0.0
        elif named.primary is not None:
            given.setdefault(named.primary, named.default)
    elif all(k in KEPT for k in given):  # as `generate`: no sampling setting means the default strategy
        given = {**DEFAULT_SETTINGS, **given}
    build(given)  # validated now, before a model loads
    return given


def build(settings: dict[str, Any]) -> Strategy:
    """The strategy of these settings (temperature 0: greedy). Always composed as the named `sample` strategy,
    so that settings at their "off" values give plain sampling, never samplecli's default strategy."""
    return build_strategy(dict(settings), strategy="sample").strategy


def _significant(value: float) -> float:
    return float(f"{value:.4g}")


def adjusted(settings: dict[str, Any], knob: str, up: bool, warm_temperature: float = 1.0,
             vocab_size: int | None = None) -> dict[str, Any]:
    """`settings` with one knob moved a step: temperature x1.25 or x0.8 (from 0, `up` returns to
    `warm_temperature`); top-k along TOP_K_STEPS below the vocabulary size (past the largest is off, 0: every
    token); top-p by 0.05 within (0, 1]; min-p along MIN_P_STEPS. An "off" value stays in the settings (it
    leaves no stage in the chain) so that the panel can show it."""
    out = dict(settings)
    if knob == "temperature":
        value = out.get("temperature", 1.0)
        if value == 0:
            out["temperature"] = warm_temperature if up else 0.0
        else:
            factor = TEMPERATURE_FACTOR if up else 1 / TEMPERATURE_FACTOR
            low, high = TEMPERATURE_RANGE
            out["temperature"] = min(high, max(low, _significant(value * factor)))
    elif knob == "top_k":
        value = out.get("top_k", 0)
        steps = [s for s in TOP_K_STEPS if vocab_size is None or s < vocab_size]
        if up:
            out["top_k"] = 0 if value == 0 else next((s for s in steps if s > value), 0)
        else:
            below = [s for s in steps if s < (value or math.inf)]
            out["top_k"] = below[-1] if below else value
    elif knob == "top_p":
        value = out.get("top_p", 1.0)
        stepped = round(value + (TOP_P_STEP if up else -TOP_P_STEP), 2)
        out["top_p"] = min(1.0, max(TOP_P_STEP, stepped))
    elif knob == "min_p":
        value = out.get("min_p", 0.0)
        if up:
            out["min_p"] = next((s for s in MIN_P_STEPS if s > value), value)
        else:
            out["min_p"] = max((s for s in MIN_P_STEPS if s < value), default=0.0)
    else:
        raise ValueError(f"unknown knob {knob!r}; valid: {', '.join(KNOBS)}")
    return out


def knob_value(settings: dict[str, Any], knob: str) -> float | int | None:
    """The knob's value, None where it is off (top-k 0, top-p 1, min-p 0) or temperature is not set (1)."""
    value = settings.get(knob)
    if value is None or value == KNOB_OFF.get(knob):
        return None
    return value


def settings_record(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON allows: a logit-bias table {id: bias} becomes [[id, bias], ...], a ban (-inf) "-inf"."""
    out = dict(settings)
    if "logit_bias" in out:
        out["logit_bias"] = [[int(k), v if math.isfinite(v) else str(v)] for k, v in out["logit_bias"].items()]
    return out


def settings_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `settings_record`."""
    out = dict(record)
    if "logit_bias" in out:
        out["logit_bias"] = {int(k): float(v) for k, v in out["logit_bias"]}
    return out
