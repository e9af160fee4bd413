"""`samplecli compare`: several strategies on one prompt, decoded in one batch, then measured.

Per-token strategies share one prefill and advance together (coupled: sample i of every column uses the
same uniform number at each step). The results are plain data; renderers show them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from samplecli.analysis import metrics
from samplecli.backends.base import PROMPT_LOGPROBS, TEACHER_FORCE
from samplecli.engine.decode import DecodeConfig, Done, Step, decode_in_chunks
from samplecli.engine.events import cut_short
from samplecli.errors import UsageError
from samplecli.strategies import NAMED, SELECTORS, TRANSFORMS, Strategy, build_strategy
from samplecli.strategies.schema import MODIFIERS, PENALTIES

# the settings a beam column takes besides the search's own: the penalties (and what modifies them)
BEAM_PENALTIES = tuple(sorted(PENALTIES | set(MODIFIERS)))

if TYPE_CHECKING:
    from samplecli.backends.base import Backend

# Holtzman et al. 2019, Table 1 (GPT-2 Large, open-ended generation), then the later truncation methods.
HOLTZMAN = (
    ("greedy", "greedy"),
    ("beam b=16", "beam:num_beams=16"),
    ("pure sampling", "sample"),
    ("sampling t=0.9", "temperature=0.9"),
    ("top-k k=40", "top-k=40"),
    ("top-k k=640", "top-k=640"),
    ("top-k k=40 t=0.7", "temperature=0.7,top-k=40"),
    ("nucleus p=0.95", "top-p=0.95"),
    ("typical p=0.95", "typical=0.95"),
    ("min-p 0.1", "min-p=0.1"),
)


@dataclass
class Column:
    """One strategy to compare: its label (what the user typed), and either a per-token strategy or
    the settings of a search (beam) that runs its own loop."""

    label: str
    strategy: Strategy | None = None
    search: dict[str, Any] | None = None  # e.g. {"strategy": "beam", "num_beams": 4}
    server_chain: Any = None  # where a remote engine samples: what it runs for `strategy` (see on_server)

    @property
    def chain(self) -> str:
        if self.server_chain is not None:
            return str(self.server_chain)
        if self.strategy is not None:
            return str(self.strategy)
        return ", ".join(f"{k}={v}" for k, v in (self.search or {}).items())


def parse_spec(spec: str, label: str | None = None, base: dict[str, Any] | None = None) -> Column:
    """`-s` values: a named strategy ("greedy", "top-p"), a named strategy with settings
    ("beam:num_beams=4", "top-k:top_k=10"), or a chain ("top-p=0.9,temperature=0.8"). `base` holds settings
    every column shares (the penalties given as flags, in a preset or the environment); the spec's own win."""
    base = {k: v for k, v in (base or {}).items() if v is not None}
    from samplecli.strategies.build import _parse_value

    text = spec.strip()
    if not text:
        raise UsageError("-s: an empty strategy spec")
    head, _, rest = text.partition(":")
    if head in NAMED and "," not in text and "=" not in head:
        settings: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in rest.split(":"))):
            key, eq, value = pair.partition("=")
            if not eq:
                raise UsageError(f"-s {spec!r}: expected key=value after `{head}:`, got `{pair}`")
            if key.strip() in settings:
                raise UsageError(f"-s {spec!r}: `{key.strip()}` is given twice; give each setting once")
            settings[key.strip()] = _parse_value(value, f"-s {spec!r}")
        if getattr(NAMED[head], "loop", "token") != "token":
            search = {"strategy": head, **base, **settings}
            with _naming(spec):
                check_search(search)
            return Column(label or text, search=search)
        with _naming(spec):
            return Column(label or text, strategy=build_strategy({**base, **settings}, strategy=head).strategy)
    if head in TRANSFORMS or head in SELECTORS or "=" in text or "," in text:
        with _naming(spec):
            return Column(label or text, strategy=build_strategy(base, chain=text).strategy)
    valid = sorted(NAMED)
    from samplecli.strategies.base import closest

    raise UsageError(f"-s {spec!r}: not a strategy name or a chain{closest(head, valid)}; "
                     f"strategies: {', '.join(valid)}; or a chain like \"top-p=0.9,temperature=0.8\"")


@contextlib.contextmanager
def _naming(spec: str) -> Iterator[None]:
    """Prefix an error about a strategy's settings with the `-s` spec it came from."""
    try:
        yield
    except UsageError as exc:
        raise UsageError(f"-s {spec!r}: {exc}") from exc


