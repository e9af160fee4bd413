"""The engine's events and run configuration: `Step` per generated token (built in one place, `build_step`, from
the `Measure` that `engine.measure` takes of it), `Done` per sequence, and `DecodeConfig`, all in plain Python
values (ints, floats, str), never tensors. Errors name settings (`max_new_tokens`); the CLI maps them to its flags.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from samplecli.errors import SettingError
from samplecli.strategies.base import Invalid, Param

# The rules of the run settings a DecodeConfig carries, declared once: `config.keys` gives them their flags and
# help, and their defaults are the settings' defaults.
MAX_NEW_TOKENS = Param("max_new_tokens", int, 100, "> 0", lambda v: v > 0)
MIN_NEW_TOKENS = Param("min_new_tokens", int, 0, ">= 0", lambda v: v >= 0)
NUM_SAMPLES = Param("num_samples", int, 1, ">= 1", lambda v: v >= 1)
TOP_N = Param("top_n", int, 5, ">= 0", lambda v: v >= 0)
SEED = Param("seed", int, None, "in [0, 2**63)", lambda v: 0 <= v < 2**63)  # None: a fresh seed per run
RUN_PARAMS = (MAX_NEW_TOKENS, MIN_NEW_TOKENS, NUM_SAMPLES, TOP_N, SEED)


@dataclass(frozen=True)
class Alternative:
    """One of the most probable next tokens under the raw model, with its strategy probability."""

    token_id: int
    token: str
    prob: float
    logprob: float | None
    sampled_prob: float


@dataclass(frozen=True)
class Step:
    """One generated token of one sequence.

    `prob`/`logprob`/`entropy` are under the raw model (T = 1); `sampled_*` under the strategy's
    distribution; `kept` counts the tokens with non-zero strategy probability; `text` is the decoded
    delta that is safe to print now (it may be empty while a character or stop string is incomplete).
    With `DecodeConfig(record=False)` the entropies are NaN, `kept` is -1 and `top` is empty (the JSONL
    records write them as null).
    """

    sample: int
    step: int
    token_id: int
    token: str
    text: str
    bytes: tuple[int, ...]
    logprob: float | None
    prob: float
    sampled_prob: float
    entropy: float
    sampled_entropy: float
    kept: int
    top: tuple[Alternative, ...] = ()
    kl: float = float("nan")  # KL(strategy || model) of this step's distributions, nats
    column: int = 0  # which strategy, when several run in one batch (`compare`)
    # only with DecodeConfig(logprob_of=...): the chosen token's rank under the raw model (1 = most probable;
    # tokens tied with it share its rank), and each named token's probabilities, in the order named
    rank: int | None = None
    named: tuple[Alternative, ...] = ()
    # "full" where the backend gave every token's logit; "top-N" where it returned only its N most probable
    # tokens (the rest counted as filtered): the entropies, KL and kept count are then over those N tokens
    distribution: str = "full"
    # top-N only: the raw entropy is not known, but bounded (`entropy` is NaN, JSONL null), and the probability
    # the model gives the tokens it did not return
    entropy_bounds: tuple[float, float] | None = None
    tail_mass: float | None = None
    # "server" where a remote engine drew the token itself (samplecli.engine.server_decode); `probs` then says whose
    # probabilities it returned, "raw" (the model's: the strategy's are NaN) or "post-sampling" (the strategy's: the
    # model's are NaN), and for post-sampling ones whether they hold the whole distribution (its entropy exact)
    sampled_by: str = "samplecli"
    probs: str | None = None
    sampled_entropy_exact: bool | None = None
    # under a constraint (`--json-schema`, `--regex`, `--grammar`, `--choice`): how many tokens the mask allowed, the
    # probability m the distribution it received put inside them (the raw model's where the mask is the first stage),
    # and -log m, the nats the mask cost (KL(masked || received)); None without a constraint
    constraint: Constrained | None = None
    # speculative decoding (`--draft-model`, `--draft ngram`): the round that emitted this token and how
    speculation: Speculated | None = None


@dataclass(frozen=True)
class Speculated:
    """How a token of a speculative run came out of its round (`engine.speculative`).

    `outcome`: "accepted" (the draft's token, kept with probability `accept_prob` = min(1, p/q): `uniform` fell
    below it), "resampled" (the draft's token `draft_token` was rejected: `uniform` fell at or above `accept_prob`,
    and this token was drawn from the residual max(0, p - q), normalised) or "bonus" (every drafted token was kept:
    this one is drawn from the target after the last). `draft_prob` q and `target_prob` p are the strategy's
    probabilities of the drafted token under the draft and the target (None for a bonus token). `uniform` is None
    where the strategy is deterministic (greedy): a drafted token is then kept exactly when it is the target's
    choice."""

    round: int
    drafted: int
    outcome: str
    draft_token_id: int | None = None
    draft_token: str | None = None
    draft_prob: float | None = None
    target_prob: float | None = None
    accept_prob: float | None = None
    uniform: float | None = None


@dataclass(frozen=True)
class Speculation:
    """A speculative run's totals for one sequence: the tokens drafted, judged (up to and including a round's first
    rejected one: the rest of that round's drafts are never looked at) and accepted, the rounds, the target's
    forwards (its prefill and one per round that fed it tokens) and the draft length K asked for."""

    draft: str
    draft_tokens: int
    rounds: int
    drafted: int
    judged: int
    accepted: int
    target_forwards: int
    draft_forwards: int

    @property
    def acceptance(self) -> float:
        """alpha: the share of judged drafted tokens the target kept, an estimate of the mean sum(min(p, q)) (NaN
        where nothing was judged)."""
        return self.accepted / self.judged if self.judged else math.nan

    def tokens_per_forward(self, tokens: int) -> float:
        """Tokens emitted per target forward (plain decoding: 1)."""
        return tokens / self.target_forwards if self.target_forwards else math.nan

    @property
    def expected_per_round(self) -> float:
        """(1 - alpha^(K+1)) / (1 - alpha): the tokens a round emits on average where each drafted token is kept
        with probability alpha independently (Leviathan et al. 2023, eq. 1)."""
        alpha, k = self.acceptance, self.draft_tokens
        if math.isnan(alpha):
            return math.nan
        return k + 1.0 if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


@dataclass(frozen=True)
class Constrained:
    """What a constraint's mask did at one step: tokens allowed, the mass inside, its cost in nats (-log mass), and
    whether the chain without the mask would have chosen the same token (with the same random number)."""

    allowed: int
    mass: float
    cost: float
    unmasked_same: bool | None = None


# (token id, raw log-probability, strategy probability): NaN where the path does not know one of them
Scored = tuple[int, float, float]


@dataclass(slots=True)  # not frozen: one is made per row per step, and a frozen dataclass takes ~4x as long to make
class Measure:
    """One step's numbers about its chosen token, before they are named for the reader (`build_step` adds
    the token's text and the probabilities of its log-probabilities). The fields mean what `Step`'s of the same
    name mean; `logprob` is the raw model's, NaN where the path does not know it, and `top` and `named` hold
    (token id, raw log-probability, strategy probability) triples."""

    logprob: float
    sampled_prob: float
    entropy: float = math.nan
    sampled_entropy: float = math.nan
    kept: int = -1
    kl: float = math.nan
    top: tuple[Scored, ...] = ()
    rank: int | None = None
    named: tuple[Scored, ...] = ()
    distribution: str = "full"
    entropy_bounds: tuple[float, float] | None = None
    tail_mass: float | None = None
    sampled_by: str = "samplecli"
    probs: str | None = None
    sampled_entropy_exact: bool | None = None
    constraint: Constrained | None = None
    speculation: Speculated | None = None


def build_step(vocab, measure: Measure, *, sample: int, step: int, token_id: int, text: str, column: int = 0) -> Step:
    """The one place a `Step` is built, for every path (the decode loop, a server's draws, beam search): which
    sequence, step and token, the `text` it released, and what `measure` (`engine.measure`) says about it, with each
    token named by `vocab` and each log-probability given as a probability too."""
    m = measure
    return Step(sample=sample, step=step, token_id=token_id, token=vocab.text(token_id), text=text,
                bytes=vocab.bytes(token_id), logprob=json_number(m.logprob), prob=math.exp(m.logprob),
                sampled_prob=m.sampled_prob, entropy=m.entropy, sampled_entropy=m.sampled_entropy, kept=m.kept,
                top=_alternatives(vocab, m.top) if m.top else (), kl=m.kl, column=column, rank=m.rank,
                named=_alternatives(vocab, m.named) if m.named else (), distribution=m.distribution,
                entropy_bounds=m.entropy_bounds, tail_mass=m.tail_mass, sampled_by=m.sampled_by, probs=m.probs,
                sampled_entropy_exact=m.sampled_entropy_exact, constraint=m.constraint,
                speculation=m.speculation)


def _alternatives(vocab, scored: tuple[Scored, ...]) -> tuple[Alternative, ...]:
    return tuple(Alternative(i, vocab.text(i), math.exp(lp), json_number(lp), sp) for i, lp, sp in scored)


@dataclass(frozen=True)
class Done:
    """The end of one sequence: its text, why it stopped, and its likelihood under the raw model."""

    sample: int
    text: str
    token_ids: tuple[int, ...]
    # "eos" | "length" | "stop" | "context" (the model's context ended it first) | "constraint" (the mask left
    # nothing the strategy kept)
    finish_reason: str
    n_tokens: int
    logprob_sum: float
    perplexity: float | None
    seconds: float
    tokens_per_second: float
    strategy: str
    seed: int
    column: int = 0  # which strategy, when several run in one batch (`compare`)
    score: float | None = None  # beam search: the length-normalised search score
    rank: int | None = None  # beam search: 0 is the best returned sequence
    speculation: Speculation | None = None  # speculative decoding: the run's rounds, acceptance and forwards


def cut_short(sample: int, token_ids: list[int], text: str, logprobs: list[float | None], seconds: float,
              strategy: str, seed: int, column: int = 0) -> Done:
    """The Done of a sequence that a signal stopped (Ctrl-C, SIGTERM) after these tokens: `finish_reason`
    "interrupted", its likelihood over the tokens it has (unknown, NaN, where a step's log-probability is)."""
    total = math.fsum(lp for lp in logprobs if lp is not None) if None not in logprobs else float("nan")
    count = len(token_ids)
    return Done(sample=sample, text=text, token_ids=tuple(token_ids), finish_reason="interrupted", n_tokens=count,
                logprob_sum=total, perplexity=math.exp(-total / count) if count and math.isfinite(total) else None,
                seconds=seconds, tokens_per_second=count / seconds if seconds > 0 else 0.0, strategy=strategy,
                seed=seed, column=column)


@dataclass(frozen=True)
class DecodeConfig:
    """How long to decode, when to stop, how many samples, and how much to record per step."""

    max_new_tokens: int = MAX_NEW_TOKENS.default
    min_new_tokens: int = MIN_NEW_TOKENS.default
    stop: tuple[str, ...] = ()
    num_samples: int = NUM_SAMPLES.default
    seed: int | None = SEED.default
    top_n: int = TOP_N.default
    record: bool = True  # entropies and top-N alternatives per step (off: only what Done needs)
    logprob_of: tuple[int, ...] = ()  # token ids whose probabilities each Step reports, with the chosen rank
    # the run's index of this batch's first sample: a run decoded in chunks (`decode_in_chunks`) gives each chunk
    # its own, and sample i draws from its own generator seeded from (seed, i) whichever chunk it is in
    first_sample: int = 0

    def __post_init__(self) -> None:
        for param in RUN_PARAMS:
            value = getattr(self, param.name)
            if value is None and param.default is None:
                continue
            try:
                object.__setattr__(self, param.name, param.normalise(value))  # 3.0 -> 3, as from a preset
            except Invalid as why:
                raise SettingError(f"{{{param.name}}} has to be {why}", param.name) from None
        if self.min_new_tokens > self.max_new_tokens:
            raise SettingError(f"{{min_new_tokens}} ({self.min_new_tokens}) has to be <= {{max_new_tokens}} "
                               f"({self.max_new_tokens})", "min_new_tokens", "max_new_tokens")
        for stop in self.stop:
            if stop == "":
                raise SettingError("{stop_strings}: a stop string may not be empty, but is ''", "stop_strings")
        if isinstance(self.first_sample, bool) or not isinstance(self.first_sample, int) or self.first_sample < 0:
            raise ValueError(f"first_sample has to be an integer >= 0, but is {self.first_sample!r}")
        for token_id in self.logprob_of:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise SettingError(f"{{logprob_of}} has to be a token id >= 0, but is {token_id!r}", "logprob_of")


def resolved_seed(seed: int | None) -> int:
    """The seed to use: the one given, or a fresh random one (reported in Done so a run can be redone)."""
    return seed if seed is not None else int.from_bytes(os.urandom(4), "little")


def sample_seed(seed: int, sample: int) -> int:
    """Seed of sample i's own generator: depends on (seed, i) only, so sample i does not depend on N."""
    return (seed * 0x9E3779B97F4A7C15 + sample * 0xBF58476D1CE4E5B9 + 1) % (2**63)


def cost_nats(mass: float) -> float:
    """-log m: the nats a mask that keeps mass m of the distribution it receives costs (inf where it keeps none)."""
    return -math.log(mass) if mass > 0 else math.inf


def json_number(value: float | None) -> float | None:
    """The value where it is a finite number, else None (JSON has no NaN or Infinity)."""
    return value if value is not None and math.isfinite(value) else None
