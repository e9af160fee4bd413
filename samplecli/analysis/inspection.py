"""`samplecli inspect`: the next-token distribution, and how strategies reshape it, as plain data.

Every probability here comes from the strategy registry: a stage's distribution is `Strategy.distribution()`
of the chain up to that stage, a temperature's is the distribution of the strategy built with it, and so on.
This module only reads those tensors off into dataclasses of plain Python values (no Rich, no tensors leave
it), and adds the statistics that compare them (entropy and KL from `samplecli.stats`, draw counts).

A backend that returns only its top N tokens (a remote engine's `--top-logprobs N`, the OpenAI protocol) gives the
raw model's true log-probabilities of those N and -inf elsewhere. The raw model is then shown as it is (its
probabilities sum to 1 - the tail mass, and its entropy is an interval, `stats.top_n_entropy_bounds`), while every
strategy stage counts the other tokens as filtered, as the decode loop does: its distribution is over the N,
renormalised, and exact, as are its KL to the raw model and the raw mass it keeps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.analysis.inspect_plan import Plan, SweepPlan
from samplecli.analysis.inspect_position import (
    Context,
    cannot_inspect,
    distribution,
    drawn_at,
    next_token_row,
    processed,
    reach,
    ready,
)
from samplecli.analysis.inspect_report import (
    Draws,
    Limits,
    OrderDiff,
    OrderView,
    Position,
    Report,
    Stage,
    Sweep,
    SweepPoint,
    TemperatureRow,
    TemperatureSweep,
    TokenInfo,
    TokenProb,
)
from samplecli.backends.base import TEACHER_FORCE
from samplecli.errors import SampleCliError, UsageError
from samplecli.stats import LN2
from samplecli.strategies import SELECTORS, Strategy
from samplecli.strategies.schema import OFF_VALUES

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend

# A cut is "decided by float rounding" when moving the transform's threshold by this much (in the
# parameter's own units: probability mass for top-p, a ratio for min-p, ...) changes the kept set.
ROUNDING_TOLERANCE = 1e-6


# --- the computations -----------------------------------------------------------------------------------------


def top_tokens(ctx: Context, n: int) -> list[TokenInfo]:
    """The n most probable tokens under the raw model (ties: the lowest id first)."""
    import torch

    raw = _raw(ctx)
    logp = _raw_log(ctx)
    order = torch.sort(ctx.logits[0], descending=True, stable=True).indices[:n].tolist()
    return [TokenInfo(i, ctx.token_text(i), float(ctx.logits[0, i]), float(raw[i]), float(logp[i])) for i in order]


def _ranks(probs: torch.Tensor, ids: list[int]) -> list[int | None]:
    """Each id's rank in `probs` (1 + how many are larger; None where it is 0): one pass over the row for the
    values above the smallest asked for, then the counts among those few (a 152k row once, not once per id)."""
    if not ids:
        return []
    values = probs[ids]
    above = probs[probs > values.min()]
    counts = (above.unsqueeze(0) > values.unsqueeze(1)).sum(1).tolist()
    return [1 + count if value > 0 else None for count, value in zip(counts, values.tolist(), strict=True)]


def _summary(probs: torch.Tensor, ctx: Context) -> dict:
    """Kept size and mass, entropy and KL from the raw model, for one distribution row `probs` (V,)."""

    from samplecli.stats import entropy_nats, kl_nats

    raw = _raw(ctx).double()
    raw_log = _kl_log(ctx)
    kept = probs > 0
    entropy = float(entropy_nats(probs.double(), is_log=False))
    return {"kept": int(kept.sum()), "kept_mass_raw": float(raw[kept].sum()), "entropy_nats": entropy,
            "kl_from_raw_nats": float(kl_nats(probs.double(), raw_log))}


def _raw(ctx: Context) -> torch.Tensor:
    """The raw model's distribution (V,): the registry's plain `sample` strategy, with no transforms. From a
    top-N backend, the true probabilities of the N (not renormalised: they sum to 1 - the tail mass), 0 elsewhere.
    Computed once per context (every stage of a trace reads it)."""
    if "raw" not in ctx.cache:
        ctx.cache["raw"] = ctx.logits[0].double().exp() if not ctx.full else distribution(_plain(), ctx)[0]
    return ctx.cache["raw"]


def _raw_log(ctx: Context) -> torch.Tensor:
    """The raw model's log-probabilities (V,), float64: a top-N backend's are its scores themselves."""
    import torch

    if "raw_log" not in ctx.cache:
        ctx.cache["raw_log"] = torch.log_softmax(ctx.logits[0].double(), dim=-1) if ctx.full \
            else ctx.logits[0].double()
    return ctx.cache["raw_log"]


def _kl_log(ctx: Context) -> torch.Tensor:
    """log q for KL(p || raw): from the raw distribution itself, so that KL(raw || raw) is exactly 0; where float32
    underflowed to 0 (a token a hot temperature can lift), from log_softmax. Once per context."""
    import torch

    if "kl_log" not in ctx.cache:
        raw = _raw(ctx).double()
        ctx.cache["kl_log"] = torch.where(raw > 0, raw.log(), _raw_log(ctx))
    return ctx.cache["kl_log"]


def _plain() -> Strategy:
    return Strategy([], SELECTORS["sample"]())


def _is_plain(strategy: Strategy) -> bool:
    """No transform and plain sampling: the raw model itself."""
    return not strategy.transforms and strategy.selector.name == "sample"


def _outside_top(probs: torch.Tensor, ctx: Context, top_ids: list[int]) -> list[TokenProb]:
    from samplecli.strategies.ranking import top_sorted

    order = top_sorted(probs, len(top_ids))[1].tolist() if top_ids else []
    return [TokenProb(i, ctx.token_text(i), float(probs[i])) for i in order if i not in top_ids and probs[i] > 0]


def trace(ctx: Context, strategy: Strategy | None, top_ids: list[int]) -> list[Stage]:
    """The raw distribution, then the distribution after each element of `strategy`'s chain.

    Stage i is `Strategy(chain[:i], sample).distribution()`; a last stage for the selector is added when it
    is not plain sampling (greedy, mirostat), and that one is the full strategy's `distribution()`.
    Each stage is computed on a copy of the strategy as it stands, so stateful samplers see the same state.
    """
    sample = SELECTORS["sample"]()
    first, probs = _stage(ctx, "logits", "raw", Strategy([], sample), None, top_ids)
    stages = [first]
    if strategy is None:
        return stages
    transforms = strategy.transforms
    for i, transform in enumerate(transforms):
        prefix = Strategy(transforms[: i + 1], sample)
        stage, probs = _stage(ctx, str(transform), transform.kind, prefix, Strategy(transforms[:i], sample),
                              top_ids, probe=i, previous=probs)
        stages.append(stage)
    if strategy.selector.name != "sample":
        stages.append(_stage(ctx, str(strategy.selector), "selector", strategy, Strategy(transforms, sample),
                             top_ids, previous=probs)[0])
    return stages


def _stage(ctx: Context, name: str, kind: str, upto: Strategy, before: Strategy | None, top_ids: list[int],
           probe: int | None = None, previous: torch.Tensor | None = None) -> tuple[Stage, torch.Tensor]:
    """A stage, and its distribution (the next stage's `previous`: `before`'s distribution, given so that it is
    not computed twice)."""
    import torch

    # the raw model as it is: from a top-N backend, its true probabilities of the N (the stages after it see
    # them renormalised, the rest filtered)
    probs = _raw(ctx) if _is_plain(upto) else distribution(upto, ctx)[0]
    if not torch.isfinite(probs).all():
        raise SampleCliError(f"stage {name} gave a distribution that is not finite (NaN or inf)")
    if previous is None:
        previous = (_raw(ctx) if _is_plain(before) else distribution(before, ctx)[0]) if before is not None else probs
    removed = (previous > 0) & (probs == 0)
    summary = _summary(probs, ctx)
    if not ctx.full and _is_plain(upto):  # not a distribution over V: its entropy is the report's interval
        summary.update(entropy_nats=None, kl_from_raw_nats=None)
    flags: list[str] = []
    if before is not None and kind in ("truncation", "selector"):
        # which tokens the stage let through: its finite logits (a selector's: its non-zero probabilities)
        kept = probs > 0 if kind == "selector" else _passed(upto, ctx)
        flags += _tie_flags(ctx, processed(before, ctx)[0], kept)
        if probe is not None:
            flags += _rounding_flags(ctx, upto, probe, kept)
    return Stage(
        name=name, kind=kind, kept=summary["kept"], kept_mass_raw=summary["kept_mass_raw"],
        mass_removed=float(previous.double()[removed].sum()), entropy_nats=summary["entropy_nats"],
        entropy_bits=_bits(summary["entropy_nats"]), kl_from_raw_nats=summary["kl_from_raw_nats"],
        p_max=float(probs.max()), probs=[float(probs[i]) for i in top_ids], ranks=_ranks(probs, top_ids),
        outside_top=_outside_top(probs, ctx, top_ids), flags=flags,
    ), probs


def _bits(nats: float | None) -> float | None:
    return None if nats is None else nats / LN2


def _passed(strategy: Strategy, ctx: Context) -> torch.Tensor:
    """The tokens `strategy`'s chain leaves a finite logit (the kept set, before any float underflow)."""
    import torch

    return torch.isfinite(processed(strategy, ctx)[0])


