"""`samplecli inspect`'s report as plain data: the raw model's top tokens, each stage of a chain, the temperature and
setting sweeps, draws and the comparison of two orders (`analysis.inspection` computes them; `views.inspect` and
`views.plot` show them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenInfo:
    """One of the top-N tokens under the raw model (T = 1), ranked by raw probability."""

    token_id: int
    token: str
    logit: float
    prob: float
    logprob: float


@dataclass(frozen=True)
class TokenProb:
    token_id: int
    token: str
    prob: float


@dataclass(frozen=True)
class Stage:
    """The distribution after one element of a chain (stage 0 is the raw model; from a top-N backend its
    `kept` is the N returned tokens, their raw mass 1 - the tail mass, and its entropy and KL are None).

    `probs` and `ranks` follow the order of `Report.top`; a rank is 1 + the number of tokens strictly
    more probable (tied tokens share it), None where the token is removed. `mass_removed` is the
    probability, under the previous stage, of the tokens this stage removed; `kept_mass_raw` the raw
    model's probability of the tokens it keeps. `outside_top` lists tokens in this stage's own top-N that
    are not in the raw top-N (a penalty or XTC can promote them).
    """

    name: str
    kind: str
    kept: int
    kept_mass_raw: float
    mass_removed: float
    entropy_nats: float | None  # None: the raw model from a top-N backend (see Report.entropy_bounds)
    entropy_bits: float | None
    kl_from_raw_nats: float | None
    p_max: float
    probs: list[float]
    ranks: list[int | None]
    outside_top: list[TokenProb] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TemperatureRow:
    temperature: float
    chain: str
    probs: list[float]  # the top-N tokens, in the order of Report.top
    kept: int
    entropy_nats: float
    entropy_bits: float
    p_argmax: float
    argmax_token_id: int
    effective_candidates: float  # exp(entropy): the size of a uniform distribution with this entropy


@dataclass(frozen=True)
class Limits:
    """Where temperature goes at its ends, for this model's vocabulary of V tokens."""

    vocab_size: int
    cold_token_id: int  # T -> 0: all the mass on the argmax (greedy)
    cold_token: str
    hot_prob: float  # T -> inf: uniform, 1 / V each
    hot_entropy_nats: float  # log V
    hot_entropy_bits: float


@dataclass(frozen=True)
class Draws:
    """`n` multinomial draws from one distribution, counted for the top-N tokens and the rest.

    `tv` is the total variation distance between the empirical and expected frequencies over those
    N + 1 buckets, `chi2` Pearson's statistic over the buckets with expected mass (`dof` = their number - 1).
    """

    label: str
    temperature: float | None
    n: int
    seed: int
    counts: list[int]
    frequencies: list[float]
    expected: list[float]
    other_count: int
    other_frequency: float
    other_expected: float
    distinct: int  # how many different tokens were drawn
    tv: float
    chi2: float
    dof: int


@dataclass(frozen=True)
class TemperatureSweep:
    """`truncated`: a stage of the swept chain removes tokens, so as T grows the entropy stays below the
    limit of temperature alone, log V."""

    rows: list[TemperatureRow]
    limits: Limits
    truncated: bool
    curve: list[tuple[float, float]] = field(default_factory=list)  # (T, entropy in nats), for --plot


@dataclass(frozen=True)
class SweepPoint:
    value: float | int
    chain: str
    kept: int
    kept_mass_raw: float
    entropy_nats: float


@dataclass(frozen=True)
class Sweep:
    spec: str
    name: str
    setting: str
    points: list[SweepPoint]


@dataclass(frozen=True)
class OrderView:
    order: str
    chain: str
    kept: int
    kept_mass_raw: float
    entropy_nats: float
    probs: list[float]
    ranks: list[int | None]


@dataclass(frozen=True)
class OrderDiff:
    """The same settings in two orders. `only_first`/`only_second` are the tokens only one order keeps
    (the most probable N of them under the raw model; the counts are of all of them)."""

    first: OrderView
    second: OrderView
    identical: bool
    same_kept_set: bool
    tv: float
    max_abs_diff: float
    only_first_count: int
    only_second_count: int
    only_first: list[TokenProb]
    only_second: list[TokenProb]


@dataclass(frozen=True)
class Position:
    """Where the distribution is taken: after the prompt (step 0), or at step K of a seeded generation."""

    step: int
    prompt_tokens: int
    generated_token_ids: list[int]
    generated_text: str
    generated_by: str | None
    # at step K > 0: the token that generation drew at step K itself (the one this distribution gave)
    drawn_token_id: int | None = None
    drawn_token: str | None = None


@dataclass(frozen=True)
class Report:
    """`distribution` is "full" or "top-N" (`distribution_label`); for "top-N", `entropy_bounds` holds the raw
    entropy's interval in nats, `tail_mass` the raw probability of the tokens not returned, and `engine` who
    returned them."""

    model: str
    vocab_size: int
    prompt: str
    seed: int
    position: Position
    top: list[TokenInfo]
    chain: str | None
    stages: list[Stage]  # stage 0: the raw model; then each element of `chain`
    temperatures: TemperatureSweep | None = None
    draws: list[Draws] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    order_diff: OrderDiff | None = None
    distribution: str = "full"
    entropy_bounds: tuple[float, float] | None = None
    tail_mass: float | None = None
    engine: str | None = None
