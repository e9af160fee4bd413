"""The sampler interface: parameters, transforms (logits -> logits), selectors, and the strategy chain.

Modelled on llama.cpp's `llama_sampler_i`: a transform reshapes or filters the logits and returns a new
tensor (-inf where a token is filtered out); one selector at the end of the chain picks the token.
Nothing here imports torch at module level, so `samplecli strategies` and `--help` stay instant.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from samplecli.errors import UsageError

if TYPE_CHECKING:
    import torch


class Invalid(ValueError):
    """Why a value breaks its parameter's rule, as the words after "has to be": "an integer >= 0, but is 2.5"."""


def type_name(value: Any) -> str:
    """A value's type as an error message names it: "a string", "an array"."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table", type(None): "nothing"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Param:
    """One parameter of a transform, or one setting: its name (as in transformers' GenerationConfig where one
    exists), type, default, and the rule a valid value obeys, both as a predicate and in words. `normalise` is
    the one check of a value against it, whoever asks: a sampler's `__init__`, a preset, a flag, `DecodeConfig`.

    `llama_cpp` is the field of llama.cpp's `/completion` request that carries it, where the server has one
    (the server-side sampling derives its translation from it)."""

    name: str
    type: type
    default: Any
    rule: str
    check: Any  # Callable[[value], bool]
    help: str = ""
    # For list- and mapping-valued parameters (token id sequences, id -> bias maps): turns what the user gave
    # (`--chain` text, a preset's list or table) into the stored form, raising ValueError or TypeError.
    convert: Any = None  # Callable[[value], value] | None
    llama_cpp: str | None = None

    def normalise(self, value: Any) -> Any:
        """`value` converted to this parameter's type (an integral float is an int, an int a float where a float
        is expected); raises Invalid saying what it has to be."""
        if self.convert is not None:
            try:
                converted = self.convert(value)
            except (ValueError, TypeError) as exc:
                why = f" ({exc})" if str(exc) else ""
                raise Invalid(f"{self.rule}, but is {value!r}{why}") from None
            if not self.check(converted):
                raise Invalid(f"{self.rule}, but is {value!r}")
            return converted
        if self.type in (int, float):
            noun = "an integer" if self.type is int else "a number"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Invalid(f"{noun} {self.rule}, but is {value!r} ({type_name(value)})")
            if self.type is int and isinstance(value, float):
                if not value.is_integer():
                    raise Invalid(f"an integer {self.rule}, but is {value!r}")
                value = int(value)
            elif self.type is float:
                finite = "a finite number" + (f" {self.rule}" if self.rule and self.rule != "finite" else "")
                try:
                    value = float(value)
                except OverflowError:  # an integer beyond float's range
                    raise Invalid(f"{finite}, but is {value}") from None
                if not math.isfinite(value):
                    raise Invalid(f"{finite}, but is {value}")
        if not self.check(value):
            raise Invalid(f"{self.rule}, but is {value!r}")
        return value

    def validate(self, owner: str, value: Any) -> Any:
        """Return `value` normalised, or raise a UsageError naming `owner` and this parameter."""
        try:
            return self.normalise(value)
        except Invalid as why:
            raise UsageError(f"{owner}: `{self.name}` has to be {why}") from None


def closest(name: str, valid: list[str]) -> str:
    """' (did you mean `x`?)' for the closest valid name, or '' when none is close."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" (did you mean `{match[0]}`?)" if match else ""