def _tie_flags(ctx: Context, incoming: torch.Tensor, kept: torch.Tensor) -> list[str]:
    """A tie at the cut: the least likely kept token and the most likely removed one had equal logits
    coming into the stage, so the tie-break (the lower token id) decided which stays."""
    import torch

    removed = torch.isfinite(incoming) & ~kept
    if not removed.any() or not kept.any():
        return []
    lowest_kept = incoming[kept].min()
    highest_removed = incoming[removed].max()
    if lowest_kept != highest_removed:
        return []
    kept_id = int((kept & (incoming == lowest_kept)).nonzero()[-1])
    removed_id = int((removed & (incoming == highest_removed)).nonzero()[0])
    return [f"tie at the cut: {ctx.token_text(kept_id)!r} (id {kept_id}, kept) and {ctx.token_text(removed_id)!r} "
            f"(id {removed_id}, removed) have the same logit {float(lowest_kept):.6g} here; the token id broke the tie"]


def _rounding_flags(ctx: Context, upto: Strategy, index: int, kept: torch.Tensor) -> list[str]:
    """A cut decided by float rounding: moving a threshold of this transform by ROUNDING_TOLERANCE either
    way changes the kept set (e.g. a top-p mass, or a min-p ratio, within 1e-6 of the threshold)."""
    import torch

    transform = upto.transforms[index]
    flags = []
    for param in type(transform).params:
        value = transform.values[param.name]
        # at the value that leaves every token in, nudging the threshold is not a rounding question
        if param.type is not float or OFF_VALUES.get(param.name) == value:
            continue
        changes = []
        for nudged in (value - ROUNDING_TOLERANCE, value + ROUNDING_TOLERANCE):
            if not param.check(nudged):
                continue
            probe = upto.clone()
            probe.transforms[index].values[param.name] = nudged
            probe_kept = _passed(probe, ctx)
            if not torch.equal(probe_kept, kept):
                changes.append(f"at {nudged:.7g} it keeps {int(probe_kept.sum())}")
        if changes:
            flags.append(f"float rounding: `{param.name}` = {value:g} is within {ROUNDING_TOLERANCE:g} of deciding "
                         f"this cut ({int(kept.sum())} kept; {', '.join(changes)})")
    return flags