def check_search(search: dict[str, Any]) -> None:
    """Validate a search column's settings as `samplecli.engine.beam.compare_events` will, so that a bad
    `-s beam:...` fails before the model loads."""
    from samplecli.config.beam_plan import SEARCH_KEYS, plan_beam

    settings = dict(search)
    name = settings.pop("strategy", "beam")
    penalties = {k: settings.pop(k) for k in BEAM_PENALTIES if k in settings}
    _check_search_keys(name, settings, SEARCH_KEYS)
    plan_beam(strategy=name, **settings)
    build_strategy(penalties, strategy=name)


def _check_search_keys(name: str, settings: dict[str, Any], search_keys: tuple[str, ...]) -> None:
    unknown = sorted(set(settings) - set(search_keys))
    if unknown:
        from samplecli.strategies.base import closest

        valid = [*search_keys, *BEAM_PENALTIES]
        raise UsageError(f"{name}: unknown setting `{unknown[0]}`{closest(unknown[0], valid)}; valid: "
                         f"{', '.join(valid)}")


def column_from_settings(label: str, values: dict[str, Any], base: dict[str, Any] | None = None) -> Column:
    """A column from preset settings (a preset's own, or one of its [strategies.NAME] tables), over `base`."""
    from samplecli.config.beam_plan import SEARCH_KEYS
    from samplecli.config.settings import sampling_values
    from samplecli.strategies.schema import SAMPLING_KEYS

    values = {**{k: v for k, v in (base or {}).items() if v is not None}, **values}
    named = NAMED.get(values.get("strategy"))
    if values.get("num_beams", 1) > 1 or (named is not None and named.loop == "beam"):
        search = {k: v for k, v in values.items() if k == "strategy" or k in SEARCH_KEYS or k in BEAM_PENALTIES}
        search.setdefault("strategy", "beam")
        return Column(label, search=search)
    built = build_strategy(sampling_values({k: values.get(k) for k in SAMPLING_KEYS}), strategy=values.get("strategy"),
                           chain=values.get("chain"))
    return Column(label, strategy=built.strategy)


@dataclass
class ColumnResult:
    """What one column produced: per sample, its steps and its Done."""

    column: Column
    steps: dict[int, list[Step]] = field(default_factory=dict)
    dones: dict[int, Done] = field(default_factory=dict)
    seconds: float = 0.0

    def token_ids(self) -> list[list[int]]:
        return [list(self.dones[i].token_ids) for i in sorted(self.dones)]

    def texts(self) -> list[str]:
        return [self.dones[i].text for i in sorted(self.dones)]

    def cut_short(self, seconds: float, seed: int) -> None:
        """After an interrupted run: each sample that had begun but not finished gets a Done of what it holds,
        `finish_reason` "interrupted", so that the report covers every token generated so far."""
        for sample, steps in self.steps.items():
            if sample not in self.dones and steps:
                self.dones[sample] = cut_short(sample, [s.token_id for s in steps], "".join(s.text for s in steps),
                                               [s.logprob for s in steps], seconds, self.column.chain, seed,
                                               steps[0].column)
        self.seconds = max(self.seconds, seconds)


def on_server(lm: Backend, columns: list[Column], config: DecodeConfig) -> list[Column]:
    """The columns with the chain the remote engine runs for each; UsageError naming the column (its `-s`) for
    one it cannot run, before any request for tokens: all columns sample on the server or none does."""
    from dataclasses import replace

    from samplecli.backends.base import search_on_server
    from samplecli.engine.server_decode import server_chain

    out = []
    for column in columns:
        with _naming(column.label):
            if column.strategy is None:
                raise UsageError(search_on_server(lm, column.search.get("strategy", "beam")))
            out.append(replace(column, server_chain=server_chain(lm, column.strategy, config)))
    return out


def run_columns(lm: Backend, columns: list[Column], prompt_ids: list[int], config: DecodeConfig,
                coupled: bool = True, post_sampling: bool = False) -> Iterator[tuple[int, Step | Done]]:
    """Decode every per-token column in one batch, then each search column in its own loop; or, where the
    columns carry a server chain (`on_server`), every sample of every column as one concurrent request to the
    engine, which draws the tokens (`coupled` does not apply; with `post_sampling` each step carries the
    probabilities of the distribution the engine drew from instead of the raw model's). Yields (column index,
    event)."""
    on_engine = bool(columns) and all(c.server_chain is not None for c in columns)
    if post_sampling and not on_engine:
        raise ValueError("post_sampling needs every column sampled on the server (on_server); the CLI refuses "
                         "--post-sampling-probs before this")
    if on_engine:
        from samplecli.engine.server_decode import server_decode_columns

        for event in server_decode_columns(lm, [(c.server_chain, c.chain) for c in columns], prompt_ids, config,
                                           post_sampling=post_sampling):
            yield event.column, event
        return
    token_columns = [i for i, c in enumerate(columns) if c.strategy is not None]
    if token_columns:
        strategies = [columns[i].strategy for i in token_columns]
        for event in decode_in_chunks(lm, strategies, prompt_ids, config, coupled=coupled):
            yield token_columns[event.column], event
    for index, column in enumerate(columns):
        if column.search is not None:
            for event in run_search(lm, column.search, prompt_ids, config):
                yield index, event


