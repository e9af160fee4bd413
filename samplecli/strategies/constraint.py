"""Constraints: a JSON schema, a regular expression, a grammar or a list of choices as a stage of the chain that
masks every token that would take the text out of the language, and measures what the mask throws away.

The automaton is llguidance's (github.com/guidance-ai/llguidance: JSON schema, regex, Lark and, converted, GBNF;
an Earley parser over a lexer, so left recursion is fine): `docs/constraints.md` says why it was chosen over
outlines-core and what a mask costs at 2k and 152k tokens. A constraint keeps one matcher per row of the batch
(`reset`), advances it with the chosen token (`accept`) and `clone`s it, as the penalties and mirostat keep their
state. The mask is computed against the model's own token byte strings (`bind_vocabulary`: a byte-level BPE's `Ġ`
and a SentencePiece's `▁` and byte fallback as `backends.vocabulary` reads them, or a GGUF's); special tokens can
never be emitted inside the language, and EOS only where the text so far is a sentence of it.

Each call records, per row, how many tokens the mask allows and the probability m that the distribution the stage
receives puts inside them (the raw model's where the mask is the first stage): -log m is the stage's cost in nats,
KL(masked || received). A row the mask leaves nothing of is `exhausted`: the decode loop ends it with
finish_reason `constraint` instead of drawing from an empty set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from samplecli.errors import UsageError
from samplecli.strategies.base import Transform, register
from samplecli.strategies.languages import checked_grammar, first_line, library, tokenizer_for, unpack
from samplecli.strategies.schema import param

if TYPE_CHECKING:
    import torch


class Constraint(Transform):
    """The shared mask: a subclass's one parameter is the setting that holds the language."""

    kind = "constraint"

    @property
    def setting(self) -> str:
        return self.params[0].name

    def __init__(self, **values) -> None:
        super().__init__(**values)
        self.grammar = checked_grammar(self.setting, self.values[self.setting])
        self._tokenizer = None
        self._eos: tuple[int, ...] = ()
        self.matchers: list[Any] = []
        self.masks: list[Any] = []  # each row's last mask (numpy bools), to tell a padded row from a real choice
        self.record: list[tuple[int, float]] = []  # each row's last (allowed, mass)
        self.exhausted: list[bool] = []

    def __str__(self) -> str:
        value = self.values[self.setting]
        shown = "|".join(value) if isinstance(value, list) else value if self.setting != "json_schema" or \
            not value.lstrip().startswith("{") else "inline"
        return f"{self.name}({shown if len(shown) <= 32 else shown[:31] + '…'})"

    def bind_vocabulary(self, vocab: Any, size: int, eos_token_ids: tuple[int, ...]) -> None:
        self._tokenizer = tokenizer_for(vocab, size, tuple(eos_token_ids))
        self._eos = tuple(eos_token_ids)
        self.matchers = []

    def reset(self, batch_size: int, first_row: int = 0) -> None:
        if self._tokenizer is None:
            raise UsageError(f"{self.name}: the stage needs the model's vocabulary (bind_vocabulary) before a run")
        llg = library()
        first = llg.LLMatcher(self._tokenizer, self.grammar, log_level=0)
        if first.is_error():
            raise UsageError(f"--{self.name}: {first_line(first.get_error())}")
        self.matchers = [first] + [first.deep_copy() for _ in range(batch_size - 1)]
        self.masks, self.record, self.exhausted = [None] * batch_size, [], []

    def clone(self):
        twin = super().clone()
        twin.matchers = [m.deep_copy() if m is not None else None for m in self.matchers]
        twin.masks, twin.record, twin.exhausted = list(self.masks), list(self.record), list(self.exhausted)
        return twin

    def allowed(self, row: int, size: int):
        """The tokens row `row`'s matcher allows next (numpy bools of `size`): EOS only in an accepting state."""
        import numpy as np

        matcher = self.matchers[row]
        if matcher is None or matcher.is_error():
            return np.zeros(size, dtype=bool)
        mask = unpack(matcher.compute_bitmask(), size)
        if len(mask) < size:
            mask = np.concatenate([mask, np.zeros(size - len(mask), dtype=bool)])
        eos = [i for i in self._eos if i < size]
        mask[eos] = matcher.is_accepting()
        return mask

    def __call__(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        rows, size = logits.shape
        if len(self.matchers) != rows:  # used outside a decode run (inspect): every row starts the language
            self.reset(rows)
        masks = np.stack([self.allowed(r, size) for r in range(rows)])
        self.masks = list(masks)
        allowed = torch.from_numpy(masks).to(logits.device)
        out = logits.masked_fill(~allowed, float("-inf"))
        # m = the softmax of what the stage received, summed over the allowed tokens (float64), as one dot product
        received = torch.softmax(logits.double(), dim=-1)
        mass = torch.linalg.vecdot(received, allowed.to(received.dtype))
        self.record = list(zip(masks.sum(axis=-1).tolist(), mass.tolist(), strict=True))
        self.exhausted = (~(allowed & ~torch.isneginf(logits)).any(dim=-1)).tolist()
        return out

    def accept(self, token_ids, probs) -> None:
        """Advance each row's matcher by its chosen token; a row whose token its mask did not allow (a finished
        row's padding, an exhausted row) stops."""
        for row, token in enumerate(token_ids.tolist()):
            if row >= len(self.matchers) or self.matchers[row] is None:
                continue
            mask = self.masks[row] if row < len(self.masks) else None
            if mask is None or not mask[token] or not self.matchers[row].consume_token(token):
                self.matchers[row] = None

    def follow(self, token_ids) -> None:
        """Advance every row's matcher by these tokens, as if they had been chosen (a position reached another way:
        `explore`'s path); a token outside the language stops the row."""
        for row, matcher in enumerate(self.matchers):
            if matcher is not None and not matcher.consume_tokens(list(token_ids)):
                self.matchers[row] = None

    def accepts(self, token_ids: list[int]) -> tuple[bool, int]:
        """(whether these tokens are a sentence of the language, how many of them stay inside it): `score`'s view."""
        llg = library()
        matcher = llg.LLMatcher(self._tokenizer, self.grammar, log_level=0)
        inside = matcher.validate_tokens(list(token_ids))
        if inside < len(token_ids):
            return False, inside
        matcher.consume_tokens(list(token_ids))
        return matcher.is_accepting(), inside


@register
class JsonSchema(Constraint):
    """Constrain the text to JSON that a JSON schema accepts (compact: no whitespace between tokens).

    Args:
        json_schema: the schema, inline JSON or a file.
    """

    name = "json-schema"
    source = "JSON Schema, compiled by llguidance"
    params = (param("json_schema"),)


@register
class Regex(Constraint):
    """Constrain the text to a regular expression's language (the whole text matches it).

    Args:
        regex: the expression (Rust regex syntax, as Python's for the common cases).
    """

    name = "regex"
    source = "regular expression, compiled by llguidance"
    params = (param("regex"),)


@register
class Grammar(Constraint):
    """Constrain the text to a context-free grammar's language: GBNF as llama.cpp writes it, or Lark (`.lark`).

    Args:
        grammar: the grammar file.
    """

    name = "grammar"
    source = "GBNF (llama.cpp) or Lark, compiled by llguidance"
    params = (param("grammar"),)


@register
class Choice(Constraint):
    """Constrain the text to exactly one of the given strings.

    Args:
        choice: the strings, one of which the text is.
    """

    name = "choice"
    source = "a list of strings, compiled by llguidance"
    params = (param("choice"),)
