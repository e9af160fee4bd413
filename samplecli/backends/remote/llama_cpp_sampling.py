"""A sampler chain as llama.cpp's `/completion` fields, for sampling on the server: each stage becomes the
field llama.cpp names it by, and the order its `samplers` list. What the server cannot run as given is refused
before any request, in one line naming the setting, with `--sample-locally` as the way out.

The chain arrives as plain data, `[(registry name, {parameter: value}), ...]` and the selector's
`(name, {parameter: value})`; llama.cpp's names for them are the registry's declarations: each transform's
`llama_cpp` stage and each parameter's `llama_cpp` field (`strategies.schema` for the sampling settings). What llama.cpp
runs (tools/server/server-schema.cpp, common/sampling.cpp): logit bias always first; then the `samplers` list in
its order, where `penalties` is one stage (repeat, frequency and presence over one window, `repeat_last_n`) and
`temperature` is temp-ext (dynamic temperature where `dynatemp_range` > 0, the argmax alone at 0); then `dist`,
a seeded draw. With `mirostat` 1 or 2 the list is ignored: logit bias, temperature, mirostat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from samplecli.errors import UsageError
from samplecli.strategies import SELECTORS, TRANSFORMS
from samplecli.strategies.languages import llama_cpp_value
from samplecli.strategies.schema import BY_NAME

ENGINE = "llama.cpp's server"
HINT = "use --sample-locally"
# the transforms llama.cpp runs as its one `penalties` stage
PENALTIES = tuple(name for name, cls in TRANSFORMS.items() if cls.llama_cpp == "penalties")
MIROSTAT = {"mirostat": 1, "mirostat-v2": 2}


def _stage(name: str) -> tuple[str, dict[str, str]] | None:
    """llama.cpp's stage in `samplers` for samplecli's transform `name`, with {samplecli parameter: llama.cpp field}
    (the field the stage is named for first, as the server lists them); None where the server has no such stage."""
    cls = TRANSFORMS.get(name)
    if cls is None or cls.llama_cpp is None or name in PENALTIES:
        return None
    fields = {p.name: p.llama_cpp for p in cls.params if p.llama_cpp}
    return cls.llama_cpp, dict(sorted(fields.items(), key=lambda item: item[1] != cls.llama_cpp))


def refuse(what: str) -> UsageError:
    return UsageError(f"{ENGINE} {what}; {HINT}")


@dataclass
class ServerChain:
    """The request fields that make llama.cpp's server run a chain, and that chain as the server runs it."""

    fields: dict[str, Any]
    stages: list[str] = field(default_factory=list)
    engine: str = "llama.cpp"

    def __str__(self) -> str:
        return " -> ".join([f"{self.engine}: logits", *self.stages])


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def translate(stages: Sequence[tuple[str, dict[str, Any]]], selector: tuple[str, dict[str, Any]], *,
              context: int, decode: Callable[[list[int]], str]) -> ServerChain:
    """The fields for `stages` then `selector` on llama.cpp's server; raises UsageError for what it cannot run.

    Args:
        stages: the chain's transforms in order, as (registry name, parameter values).
        selector: the chain's selector, (registry name, parameter values): greedy, sample or a mirostat.
        context: the slot's context in tokens (a window of -1, "the whole sequence", becomes it).
        decode: token ids -> text (DRY's sequence breakers are strings on the server).
    """
    selector_name, selector_values = selector
    fields: dict[str, Any] = {"dynatemp_range": 0.0}
    order: list[str] = []
    chain = ServerChain(fields)
    stages = list(stages)
    while stages and TRANSFORMS[stages[0][0]].kind == "constraint":  # the server masks before its samplers
        _constraint(chain, *stages.pop(0))
    if any(TRANSFORMS.get(name) is not None and TRANSFORMS[name].kind == "constraint" for name, _ in stages):
        raise refuse("applies a grammar before its samplers; the constraint has to come first in the chain")
    if any(name == "logit-bias" for name, _ in stages[1:]):
        raise refuse("applies logit bias before every other sampler; `logit-bias` has to come first")
    if stages and stages[0][0] == "logit-bias":
        biases = stages.pop(0)[1]["logit_bias"]
        fields[BY_NAME["logit_bias"].llama_cpp] = [[int(token), False if bias == -math.inf else float(bias)]
                                for token, bias in biases.items()]
        chain.stages.append(f"logit_bias({len(biases)} tokens)")
    greedy = selector_name == "greedy"
    if greedy:  # the argmax is the same at any positive temperature: the server's `temperature` stage does it
        stages = [(name, values) for name, values in stages if name not in ("temperature", "dynatemp")]
    if selector_name in MIROSTAT:
        return _mirostat(chain, stages, selector_name, selector_values)
    if selector_name not in ("greedy", "sample"):
        raise refuse(f"has no `{selector_name}` selector")
    penalties_at = [i for i, (name, _) in enumerate(stages) if name in PENALTIES]
    if penalties_at and penalties_at != list(range(penalties_at[0], penalties_at[-1] + 1)):
        raise refuse("applies its penalties as one stage; the repetition, presence and frequency penalties have "
                     "to be next to each other in the chain")
    for position, (name, values) in enumerate(stages):
        if name in PENALTIES:
            if position == penalties_at[0]:
                chain.stages.append(_penalties(fields, [stages[i] for i in penalties_at], context))
                order.append("penalties")
            continue
        known = _stage(name)
        if known is None:
            raise refuse(f"has no `{name}` sampler")
        stage, names = known
        if stage in order:
            raise refuse(f"runs each sampler once; `{stage}` is in the chain twice")
        order.append(stage)
        for ours, theirs in names.items():
            fields[theirs] = values[ours]
        if name == "xtc" and values.get("seed", -1) != -1:
            raise refuse("draws XTC's coin from the request's seed; `xtc` cannot take a seed of its own")
        if name == "dry":
            fields["dry_penalty_last_n"] = _window(values["dry_penalty_last_n"], context)
            breakers = [decode(list(ids)) for ids in values["dry_sequence_breakers"]]
            if not breakers or not all(breakers):
                raise refuse("needs DRY's sequence breakers as text (`dry_sequence_breakers`, at least one)")
            fields["dry_sequence_breakers"] = breakers
        # a field named as its stage shows its value alone: `top_p(0.95)`, not `top_p(top_p 0.95)`
        alone = list(names.values()) == [stage]
        shown = ", ".join(_fmt(fields[theirs]) if alone else f"{theirs} {_fmt(fields[theirs])}"
                          for theirs in names.values()
                          if not (theirs == "dynatemp_exponent" and not fields.get("dynatemp_range")))
        chain.stages.append(f"{stage}({shown})")
    if greedy:
        order.append("temperature")
        fields["temperature"] = 0.0
        chain.stages.append("temperature(0: the argmax)")
    fields["samplers"] = order
    fields["mirostat"] = 0
    chain.stages.append("dist")
    return chain


