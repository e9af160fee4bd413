"""The sampling settings, declared once: each one's flag, its "off" value, whether it is a penalty, and its
place in the default order. The flag order, the off values, the penalty list, the settings table, the
preset keys and the command-line options are all derived from `SAMPLING`.

The order is the one transformers' generate() applies its processors and warpers in; the settings
transformers lacks go where llama.cpp puts them: logit bias first, presence/frequency with the penalties,
top-n-sigma among the truncations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingSetting:
    """A sampling setting: a registry parameter of the same name, as the command line and presets see it.

    Args:
        name: the setting, also the parameter of `transform` it sets (transformers' name where one exists).
        transform: the registry transform whose stage it adds (or whose stages it modifies).
        flag: its command-line flag; `flag_aliases` are other spellings of it.
        help: one line for `--help`.
        off: the value that leaves every token in: validated, but no stage is added (None: no such value).
        penalty: a penalty stage (kept by greedy, put before an explicit `--chain`).
        modifies: not a stage of its own but a parameter of these settings' stages.
        kind: "number" (the parameter's own type), or "biases" (TOKEN=BIAS entries, resolved with a tokenizer).
        rule, check: override the parameter's rule (temperature accepts 0, which means greedy).
    """

    name: str
    transform: str
    flag: str
    help: str
    off: Any = None
    penalty: bool = False
    modifies: tuple[str, ...] = ()
    flag_aliases: tuple[str, ...] = ()
    kind: str = "number"
    rule: str | None = None
    check: Any = None


SAMPLING: tuple[SamplingSetting, ...] = (
    SamplingSetting("logit_bias", "logit-bias", "--logit-bias", "TOKEN=BIAS (repeatable): add BIAS to TOKEN's logit; "
                    "-inf bans it. TOKEN is an id, or text the tokenizer makes one token of (' the=-2').",
                    off={}, penalty=True, kind="biases"),
    SamplingSetting("repetition_penalty", "repetition-penalty", "--repetition-penalty",
                    "Penalise tokens already seen; 1 is off.", off=1.0, penalty=True),
    SamplingSetting("no_repeat_ngram_size", "no-repeat-ngram", "--no-repeat-ngram-size",
                    "Ban repeating n-grams of this size; 0 is off.", off=0, penalty=True),
    SamplingSetting("presence_penalty", "presence-penalty", "--presence-penalty",
                    "Subtract this from the logit of every token in the last --penalty-last-n tokens; 0 is off.",
                    off=0.0, penalty=True),
    SamplingSetting("frequency_penalty", "frequency-penalty", "--frequency-penalty",
                    "Subtract this times its count in the last --penalty-last-n tokens from each token's logit; "
                    "0 is off.", off=0.0, penalty=True),
    SamplingSetting("penalty_last_n", "presence-penalty", "--penalty-last-n",
                    "Tokens the presence and frequency penalties count, from the end; -1 is all (default 64).",
                    modifies=("presence_penalty", "frequency_penalty")),
    SamplingSetting("temperature", "temperature", "--temp", "Temperature; 0 is greedy.",
                    flag_aliases=("--temperature",), rule=">= 0", check=lambda v: v >= 0 and math.isfinite(v)),
    SamplingSetting("top_h", "top-h", "--top-h", "Top-H: keep the top tokens within this fraction of the entropy.",
                    off=1.0),
    SamplingSetting("top_k", "top-k", "--top-k", "Keep the k most probable tokens; 0 is off.", off=0),
    SamplingSetting("top_p", "top-p", "--top-p", "Nucleus: keep the smallest set with mass >= p; 1 is off.", off=1.0),
    SamplingSetting("min_p", "min-p", "--min-p", "Keep tokens with p >= min_p * p_max; 0 is off.", off=0.0),
    SamplingSetting("typical_p", "typical", "--typical-p", "Locally typical sampling mass; 1 is off.", off=1.0),
    SamplingSetting("epsilon_cutoff", "epsilon", "--epsilon-cutoff", "Keep tokens with p >= epsilon; 0 is off.",
                    off=0.0),
    SamplingSetting("eta_cutoff", "eta", "--eta-cutoff", "Keep tokens above an entropy-scaled floor; 0 is off.",
                    off=0.0),
    SamplingSetting("top_n_sigma", "top-n-sigma", "--top-n-sigma",
                    "Keep tokens whose logit is within n standard deviations of the max; 0 is off.", off=0.0),
)
BY_NAME: dict[str, SamplingSetting] = {s.name: s for s in SAMPLING}

# Derived views, for the code that composes strategies.
FLAG_ORDER: tuple[tuple[str, str], ...] = tuple((s.name, s.transform) for s in SAMPLING if not s.modifies)
PENALTIES: frozenset[str] = frozenset(s.name for s in SAMPLING if s.penalty)
OFF_VALUES: dict[str, Any] = {s.name: s.off for s in SAMPLING if s.off is not None}
MODIFIERS: dict[str, tuple[str, ...]] = {s.name: s.modifies for s in SAMPLING if s.modifies}
SAMPLING_KEYS: tuple[str, ...] = tuple(s.name for s in SAMPLING)


def param_of(setting: SamplingSetting):
    """The registry parameter the setting sets: its type, rule and check."""
    from samplecli.strategies.base import TRANSFORMS

    return next(p for p in TRANSFORMS[setting.transform].params if p.name == setting.name)
