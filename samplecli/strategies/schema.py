"""The sampling settings, each declared once: its name, its other spellings, its rule, its "off" value, its help,
its flag and the fields the remote engines carry it in. Everything else is derived from `SAMPLING`: the registry
parameter its transform takes (`SamplingSetting.param`), the settings keys, presets keys and `SAMPLECLI_*`
variables (`config.keys`), the command-line options (`cli.options`), the `samplecli strategies` table, the names
`--chain` takes (`build.sampler_name`), the server translations (`backends.remote`) and the one validator
(`Param.normalise`).

The order is the one transformers' generate() applies its processors and warpers in; the settings
transformers lacks go where llama.cpp puts them: logit bias first, presence/frequency with the penalties,
top-n-sigma among the truncations.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from samplecli.strategies.base import Param
from samplecli.strategies.languages import CONVERT
from samplecli.strategies.values import token_biases

LAST_N_RULE = ">= -1 (-1: the whole sequence, 0 is off)"


@dataclass(frozen=True)
class SamplingSetting:
    """A sampling setting: a parameter of a registry transform, as the command line, presets and servers see it.

    Args:
        name: the setting, also the parameter of `transform` it sets (transformers' name where one exists).
        transform: the registry transform whose stage it adds (or whose stages it modifies).
        flag: its command-line flag; `flag_aliases` are other spellings of it.
        help: one line for `--help`.
        type, default, rule, check: the parameter: its type, its default in `--chain`, and the rule a valid value
            obeys, in words and as a predicate (`convert`: how a list or table given becomes its value).
        off: the value that leaves every token in: validated, but no stage is added (None: no such value).
        penalty: a penalty stage (kept by greedy, put before an explicit `--chain`).
        constraint: a constraint stage, a mask to a language (kept by greedy; put first, and before an explicit
            `--chain` unless the chain names its place: `--regex R --chain "top-p=0.9,regex,sample"`).
        modifies: not a stage of its own but a parameter of these settings' stages.
        kind: "number" (the parameter's own type), "biases" (TOKEN=BIAS entries, resolved with a tokenizer),
            "text" (a string) or "texts" (strings, the flag repeatable).
        aliases: other names for it in presets, `SAMPLECLI_*` and `--chain` (llama.cpp's and Ollama's spellings).
        llama_cpp: the field of llama.cpp's `/completion` request that carries it.
        openai: the field of an OpenAI-compatible `/v1/completions` request (vLLM, SGLang, Ollama) that carries
            it, and `openai_off`, the value of that field that turns its sampler off there (default: `off`).
    """

    name: str
    transform: str
    flag: str
    help: str
    type: type
    default: Any
    rule: str
    check: Any
    off: Any = None
    penalty: bool = False
    constraint: bool = False
    modifies: tuple[str, ...] = ()
    flag_aliases: tuple[str, ...] = ()
    kind: str = "number"
    aliases: tuple[str, ...] = ()
    convert: Any = None
    llama_cpp: str | None = None
    openai: str | None = None
    openai_off: Any = None

    @functools.cached_property
    def param(self) -> Param:
        """The registry parameter this setting is: what its transform declares in `params`."""
        return Param(self.name, self.type, self.default, self.rule, self.check, self.help, self.convert,
                     self.llama_cpp)


def _language(name: str, transform: str, flag: str, help: str, rule: str, kind: str = "text",
              llama_cpp: str | None = None) -> SamplingSetting:
    """A constraint's setting: its value is checked by compiling it (and its language is not empty), before any
    model loads. `llama_cpp`: the field of llama.cpp's `/completion` that carries it (`languages.llama_cpp_value`)."""
    return SamplingSetting(name, transform, flag, help, list if kind == "texts" else str, None, rule,
                           lambda v: True, constraint=True, kind=kind, convert=CONVERT[name], llama_cpp=llama_cpp)


SAMPLING: tuple[SamplingSetting, ...] = (
    # the constraints come first: the mass a mask keeps is then the raw model's, and -log of it the KL to the model
    _language("json_schema", "json-schema", "--json-schema", "Constrain the output to JSON this schema accepts "
              "(inline JSON or a file).", "a JSON schema (inline or a file) that compiles", llama_cpp="json_schema"),
    _language("regex", "regex", "--regex", "Constrain the whole output to match this regular expression.",
              "a regular expression that compiles, its language not empty"),
    _language("grammar", "grammar", "--grammar", "Constrain the output to this grammar's language (a GBNF file as "
              "llama.cpp writes it, or .lark).", "a GBNF or Lark grammar file that compiles, its language not empty",
              llama_cpp="grammar"),
    _language("choice", "choice", "--choice", "Constrain the output to one of these strings (repeatable).",
              "non-empty strings", kind="texts", llama_cpp="grammar"),
    SamplingSetting("logit_bias", "logit-bias", "--logit-bias", "TOKEN=BIAS (repeatable): add BIAS to TOKEN's logit; "
                    "-inf bans it. TOKEN is an id, or text the tokenizer makes one token of (' the=-2').",
                    dict, {}, "ID=BIAS pairs separated by ';' (BIAS a number, or -inf to ban)", lambda v: True,
                    off={}, penalty=True, kind="biases", convert=token_biases, llama_cpp="logit_bias",
                    openai="logit_bias"),
    SamplingSetting("repetition_penalty", "repetition-penalty", "--repetition-penalty",
                    "Penalise tokens already seen; 1 is off.", float, 1.1, "> 0", lambda v: v > 0 and math.isfinite(v),
                    off=1.0, penalty=True, aliases=("repeat_penalty",), llama_cpp="repeat_penalty",
                    openai="repetition_penalty"),
    SamplingSetting("no_repeat_ngram_size", "no-repeat-ngram", "--no-repeat-ngram-size",
                    "Ban repeating n-grams of this size; 0 is off.", int, 3, ">= 0 (0 is off)", lambda v: v >= 0,
                    off=0, penalty=True),
    SamplingSetting("presence_penalty", "presence-penalty", "--presence-penalty",
                    "Subtract this from the logit of every token in the last --penalty-last-n tokens; 0 is off.",
                    float, 0.5, "of any sign (0 is off)", math.isfinite, off=0.0, penalty=True,
                    llama_cpp="presence_penalty"),
    SamplingSetting("frequency_penalty", "frequency-penalty", "--frequency-penalty",
                    "Subtract this times its count in the last --penalty-last-n tokens from each token's logit; "
                    "0 is off.", float, 0.5, "of any sign (0 is off)", math.isfinite, off=0.0, penalty=True,
                    llama_cpp="frequency_penalty"),
    SamplingSetting("penalty_last_n", "presence-penalty", "--penalty-last-n",
                    "Tokens the presence and frequency penalties count, from the end; -1 is all (default: 64).",
                    int, 64, LAST_N_RULE, lambda v: v >= -1, modifies=("presence_penalty", "frequency_penalty"),
                    aliases=("repeat_last_n",), llama_cpp="repeat_last_n"),
    # 0 is the T -> 0 limit, the argmax: a flag or preset makes it the greedy selector, a chain's stage the limit
    SamplingSetting("temperature", "temperature", "--temp", "Temperature; 0 is greedy.", float, 1.0, ">= 0",
                    lambda v: v >= 0 and math.isfinite(v), flag_aliases=("--temperature",), aliases=("temp",),
                    llama_cpp="temperature", openai="temperature", openai_off=1.0),
    SamplingSetting("top_h", "top-h", "--top-h", "Top-H: keep the top tokens within this fraction of the entropy.",
                    float, 0.4, "in (0, 1]", lambda v: 0 < v <= 1, off=1.0),
    SamplingSetting("top_k", "top-k", "--top-k", "Keep the k most probable tokens; 0 is off.", int, 40,
                    ">= 0 (0 is off)", lambda v: v >= 0, off=0, llama_cpp="top_k", openai="top_k", openai_off=-1),
    SamplingSetting("top_p", "top-p", "--top-p", "Nucleus: keep the smallest set with mass >= p; 1 is off.", float,
                    0.95, "in (0, 1]", lambda v: 0 < v <= 1, off=1.0, llama_cpp="top_p", openai="top_p"),
    SamplingSetting("min_p", "min-p", "--min-p", "Keep tokens with p >= min_p * p_max; 0 is off.", float, 0.1,
                    "in [0, 1]", lambda v: 0 <= v <= 1, off=0.0, llama_cpp="min_p", openai="min_p"),
    SamplingSetting("typical_p", "typical", "--typical-p", "Locally typical sampling mass; 1 is off.", float, 0.95,
                    "in (0, 1]", lambda v: 0 < v <= 1, off=1.0, aliases=("typical",), llama_cpp="typical_p"),
    SamplingSetting("epsilon_cutoff", "epsilon", "--epsilon-cutoff", "Keep tokens with p >= epsilon; 0 is off.",
                    float, 3e-4, "in [0, 1) (0 is off)", lambda v: 0 <= v < 1, off=0.0),
    SamplingSetting("eta_cutoff", "eta", "--eta-cutoff", "Keep tokens above an entropy-scaled floor; 0 is off.",
                    float, 2e-3, "in [0, 1) (0 is off)", lambda v: 0 <= v < 1, off=0.0),
    SamplingSetting("top_n_sigma", "top-n-sigma", "--top-n-sigma",
                    "Keep tokens whose logit is within n standard deviations of the max; 0 is off.", float, 1.0,
                    ">= 0 (0 is off)", lambda v: v >= 0 and math.isfinite(v), off=0.0, aliases=("top_nsigma",),
                    llama_cpp="top_n_sigma"),
)
BY_NAME: dict[str, SamplingSetting] = {s.name: s for s in SAMPLING}

# Derived views, for the code that composes strategies.
FLAG_ORDER: tuple[tuple[str, str], ...] = tuple((s.name, s.transform) for s in SAMPLING if not s.modifies)
PENALTIES: frozenset[str] = frozenset(s.name for s in SAMPLING if s.penalty)
CONSTRAINTS: frozenset[str] = frozenset(s.name for s in SAMPLING if s.constraint)
# kept by greedy, put before an explicit chain, and no choice of strategy: the penalties and the constraints
KEPT: frozenset[str] = PENALTIES | CONSTRAINTS
OFF_VALUES: dict[str, Any] = {s.name: s.off for s in SAMPLING if s.off is not None}
MODIFIERS: dict[str, tuple[str, ...]] = {s.name: s.modifies for s in SAMPLING if s.modifies}
SAMPLING_KEYS: tuple[str, ...] = tuple(s.name for s in SAMPLING)


def param(name: str) -> Param:
    """The registry parameter of the sampling setting `name`, for the transform that takes it."""
    return BY_NAME[name].param
