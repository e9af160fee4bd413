"""What can be checked against a model before its weights load (which takes seconds): --device and --dtype by
name, token ids against its vocabulary, positions against its context, and the memory a run will need against
the memory the machine has. The model's config.json says enough (`backends.model_facts`); a model whose config
cannot be read here (a remote engine) is checked when it opens instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from samplecli.errors import SampleCliError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from samplecli.backends.facts import ModelFacts


def check_device_dtype(device: str, dtype: str) -> None:
    """--device and --dtype name a device and a dtype torch knows (before torch is imported)."""
    from samplecli.backends.torch_lm import check_names

    check_names(device, dtype)


def model_facts(model: str | None) -> ModelFacts | None:
    from samplecli.backends import model_facts as facts_of

    return facts_of(model)


def check_token_ids(ids: Iterable[int], facts: ModelFacts | None, flag: str) -> None:
    """Every id names a token of the model's vocabulary."""
    if facts is None or facts.vocab_size is None:
        return
    for token_id in ids:
        if token_id >= facts.vocab_size:
            raise UsageError(f"{flag}: token id {token_id} is outside the model's vocabulary ({facts.vocab_size} "
                             f"tokens), ids 0 to {facts.vocab_size - 1} (from {facts.config})")


def bias_ids(entries: Iterable[str]) -> list[int]:
    """The ids among `--logit-bias` entries (tokens given as text are the tokenizer's to look up)."""
    from samplecli.config.tokens import parse_token_bias

    return [token for token, _ in (parse_token_bias(e) for e in entries) if isinstance(token, int)]


def check_stride(stride: int | None, facts: ModelFacts | None) -> None:
    """`score --stride`: at least 1, and less than the model's context."""
    if stride is None:
        return
    context = facts.context_length if facts is not None else None
    if stride < 1 or (context is not None and stride > context - 1):
        span = f"[1, {context - 1}] for a context of {context}" if context is not None else ">= 1"
        raise UsageError(f"--stride has to be in {span}, but is {stride}")


def check_step(at: int | None, facts: ModelFacts | None) -> None:
    """`inspect --at K`: step K needs the prompt (at least one token) and K generated tokens inside the context."""
    context = facts.context_length if facts is not None else None
    if at is not None and context is not None and at >= context - 1:
        raise UsageError(f"--at {at}: the prompt and {at} generated tokens do not fit the model's context of "
                         f"{context} tokens; give --at below {context - 1}")


# the most bytes of text one token stands for in any tokenizer samplecli meets (long runs of spaces or dashes in
# code vocabularies are the longest, well under this): a text of more bytes than context x this cannot fit
MAX_TOKEN_BYTES = 256


def check_prompt_size(text: str, facts: ModelFacts | None, where: str) -> None:
    """A prompt that cannot fit the model's context whatever the tokenizer makes of it (a 20 MB file for a
    256-token context) is refused from its size, before the model loads and before seconds of tokenizing."""
    context = facts.context_length if facts is not None else None
    size = len(text.encode("utf-8", "surrogatepass"))
    if context and size > context * MAX_TOKEN_BYTES:
        raise UsageError(f"{where}: {size} bytes cannot fit the model's context of {context} tokens (a token holds "
                         f"at most {MAX_TOKEN_BYTES} bytes, so at most {context * MAX_TOKEN_BYTES} bytes fit); "
                         "give a shorter text")
    # a token holds at least one byte: a text of fewer bytes than the context always fits; a longer one is counted
    # with the model's own tokenizer file alone (milliseconds, no weights), before seconds of loading the model
    if context and size >= context and facts is not None:
        tokens = _count_tokens(text, facts.config.parent / "tokenizer.json")
        if tokens is not None and tokens >= context:
            raise UsageError(f"{where}: the prompt is at least {tokens} tokens, but the model's context is {context} "
                             "tokens; shorten the prompt")


def _count_tokens(text: str, tokenizer_file: Path) -> int | None:
    """The text's tokens without special ones (a lower bound of what the model reads), by the tokenizer file the
    model loads; None where there is none or it cannot be read."""
    if not tokenizer_file.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return len(Tokenizer.from_file(str(tokenizer_file)).encode(text, add_special_tokens=False).ids)
    except Exception:  # a file the library cannot read: the model's own load says why, with the model's name
        return None


# tokens no run can decode (10^15: 30 years at a million tokens a second), and tokens worth a word before starting
# (10^8: hours on a GPU, days on a CPU)
TOKENS_NEVER, TOKENS_LONG = 10**15, 10**8


def run_length(num_samples: int, max_new_tokens: int, why: str) -> str | None:
    """A run of `num_samples` x `max_new_tokens` tokens: refused where no machine could finish it, a warning line
    (returned) where it will take hours or days, None otherwise. `why` names the flags (`--num-samples 10000`)."""
    tokens = num_samples * max_new_tokens
    if tokens > TOKENS_NEVER:
        raise UsageError(f"{why} x -n {max_new_tokens} is {tokens:.3g} tokens to decode, more than any machine "
                         f"finishes ({TOKENS_NEVER:.0e}: 30 years at a million tokens a second); ask for fewer")
    if tokens > TOKENS_LONG:
        return (f"{why} x -n {max_new_tokens} is {tokens:.3g} tokens to decode: hours on a GPU, days on a CPU; "
                "Ctrl-C keeps what was written")
    return None


@dataclass(frozen=True)
class RunShape:
    """How big a decode run is: rows in one batch and positions per row, and the flags that set them (for the
    advice when it does not fit)."""

    rows: int
    positions: int
    why: str  # e.g. "--num-samples 10000 (256 rows at a time)"
    advice: str  # e.g. "lower --max-new-tokens"
    kept: int = 0  # bytes of results held until the run ends


def run_shape(facts: ModelFacts | None, prompt: str, max_new_tokens: int, rows: int, why: str, advice: str,
              kept_per_token: int = 0, sequences: int = 1) -> RunShape:
    """The shape of a run: a prompt takes at most one token per UTF-8 byte (and BOS), within the context; the run
    keeps `kept_per_token` bytes of each token of its `sequences` until it ends."""
    positions = len(prompt.encode("utf-8", "surrogatepass")) + 1 + max_new_tokens
    context = facts.context_length if facts is not None else None
    positions = min(positions, context) if context else positions
    return RunShape(rows, positions, why, advice, kept_per_token * sequences * min(max_new_tokens, positions))


def check_memory(facts: ModelFacts | None, shape: RunShape, device: str, dtype: str) -> None:
    """Refuse a run whose estimated memory exceeds what the device has free, with both figures."""
    if facts is None:
        return
    from samplecli.backends.memory import available_memory, estimate, gigabytes
    from samplecli.backends.torch_lm import resolve_device

    kind = resolve_device(device).type  # a device this build of torch lacks (--device cuda) is refused here
    needed = estimate(facts, shape.rows, shape.positions, dtype=dtype, device=kind, kept=shape.kept)
    free = available_memory(kind)
    if needed is None or free is None:
        return
    available, what = free
    if needed.total > available:
        raise SampleCliError(f"{shape.why} needs {needed.describe()}, but this machine has {gigabytes(available)} of "
                             f"{what}; {shape.advice}")


__all__ = ["RunShape", "bias_ids", "check_device_dtype", "check_memory", "check_prompt_size", "check_step",
           "check_stride", "run_length", "check_token_ids", "model_facts", "run_shape"]