def _constraint(chain: ServerChain, name: str, values: dict[str, Any]) -> None:
    """A constraint as the field llama.cpp takes it in (`json_schema`, or `grammar` in GBNF), or refused."""
    setting = TRANSFORMS[name].params[0].name
    field, value = BY_NAME[setting].llama_cpp, None
    if field is not None:
        value = llama_cpp_value(setting, values[setting])
    if value is None:
        what = "Lark grammars" if name == "grammar" else f"`{name}` constraints"
        raise refuse(f"takes JSON schemas and GBNF grammars, not {what}")
    if field in chain.fields:
        raise refuse("takes one grammar per request; give one constraint")
    chain.fields[field] = value
    chain.stages.append(str(TRANSFORMS[name](**values)))


def _window(last_n: int, context: int) -> int:
    return context if last_n == -1 else last_n


def _penalties(fields: dict[str, Any], stages: list[tuple[str, dict[str, Any]]], context: int) -> str:
    """repetition (over the whole sequence), presence and frequency (over `penalty_last_n`): one window on the
    server, so they have to agree."""
    windows, shown = set(), []
    for name, values in stages:
        setting = name.replace("-", "_")
        field = BY_NAME[setting].llama_cpp
        fields[field] = values[setting]
        windows.add(context if name == "repetition-penalty" else _window(values["penalty_last_n"], context))
        shown.append(f"{field} {_fmt(values[setting])}")
    if len(windows) > 1:
        raise refuse("counts its penalties over one window (`repeat_last_n`), but the repetition penalty counts "
                     "the whole sequence and the others the last --penalty-last-n tokens; give --penalty-last-n -1")
    last_n = BY_NAME["penalty_last_n"].llama_cpp
    fields[last_n] = windows.pop()
    return f"penalties({', '.join(shown)}, {last_n} {fields[last_n]})"


def _mirostat(chain: ServerChain, stages: list, selector: str, values: dict[str, Any]) -> ServerChain:
    fields = chain.fields
    for name, stage_values in stages:
        if name != "temperature":
            raise refuse(f"runs mirostat after logit bias and temperature only; `{name}` cannot come before it")
        fields["temperature"] = stage_values["temperature"]
        chain.stages.append(f"temperature({_fmt(stage_values['temperature'])})")
    if "temperature" not in fields:
        fields["temperature"] = 1.0
    if values.get("m", 100) != 100:
        raise refuse(f"estimates mirostat's s from the top 100 tokens; `m` {values['m']} cannot be set")
    fields["mirostat"] = MIROSTAT[selector]
    fields.update({p.llama_cpp: values[p.name] for p in SELECTORS[selector].params if p.llama_cpp})
    chain.stages.append(f"mirostat{'' if selector == 'mirostat' else '_v2'}(tau {_fmt(values['tau'])}, "
                        f"eta {_fmt(values['eta'])})")
    return chain
