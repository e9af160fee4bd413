"""Command-line options derived from the settings table: one declaration per setting (its flag, type, help
and help panel), shared by every command that takes it, so no command declares a sampling option again.

    @app.command()
    @with_settings(*SAMPLING_OPTIONS, "seed")
    def inspect(prompt: str | None = None, *, flags: dict[str, Any]) -> None: ...

The command receives `flags`: {setting: value or None}, ready for `config.settings.resolve`.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Annotated, Any

import typer

from samplecli.config.keys import CONSTRAINTS, DEFAULTS, KEYS, PENALTIES
from samplecli.strategies.schema import SAMPLING_KEYS

# The shared bundle: a strategy (named, or an explicit chain) and every sampler's setting.
SAMPLING_OPTIONS: tuple[str, ...] = ("strategy", "chain", *SAMPLING_KEYS)
PENALTY_OPTIONS: tuple[str, ...] = tuple(k for k in SAMPLING_KEYS if KEYS[k].group == PENALTIES)
CONSTRAINT_OPTIONS: tuple[str, ...] = tuple(k for k in SAMPLING_KEYS if KEYS[k].group == CONSTRAINTS)
SHORT_FLAGS = {"max_new_tokens": ("-n",), "model": ("-m",)}


def flag_of(setting: str) -> str:
    """The flag that sets `setting` (`--max-new-tokens` for max_new_tokens)."""
    key = KEYS.get(setting)
    return key.flag if key is not None and key.flag else "--" + setting.replace("_", "-")


def _number(kind: type, noun: str):
    """A typer parser that echoes the bad value: "'abc' is not a valid integer"."""

    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a valid {noun}") from None

    parse.__name__ = noun
    return parse


INT, FLOAT = _number(int, "integer"), _number(float, "number")


def option_for(name: str, panel: str | None = None) -> Any:
    """The `Annotated[...]` type of the option that sets `name`."""
    key = KEYS[name]
    help_text = key.help + (f" (default: {DEFAULTS[name]})" if name in DEFAULTS else "")
    decls = (key.flag, *key.flag_aliases, *SHORT_FLAGS.get(name, ()))
    panel = panel or key.group
    if key.type == "int":
        return Annotated[int | None, typer.Option(*decls, parser=INT, help=help_text, rich_help_panel=panel)]
    if key.type == "float":
        return Annotated[float | None, typer.Option(*decls, parser=FLOAT, help=help_text, rich_help_panel=panel)]
    if key.type in ("strings", "biases"):
        return Annotated[list[str] | None, typer.Option(*decls, help=help_text, rich_help_panel=panel)]
    return Annotated[str | None, typer.Option(*decls, help=help_text, rich_help_panel=panel)]


def with_settings(*names: str):
    """Add an option for each named setting to a command; the command gets them as `flags`."""

    def decorate(func):
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "flags"]
        arguments = [p for p in params if p.default is inspect.Parameter.empty
                     or isinstance(_typer_info(p), typer.models.ArgumentInfo)]
        rest = [p for p in params if p not in arguments]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option_for(name))
                 for name in names]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest]

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            flags = {name: _normalise(name, kwargs.pop(name, None)) for name in names}
            return func(*args, flags=flags, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*arguments, *added, *rest])
        wrapper.__annotations__ = {p.name: p.annotation for p in (*arguments, *added, *rest)}
        return wrapper

    return decorate


MODEL_PANEL = "Model"
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {  # name: (annotation, default)
    "device": (Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=MODEL_PANEL)], "auto"),
    "dtype": (Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.", rich_help_panel=MODEL_PANEL)],
              "auto"),
    "trust_remote_code": (Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code to "
                                                       "run.", rich_help_panel=MODEL_PANEL)], False),
    "threads": (Annotated[int | None, typer.Option(parser=INT, help="CPU threads for a model in this process "
                                                   "(default: 1 for a small model, which a second thread does not "
                                                   "speed up and a busy machine slows down; else one per core).",
                                                   rich_help_panel=MODEL_PANEL)], None),
    "api": (Annotated[str | None, typer.Option(help="A remote engine's protocol (--model http://...): auto, "
                                               "llama.cpp (its native /completion), ollama (its native "
                                               "/api/generate) or openai (/v1/completions: vLLM, SGLang) "
                                               "(default: auto, from the server's endpoints).",
                                               rich_help_panel=MODEL_PANEL)], None),
    "concurrency": (Annotated[int | None, typer.Option(parser=INT, help="Requests in flight to a remote engine "
                                                       "(default: 4).", rich_help_panel=MODEL_PANEL)], None),
    "timeout": (Annotated[float | None, typer.Option(parser=FLOAT, envvar="SAMPLECLI_TIMEOUT", show_envvar=False,
                                                     help="Seconds a remote engine (--model http://...) may take "
                                                     "to answer a request, or to send each next token of a "
                                                     "stream, however slowly its bytes come; also "
                                                     "SAMPLECLI_TIMEOUT (default: 60).",
                                                     rich_help_panel=MODEL_PANEL)], None),
    "top_logprobs": (Annotated[int | None, typer.Option(parser=INT, help="Ask a remote engine for its N most "
                                                        "probable tokens per step; the rest count as filtered and "
                                                        "the entropy becomes an interval (default: 20).",
                                                        rich_help_panel=MODEL_PANEL)], None),
    "full_distribution": (Annotated[bool, typer.Option("--full-distribution", help="Ask llama.cpp's server for "
                                                       "every token's probability per step: every number exact, "
                                                       "at a cost that grows with the vocabulary.",
                                                       rich_help_panel=MODEL_PANEL)], False),
}


def option_group(injected: str, options: dict[str, tuple[Any, Any]], make: Any):
    """A decorator adding `options` ({name: (annotation, default)}) to a command, after its own; the command
    receives `make(values)` as its keyword `injected` instead of the options one by one."""

    def decorate(func):
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != injected]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, (annotation, default) in options.items()]

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            values = {name: kwargs.pop(name, default) for name, (_, default) in options.items()}
            return func(*args, **{injected: make(values)}, **kwargs)

        ordered = [p if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or p.default is inspect.Parameter.empty
                   else p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        positional = [p for p in ordered if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in ordered if p.kind is inspect.Parameter.KEYWORD_ONLY]
        wrapper.__signature__ = signature.replace(parameters=[*positional, *keyword, *added])
        wrapper.__annotations__ = {p.name: p.annotation for p in (*positional, *keyword, *added)}
        return wrapper

    return decorate


def _model_opener(options: dict[str, Any]):
    threads = options["threads"]
    if threads is not None and not 1 <= threads <= 1024:
        raise typer.BadParameter(f"has to be an integer from 1 to 1024, but is {threads}", param_hint="--threads")
    timeout = options["timeout"]
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise typer.BadParameter(f"has to be a finite number of seconds > 0, but is {timeout}",
                                 param_hint="--timeout")

    def open_model(reference: str | None):
        from samplecli.backends import open_backend

        chosen = {k: options[k] for k in ("api", "concurrency", "top_logprobs", "threads", "timeout")
                  if options[k] is not None}
        if options["full_distribution"]:
            chosen["full_distribution"] = True
        return open_backend(reference, device=options["device"], dtype=options["dtype"],
                            trust_remote_code=options["trust_remote_code"], **chosen)

    open_model.options = options  # device and dtype, for the checks made before the model opens
    return open_model


# Add the options that say how to open `--model` (device, dtype, a remote engine's protocol, ...); the command
# gets `open_model(reference) -> Backend` instead.
with_model_options = option_group("open_model", MODEL_OPTIONS, _model_opener)


def _typer_info(param: inspect.Parameter) -> Any:
    metadata = getattr(param.annotation, "__metadata__", ())
    return next((m for m in metadata if isinstance(m, typer.models.ParameterInfo)), None)


def _normalise(name: str, value: Any) -> Any:
    if value is None:
        return None
    if KEYS[name].type in ("strings", "biases"):
        return list(value) or None
    if KEYS[name].type == "choice":
        return value.lower()
    return value


__all__ = ["CONSTRAINT_OPTIONS", "FLOAT", "INT", "PENALTY_OPTIONS", "SAMPLING_OPTIONS", "flag_of", "option_for",
           "with_settings"]
