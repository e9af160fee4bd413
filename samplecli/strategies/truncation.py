"""More truncation samplers: epsilon and eta cutoffs, top-h, top-n-sigma, and XTC (exclude top choices).

epsilon, eta and top-h match the transformers warpers of the same names (checked in the tests on random
logits); top-n-sigma and XTC follow llama.cpp's definitions (src/llama-sampling.cpp). Like the core
transforms, each returns a new tensor with -inf where a token is filtered, and never modifies its input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from samplecli.strategies.base import Param, Transform, register
from samplecli.strategies.schema import param

if TYPE_CHECKING:
    import torch


def _keep_top_ties(logits: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """Never remove the most probable token(s): transformers' `min_tokens_to_keep = 1`, ties included."""
    return remove & (logits < logits.amax(dim=-1, keepdim=True))


@register
class Epsilon(Transform):
    """Epsilon sampling (Hewitt et al. 2022, "Truncation Sampling as Language Model Desmoothing"): keep the
    tokens whose probability is at least epsilon; the most probable token always stays. 0 is off.

    Args:
        epsilon_cutoff: a float in [0, 1); the paper suggests 3e-4 to 9e-4.

    Example: probabilities (0.4, 0.3, 0.2, 0.1) with epsilon 0.15 keep (0.4, 0.3, 0.2) / 0.9.
    """

    name = "epsilon"
    kind = "truncation"
    source = "Hewitt et al. 2022; transformers EpsilonLogitsWarper"
    params = (param("epsilon_cutoff"),)

    def __call__(self, logits, input_ids):
        if self.epsilon_cutoff == 0.0:
            return logits.clone()
        remove = logits.softmax(dim=-1) < self.epsilon_cutoff
        return logits.masked_fill(_keep_top_ties(logits, remove), float("-inf"))