class Configurable:
    """Shared by transforms and selectors: parameters validated in `__init__`, and a printable form."""

    name: ClassVar[str]
    kind: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    source: ClassVar[str] = ""
    # other names `--chain` takes for it (other tools' and papers' spellings); its own name with `_` for `-` and
    # its settings' names and aliases (strategies.schema) need no entry
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **values: Any) -> None:
        known = {p.name for p in self.params}
        for key in values:
            if key not in known:
                raise UsageError(
                    f"{self.name}: unknown parameter `{key}`{closest(key, sorted(known))}; "
                    f"valid: {', '.join(sorted(known)) or 'none'}"
                )
        self.values: dict[str, Any] = {}
        for p in self.params:
            value = values.get(p.name, p.default)
            if p.name not in values and p.default is None:
                raise UsageError(f"{self.name}: `{p.name}` is required ({p.rule})")
            self.values[p.name] = p.validate(self.name, value)
        self.check()

    def check(self) -> None:
        """Cross-parameter validation, for subclasses; raise UsageError."""

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(key)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(_fmt(self.values[p.name]) for p in self.params)})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def reset(self, batch_size: int, first_row: int = 0) -> None:
        """Forget per-sequence state before a new batch of sequences (stateful samplers override). The batch's
        rows are the run's sequences first_row, first_row + 1, ... (a run decoded in chunks starts each chunk
        at its first sample, so that what a row draws depends on its sequence alone)."""

    def accept(self, token_ids: torch.Tensor, probs: torch.Tensor) -> None:
        """Observe the tokens chosen at this step, one per row, and `probs`, the distribution each row's token
        was drawn from (the selector's `distribution` of this step's processed logits; stateful samplers
        override)."""

    def clone(self) -> Self:
        """A copy in this sampler's current state that goes its own way from here (llama.cpp's `clone`): what
        `inspect` probes and what a second run starts from. The copy has its own `values`; everything else is
        shared, which is right for a sampler whose state is immutable values it reassigns (or none). A sampler
        that changes its state in place (a list per row, a generator) overrides this to copy that state."""
        twin = copy.copy(self)
        twin.values = dict(self.values)
        return twin

    def bind_vocabulary(self, vocab: Any, size: int, eos_token_ids: tuple[int, ...]) -> None:
        """Learn, before a run, the model's vocabulary (`backends.vocabulary`'s: each id's bytes, `special` ids) and its
        size (the logits' width); the constraint stages override it to mask by each token's bytes."""

    def bind(self, eos_token_ids: tuple[int, ...], seed: int) -> None:
        """Learn, before a run, the model's end-of-sequence ids and the run's seed (samplers that need them
        override: min-new-tokens masks EOS, xtc seeds its coin flips from the seed)."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_fmt(k)}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


class Transform(Configurable):
    """`logits -> logits`. Returns a new tensor; never modifies its input. `-inf` marks a filtered token.

    Subclasses set `name`, `kind` ("reshaping", "truncation", "penalty", "stateful" or "constraint"), `params`, and
    `source` (the paper or engine it follows), and implement `__call__`. `llama_cpp` names its stage in llama.cpp's
    `samplers` list, where the server has one (`penalties`: a part of the one stage llama.cpp runs its penalties
    in); each parameter's `llama_cpp` names the request field it goes in.
    """

    llama_cpp: ClassVar[str | None] = None

    def __call__(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Selector(Configurable):
    """Picks one token per row. `uniforms` holds one U[0, 1) number per row, drawn by the decode loop
    from each sequence's own generator; `order` ranks the tokens by the raw model's probability (descending,
    ties by lowest id), the common order that makes coupled sampling possible: every token that any row's
    `probs` gives mass, and possibly others (`ranking.drawing_order`: the decode loop leaves out tokens no row
    can draw, so a selector reads `probs` through it and never assumes it spans the vocabulary)."""

    kind = "selector"
    stochastic: ClassVar[bool] = False

    def select(self, logits: torch.Tensor, probs: torch.Tensor, order: torch.Tensor,
               uniforms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution this selector draws from, given the processed logits."""
        import torch

        return torch.softmax(logits.float(), dim=-1)


