"""A sampler chain as the `options` of an Ollama native-API request (`/api/generate`, `/api/chat`).

Ollama fills an option the request leaves out from the model's Modelfile (`top_k 40`, `top_p 0.9`, ...), which would
run a sampler the chain does not have: every option is sent, at its off value where the chain has no such stage.
Ollama's engine (sample/samplers.go) applies top_k, then the temperature, then top_p and min_p; the penalties and
typical_p, where the model's runner has them, come before. A chain is accepted where that order gives the same
distribution (top-k commutes with temperature and with min-p; nothing else moves), else refused in one line that
says how to reorder it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from samplecli.backends.remote.llama_cpp_sampling import ServerChain
from samplecli.errors import UsageError

ENGINE = "Ollama"
# samplecli's stage -> (Ollama's option, samplecli's parameter, the option's off value), in the order Ollama runs them
OPTIONS: dict[str, tuple[str, str, float]] = {
    "repetition-penalty": ("repeat_penalty", "repetition_penalty", 1.0),
    "presence-penalty": ("presence_penalty", "presence_penalty", 0.0),
    "frequency-penalty": ("frequency_penalty", "frequency_penalty", 0.0),
    "top-k": ("top_k", "top_k", 0),
    "typical": ("typical_p", "typical_p", 1.0),
    "temperature": ("temperature", "temperature", 1.0),
    "top-p": ("top_p", "top_p", 1.0),
    "min-p": ("min_p", "min_p", 0.0),
}
ORDER = tuple(OPTIONS)
PENALTY_WINDOW = "repeat_last_n"  # the window of all three penalties: one option, as samplecli's --penalty-last-n
COMMUTE = {frozenset({"temperature", "top-k"}), frozenset({"top-k", "min-p"})}
OLLAMA_OUT = "run the model's GGUF file in process instead (-m FILE.gguf: Ollama keeps it in ~/.ollama/models/blobs)"


def refuse(what: str) -> UsageError:
    return UsageError(f"{ENGINE} {what}")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def translate(stages: Sequence[tuple[str, dict[str, Any]]], selector: tuple[str, dict[str, Any]]) -> ServerChain:
    """The `options` that make Ollama run `stages` then `selector`; UsageError (one line, with the way out) for
    what it cannot run as given. The chain's `fields` hold the `options` object."""
    name, _ = selector
    if name not in ("greedy", "sample"):
        raise refuse(f"has no `{name}` selector (its mirostat is off in its current engine); {OLLAMA_OUT}")
    stages = [(n, v) for n, v in stages if not (name == "greedy" and n == "temperature")]
    options: dict[str, Any] = {}
    shown: list[tuple[int, str]] = []
    window = None
    for stage, values in stages:
        if stage not in OPTIONS:
            wanted = next(iter(values), stage)
            raise refuse(f"has no `{wanted}` ({stage}); drop it from the chain, or {OLLAMA_OUT}")
        option, parameter, _ = OPTIONS[stage]
        if option in options:
            raise refuse(f"runs each sampler once; `{option}` is in the chain twice")
        options[option] = values[parameter]
        shown.append((ORDER.index(stage), f"{option}({_fmt(values[parameter])})"))
        # samplecli's repetition penalty reads the whole sequence (as transformers'); presence and frequency the
        # last --penalty-last-n tokens. Ollama counts all three over one window, `repeat_last_n` (-1: all)
        here = -1 if stage == "repetition-penalty" else values.get("penalty_last_n")
        if here is not None:
            if window is not None and window != here:
                raise refuse("counts every penalty over one window (`repeat_last_n`), and this chain has two (the "
                             "repetition penalty reads the whole sequence); give presence and frequency "
                             "--penalty-last-n -1, or drop one")
            window = here
    names = [stage for stage, _ in stages]
    for i, first in enumerate(names):
        for later in names[i + 1:]:
            if ORDER.index(first) > ORDER.index(later) and frozenset({first, later}) not in COMMUTE:
                order = ", ".join(option for option, _, _ in OPTIONS.values())
                raise refuse(f"runs `{OPTIONS[later][0]}` before `{OPTIONS[first][0]}`; the chain has them the other "
                             f"way round: put {later} first (Ollama's order: {order})")
    if window is not None:
        options[PENALTY_WINDOW] = window
    if name == "greedy":
        options["temperature"] = 0.0
    for option, _, off in OPTIONS.values():
        options.setdefault(option, off)
    shown.sort()
    stages_shown = [text for _, text in shown]
    return ServerChain({"options": options}, [*stages_shown, "temperature(0: the argmax)" if name == "greedy"
                                              else "sample"], engine=ENGINE)
