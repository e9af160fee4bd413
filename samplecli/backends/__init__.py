"""Backends: the one place that turns token ids into next-token scores (torch in process; more behind the
same seam). `open_backend(model)` picks the backend that claims the model reference.

    from samplecli.backends import open_backend
    lm = open_backend(None)                     # the bundled model, through torch
    batch, logits = lm.start(lm.vocab.encode("ROMEO:"), rows=2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samplecli.backends.remote import claims as remote_claims
from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.backends.base import Backend
    from samplecli.backends.facts import ModelFacts


@dataclass(frozen=True)
class BackendKind:
    """A kind of backend: `claims(reference)` says whether a `--model` value is its to open."""

    name: str
    claims: Callable[[str], bool]
    open: Callable[..., Backend]  # open(reference, device=..., dtype=..., trust_remote_code=..., **options)
    options: frozenset[str] | None = None  # the further options it takes (threads, api, ...); None: any


KINDS: list[BackendKind] = []


def register_backend(kind: BackendKind) -> BackendKind:
    """Add a backend kind; the first registered kind that claims a reference opens it (torch is the fallback)."""
    if any(k.name == kind.name for k in KINDS):
        raise ValueError(f"a backend named {kind.name!r} is already registered")
    KINDS.append(kind)
    return kind


def _open_remote(reference: str, **options: Any) -> Backend:
    from samplecli.backends.remote import open_remote

    return open_remote(reference, **options)


def _gguf_claims(reference: str) -> bool:
    from samplecli.backends.gguf import claims

    return claims(reference)


def _open_gguf(reference: str, **options: Any) -> Backend:
    from samplecli.backends.gguf import open_gguf

    return open_gguf(reference, **options)


LOCAL_OPTIONS = frozenset({"threads"})  # what a model in this process takes (torch, GGUF)
register_backend(BackendKind("remote", remote_claims, _open_remote,
                             frozenset({"api", "concurrency", "top_logprobs", "full_distribution", "timeout"})))
register_backend(BackendKind("gguf", _gguf_claims, _open_gguf, LOCAL_OPTIONS))

PLUGIN_GROUP = "samplecli.backends"
PROBLEMS: list[str] = []  # one line per backend plugin that failed to load (the CLI shows them)


def load_plugins() -> None:
    """Register the backend kinds other packages bring: each entry point of `samplecli.backends` is a
    `BackendKind` or a callable returning one. A broken one is skipped, with a line in PROBLEMS."""
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = point.load()
            kind = loaded if isinstance(loaded, BackendKind) else loaded()
            if not isinstance(kind, BackendKind):
                raise TypeError(f"it gave {type(kind).__name__}, not a BackendKind")
            if not any(k.name == kind.name for k in KINDS):
                register_backend(kind)
        except Exception as exc:  # a plugin's own bug must not stop samplecli
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            PROBLEMS.append(f"backend plugin `{point.name}` ({point.value}) was not loaded: {type(exc).__name__}: "
                            f"{why}")


load_plugins()


def open_backend(model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, **options: Any) -> Backend:
    """The backend for a `--model` value: a registered kind that claims it, else a transformers model in this
    process (None: the bundled model)."""
    options = {k: v for k, v in options.items() if v is not None}
    for kind in KINDS:
        if model is not None and kind.claims(model):
            _refuse_others(options, kind.options, "for a model in this process, not a remote engine"
                           if kind.name == "remote" else "for a remote engine (--model http://...), not a model in "
                           "this process")
            for flag, value in (("--device", device), ("--dtype", dtype)):
                if kind.name == "remote" and value != "auto":  # the server chose them when it started
                    raise UsageError(f"{flag} {value} is for a model in this process; a remote engine runs on the "
                                     "device and dtype it was started with")
            return kind.open(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **options)
    from samplecli.backends.torch_lm import load

    _refuse_others(options, LOCAL_OPTIONS, "for a remote engine (--model http://...), not a model in this process")
    return load(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **options)


def _refuse_others(options: dict[str, Any], taken: frozenset[str] | None, why: str) -> None:
    unused = sorted(k for k in options if taken is not None and k not in taken)
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} is {why}")


def model_facts(model: str | None = None) -> ModelFacts | None:
    """What a transformers model's config says (vocabulary, context, shapes), read without loading it; None for a
    model a registered kind opens (a remote engine) or one whose config is not here to read."""
    if model is not None and any(kind.claims(model) for kind in KINDS):
        return None
    from samplecli.backends.facts import read_facts

    return read_facts(model)


__all__ = ["BUNDLED_MODEL_DIR", "KINDS", "PROBLEMS", "BackendKind", "model_facts", "open_backend",
           "register_backend"]
