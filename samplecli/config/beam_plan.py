"""From flags (or a `compare` spec) to beam settings: which loop runs, and every mistake as one line before
the model loads; beam-only flags that would do nothing are warned about, never dropped silently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samplecli.config.keys import BEAM, KEYS
from samplecli.engine.beam import check_config, describe
from samplecli.engine.beam_types import DEFAULT_NUM_BEAMS, EARLY_STOPPING, BeamSettings
from samplecli.engine.events import DecodeConfig
from samplecli.errors import UsageError

if TYPE_CHECKING:
    from samplecli.strategies import Strategy


SEARCH_KEYS = tuple(key for key, spec in KEYS.items() if spec.group == BEAM)
# the settings that mean nothing without beam search (--num-return-sequences also counts samples)
BEAM_ONLY = {key: KEYS[key].flag for key in SEARCH_KEYS if key not in ("num_beams", "num_return_sequences")}


def parse_early_stopping(value: Any) -> bool | str:
    """`--early-stopping`: true, false or never (a bool is taken as it is)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in EARLY_STOPPING:
        return EARLY_STOPPING[value.strip().lower()]
    raise UsageError(f"--early-stopping has to be true, false or never, but is {value!r}")


@dataclass(frozen=True)
class BeamPlan:
    """What the flags ask for: the named strategy to build, the beam settings (None: the core loop),
    the warnings to show before the model loads, and --num-return-sequences for a non-beam run."""

    strategy: str | None
    settings: BeamSettings | None
    warnings: tuple[str, ...] = ()
    return_sequences: int | None = None

    def num_samples(self, num_samples: int, strategy: Strategy) -> int:
        """For the core loop, --num-return-sequences R > 1 means R samples; greedy has only one answer."""
        r = self.return_sequences
        if self.settings is not None or r is None or r == 1:
            return num_samples
        if not strategy.stochastic:
            raise UsageError(f"--num-return-sequences {r} needs beam search (--num-beams >= {r}) or sampling; "
                             f"{strategy.name} returns one sequence")
        if num_samples not in (1, r):
            raise UsageError(f"--num-return-sequences ({r}) and --num-samples ({num_samples}) disagree; give one")
        return r

    def check(self, config: DecodeConfig) -> None:
        """Refuse, before the model loads, what the beam loop cannot do with this config."""
        if self.settings is not None:
            check_config(config)


def plan_beam(strategy: str | None = None, chain: str | None = None, num_beams: int | None = None,
              length_penalty: float | None = None, early_stopping: Any = None,
              num_return_sequences: int | None = None, num_beam_groups: int | None = None,
              diversity_penalty: float | None = None, sampling: bool = False) -> BeamPlan:
    """Decide between the beam loop and the core loop from the flags (None: not given), and validate
    them, so that every mistake is one line before the model loads. `--num-beams B > 1` implies
    `--strategy beam`, and so does `--num-beams 1` with no strategy, chain or sampling setting (`sampling`:
    whether one such as --temp or --top-k is given); beam-only flags without beam search are warned about, not
    dropped silently."""
    if num_beams is not None and (isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1):
        raise UsageError(f"--num-beams has to be an integer >= 1, but is {num_beams}")
    if num_return_sequences is not None and (not isinstance(num_return_sequences, int) or num_return_sequences < 1):
        raise UsageError(f"--num-return-sequences has to be an integer >= 1, but is {num_return_sequences}")
    if early_stopping is not None:
        early_stopping = parse_early_stopping(early_stopping)
    given = {k: v for k, v in (("length_penalty", length_penalty), ("early_stopping", early_stopping),
                               ("num_beam_groups", num_beam_groups), ("diversity_penalty", diversity_penalty))
             if v is not None}
    if strategy is not None:
        from samplecli.strategies import strategy_name

        strategy = strategy_name(strategy)
    named_beam = strategy in ("beam", "stochastic-beam")
    # --num-beams B > 1 is beam search; so is --num-beams 1 alone (one beam: greedy search, as transformers'
    # generate(num_beams=1) without do_sample), while beside a strategy, a chain or a sampling setting it means
    # no search
    searches = num_beams is not None and (num_beams > 1 or (strategy is None and chain is None and not sampling))
    if searches and not named_beam:
        if strategy is not None or chain is not None:
            what = f"--strategy {strategy}" if strategy is not None else "--chain"
            raise UsageError(f"--num-beams {num_beams} runs beam search, which cannot take {what}; use "
                             "--strategy beam or --strategy stochastic-beam (penalty flags still apply)")
        strategy, named_beam = "beam", True
    if not named_beam:
        if num_beams is not None and num_return_sequences is not None and num_return_sequences > num_beams:
            raise UsageError(f"--num-return-sequences ({num_return_sequences}) has to be <= --num-beams "
                             f"({num_beams})")
        warnings = tuple(f"{BEAM_ONLY[k]} has no effect without beam search (--num-beams {num_beams or 1})"
                         for k in given)
        return BeamPlan(strategy, None, warnings, num_return_sequences)
    if chain is not None:
        raise UsageError(f"--chain cannot be combined with --strategy {strategy}: beam search runs its own loop")
    stochastic = strategy == "stochastic-beam"
    settings = BeamSettings(
        num_beams=num_beams if num_beams is not None else DEFAULT_NUM_BEAMS,
        length_penalty=length_penalty if length_penalty is not None else 1.0,
        early_stopping=early_stopping if early_stopping is not None else False,
        num_return_sequences=num_return_sequences if num_return_sequences is not None else 1,
        num_beam_groups=num_beam_groups if num_beam_groups is not None else 1,
        diversity_penalty=diversity_penalty if diversity_penalty is not None else 0.0, stochastic=stochastic)
    if stochastic:
        unused = [k for k in given if k in ("length_penalty", "early_stopping")]
        warnings = tuple(f"{BEAM_ONLY[k]} has no effect on stochastic beam search (it samples whole sequences)"
                         for k in unused)
    elif settings.num_beams == 1:
        warnings = tuple(f"{BEAM_ONLY[k]} has no effect with --num-beams 1 (one beam is greedy search)"
                         for k in given)
    else:
        warnings = ()
    return BeamPlan(strategy, settings, warnings)


def named_chain(name: str) -> str:
    """What `samplecli strategies` shows for a named beam strategy with its defaults."""
    return describe(None, BeamSettings(stochastic=name == "stochastic-beam"))