class Strategy:
    """An ordered chain of transforms ending in one selector.

    `str(strategy)` prints the chain: "logits -> temperature(0.8) -> top-p(0.9) -> sample".
    """

    def __init__(self, transforms: list[Transform], selector: Selector, name: str | None = None) -> None:
        self.transforms = list(transforms)
        self.selector = selector
        self.name = name or str(selector)

    def __str__(self) -> str:
        return " -> ".join(["logits", *(str(t) for t in self.transforms), str(self.selector)])

    def __repr__(self) -> str:
        return f"<Strategy {self.name}: {self}>"

    def process(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the chain. A chain that would filter out every token keeps the raw argmax."""
        import torch

        out = logits
        for transform in self.transforms:
            out = transform(out, input_ids)
        empty = torch.isneginf(out).all(dim=-1)
        if empty.any():
            out = torch.where(empty.unsqueeze(-1) & argmax_mask(logits), logits, out)
        return out

    def distribution(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The distribution this strategy draws the next token from: rows sum to 1, filtered tokens
        are exactly 0, and greedy is the one-hot at the argmax."""
        return self.selector.distribution(self.process(logits, input_ids))

    def reset(self, batch_size: int, first_row: int = 0) -> None:
        for part in (*self.transforms, self.selector):
            part.reset(batch_size, first_row)

    def accept(self, token_ids: torch.Tensor, probs: torch.Tensor) -> None:
        """Every stage observes the chosen tokens and the distribution they were drawn from."""
        for part in (*self.transforms, self.selector):
            part.accept(token_ids, probs)

    def clone(self) -> Strategy:
        """The chain in its current state, as a copy that goes its own way (each stage's `clone`)."""
        return Strategy([t.clone() for t in self.transforms], self.selector.clone(), self.name)

    def bind(self, eos_token_ids: tuple[int, ...], seed: int) -> None:
        for part in (*self.transforms, self.selector):
            part.bind(tuple(eos_token_ids), seed)

    def bind_vocabulary(self, vocab: Any, size: int, eos_token_ids: tuple[int, ...]) -> None:
        for part in (*self.transforms, self.selector):
            part.bind_vocabulary(vocab, size, tuple(eos_token_ids))

    @property
    def constraints(self) -> list[Transform]:
        """The chain's constraint stages (masks to a language), in order."""
        return [t for t in self.transforms if t.kind == "constraint"]

    @property
    def stochastic(self) -> bool:
        return self.selector.stochastic


TRANSFORMS: dict[str, type[Transform]] = {}
SELECTORS: dict[str, type[Selector]] = {}


def mask_at(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """A boolean mask shaped like `logits`, True at `ids` (per row). A scatter into zeros: `one_hot`
    would check its indices with a synchronising min/max on every call."""
    import torch

    return torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, ids, True)


def argmax_mask(logits: torch.Tensor) -> torch.Tensor:
    """True at each row's argmax (ties: the lowest id)."""
    return mask_at(logits, logits.argmax(dim=-1, keepdim=True))


def register(cls):
    """Class decorator: add a Transform or Selector to the registry under its `name`, after checking what the
    registry relies on: a name usable in `--chain`, parameters declared as `Param`s whose defaults are valid."""
    import re

    if not (isinstance(cls, type) and issubclass(cls, (Transform, Selector))):
        raise ValueError(f"{cls!r} is not a Transform or Selector subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ValueError(f"{cls.__name__}.name has to be lower-case letters, digits, '-' and '_', but is {name!r}")
    for param in cls.params:
        if not isinstance(param, Param):
            raise ValueError(f"{name}: every entry of `params` has to be a Param, but one is {param!r}")
        if param.default is not None:
            try:
                param.validate(name, param.default)
            except UsageError as exc:
                raise ValueError(f"{name}: the default of `{param.name}` is not valid: {exc}") from None
    table = SELECTORS if issubclass(cls, Selector) else TRANSFORMS
    if cls.name in TRANSFORMS or cls.name in SELECTORS:
        raise ValueError(f"a sampler named {cls.name!r} is already registered")
    table[cls.name] = cls
    return cls