def temperature_sweep(ctx: Context, temps: tuple[float, ...], strategies: tuple[Strategy, ...], top_ids: list[int],
                      curve: tuple[tuple[float, Strategy], ...] = ()) -> TemperatureSweep:
    """Each temperature's distribution (the strategy built with it), its entropy, p(argmax) and exp(H)."""
    import torch

    rows = []
    for temperature, strategy in zip(temps, strategies, strict=True):
        probs = distribution(ready(strategy, ctx), ctx)[0]
        summary = _summary(probs, ctx)
        argmax = int(torch.argmax(probs))
        rows.append(TemperatureRow(
            temperature=temperature, chain=str(strategy), probs=[float(probs[i]) for i in top_ids],
            kept=summary["kept"], entropy_nats=summary["entropy_nats"], entropy_bits=summary["entropy_nats"] / LN2,
            p_argmax=float(probs[argmax]), argmax_token_id=argmax,
            effective_candidates=math.exp(summary["entropy_nats"]),
        ))
    vocab = ctx.vocab_size
    # T -> inf spreads the mass evenly over what the strategies see: the vocabulary, or a top-N backend's N
    seen = ctx.known
    cold = top_ids[0]
    limits = Limits(vocab_size=vocab, cold_token_id=cold, cold_token=ctx.token_text(cold), hot_prob=1 / seen,
                    hot_entropy_nats=math.log(seen), hot_entropy_bits=math.log2(seen))
    points = [(t, _summary(distribution(ready(s, ctx), ctx)[0], ctx)["entropy_nats"]) for t, s in curve]
    truncated = any(t.kind in ("truncation", "stateful") for s in strategies for t in s.transforms)
    return TemperatureSweep(rows=rows, limits=limits, truncated=truncated, curve=points)


