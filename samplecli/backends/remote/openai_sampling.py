"""A sampler chain as the fields of an OpenAI-compatible `/v1/completions` request, per engine: the OpenAI
fields (`temperature`, `top_p`, `logit_bias`, `seed`) and each engine's extras (`top_k`, `min_p`,
`repetition_penalty`). These engines run their samplers in a fixed order of their own, so a chain is accepted
only where the engine's order gives the same distribution; what it cannot run is refused before any request,
in one line naming the engine and the setting, with `--sample-locally` as the way out.

The orders, from each engine's source: vLLM (v1/sample/sampler.py) applies logit bias, the penalties,
temperature, min-p, then top-k and top-p; SGLang (layers/sampler.py) temperature, then top-k, top-p, min-p;
Ollama's `/v1/completions` takes `temperature` and `top_p` only (a Go struct: other fields are dropped without a
word, so they are refused here). llama.cpp's server takes its native fields on `/v1/completions` too, so its
chains go through `llama_cpp_sampling`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from samplecli.backends.remote.llama_cpp_sampling import ServerChain
from samplecli.backends.remote.llama_cpp_sampling import translate as llama_cpp_translate
from samplecli.backends.remote.ollama_sampling import OLLAMA_OUT, OPTIONS
from samplecli.errors import UsageError
from samplecli.strategies import TRANSFORMS
from samplecli.strategies.languages import llama_cpp_value, schema_text
from samplecli.strategies.schema import SAMPLING

HINT = "use --sample-locally"
# samplecli's transform -> (the request field, samplecli's parameter), from each setting's `openai` field
FIELDS = {s.transform: (s.openai, s.name) for s in SAMPLING if s.openai}
# the value of each number field that turns its sampler off (top_k -1: "all tokens" in vLLM's and SGLang's versions
# alike; temperature 1: the distribution as it is), from each setting's `openai_off` (else its `off`)
NEUTRAL = {s.openai: s.off if s.openai_off is None else s.openai_off for s in SAMPLING
           if s.openai and s.kind == "number"}
# pairs of stages whose order does not change the distribution: top-k keeps the argmax, so neither temperature
# (a monotone map) nor min-p (relative to the argmax) cares whether it comes first
COMMUTE = {frozenset({"temperature", "top-k"}), frozenset({"top-k", "min-p"})}


@dataclass(frozen=True)
class Engine:
    """What one engine's `/v1/completions` takes: its name, its stages in the order it runs them, whether it
    names tokens by id (logit bias needs ids), and its default cap on `logprobs`."""

    name: str
    order: tuple[str, ...]
    token_ids: bool
    logprobs_cap: int | None
    note: str = ""


ENGINES = {
    "vllm": Engine("vLLM", ("logit-bias", "repetition-penalty", "temperature", "min-p", "top-k", "top-p"), True, 20),
    "sglang": Engine("SGLang", ("repetition-penalty", "temperature", "top-k", "top-p", "min-p"), False, None),
    "ollama": Engine("Ollama", ("temperature", "top-p"), False, 20),
    "openai": Engine("the OpenAI-compatible server", ("temperature", "top-p"), False, 20),
}
ENGINE_NAMES = {"llamacpp": "llama.cpp's server", **{k: e.name for k, e in ENGINES.items()}}
LLAMA_CPP = "llamacpp"

# why a samplecli stage has no equivalent, where that is not just "the engine has no such sampler"
WHY = {
    "presence-penalty": "counts the presence penalty over the generated tokens only (samplecli over the last "
                        "--penalty-last-n tokens of prompt and text)",
    "frequency-penalty": "counts the frequency penalty over the generated tokens only (samplecli over the last "
                         "--penalty-last-n tokens of prompt and text)",
}


# Ollama's tokens come back named by text, so samplecli cannot sample locally over its /v1; its native API takes
# every sampler setting Ollama has
OLLAMA_HINT = "give the server's root URL without /v1 (or --api ollama): Ollama's native API takes it"


def _structured(engine: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """A constraint as the engine's structured-output fields: vLLM's `structured_outputs` ({json, regex, grammar,
    choice}), SGLang's `json_schema`, `regex` and `ebnf` (GBNF is the EBNF its grammar backend reads); refused on
    an engine without them."""
    setting = TRANSFORMS[name].params[0].name
    value = values[setting]
    if engine == "vllm":
        if setting == "grammar" and llama_cpp_value(setting, value) is None:
            raise refuse(engine, "takes GBNF grammars, not Lark ones")
        given = {"json_schema": lambda: {"json": json.loads(schema_text(value))}, "regex": lambda: {"regex": value},
                 "grammar": lambda: {"grammar": llama_cpp_value(setting, value)},
                 "choice": lambda: {"choice": list(value)}}[setting]()
        return {"structured_outputs": given}
    if engine == "sglang":
        if setting == "json_schema":
            return {"json_schema": schema_text(value)}
        if setting == "regex":
            return {"regex": value}
        grammar = llama_cpp_value(setting, value)
        if grammar is None:
            raise refuse(engine, "takes GBNF grammars, not Lark ones")
        return {"ebnf": grammar}
    raise refuse(engine, f"has no structured-output field for `{name}`")


def refuse(engine: str, what: str, stage: str | None = None) -> UsageError:
    hint = HINT
    if engine == "ollama":
        hint = OLLAMA_HINT if stage in OPTIONS else f"drop it, or {OLLAMA_OUT}"
    return UsageError(f"{ENGINE_NAMES.get(engine, engine)} {what}; {hint}")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def translate(engine: str, stages: Sequence[tuple[str, dict[str, Any]]], selector: tuple[str, dict[str, Any]], *,
              context: int = 0, decode: Callable[[list[int]], str] | None = None) -> ServerChain:
    """The `/v1/completions` fields that make `engine` (a key of ENGINE_NAMES) run `stages` then `selector`;
    UsageError for what it cannot run as given.

    Args:
        engine: "vllm", "sglang", "ollama", "openai" (any other OpenAI-compatible server) or "llamacpp".
        stages: the chain's transforms in order, as (registry name, parameter values).
        selector: (registry name, parameter values): greedy or sample.
        context: llama.cpp only: the slot's context (a penalty window of -1 becomes it).
        decode: llama.cpp only: token ids -> text (DRY's sequence breakers).
    """
    if engine == LLAMA_CPP:
        chain = llama_cpp_translate(stages, selector, context=context, decode=decode or (lambda ids: ""))
        chain.engine = "llama.cpp /v1"
        return chain
    spec = ENGINES[engine]
    name, _ = selector
    if name not in ("greedy", "sample"):
        raise refuse(engine, f"has no `{name}` selector")
    stages = [(n, v) for n, v in stages if not (name == "greedy" and n == "temperature")]
    fields: dict[str, Any] = {}
    shown: list[str] = []
    stages = list(stages)
    while stages and stages[0][0] in TRANSFORMS and TRANSFORMS[stages[0][0]].kind == "constraint":
        stage, values = stages.pop(0)
        if fields:
            raise refuse(engine, "takes one structured-output constraint per request; give one")
        fields.update(_structured(engine, stage, values))
        shown.append(str(TRANSFORMS[stage](**values)))
    for stage, values in stages:
        if stage in TRANSFORMS and TRANSFORMS[stage].kind == "constraint":
            raise refuse(engine, "masks its structured output before its samplers; the constraint has to come first "
                         "in the chain")
        if stage in WHY and stage not in spec.order:
            raise refuse(engine, WHY[stage], stage)
        if stage not in spec.order:  # named by its parameter, as the engines' own documentation names them
            wanted = FIELDS[stage][0] if stage in FIELDS else next(iter(values), stage)
            raise refuse(engine, f"has no `{wanted}`", stage)
        if stage == "logit-bias":
            if not spec.token_ids:
                raise refuse(engine, "takes logit bias by token id, which samplecli cannot check against its "
                             "tokenizer; drop --logit-bias or")
            biases = values["logit_bias"]
            fields["logit_bias"] = {str(t): -100.0 if b == -math.inf else max(-100.0, min(100.0, float(b)))
                                    for t, b in biases.items()}
            shown.append(f"logit_bias({len(biases)} tokens; a ban as -100, the API's floor)")
            continue
        field, parameter = FIELDS[stage]
        if field in fields:
            raise refuse(engine, f"runs each sampler once; `{field}` is in the chain twice")
        fields[field] = values[parameter]
        shown.append(f"{field}({_fmt(values[parameter])})")
    _check_order(engine, spec, [stage for stage, _ in stages])
    if name == "greedy":
        fields["temperature"] = 0.0
    # every field the engine has, set: an engine fills a missing one from its own defaults (vLLM from the model's
    # generation_config.json), which would run a sampler the chain does not have
    for field, neutral in NEUTRAL.items():
        if any(FIELDS[stage][0] == field for stage in spec.order if stage in FIELDS):
            fields.setdefault(field, neutral)
    constrained = [text for text in shown if text.split("(")[0] in TRANSFORMS and
                   TRANSFORMS[text.split("(")[0]].kind == "constraint"]
    shown = constrained + sorted((t for t in shown if t not in constrained), key=lambda text: _rank(text, spec.order))
    return ServerChain(fields, [*shown, "temperature(0: the argmax)" if name == "greedy" else "sample"],
                       engine=spec.name)


def _rank(shown: str, order: tuple[str, ...]) -> int:
    field = shown.split("(", 1)[0]
    stage = next((s for s, (f, _) in FIELDS.items() if f == field), field.replace("_", "-"))
    return order.index(stage) if stage in order else len(order)


def _check_order(engine: str, spec: Engine, stages: list[str]) -> None:
    """Refuse two stages that the engine runs in the other order, unless the two commute."""
    rank = {stage: i for i, stage in enumerate(spec.order)}
    for i, first in enumerate(stages):
        for later in stages[i + 1:]:
            if rank[first] > rank[later] and frozenset({first, later}) not in COMMUTE:
                raise refuse(engine, f"runs `{later}` before `{first}`, the chain has them the other way round "
                             f"(its order: {', '.join(spec.order)})")