@register
class Eta(Transform):
    """Eta sampling (Hewitt et al. 2022): an entropy-dependent floor eta = min(epsilon, sqrt(epsilon) *
    exp(-H)), with H the entropy of the distribution in nats; tokens below eta are removed, the most
    probable token always stays. 0 is off.

    Args:
        eta_cutoff: a float in [0, 1) (the epsilon above); the paper suggests 3e-4 to 4e-3.

    Example: probabilities (0.4, 0.3, 0.2, 0.1) have H = 1.279854, so epsilon 0.2 gives
    eta = min(0.2, 0.447214 * 0.278081) = 0.124362, which removes only the 0.1 token.
    """

    name = "eta"
    kind = "truncation"
    source = "Hewitt et al. 2022; transformers EtaLogitsWarper"
    params = (param("eta_cutoff"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.eta_cutoff == 0.0:
            return logits.clone()
        epsilon = torch.tensor(self.eta_cutoff, dtype=logits.dtype)
        entropy = torch.distributions.Categorical(logits=logits, validate_args=False).entropy()
        eta = torch.min(epsilon, torch.sqrt(epsilon) * torch.exp(-entropy))[..., None]
        remove = logits.softmax(dim=-1) < eta
        return logits.masked_fill(_keep_top_ties(logits, remove), float("-inf"))


@register
class TopH(Transform):
    """Top-H: keep the most probable tokens while their entropy stays within top_h of the total.

    From "Top-H Decoding: Adapting the Creativity and Coherence with Bounded Entropy in Text Generation"
    (arXiv:2509.02510, NeurIPS 2025), as transformers implements it: among the 100 most probable tokens,
    renormalised, keep the most probable ones while their cumulative entropy sum(-p_i log p_i) stays
    <= top_h * H, with H the entropy of those 100; the most probable token always stays. Only the top 100
    tokens are considered, so top_h = 1 keeps (about) all of them.

    Args:
        top_h: a float in (0, 1].

    Example: probabilities (0.4, 0.3, 0.2, 0.1), H = 1.279854, entropy terms (0.366516, 0.361192,
    0.321888, 0.230259) with cumulative sums (0.366516, 0.727708, 1.049596, 1.279854). top_h = 0.6
    gives the bound 0.767912: the first two stay, (0.4, 0.3) / 0.7.
    """

    name = "top-h"
    kind = "truncation"
    source = "Top-H decoding, arXiv:2509.02510 (2025); transformers TopHLogitsWarper"
    params = (param("top_h"),)
    candidates = 100  # transformers' `top_n`: the entropy is taken over this many most probable tokens

    def __call__(self, logits, input_ids):
        import torch

        from samplecli.strategies.ranking import top_sorted

        top_logits, top_ids = top_sorted(logits, min(self.candidates, logits.shape[-1]))
        dist = torch.distributions.Categorical(logits=top_logits, validate_args=False)
        probs = dist.probs
        bound = (dist.entropy() * self.top_h).unsqueeze(-1)
        terms = torch.where(probs > 0, -probs * torch.log(probs), torch.zeros_like(probs))
        keep_top = terms.cumsum(dim=-1) <= bound
        keep_top[..., 0] = True
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top_ids, keep_top)
        return logits.masked_fill(~keep, float("-inf"))


@register
class TopNSigma(Transform):
    """Top-n-sigma (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need"): keep the tokens whose logit
    is >= max - n * sigma, where max and the standard deviation sigma are taken over the logits not
    already filtered (population std, as llama.cpp). The cut is in logit space, so it does not move
    with temperature. n = 0 is off (as llama.cpp since its PR #13345).

    Args:
        top_n_sigma: a float >= 0.

    Example: probabilities (0.1, 0.2, 0.3, 0.4) have logits ln p = (-2.302585, -1.609438, -1.203973,
    -0.916291), mean -1.508072, sigma 0.523796; n = 1 cuts below -1.440087 and keeps (0.3, 0.4) / 0.7.
    """

    name = "top-n-sigma"
    llama_cpp = "top_n_sigma"
    aliases = ("top-n-σ",)
    kind = "truncation"
    source = "Tang et al. 2024; llama.cpp top_n_sigma"
    params = (param("top_n_sigma"),)

    def __call__(self, logits, input_ids):
        import torch

        if self.top_n_sigma == 0.0 or logits.shape[-1] <= 1:
            return logits.clone()
        finite = torch.isfinite(logits)
        values = torch.where(finite, logits.double(), torch.zeros_like(logits, dtype=torch.float64))
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        mean = values.sum(dim=-1, keepdim=True) / count
        spread = torch.where(finite, (values - mean) ** 2, torch.zeros_like(values)).sum(dim=-1, keepdim=True)
        sigma = (spread / count).sqrt()
        top = logits.double().amax(dim=-1, keepdim=True)
        return logits.masked_fill(logits.double() < top - self.top_n_sigma * sigma, float("-inf"))


def _coin_seed(seed: int, row: int) -> int:
    """Seed of row `row`'s own coin: depends on (seed, row) only, and differs from the decode loop's
    per-sample seeds, so XTC's coin never mirrors the token draw."""
    return (seed * 0xD1B54A32D192ED03 + (row + 1) * 0x94D049BB133111EB + 0x2545F4914F6CDD1D) % (2**63)


@register
class XTC(Transform):
    """XTC, exclude top choices: sometimes remove every likely token but the least likely of them.

    From p-e-w (text-generation-webui, 2024), as llama.cpp's `xtc`: with probability xtc_probability,
    remove every token whose probability is >= xtc_threshold except the least probable of them, so the
    most obvious continuations give way when several are plausible. Nothing is removed when fewer than
    two tokens reach the threshold (so a threshold > 0.5 is off).

    The coin is flipped once per step and row, from the row's own generator, seeded from the run's seed
    (`--seed`, given by the decode loop) and the row index, or from `seed` when it is >= 0. The stream
    restarts at every reset, so the same seed gives the same run, and sample i's coin does not depend on
    how many samples run alongside it. Outside a decode run the run seed is 0. Among tokens of equal
    probability, the one with the highest id counts as the least probable (ties are sorted by id).

    Args:
        xtc_probability: a float in [0, 1], the chance that the cut is made at a step (0 is off).
        xtc_threshold: a float in [0, 1].
        seed: an integer >= -1; -1 uses the run's seed.

    Example (llama.cpp's test): probabilities (0.4, 0.3, 0.2, 0.1), probability 1 and threshold 0.19
    remove 0.4 and 0.3 and keep (0.2, 0.1) / 0.3.
    """

    name = "xtc"
    llama_cpp = "xtc"
    kind = "stateful"
    source = "p-e-w 2024 (text-generation-webui); llama.cpp xtc"
    params = (
        Param("xtc_probability", float, 0.5, "in [0, 1] (0 is off)", lambda v: 0 <= v <= 1,
              "chance of making the cut at a step", llama_cpp="xtc_probability"),
        Param("xtc_threshold", float, 0.1, "in [0, 1] (> 0.5 is off)", lambda v: 0 <= v <= 1,
              "probability a top choice must reach", llama_cpp="xtc_threshold"),
        Param("seed", int, -1, ">= -1 (-1: the run's seed)", lambda v: -1 <= v < 2**63, "the coin's seed"),
    )

    def __init__(self, **values) -> None:
        super().__init__(**values)
        self._run_seed = 0
        self._coins: list = []

    def bind(self, eos_token_ids, seed):
        self._run_seed = seed

    def reset(self, batch_size, first_row=0):
        import torch

        base = self.seed if self.seed >= 0 else self._run_seed
        self._coins = [torch.Generator().manual_seed(_coin_seed(base, row))
                       for row in range(first_row, first_row + batch_size)]

    def clone(self):
        """A copy whose coins continue from where these are, without advancing these."""
        import torch

        twin = super().clone()
        twin._coins = []
        for coin in self._coins:
            twin._coins.append(torch.Generator())
            twin._coins[-1].set_state(coin.get_state())
        return twin

    def flips(self, rows: int) -> torch.Tensor:
        """This step's coin per row: True where the cut is made. Advances each row's generator once."""
        import torch

        if len(self._coins) != rows:
            self.reset(rows)
        chance = torch.cat([torch.rand(1, generator=g) for g in self._coins])
        return chance <= self.xtc_probability

    def __call__(self, logits, input_ids):
        import torch

        if self.xtc_probability == 0.0 or self.xtc_threshold > 0.5:
            return logits.clone()
        cut = self.flips(logits.shape[0]).to(logits.device)
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        above = (probs >= self.xtc_threshold) & torch.isfinite(sorted_logits)
        # the top choices are a prefix of the sorted row; all but its last (least probable) member go
        prefix = above.long().cumprod(dim=-1).bool()
        count = prefix.sum(dim=-1, keepdim=True)
        position = torch.arange(logits.shape[-1], device=logits.device).expand_as(prefix)
        remove_sorted = prefix & (position < count - 1) & (count >= 2) & cut.unsqueeze(-1)
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, float("-inf"))
