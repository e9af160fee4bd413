"""`samplecli inspect`'s position: the raw next-token scores there (`Context`), reaching it with the decode loop
(`reach`, `drawn_at`), and reading the row from a backend that can give it (`next_token_row`, `cannot_inspect`);
`ready` and `distribution` run a strategy on it without moving the original's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import DISTRIBUTION, TEACHER_FORCE
from samplecli.errors import SampleCliError, UsageError

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend
    from samplecli.strategies import Strategy


@dataclass
class Context:
    """The raw logits at the inspected position, the ids before it, and what the strategies are bound to.

    `top_n`: None where `logits` covers the whole vocabulary; else N, and `logits` holds the raw model's true
    log-probabilities of N tokens (normalised over the whole vocabulary) and -inf elsewhere."""

    logits: torch.Tensor  # (1, V) float32
    input_ids: torch.Tensor  # (1, L)
    token_text: Callable[[int], str]
    eos_token_ids: tuple[int, ...] = ()
    seed: int = 0
    top_n: int | None = None
    # the vocabulary a constraint masks by, and the tokens generated since the prompt, which its language has read
    vocab: Any = None
    generated: tuple[int, ...] = ()
    # what every stage of a trace reads again (the raw distribution, its log): computed once per context
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return self.logits.shape[-1]

    @property
    def full(self) -> bool:
        return self.top_n is None

    @property
    def known(self) -> int:
        """How many tokens' probabilities the backend gave: the vocabulary, or a top-N backend's N."""
        import torch

        return self.vocab_size if self.full else int(torch.isfinite(self.logits[0]).sum())


def ready(strategy: Strategy, ctx: Context) -> Strategy:
    """A fresh copy of `strategy`, bound to the run's EOS ids and seed, with its state reset."""
    fresh = strategy.clone()
    fresh.bind(ctx.eos_token_ids, ctx.seed)
    if fresh.constraints and ctx.vocab is not None:
        fresh.bind_vocabulary(ctx.vocab, ctx.vocab_size, ctx.eos_token_ids)
    fresh.reset(ctx.logits.shape[0])
    for stage in fresh.constraints:  # a constraint's language has read what was generated since the prompt
        stage.follow(ctx.generated)
    return fresh


def distribution(strategy: Strategy, ctx: Context) -> torch.Tensor:
    """`strategy.distribution()` at this position, on a copy, so stateful samplers' state is untouched."""
    return strategy.selector.clone().distribution(processed(strategy, ctx))


def processed(strategy: Strategy, ctx: Context) -> torch.Tensor:
    """`strategy.process()` at this position, on a copy: computed once per context and chain (a trace asks for the
    same chain's logits for its stage, its kept set, the next stage's tie check, and the explorer for its removed
    set: at a 152k vocabulary each top-p is milliseconds), except for a chain with a stateful stage."""
    key = _chain_key(strategy)
    if key is None:
        return strategy.clone().process(ctx.logits, ctx.input_ids)
    done = ctx.cache.setdefault("processed", {})
    if key not in done:
        done[key] = strategy.clone().process(ctx.logits, ctx.input_ids)
    return done[key]


def _chain_key(strategy: Strategy) -> tuple | None:
    """What a chain's output at one position depends on besides the position: its stages and their values (None
    where a stage keeps a state of its own)."""
    if any(t.kind == "stateful" for t in strategy.transforms):
        return None
    return tuple((t.name, repr(sorted(t.values.items()))) for t in strategy.transforms)


def reach(lm: Backend, prompt_ids: list[int], strategy: Strategy, steps: int, seed: int) -> list[int]:
    """Generate `steps` tokens with the decode loop; return their ids. `strategy` is left in its state at
    step `steps` (mirostat's mu, XTC's coin), as the next step of that generation would see it."""
    from samplecli.engine.decode import DecodeConfig, Done, decode

    context = lm.context_length
    if context is not None and len(prompt_ids) + steps >= context:
        raise UsageError(f"--at {steps}: the prompt ({len(prompt_ids)} tokens) and {steps} generated tokens do not "
                         f"fit the model's context of {context} tokens; use --at < {context - len(prompt_ids)}")
    if steps == 0:
        strategy.bind(tuple(lm.eos_token_ids), seed)
        if strategy.constraints:
            strategy.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids))
        strategy.reset(1)
        return []
    config = DecodeConfig(max_new_tokens=steps, seed=seed, record=False, top_n=0)
    done = next(e for e in decode(lm, strategy, prompt_ids, config) if isinstance(e, Done))
    if done.finish_reason != "length":
        raise SampleCliError(f"--at {steps}: the generation (seed {seed}) ended with {done.finish_reason} after "
                             f"{done.n_tokens} tokens, before step {steps}; use a smaller --at or another --seed")
    return list(done.token_ids)


def drawn_at(lm: Backend, prompt_ids: list[int], strategy: Strategy, step: int, seed: int) -> int | None:
    """The token the seeded generation draws at `step` (its step + 1-th token), from a fresh copy of `strategy`;
    None where the model's context leaves no room for it."""
    from samplecli.engine.decode import DecodeConfig, Step, decode

    context = lm.context_length
    if context is not None and len(prompt_ids) + step + 1 > context:
        return None
    config = DecodeConfig(max_new_tokens=step + 1, seed=seed, record=False, top_n=0)
    return next((e.token_id for e in decode(lm, strategy.clone(), prompt_ids, config)
                 if isinstance(e, Step) and e.step == step), None)


def next_token_logits(lm: Backend, ids: list[int]) -> torch.Tensor:
    """The raw logits for the token after `ids`, as a (1, V) float32 tensor on the CPU."""
    if (refusal := lm.why_not(TEACHER_FORCE)) is not None:
        raise UsageError(refusal)
    return lm.logits(ids, keep=1)[-1:].float().cpu()


def cannot_inspect(lm: Backend, ids: list[int]) -> str | None:
    """Why `inspect` cannot read the distribution after `ids` from this backend (one line), or None where it can:
    with teacher forcing (every local backend, llama.cpp's server with the whole vocabulary), or from the first
    row of `start` where the backend returns its top N by token id (`why_not(DISTRIBUTION)` says where not)."""
    if TEACHER_FORCE in lm.capabilities:
        return None
    if lm.top_n is None:
        return lm.why_not(TEACHER_FORCE)
    why = lm.why_not(DISTRIBUTION, ids)
    if why is None:
        return None
    return (f"inspect needs the next-token distribution by token id, but {why}; inspect with a local model, "
            "a vLLM server or llama.cpp's server (a chat: its native API, --api llama.cpp)")


def next_token_row(lm: Backend, ids: list[int]) -> torch.Tensor:
    """The raw scores for the token after `ids`, (1, V) float32 on the CPU: the logits where the backend can
    teacher-force, else the first row of `start` (a top-N backend's true log-probabilities, -inf elsewhere)."""
    if TEACHER_FORCE in lm.capabilities:
        return next_token_logits(lm, ids)
    refusal = cannot_inspect(lm, ids)
    if refusal is not None:
        raise UsageError(refusal)
    return lm.start(list(ids), 1)[1][:1].float().cpu()
