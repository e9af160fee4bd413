"""Choosing the next token of every row of a batch: each strategy's distribution over its rows, and one draw per row
with a uniform number from that sample's own `torch.Generator`. The decode loop only calls `Chooser.choose` and
`Chooser.accept`; what it then records of the step is `engine.measure`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from samplecli.engine.events import sample_seed

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend
    from samplecli.engine.events import DecodeConfig
    from samplecli.strategies import Strategy


def column_seed(seed: int, column: int) -> int:
    """Seed of column k's generators when sampling is not coupled (column 0 keeps the run's seed)."""
    return seed if column == 0 else sample_seed(seed ^ 0x5DEECE66D, column + 2**20)


class Chooser:
    """The strategies of a batch of `len(strategies) * config.num_samples` rows: row (k, i) is strategy k's sample
    `config.first_sample + i`. Each strategy is bound to the model's EOS ids and the run's `seed`, and reset for
    its samples. `coupled`: sample i of every strategy draws with the same uniform number at each step (so each
    column equals that strategy run alone with the same seed); otherwise each column has its own generators."""

    def __init__(self, lm: Backend, strategies: list[Strategy], config: DecodeConfig, seed: int,
                 coupled: bool = True) -> None:
        import torch

        n, first, columns = config.num_samples, config.first_sample, len(strategies)
        self.strategies, self.coupled, self.min_new_tokens = strategies, coupled, config.min_new_tokens
        self.groups = [slice(k * n, (k + 1) * n) for k in range(columns)]
        self.stochastic = any(s.stochastic for s in strategies)
        self.device = lm.device
        self.eos = torch.tensor(lm.eos_token_ids or [-1], device=self.device)
        self.has_eos = bool(lm.eos_token_ids)
        if coupled:
            self.generators = [torch.Generator().manual_seed(sample_seed(seed, first + i)) for i in range(n)]
        else:
            self.generators = [torch.Generator().manual_seed(sample_seed(column_seed(seed, k), first + i))
                               for k in range(columns) for i in range(n)]
        self.no_uniforms = torch.zeros(n * columns, device=self.device)  # what deterministic selectors ignore
        self.constrained = any(s.constraints for s in strategies)
        self.free: dict[int, int] = {}
        for s in strategies:
            s.bind(tuple(lm.eos_token_ids or ()), seed)  # EOS ids and the run's seed, for samplers that use them
            if s.constraints:  # the token bytes the masks are computed against
                s.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids or ()))
            s.reset(n, first)

    def uniforms(self) -> torch.Tensor:
        """This step's uniform number per row: one from each sample's generator (repeated for every column when
        coupled), or zeros where no strategy samples."""
        import torch

        if not self.stochastic:
            return self.no_uniforms
        drawn = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        return (drawn.repeat(len(self.strategies)) if self.coupled else drawn).to(self.device)

    def choose(self, raw: torch.Tensor, history: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the token each row chooses, the distribution it was drawn from) at `step`, from the backend's `raw`
        logits and each row's tokens so far; EOS cannot be chosen before `min_new_tokens`."""
        import torch

        from samplecli.strategies.ranking import drawing_order

        masked = raw.index_fill(-1, self.eos, float("-inf")) if step < self.min_new_tokens and self.has_eos else raw
        scores, probs = [], []
        for s, rows in zip(self.strategies, self.groups, strict=True):
            scores.append(s.process(masked[rows], history[rows]))
            probs.append(s.selector.distribution(scores[-1]))
        if len(self.strategies) == 1:
            probs_all = probs[0]
        else:
            probs_all = torch.cat(probs)
        # the raw ranking of the tokens some row may draw: the common order of coupled inverse-CDF sampling
        order = drawing_order(raw, probs_all) if self.stochastic else None
        u = self.uniforms()
        self.free = self.free_choices(masked, history, u) if self.constrained else {}
        if len(self.strategies) == 1:
            return self.strategies[0].selector.select(scores[0], probs[0], order, u), probs_all
        return torch.cat([
            s.selector.select(scores[k], probs[k], order[rows] if order is not None else None, u[rows])
            for k, (s, rows) in enumerate(zip(self.strategies, self.groups, strict=True))
        ]), probs_all

    def free_choices(self, masked: torch.Tensor, history: torch.Tensor, u: torch.Tensor) -> dict[int, int]:
        """The token each constrained row would have chosen without its constraints: the same chain less its masks,
        drawn with the same uniform number over the raw ranking (coupled, as `compare`'s columns are)."""
        from samplecli.strategies import Strategy
        from samplecli.strategies.ranking import drawing_order

        free: dict[int, int] = {}
        for s, rows in zip(self.strategies, self.groups, strict=True):
            if not s.constraints:
                continue
            plain = Strategy([t for t in s.transforms if t.kind != "constraint"], s.selector)
            scores = plain.process(masked[rows], history[rows])
            probs = s.selector.distribution(scores)
            order = drawing_order(masked[rows], probs) if s.stochastic else None
            for offset, token in enumerate(s.selector.select(scores, probs, order, u[rows]).tolist()):
                free[rows.start + offset] = token
        return free

    def constraint_rows(self) -> dict[int, tuple[int, float, bool, int | None]]:
        """After `choose`: for each batch row under a constraint, (how many tokens the masks allow, the probability
        the distribution each mask received put inside it, multiplied over the masks, whether the masks left
        nothing: the row cannot go on, the token the row would have chosen without them)."""
        rows: dict[int, tuple[int, float, bool, int | None]] = {}
        for s, group in zip(self.strategies, self.groups, strict=True):
            for offset in range(group.stop - group.start):
                records = [(c.record[offset], c.exhausted[offset]) for c in s.constraints if c.record]
                if records:
                    mass = 1.0
                    for (_, kept), _ in records:
                        mass *= kept
                    row = group.start + offset
                    rows[row] = (records[-1][0][0], mass, any(e for _, e in records), self.free.get(row))
        return rows

    def accept(self, chosen: torch.Tensor, probs: torch.Tensor) -> None:
        """Hand each strategy its rows' chosen tokens and the distribution they were drawn from (stateful samplers
        move on)."""
        for s, rows in zip(self.strategies, self.groups, strict=True):
            s.accept(chosen[rows], probs[rows])
