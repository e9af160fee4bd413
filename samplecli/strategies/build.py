"""From what the user typed to a Strategy: named strategies, flag composition, and `--chain` specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from samplecli.errors import UsageError
from samplecli.strategies.base import SELECTORS, TRANSFORMS, Strategy, closest
from samplecli.strategies.schema import BY_NAME, CONSTRAINTS, FLAG_ORDER, KEPT, MODIFIERS, OFF_VALUES, SAMPLING

# What `samplecli generate` does when no strategy flag is given at all.
DEFAULT_SETTINGS: dict[str, Any] = {"temperature": 0.8, "top_p": 0.95}


@dataclass(frozen=True)
class NamedStrategy:
    """A `--strategy NAME`: a selector plus the transform it is named for, with that one's default."""

    name: str
    summary: str
    selector: str = "sample"
    primary: str | None = None  # the setting this strategy is named for, e.g. "top_p"
    default: Any = None
    source: str = ""
    loop: str = "token"  # "token": the core decode loop; "beam": a search with its own loop (samplecli.engine.beam)
    aliases: tuple[str, ...] = ()  # other names `--strategy` takes: the common names of other tools and papers


NAMED: dict[str, NamedStrategy] = {}


def register_named(strategy: NamedStrategy) -> NamedStrategy:
    if strategy.name in NAMED:
        raise ValueError(f"a strategy named {strategy.name!r} is already registered")
    NAMED[strategy.name] = strategy
    return strategy


for _named in (
    NamedStrategy("greedy", "always the most probable token (the T -> 0 limit)", "greedy", source="argmax",
                  aliases=("argmax",)),
    NamedStrategy("sample", "pure multinomial sampling from the model's distribution", source="ancestral sampling",
                  aliases=("sampling", "multinomial")),
    NamedStrategy("temperature", "sampling with temperature T", primary="temperature", default=0.8,
                  source="Hinton et al. 2015"),
    NamedStrategy("top-k", "sampling from the k most probable tokens", primary="top_k", default=40,
                  source="Fan et al. 2018", aliases=("top_k",)),
    NamedStrategy("top-p", "nucleus sampling: the smallest set with mass >= p", primary="top_p", default=0.95,
                  source="Holtzman et al. 2019", aliases=("nucleus", "top_p")),
    NamedStrategy("min-p", "sampling from tokens with p >= min_p * p_max", primary="min_p", default=0.1,
                  source="Nguyen et al. 2024", aliases=("min_p",)),
    NamedStrategy("typical", "locally typical sampling", primary="typical_p", default=0.95,
                  source="Meister et al. 2023", aliases=("typical_p",)),
    NamedStrategy("epsilon", "sampling from tokens with p >= epsilon", primary="epsilon_cutoff", default=3e-4,
                  source="Hewitt et al. 2022"),
    NamedStrategy("eta", "sampling above an entropy-scaled floor", primary="eta_cutoff", default=2e-3,
                  source="Hewitt et al. 2022"),
    NamedStrategy("top-h", "sampling from the top tokens within an entropy budget", primary="top_h", default=0.4,
                  source="Top-H decoding, arXiv:2509.02510"),
    NamedStrategy("top-n-sigma", "sampling from logits within n std of the max", primary="top_n_sigma",
                  default=1.0, source="Tang et al. 2024"),
    NamedStrategy("mirostat", "Mirostat: steer each sample's surprise to tau = 5 bits", "mirostat",
                  source="Basu et al. 2021"),
    NamedStrategy("mirostat-v2", "Mirostat 2.0: steer each sample's surprise to tau = 5 bits", "mirostat-v2",
                  source="Basu et al. 2021"),
    # beam search scores whole sequences; its loop ignores the selector (penalties still apply)
    NamedStrategy("beam", "beam search: the B best-scoring sequences (length-normalised log-prob)", "greedy",
                  source="transformers generate(num_beams=B); Vijayakumar et al. 2016 for groups", loop="beam",
                  aliases=("beam-search", "beam_search")),
    NamedStrategy("stochastic-beam", "B sequences sampled without replacement (Gumbel-top-k)",
                  source="Kool et al. 2019", loop="beam"),
):
    register_named(_named)


def strategy_aliases() -> dict[str, str]:
    """The other names `--strategy` takes, each with the strategy it names (`nucleus`: `top-p`)."""
    return {alias: named.name for named in NAMED.values() for alias in named.aliases}