def run_search(lm: Backend, search: dict[str, Any], prompt_ids: list[int], config: DecodeConfig
               ) -> Iterator[Step | Done]:
    """A beam-search column: its returned sequences become the column's samples."""
    yield from compare_events(lm, search, prompt_ids, config)


def compare_events(lm: Backend, search: dict[str, Any], prompt_ids: list[int], config: DecodeConfig
                   ) -> Iterator[Step | Done]:
    """A `samplecli compare` column: `search` is {"strategy": "beam" | "stochastic-beam", "num_beams": ...,
    penalty settings...}; returns min(--num-samples, B) sequences unless num_return_sequences is given."""
    from samplecli.config.beam_plan import SEARCH_KEYS, plan_beam
    from samplecli.engine.beam import beam_decode
    from samplecli.engine.beam_types import DEFAULT_NUM_BEAMS, BeamStep

    search = dict(search)
    name = search.pop("strategy", "beam")
    penalties = {k: search.pop(k) for k in BEAM_PENALTIES if k in search}
    _check_search_keys(name, search, SEARCH_KEYS)
    beams = search.get("num_beams", DEFAULT_NUM_BEAMS)
    search.setdefault("num_return_sequences", max(1, min(config.num_samples, beams if isinstance(beams, int) else 1)))
    plan = plan_beam(strategy=name, **search)
    strategy = build_strategy(penalties, strategy=name).strategy
    config = DecodeConfig(**{**config.__dict__, "num_samples": 1})
    for event in beam_decode(lm, strategy, prompt_ids, config, plan.settings):
        if not isinstance(event, BeamStep):
            yield event


def collect(lm: Backend, columns: list[Column], prompt_ids: list[int], config: DecodeConfig, coupled: bool = True,
            on_event=None, post_sampling: bool = False) -> list[ColumnResult]:
    """Run all columns (see `run_columns`) and gather their events; `on_event(column, event)` sees each as it
    happens."""
    return collect_into([ColumnResult(c) for c in columns], lm, prompt_ids, config, coupled, on_event, post_sampling)


def collect_into(results: list[ColumnResult], lm: Backend, prompt_ids: list[int], config: DecodeConfig,
                 coupled: bool = True, on_event=None, post_sampling: bool = False) -> list[ColumnResult]:
    """`collect` into results made by the caller, who keeps what they hold when the run is interrupted."""
    columns = [r.column for r in results]
    for index, event in run_columns(lm, columns, prompt_ids, config, coupled=coupled, post_sampling=post_sampling):
        result = results[index]
        if isinstance(event, Step):
            result.steps.setdefault(event.sample, []).append(event)
        else:
            result.dones[event.sample] = event
            # Done.seconds runs from the start of the column's own loop: a beam column, decoded after the
            # batch, is not charged for the batch's time
            result.seconds = max(result.seconds, event.seconds)
        if on_event is not None:
            on_event(index, event)
    return results


def divergence_step(reference: list[int], other: list[int]) -> int | None:
    """The first step at which `other` differs from `reference` (None when one is a prefix of the other
    and they have the same length)."""
    for step, (a, b) in enumerate(zip(reference, other, strict=False)):
        if a != b:
            return step
    return None if len(reference) == len(other) else min(len(reference), len(other))


def _mean(values: list[float | None]) -> float | None:
    return metrics.mean_and_spread(values)[0]


