"""What `samplecli inspect` will compute, parsed and validated before a model loads (no torch here).

Every strategy the inspection needs (the traced one, one per swept temperature or parameter value, the
two orders of `--order-diff`) is built here through the registry's `build_strategy`, so a bad value fails
with the registry's own message before anything slow happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from samplecli.errors import SampleCliError, UsageError
from samplecli.strategies import FLAG_ORDER, TRANSFORMS, Strategy, build_strategy
from samplecli.strategies.base import Invalid, closest
from samplecli.strategies.build import sampler_name
from samplecli.strategies.schema import KEPT, param

MAX_TEMPS = 100
MAX_DRAWS = 10_000_000
MAX_SWEEP_POINTS = 1000
MAX_TOP_N = 1000
# --plot without --temps plots these.
DEFAULT_PLOT_TEMPS = (0.25, 0.5, 1.0, 2.0, 4.0)
# The dense entropy-temperature curve of --plot: this many temperatures, log-spaced.
CURVE_POINTS = 61

TEMPERATURE = param("temperature")  # its rule checks each of --temps

# The settings --sweep can vary: the flag-composable ones that are not penalties.
SWEEPABLE = {name: setting for setting, name in FLAG_ORDER if setting not in KEPT}

# llama.cpp's default sampler order (common/common.h, `common_params_sampling::samplers`): penalties, dry,
# top-n-sigma, top-k, typical, top-p, min-p, xtc, and temperature last. Registry names; no-repeat-ngram
# (a transformers processor llama.cpp lacks) goes with the penalties.
LLAMA_CPP_ORDER = ("repetition-penalty", "presence-penalty", "frequency-penalty", "no-repeat-ngram", "dry",
                   "top-n-sigma", "top-k", "typical", "top-p", "min-p", "xtc", "temperature")


@dataclass(frozen=True)
class SweepPlan:
    """One `--sweep NAME=START:STOP:STEP`: the setting, its values, and one strategy per value."""

    spec: str
    name: str  # the transform's registry name, e.g. "top-p"
    setting: str  # the parameter, e.g. "top_p"
    values: tuple[float | int, ...]
    strategies: tuple[Strategy, ...]


@dataclass
class Plan:
    """Everything `inspect` will compute, validated."""

    top_n: int
    at: int
    seed: int | None
    traced: Strategy | None  # the chain traced stage by stage; None: the raw distribution only
    generation: Strategy  # what generates the tokens up to step `at`
    temps: tuple[float, ...] = ()
    temp_strategies: tuple[Strategy, ...] = ()
    curve_temps: tuple[float, ...] = ()
    curve_strategies: tuple[Strategy, ...] = ()
    draws: int | None = None
    sweeps: tuple[SweepPlan, ...] = ()
    orders: tuple[Strategy, Strategy] | None = None  # transformers' order, llama.cpp's order
    plot: str | None = None
    notes: list[str] = field(default_factory=list)  # said on stderr: what was ignored or filled in


def make_plan(sampling: dict[str, Any], *, strategy: str | None = None, chain: str | None = None,
              temps: str | None = None, draws: int | None = None, sweeps: list[str] | tuple[str, ...] = (),
              order_diff: bool = False, at: int | None = None, seed: int | None = None, top_n: int = 10,
              plot: str | None = None) -> Plan:
    """Validate the flags of `inspect` and build every strategy it needs; raise UsageError on bad input.

    `sampling` holds the sampling settings (`temperature`, `top_k`, ...; None where not given), already
    merged from flags, preset and environment.
    """
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= MAX_TOP_N:
        raise UsageError(f"--top-n has to be an integer in [1, {MAX_TOP_N}], but is {top_n}")
    at = 0 if at is None else at
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise UsageError(f"--at has to be an integer >= 0 (the step whose distribution to show), but is {at}")
    if draws is not None and (isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= MAX_DRAWS):
        raise UsageError(f"--draws has to be an integer in [1, {MAX_DRAWS:_}], but is {draws}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise UsageError(f"--seed has to be an integer in [0, 2**63), but is {seed}")
    if plot is not None:
        check_plot_path(plot)

    notes: list[str] = []
    given = {k: v for k, v in sampling.items() if v is not None}
    traced = None
    if chain is not None or strategy is not None or given:
        built = build_strategy(sampling, strategy=strategy, chain=chain)
        traced = built.strategy
        notes += [f"{traced.name} ignores {k}={v}" for k, v in built.ignored.items()]
    generation = traced if traced is not None else build_strategy({}).strategy
    plan = Plan(top_n=top_n, at=at, seed=seed, traced=traced, generation=generation, draws=draws, plot=plot,
                notes=notes)

    if temps is None and plot is not None:
        temps = ",".join(f"{t:g}" for t in DEFAULT_PLOT_TEMPS)
        notes.append(f"--plot without --temps: plotting T = {temps}")
    if temps is not None:
        plan.temps = parse_temps(temps)
        plan.temp_strategies = _temperature_strategies(plan.temps, sampling, strategy, chain, "--temps")
        if given.get("temperature") is not None:
            notes.append(f"--temps replaces temperature={given['temperature']:g}")
    if plot is not None:
        plan.curve_temps = curve_temperatures(plan.temps)
        plan.curve_strategies = _temperature_strategies(plan.curve_temps, sampling, strategy, chain, "--plot")
    plan.sweeps = tuple(parse_sweep(spec, sampling, strategy, chain) for spec in sweeps or ())
    if order_diff:
        plan.orders = orders(sampling, strategy, chain)
        if strategy is None and not any(k not in KEPT for k in given):
            notes.append(f"--order-diff without sampling flags compares the default settings: {plan.orders[0]}")
    return plan


def check_plot_path(plot: str) -> None:
    """--plot takes a .png path in an existing directory, and needs matplotlib (the `plot` extra)."""
    import importlib.util
    from pathlib import Path

    path = Path(plot).expanduser()
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG: give a path ending in .png, but is {plot!r}")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {plot}: the directory {path.parent} does not exist")
    if importlib.util.find_spec("matplotlib") is None:
        raise SampleCliError("--plot needs matplotlib, which is not installed: pip install 'samplecli[plot]'")


def parse_temps(text: str) -> tuple[float, ...]:
    """"0.1,0.5,1,2,5" -> (0.1, 0.5, 1.0, 2.0, 5.0): ascending, without repeats; each finite and >= 0."""
    example = "expected a comma-separated list of temperatures such as 0.1,0.5,1,2,5"
    parts = [p.strip() for p in text.split(",")]
    if not text.strip():
        raise UsageError(f"--temps: the list is empty; {example}")
    values = []
    for part in parts:
        if not part:
            raise UsageError(f"--temps: an empty item in {text!r}; {example}")
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"--temps: {part!r} is not a number; {example}") from None
        try:
            values.append(TEMPERATURE.normalise(value))
        except Invalid:
            raise UsageError(f"--temps: a temperature has to be a finite number {TEMPERATURE.rule} (0 is greedy), "
                             f"but is {part}") from None
    if len(set(values)) > MAX_TEMPS:
        raise UsageError(f"--temps: at most {MAX_TEMPS} temperatures, but {len(set(values))} were given")
    return tuple(sorted(set(values)))


def curve_temperatures(temps: tuple[float, ...]) -> tuple[float, ...]:
    """Log-spaced temperatures for the plotted entropy curve, covering the swept ones with room either side."""
    positive = [t for t in temps if t > 0] or [1.0]
    low, high = min(0.05, min(positive) / 2), max(20.0, max(positive) * 2)
    step = math.log(high / low) / (CURVE_POINTS - 1)
    return tuple(low * math.exp(i * step) for i in range(CURVE_POINTS))


def _temperature_strategies(temps, sampling, strategy, chain, flag) -> tuple[Strategy, ...]:
    if chain is not None:
        raise UsageError(f"{flag} sets the temperature itself, so it does not combine with --chain; give the "
                         "other settings as flags (--top-k, --top-p, ...) or --strategy")
    built = [build_strategy({**sampling, "temperature": t}, strategy=strategy) for t in temps]
    if strategy is not None and any("temperature" in b.ignored for b in built):
        raise UsageError(f"{flag}: the strategy `{strategy}` ignores the temperature, so there is nothing to sweep")
    return tuple(b.strategy for b in built)


def parse_sweep(spec: str, sampling: dict[str, Any], strategy: str | None, chain: str | None) -> SweepPlan:
    """"top-p=0.5:1.0:0.05" (START:STOP:STEP, STOP included) or "top-k=1,5,10,40" (a list)."""
    form = "expected NAME=START:STOP:STEP or NAME=V1,V2,..., e.g. top-p=0.5:1.0:0.05"
    where = f"--sweep {spec!r}"
    raw_name, eq, values_text = spec.partition("=")
    if not eq or not raw_name.strip() or not values_text.strip():
        raise UsageError(f"{where}: {form}")
    raw_name = raw_name.strip()
    name = sampler_name(raw_name)
    if name not in SWEEPABLE:
        valid = sorted(SWEEPABLE)
        raise UsageError(f"{where}: cannot sweep `{raw_name}`{closest(raw_name, valid)}; valid: {', '.join(valid)}")
    if chain is not None:
        raise UsageError(f"{where}: a sweep sets `{name}` itself, so it does not combine with --chain; give the "
                         "other settings as flags (--temp, --top-k, ...) or --strategy")
    setting = SWEEPABLE[name]
    param = next(p for p in TRANSFORMS[name].params if p.name == setting)
    values = _sweep_values(values_text, where, form, integer=param.type is int)
    strategies = []
    for value in values:
        try:
            built = build_strategy({**sampling, setting: value}, strategy=strategy)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if setting in built.ignored:
            raise UsageError(f"{where}: the strategy `{built.strategy.name}` ignores `{setting}`, so there is "
                             "nothing to sweep")
        strategies.append(built.strategy)
    return SweepPlan(spec=spec, name=name, setting=setting, values=values, strategies=tuple(strategies))


def _number(text: str, where: str, form: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where}: {text.strip()!r} is not a number; {form}") from None
    if not math.isfinite(value):
        raise UsageError(f"{where}: {text.strip()!r} is not a finite number; {form}")
    return value


def _sweep_values(text: str, where: str, form: str, integer: bool) -> tuple[float | int, ...]:
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"{where}: {form}")
        start, stop, step = (_number(p, where, form) for p in parts)
        if step <= 0:
            raise UsageError(f"{where}: the step has to be > 0, but is {parts[2].strip()}")
        if stop < start:
            raise UsageError(f"{where}: the stop ({parts[1].strip()}) is below the start ({parts[0].strip()})")
        span = (stop - start) / step  # inf for a step too small to divide by (1e-320)
        count = math.floor(span + 1e-9) + 1 if span <= MAX_SWEEP_POINTS else None
        if count is None or count > MAX_SWEEP_POINTS:
            many = f"{count or math.floor(span) + 1}" if math.isfinite(span) else "too many"
            raise UsageError(f"{where}: {many} values; at most {MAX_SWEEP_POINTS} (use a larger step)")
        # round away the float noise of start + i * step (0.1 + 2 * 0.1 = 0.30000000000000004)
        values = [round(start + i * step, 12) for i in range(count)]
    else:
        values = [_number(p, where, form) for p in text.split(",")]
        if len(values) > MAX_SWEEP_POINTS:
            raise UsageError(f"{where}: {len(values)} values; at most {MAX_SWEEP_POINTS}")
    if integer:
        bad = [v for v in values if not float(v).is_integer()]
        if bad:
            raise UsageError(f"{where}: this setting takes whole numbers, but the sweep gives {bad[0]:g}")
        return tuple(int(v) for v in values)
    return tuple(float(v) for v in values)


def orders(sampling: dict[str, Any], strategy: str | None, chain: str | None) -> tuple[Strategy, Strategy]:
    """The same settings in transformers' order (temperature before truncation, `build_strategy`'s own)
    and in llama.cpp's default order (truncation first, temperature last), as two strategies."""
    if chain is not None:
        raise UsageError("--order-diff reorders the settings given as flags; give them as --temp, --top-k, "
                         "--top-p, ... (or --strategy), not as --chain, which fixes its own order")
    first = build_strategy(sampling, strategy=strategy).strategy
    rank = {name: i for i, name in enumerate(LLAMA_CPP_ORDER)}
    reordered = sorted(first.transforms, key=lambda t: rank.get(t.name, len(rank)))
    second = Strategy(reordered, first.selector, name=first.name)
    return first, second