def strategy_name(name: str) -> str:
    """The registry's name for a `--strategy` a user typed: itself, or the name it is an alias of."""
    return strategy_aliases().get(name, name) if name not in NAMED else name


def sampler_name(name: str) -> str:
    """The registry's name for a sampler a user typed in `--chain` (or `inspect --sweep`): itself; the name of the
    transform a sampling setting or one of its aliases sets (`top_p`, `temp`, `repeat-penalty`); or a name a
    sampler declares in its `aliases` (`nucleus`), or its own with `_` for `-` (`mirostat_v2`)."""
    if name in TRANSFORMS or name in SELECTORS:
        return name
    for setting in SAMPLING:
        if not setting.modifies and any(name in (n, n.replace("_", "-")) for n in (setting.name, *setting.aliases)):
            return setting.transform
    for cls in (*TRANSFORMS.values(), *SELECTORS.values()):
        if name == cls.name.replace("-", "_") or name in cls.aliases:
            return cls.name
    return name


@dataclass
class Built:
    """A strategy and what the user asked for that it does not use (reported, never silent)."""

    strategy: Strategy
    ignored: dict[str, Any] = field(default_factory=dict)


def _transform(setting: str, value: Any, modifiers: dict[str, Any] | None = None):
    """The stage that sampling setting `setting` adds, its value validated by its parameter's rule."""
    extra = {k: v for k, v in (modifiers or {}).items() if setting in MODIFIERS[k]}
    return TRANSFORMS[BY_NAME[setting].transform](**{setting: value, **extra})


def build_strategy(settings: dict[str, Any], strategy: str | None = None, chain: str | None = None) -> Built:
    """Compose a Strategy from settings (`temperature`, `top_k`, ... : None where not given).

    - `chain`: an explicit order ("top-k=40,top-p=0.95,temperature=0.8"); the penalty and constraint settings go
      first, except a constraint the chain names without a value (`top-p=0.9,regex`): it takes the setting's value
      at that place.
    - `strategy`: a named strategy; its own setting takes its default when not given.
    - neither: the settings given compose in transformers' order; none at all means DEFAULT_SETTINGS.
    `temperature = 0` means greedy. Every given value is validated, used or not.
    """
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = [k for k in given if k not in dict(FLAG_ORDER) and k not in MODIFIERS]
    if unknown:
        valid = [*dict(FLAG_ORDER), *MODIFIERS]
        raise UsageError(f"unknown sampling setting `{unknown[0]}`{closest(unknown[0], valid)}")
    modifiers = {k: given.pop(k) for k in list(given) if k in MODIFIERS}
    unused = {k: v for k, v in modifiers.items() if not any(s in given for s in MODIFIERS[k])}
    for k, v in unused.items():  # validated all the same, by the first stage it would modify
        _transform(MODIFIERS[k][0], 0.0, {k: v})
    transforms = {k: _transform(k, v, modifiers) for k, v in given.items()}  # temperature 0: the greedy selector

    if chain is not None:
        if strategy is not None:
            raise UsageError("--strategy and --chain both given: use one (a chain names its own order)")
        parsed, selector = parse_chain(chain, {k: v for k, v in given.items() if k in CONSTRAINTS})
        placed = {p.name for p in parsed if p.kind == "constraint"}
        first = [transforms[k] for k, t in FLAG_ORDER if k in KEPT and k in transforms and t not in placed]
        overridden = {k: v for k, v in given.items() if k not in KEPT}
        return Built(Strategy(first + parsed, selector, name="chain"), ignored={**overridden, **unused})

    named, defaulted = None, False
    if strategy is not None:
        strategy = strategy_name(strategy)
        if strategy not in NAMED:
            valid = sorted(NAMED)
            raise UsageError(f"unknown strategy `{strategy}`{closest(strategy, valid)}; valid: {', '.join(valid)}")
        named = NAMED[strategy]
    elif not any(k not in KEPT for k in given):
        defaulted = True
        given = {**DEFAULT_SETTINGS, **given}
        transforms = {**{k: _transform(k, v) for k, v in DEFAULT_SETTINGS.items()}, **transforms}

    greedy = (named is not None and named.selector == "greedy") or given.get("temperature") == 0
    if named is not None and named.primary is not None and named.primary not in given and not greedy:
        given[named.primary] = named.default
        transforms[named.primary] = _transform(named.primary, named.default)
    name = named.name if named else "greedy" if greedy else "default" if defaulted else "custom"
    # a setting at its "off" value (top_k=0, top_p=1, ...) is validated but leaves no stage in the chain
    order = [k for k, _ in FLAG_ORDER if k in transforms and (not greedy or k in KEPT)
             and given.get(k) != OFF_VALUES.get(k)]
    ignored = {k: v for k, v in given.items() if greedy and k not in KEPT and k not in ("temperature",)}
    if greedy and given.get("temperature") not in (None, 0):
        ignored["temperature"] = given["temperature"]
    ignored.update(unused)
    selector = SELECTORS["greedy" if greedy else named.selector if named else "sample"]()
    return Built(Strategy([transforms[k] for k in order], selector, name=name), ignored=ignored)