def column_metrics(result: ColumnResult) -> dict[str, Any]:
    """The per-strategy measurements `compare` reports (docs/compare.md defines each)."""
    samples = result.token_ids()
    dones = [result.dones[i] for i in sorted(result.dones)]
    steps = [s for i in sorted(result.steps) for s in result.steps[i]]
    n_tokens = sum(d.n_tokens for d in dones)
    per_sample = {
        "n_tokens": [float(d.n_tokens) for d in dones],
        "logprob_sum": [d.logprob_sum for d in dones],
        "perplexity": [d.perplexity for d in dones],
        "repeated_4gram_fraction": [metrics.repeated_ngram_fraction(t, 4) for t in samples],
        "looped_fraction": [metrics.looped_fraction(t) for t in samples],
    }
    spread = {f"{k}_spread": metrics.mean_and_spread(v)[1] for k, v in per_sample.items()} if len(dones) > 1 else {}
    loops = [metrics.loop_at_end(t) is not None for t in samples]
    return {
        "samples": len(dones),
        "tokens": n_tokens,
        "tokens_per_second": n_tokens / result.seconds if result.seconds > 0 else None,
        "mean_entropy_model": _mean([s.entropy for s in steps]),
        "mean_entropy_strategy": _mean([s.sampled_entropy for s in steps]),
        "mean_kl_strategy_model": _mean([s.kl for s in steps]),
        "logprob_sum": metrics.mean_and_spread(per_sample["logprob_sum"])[0],
        "perplexity": metrics.mean_and_spread(per_sample["perplexity"])[0],
        "repetition": sum(loops) / len(loops) if loops else None,
        "looped_fraction": metrics.mean_and_spread(per_sample["looped_fraction"])[0],
        "repeated_4gram_fraction": metrics.mean_and_spread(per_sample["repeated_4gram_fraction"])[0],
        "distinct_1": metrics.distinct_n(samples, 1),
        "distinct_2": metrics.distinct_n(samples, 2),
        "self_bleu_4": metrics.self_bleu(samples),
        "zipf": metrics.zipf_coefficient(samples),
        **spread,
    }


def reference_chunks(lm: Backend, text: str, count: int, length: int) -> list[list[int]]:
    """`count` spans of `length` tokens from evenly spaced places in the reference text (tokenized as the engine
    scores it, where it tells its tokens only in its answer: SGLang's `echo`)."""
    ids = lm.encode_for_scoring(text, add_special_tokens=False)
    if len(ids) < length + 1:
        raise UsageError(f"--reference: the text has {len(ids)} tokens, fewer than the {length} needed")
    last = len(ids) - length
    starts = [round(i * last / max(count - 1, 1)) for i in range(count)] if count > 1 else [last // 2]
    return [ids[s : s + length] for s in starts]


def human_metrics(lm: Backend, chunks: list[list[int]]) -> dict[str, Any]:
    """The same measurements on human text: each chunk scored by the model after a BOS token (its
    perplexity and the model's entropy along it); KL and strategy entropy do not apply. On an engine that
    scores a text only through its prompt log-probabilities (vLLM's, SGLang's echo: the top N of each position)
    the perplexity is exact and the model's entropy unknown (None)."""
    import torch

    from samplecli.stats import entropy_nats

    from_prompt_logprobs = TEACHER_FORCE not in lm.capabilities and PROMPT_LOGPROBS in lm.capabilities
    if not from_prompt_logprobs and (refusal := lm.why_not(TEACHER_FORCE)) is not None:
        raise UsageError(refusal)
    perplexities, logprobs, entropies = [], [], []
    context = lm.context_length or 1024
    for chunk in chunks:
        prefix = [lm.bos_token_id] if lm.bos_token_id is not None else []
        ids = prefix + chunk[: context - len(prefix)]
        if from_prompt_logprobs:  # tokens 1.. of ids, each after its prefix
            nll = torch.tensor([-token.logprob for token in lm.prompt_logprobs(ids)], dtype=torch.float64)
        else:
            logp = torch.log_softmax(lm.logits(ids).double(), dim=-1)
            # without a BOS the first token is context only
            logp, targets = logp[:-1], torch.tensor(ids[1:], device=logp.device)
            nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            entropies.extend(entropy_nats(logp).tolist())
        logprobs.append(-float(nll.sum()))
        perplexities.append(math.exp(float(nll.mean())))
    loops = [metrics.loop_at_end(t) is not None for t in chunks]
    return {
        "samples": len(chunks),
        "tokens": sum(len(c) for c in chunks),
        "tokens_per_second": None,
        "mean_entropy_model": _mean(entropies),
        "mean_entropy_strategy": None,
        "mean_kl_strategy_model": None,
        "logprob_sum": _mean(logprobs),
        "perplexity": _mean(perplexities),
        "repetition": sum(loops) / len(loops),
        "looped_fraction": _mean([metrics.looped_fraction(t) for t in chunks]),
        "repeated_4gram_fraction": _mean([metrics.repeated_ngram_fraction(t, 4) for t in chunks]),
        "distinct_1": metrics.distinct_n(chunks, 1),
        "distinct_2": metrics.distinct_n(chunks, 2),
        "self_bleu_4": metrics.self_bleu(chunks),
        "zipf": metrics.zipf_coefficient(chunks),
    }
