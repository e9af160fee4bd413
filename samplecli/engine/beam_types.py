"""Beam search's shared parts: its settings, the events it yields, and the per-step helpers that
deterministic and stochastic beam search both use (so neither imports the other)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from samplecli.errors import SettingError, UsageError

EARLY_STOPPING = {"true": True, "false": False, "never": "never"}
DEFAULT_NUM_BEAMS = 4  # `--strategy beam` without `--num-beams`
# transformers marks "no hypothesis here" with a score of -1e9 (placeholder beams before the first step
# fills them, candidates that may not finish); such entries are kept in the tensors, never shown.
MASKED = -1.0e9
PLACEHOLDER = MASKED / 2


@dataclass(frozen=True)
class BeamSettings:
    """What the beam loop searches for; validated here, so a bad value fails before the model loads.

    Args:
        num_beams: hypotheses kept per step (B >= 1; 1 is greedy, as in transformers).
        length_penalty: A in score = sum of log-probs / generated_length ** A.
        early_stopping: True (stop once B hypotheses finished), False (stop once no live one can beat
            the worst finished one, judged at the current length) or "never" (judged at the best length).
        num_return_sequences: how many finished hypotheses to return (R <= B), best first.
        num_beam_groups: G groups of B / G beams each (diverse beam search, Vijayakumar et al. 2016).
        diversity_penalty: L subtracted from a token's log-prob once per earlier group that chose it
            at the same step (Hamming diversity).
        stochastic: sample B sequences without replacement with Gumbel-top-k (Kool et al. 2019).
    """

    num_beams: int = DEFAULT_NUM_BEAMS
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    stochastic: bool = False

    def __post_init__(self) -> None:
        b, r, g = self.num_beams, self.num_return_sequences, self.num_beam_groups
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise SettingError(f"{{num_beams}} has to be an integer >= 1, but is {b}", "num_beams")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise SettingError(f"{{num_return_sequences}} has to be an integer >= 1, but is {r}",
                               "num_return_sequences")
        if r > b:
            raise SettingError(f"{{num_return_sequences}} ({r}) has to be <= {{num_beams}} ({b})",
                               "num_return_sequences", "num_beams")
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)) \
                or not math.isfinite(self.length_penalty):
            raise SettingError(f"{{length_penalty}} has to be a finite number, but is {self.length_penalty}",
                               "length_penalty")
        if not (self.early_stopping is True or self.early_stopping is False or self.early_stopping == "never"):
            raise SettingError(f"{{early_stopping}} has to be true, false or never, but is {self.early_stopping!r}",
                               "early_stopping")
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise SettingError(f"{{num_beam_groups}} has to be an integer >= 1, but is {g}", "num_beam_groups")
        if b % g:
            raise SettingError(f"{{num_beam_groups}} ({g}) has to divide {{num_beams}} ({b})",
                               "num_beam_groups", "num_beams")
        penalty = self.diversity_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not (math.isfinite(penalty)
                                                                                     and penalty >= 0):
            raise SettingError(f"{{diversity_penalty}} has to be a finite number >= 0, but is {penalty}",
                               "diversity_penalty")
        if penalty > 0 and g == 1:
            raise SettingError(f"{{diversity_penalty}} {penalty:g} needs {{num_beam_groups}} > 1 (it penalises a group "
                             "for the tokens of the groups before it)", "diversity_penalty", "num_beam_groups")
        if self.stochastic and g > 1:
            raise SettingError(f"{{num_beam_groups}} {g}: stochastic beam search has no groups", "num_beam_groups")

    def __str__(self) -> str:
        if self.stochastic:
            return f"stochastic-beam(num_beams={self.num_beams})"
        parts = [f"num_beams={self.num_beams}"]
        if self.num_beam_groups > 1:
            parts += [f"num_beam_groups={self.num_beam_groups}", f"diversity_penalty={self.diversity_penalty:g}"]
        parts += [f"length_penalty={self.length_penalty:g}", f"early_stopping={self.early_stopping}"]
        return f"beam({', '.join(parts)})"


# ----------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis: a node of the beam tree (its parent is -1 for the prompt).

    `cumulative` is the search's running score: the sum of the processed log-probs (penalties, and
    the diversity penalty, included); `score` is the length-normalised `cumulative / length ** A`
    (for stochastic beam search: the Gumbel key that ranks the samples); `logprob_sum` is under the
    raw model. `finish_reason` is None while it is live, else "eos" or "length".
    """

    node: int
    parent: int
    group: int
    token_ids: tuple[int, ...]
    text: str
    cumulative: float
    score: float
    logprob_sum: float
    finish_reason: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A continuation the step considered: `status` is "kept" (live next step), "finished" (entered
    the finished list) or "pruned"; `node` is its node id when kept or finished, else -1."""

    parent: int
    group: int
    token_id: int
    token: str
    cumulative: float
    status: str
    node: int = -1


@dataclass(frozen=True)
class BeamStep:
    """The search after step `step`: the live hypotheses (best first), the finished list (best first),
    the candidates it chose from, and, on the last step, why it stopped."""

    step: int
    live: tuple[Hypothesis, ...]
    finished: tuple[Hypothesis, ...]
    candidates: tuple[Candidate, ...]
    stopped: str | None = None


@dataclass(frozen=True)
class TokenStat:
    """What the model said at one position of a returned sequence (for its `Step` event)."""

    logprob: float  # of the chosen token, raw model
    increment: float  # what the token added to the search score
    entropy: float  # of the raw model's distribution, nats (nan when not recorded)
    kept: int  # tokens with a finite processed score (-1 when not recorded)
    top: tuple[tuple[int, float], ...]  # the raw model's most probable (token id, log-prob)


@dataclass(frozen=True)
class BeamResult:
    """The returned hypotheses, best first, each with its per-token statistics."""

    ranked: tuple[Hypothesis, ...]
    tokens: tuple[tuple[TokenStat, ...], ...]
    stopped: str
    steps: int


class Nodes:
    def __init__(self) -> None:
        self.count = 0

    def new(self) -> int:
        self.count += 1
        return self.count


def setup(backend, prompt_ids, config, eos_token_ids, context_length):
    import torch

    device = backend.device
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device)
    limit = config.max_new_tokens
    if context_length is not None:
        if len(prompt_ids) >= context_length:
            raise UsageError(f"the prompt is {len(prompt_ids)} tokens, but the model's context is {context_length} "
                             "tokens; shorten the prompt")
        limit = min(limit, context_length - len(prompt_ids))
    eos = torch.tensor(list(eos_token_ids) or [-1], dtype=torch.long, device=device)
    return device, prompt, limit, eos


def process_scores(strategy, scores, history, eos, t, min_new_tokens):
    if t < min_new_tokens:
        scores = scores.index_fill(-1, eos, float("-inf"))
    return strategy.process(scores, history) if strategy is not None else scores


def token_stats(stats, rows, logps, incs, record) -> tuple[TokenStat, ...]:
    out = []
    for t, (row, logp, inc) in enumerate(zip(rows, logps, incs, strict=True)):
        if record:
            entropy, kept, top = stats[t][row]
        else:
            entropy, kept, top = float("nan"), -1, ()
        out.append(TokenStat(logp, inc, entropy, kept, top))
    return tuple(out)