def _parse_value(text: str, where: str) -> Any:
    text = text.strip()
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if not text:
        raise UsageError(f"{where}: a value is missing after `=`")
    return text


def parse_chain(spec: str, settings: dict[str, Any] | None = None) -> tuple[list, Any]:
    """Parse "top-k=40,top-p=0.95,temperature=0.8[,sample|greedy]" into transforms and a selector.

    An element is NAME, NAME=VALUE (the sampler's first parameter), or NAME:key=value[:key=value...]. A bare
    constraint (`regex`) takes its language from `settings` (its flag's value); with `settings` None (a chain
    checked before the flags are known) it is left out, to be placed when the strategy is built.
    """
    if not spec.strip():
        raise UsageError("--chain: empty chain; expected e.g. \"top-k=40,top-p=0.95,temperature=0.8\"")
    transforms, selector = [], None
    elements = [e.strip() for e in spec.split(",")]
    for position, element in enumerate(elements, 1):
        where = f"--chain element {position} `{element}`"
        if not element:
            raise UsageError(f"--chain: element {position} is empty in {spec!r}")
        if selector is not None:
            raise UsageError(f"{where}: nothing may follow the selector `{selector.name}`")
        head, _, rest = element.partition(":")
        name, eq, value = head.partition("=")
        name = name.strip()
        name = sampler_name(name)
        if name in SELECTORS:
            kind = SELECTORS[name]
        elif name in TRANSFORMS:
            kind = TRANSFORMS[name]
        else:
            valid = sorted([*TRANSFORMS, *SELECTORS])
            raise UsageError(f"{where}: unknown sampler `{name}`{closest(name, valid)}; valid: {', '.join(valid)}")
        values: dict[str, Any] = {}
        if eq:
            if not kind.params:
                raise UsageError(f"{where}: `{name}` takes no value")
            values[kind.params[0].name] = _parse_value(value, where)
        for pair in filter(None, (p.strip() for p in rest.split(":"))) if rest else ():
            key, eq2, val = pair.partition("=")
            if not eq2:
                raise UsageError(f"{where}: expected key=value, got `{pair}`")
            if key.strip() in values:
                raise UsageError(f"{where}: `{key.strip()}` is given twice; give each parameter once")
            values[key.strip()] = _parse_value(val, where)
        if not eq and not rest and kind.kind == "constraint":
            setting = kind.params[0].name
            if settings is None:
                continue
            if setting not in settings:
                raise UsageError(f"{where}: give its language with --{setting.replace('_', '-')}, or as "
                                 f"`{name}=VALUE`")
            values[setting] = settings[setting]
        built = kind(**values)
        if name in SELECTORS:
            selector = built
        else:
            transforms.append(built)
    return transforms, selector or SELECTORS["sample"]()


def describe_registry() -> list[dict[str, Any]]:
    """Plain rows for `samplecli strategies`: every sampler with its parameters, defaults and rules."""
    from samplecli.strategies.plugins import PACKAGES

    rows = []
    for cls in (*TRANSFORMS.values(), *SELECTORS.values()):
        package = PACKAGES.get(cls.name)
        rows.append({
            "name": cls.name, "kind": cls.kind, "package": package or "samplecli",
            "source": f"plugin {package}: {cls.source}" if package else cls.source,
            "summary": (cls.__doc__ or "").strip().splitlines()[0],
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "rule": p.rule}
                       for p in cls.params],
        })
    return rows