def draw(ctx: Context, probs: torch.Tensor, n: int, seed: int, top_ids: list[int], label: str,
         temperature: float | None = None) -> Draws:
    """`n` multinomial draws from `probs` (V,), from a torch.Generator seeded with `seed`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(probs.double(), n, replacement=True, generator=generator)
    counts = torch.bincount(picks, minlength=probs.shape[-1])
    top = torch.tensor(top_ids)
    rest = torch.ones_like(counts, dtype=torch.bool)
    rest[top] = False
    observed = [*counts[top].tolist(), int(counts[rest].sum())]
    expected = [*probs.double()[top].tolist(), float(probs.double()[rest].sum())]
    frequencies = [c / n for c in observed]
    tv = 0.5 * sum(abs(f - e) for f, e in zip(frequencies, expected, strict=True))
    buckets = [(c, e) for c, e in zip(observed, expected, strict=True) if e > 0]
    chi2 = sum((c - n * e) ** 2 / (n * e) for c, e in buckets)
    return Draws(label=label, temperature=temperature, n=n, seed=seed, counts=observed[:-1],
                 frequencies=frequencies[:-1], expected=expected[:-1], other_count=observed[-1],
                 other_frequency=frequencies[-1], other_expected=expected[-1], distinct=int((counts > 0).sum()),
                 tv=tv, chi2=chi2, dof=max(len(buckets) - 1, 0))


def parameter_sweep(ctx: Context, sweep: SweepPlan) -> Sweep:
    """Kept-set size, kept raw mass and entropy for each value of the swept setting."""
    points = []
    for value, strategy in zip(sweep.values, sweep.strategies, strict=True):
        summary = _summary(distribution(ready(strategy, ctx), ctx)[0], ctx)
        points.append(SweepPoint(value=value, chain=str(strategy), kept=summary["kept"],
                                 kept_mass_raw=summary["kept_mass_raw"], entropy_nats=summary["entropy_nats"]))
    return Sweep(spec=sweep.spec, name=sweep.name, setting=sweep.setting, points=points)


def order_diff(ctx: Context, first: Strategy, second: Strategy, top_ids: list[int],
               labels: tuple[str, str] = ("transformers", "llama.cpp")) -> OrderDiff:
    """Where two strategies (the same settings in two orders) keep different tokens or give different mass."""
    import torch

    p = distribution(ready(first, ctx), ctx)[0]
    q = distribution(ready(second, ctx), ctx)[0]
    raw_order = torch.sort(ctx.logits[0], descending=True, stable=True).indices

    def view(label: str, strategy: Strategy, probs: torch.Tensor) -> OrderView:
        summary = _summary(probs, ctx)
        return OrderView(order=label, chain=str(strategy), kept=summary["kept"],
                         kept_mass_raw=summary["kept_mass_raw"], entropy_nats=summary["entropy_nats"],
                         probs=[float(probs[i]) for i in top_ids], ranks=_ranks(probs, top_ids))

    raw = _raw(ctx)

    def only(mask: torch.Tensor) -> list[TokenProb]:
        ids = raw_order[mask[raw_order]][: len(top_ids)].tolist()
        return [TokenProb(i, ctx.token_text(i), float(raw[i])) for i in ids]

    only_first, only_second = (p > 0) & (q == 0), (q > 0) & (p == 0)
    diff = (p.double() - q.double()).abs()
    return OrderDiff(
        first=view(labels[0], first, p), second=view(labels[1], second, q), identical=bool(torch.equal(p, q)),
        same_kept_set=bool(torch.equal(p > 0, q > 0)), tv=float(0.5 * diff.sum()), max_abs_diff=float(diff.max()),
        only_first_count=int(only_first.sum()), only_second_count=int(only_second.sum()),
        only_first=only(only_first), only_second=only(only_second),
    )


# --- the whole inspection -------------------------------------------------------------------------------------


def analyse(ctx: Context, plan: Plan, traced: Strategy | None, *, model: str, prompt: str,
            position: Position, engine: str | None = None) -> Report:
    """Everything `plan` asks for at the position `ctx` describes. `traced` is the traced strategy in its
    state at that position (None: the raw distribution only); `engine`: who returned a top-N distribution."""
    import torch

    known = ctx.known
    top = top_tokens(ctx, min(plan.top_n, known))
    top_ids = [t.token_id for t in top]
    stages = trace(ctx, traced, top_ids)
    temperatures = None
    if plan.temps:
        temperatures = temperature_sweep(ctx, plan.temps, plan.temp_strategies, top_ids,
                                         tuple(zip(plan.curve_temps, plan.curve_strategies, strict=True)))
    draws = []
    if plan.draws is not None:
        from samplecli.engine.events import sample_seed

        if plan.temps:
            sources = [(f"T={t:g}", t, distribution(ready(s, ctx), ctx)[0])
                       for t, s in zip(plan.temps, plan.temp_strategies, strict=True)]
        elif traced is not None:
            sources = [("the strategy", None, distribution(traced, ctx)[0])]
        elif ctx.full:
            sources = [("raw model", 1.0, _raw(ctx))]
        else:  # what a strategy draws from: the N, renormalised
            sources = [(f"top {known}, renormalised", 1.0, distribution(_plain(), ctx)[0])]
        draws = [draw(ctx, probs, plan.draws, sample_seed(ctx.seed, i), top_ids, label, temperature)
                 for i, (label, temperature, probs) in enumerate(sources)]
    sweeps = [parameter_sweep(ctx, sweep) for sweep in plan.sweeps]
    diff = order_diff(ctx, *plan.orders, top_ids) if plan.orders is not None else None
    bounds = {}
    if not ctx.full:
        from samplecli.stats import top_n_entropy_bounds

        low, high, tail = top_n_entropy_bounds(ctx.logits[0][torch.isfinite(ctx.logits[0])].tolist(), ctx.vocab_size)
        bounds = {"distribution": f"top-{ctx.top_n}", "entropy_bounds": (low, high), "tail_mass": tail,
                  "engine": engine}
    return Report(model=model, vocab_size=ctx.vocab_size, prompt=prompt, seed=ctx.seed, position=position, top=top,
                  chain=str(traced) if traced is not None else None, stages=stages, temperatures=temperatures,
                  draws=draws, sweeps=sweeps, order_diff=diff, **bounds)


def inspect(lm: Backend, prompt: str, plan: Plan, prompt_ids: list[int] | None = None) -> Report:
    """Encode the prompt (unless its ids are given: a chat template's), generate up to step `plan.at` if asked,
    and analyse the distribution there."""
    import torch

    from samplecli.engine.decode import encode_prompt, resolved_seed

    seed = resolved_seed(plan.seed)
    prompt_ids = encode_prompt(lm, prompt) if prompt_ids is None else list(prompt_ids)
    refusal = cannot_inspect(lm, prompt_ids)  # before any request for a distribution or a token
    if refusal is not None:
        raise UsageError(refusal)
    generation = plan.generation.clone()
    generated = reach(lm, prompt_ids, generation, plan.at, seed)
    drawn = drawn_at(lm, prompt_ids, plan.generation, plan.at, seed) if plan.at else None
    ids = prompt_ids + generated
    table = lm.vocab
    full = TEACHER_FORCE in lm.capabilities or lm.top_n is None
    ctx = Context(logits=next_token_row(lm, ids), input_ids=torch.tensor([ids]), token_text=table.text,
                  eos_token_ids=tuple(lm.eos_token_ids), seed=seed, top_n=None if full else lm.top_n,
                  vocab=table, generated=tuple(generated))
    # the traced strategy is the one that generated, in its state at step K; with none, only the raw model
    traced = generation if plan.traced is not None else None
    position = Position(step=plan.at, prompt_tokens=len(prompt_ids), generated_token_ids=generated,
                        generated_text=table.decode(generated, skip_special_tokens=True),
                        generated_by=str(plan.generation) if plan.at else None,
                        drawn_token_id=drawn, drawn_token=table.text(drawn) if drawn is not None else None)
    engine = None if full else lm.engine or lm.name
    return analyse(ctx, plan, traced, model=lm.name, prompt=prompt, position=position, engine=engine)
