"""History-dependent samplers: presence and frequency penalties, DRY, sequence bias, bad words, min new tokens.

Each one reads the sequence so far (prompt included) from `input_ids`, row by row, so it needs no state of
its own to be correct per sequence and per row of a batch; min-new-tokens alone remembers where the
prompt ended. Each returns a new tensor and never modifies its input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from samplecli.errors import UsageError
from samplecli.strategies.base import Param, Transform, register
from samplecli.strategies.reshaping import check_ids_in_vocab
from samplecli.strategies.schema import LAST_N_RULE, param
from samplecli.strategies.values import sequence_biases, token_ids, token_sequences

if TYPE_CHECKING:
    import torch



def _window(input_ids: torch.Tensor, last_n: int) -> torch.Tensor:
    """The last `last_n` tokens of each row (all of them for -1)."""
    return input_ids if last_n < 0 else input_ids[:, input_ids.shape[-1] - min(last_n, input_ids.shape[-1]):]


def _counts(logits: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """How often each vocabulary entry occurs in each row of `window`, as a tensor shaped like `logits`."""
    import torch

    counts = torch.zeros_like(logits)
    return counts.scatter_add(-1, window, torch.ones_like(window, dtype=logits.dtype))


@register
class PresencePenalty(Transform):
    """Subtract a fixed amount from the logit of every token seen in the last penalty_last_n tokens.

    As OpenAI's `presence_penalty` and llama.cpp's `--presence-penalty`: logit_i -= presence * [count_i > 0],
    with the count taken over the last penalty_last_n tokens of the sequence, prompt included (llama.cpp's
    window; OpenAI counts the generated tokens only). Negative values encourage repetition. 0 is off.

    Args:
        presence_penalty: a finite float.
        penalty_last_n: an integer >= -1, the window (-1: the whole sequence; 0 is off).

    Example (llama.cpp's test): five tokens at 0.2 after the sequence 0, with presence 5 and frequency 5:
    token 0's logit drops by 10, giving (0.000011, 0.249997, 0.249997, 0.249997, 0.249997).
    """

    name = "presence-penalty"
    llama_cpp = "penalties"
    kind = "penalty"
    source = "OpenAI presence_penalty; llama.cpp penalties"
    params = (
        param("presence_penalty"),
        param("penalty_last_n"),
    )

    def __call__(self, logits, input_ids):
        if self.presence_penalty == 0.0 or self.penalty_last_n == 0 or input_ids.shape[-1] == 0:
            return logits.clone()
        seen = _counts(logits, _window(input_ids, self.penalty_last_n)) > 0
        return logits - self.presence_penalty * seen.to(logits.dtype)


@register
class FrequencyPenalty(Transform):
    """Subtract an amount proportional to how often each token occurs in the last penalty_last_n tokens.

    As OpenAI's `frequency_penalty` and llama.cpp's `--frequency-penalty`: logit_i -= frequency * count_i,
    with the count taken over the last penalty_last_n tokens, prompt included. Negative values encourage
    repetition. 0 is off.

    Args:
        frequency_penalty: a finite float.
        penalty_last_n: an integer >= -1, the window (-1: the whole sequence; 0 is off).

    Example: probabilities (0.4, 0.3, 0.2, 0.1) after the sequence 0 0 1 with frequency ln 2: token 0's
    weight is divided by 4 and token 1's by 2, giving (0.1, 0.15, 0.2, 0.1) / 0.55.
    """

    name = "frequency-penalty"
    llama_cpp = "penalties"
    kind = "penalty"
    source = "OpenAI frequency_penalty; llama.cpp penalties"
    params = (
        param("frequency_penalty"),
        param("penalty_last_n"),
    )

    def __call__(self, logits, input_ids):
        if self.frequency_penalty == 0.0 or self.penalty_last_n == 0 or input_ids.shape[-1] == 0:
            return logits.clone()
        return logits - self.frequency_penalty * _counts(logits, _window(input_ids, self.penalty_last_n))


def _z_array(seq: list[int]) -> list[int]:
    """z[k] = the length of the longest common prefix of seq and seq[k:] (z[0] = 0), in linear time."""
    n = len(seq)
    z = [0] * n
    left = right = 0
    for k in range(1, n):
        if k < right:
            z[k] = min(right - k, z[k - left])
        while k + z[k] < n and seq[z[k]] == seq[k + z[k]]:
            z[k] += 1
        if k + z[k] > right:
            left, right = k, k + z[k]
    return z


# llama.cpp caps the exponent so that base ** exponent stays below float32's largest value.
FLOAT_MAX_LOG = 88.7228391


@register
class DRY(Transform):
    """DRY, don't repeat yourself: penalise the token that would extend a sequence already repeated.

    From p-e-w (text-generation-webui PR #5677, 2024), as llama.cpp's `dry` (ported from koboldcpp):
    when the last L tokens also occur earlier in the window, followed there by token t, then emitting t
    would extend the repetition to L + 1 tokens. For L >= dry_allowed_length, t's logit is reduced by

        dry_multiplier * dry_base ^ (L - dry_allowed_length)

    with L the longest such match for t. A sequence breaker (a token id sequence) limits how far back a
    match may reach: a match never crosses the last occurrence of a breaker, and a single-token breaker
    is itself never penalised. The window is the last dry_penalty_last_n tokens, prompt included.
    llama.cpp takes breakers as strings ("\\n", ":", "\\"", "*") and tokenises them; here they are ids.

    Args:
        dry_multiplier: a float >= 0 (0 is off).
        dry_base: a float >= 1.
        dry_allowed_length: an integer >= 1, the longest repetition left alone.
        dry_penalty_last_n: an integer >= -1 (-1: the whole sequence; 0 is off).
        dry_sequence_breakers: token id sequences; in `--chain` "ID ID;ID", e.g. `dry:dry_sequence_breakers=198;25`.

    Example (llama.cpp's test): four tokens at 0.25 after 0 1 2 0 1, multiplier 1, base 1.1, allowed
    length 2: the suffix 0 1 occurred before, followed by 2, so token 2's logit drops by 1 * 1.1^0:
    (e, e, 1, e) / (3e + 1) = (0.296923, 0.296923, 0.109232, 0.296923).
    """

    name = "dry"
    llama_cpp = "dry"
    kind = "penalty"
    source = "p-e-w 2024 (text-generation-webui); llama.cpp dry"
    params = (
        Param("dry_multiplier", float, 0.8, ">= 0 (0 is off)", lambda v: v >= 0 and math.isfinite(v),
              "penalty scale", llama_cpp="dry_multiplier"),
        Param("dry_base", float, 1.75, ">= 1", lambda v: v >= 1 and math.isfinite(v), "growth per extra token",
              llama_cpp="dry_base"),
        Param("dry_allowed_length", int, 2, ">= 1", lambda v: v >= 1, "longest repetition not penalised",
              llama_cpp="dry_allowed_length"),
        Param("dry_penalty_last_n", int, -1, LAST_N_RULE, lambda v: v >= -1, "tokens searched, from the end"),
        Param("dry_sequence_breakers", list, [], "token id sequences, e.g. \"198;25 11\" (ids, spaces, ';')",
              lambda v: True, "sequences a repetition may not cross", convert=token_sequences),
    )

    def __init__(self, **values) -> None:
        super().__init__(**values)
        # breakers by their first token, as llama.cpp: head -> the tails that complete a breaker
        self._breakers: dict[int, list[tuple[int, ...]]] = {}
        for breaker in self.dry_sequence_breakers:
            self._breakers.setdefault(breaker[0], []).append(breaker[1:])
        self._single = {head for head, tails in self._breakers.items() if () in tails}

    def penalties(self, history: list[int]) -> dict[int, float]:
        """Token id -> the amount DRY subtracts from its logit after `history` (one row)."""
        if self.dry_multiplier == 0.0 or self.dry_penalty_last_n == 0:
            return {}
        if self.dry_penalty_last_n > 0:
            history = history[-self.dry_penalty_last_n :]
        allowed = self.dry_allowed_length
        if len(history) <= allowed:
            return {}
        recent = history[::-1]  # recent[i] is the token i places from the end
        limit = len(recent)
        for i, token in enumerate(recent):
            matched = [len(tail) for tail in self._breakers.get(token, ())
                       if len(tail) <= i and all(tail[o] == recent[i - o - 1] for o in range(len(tail)))]
            if matched:
                limit = i - max(matched)  # a repetition may not reach back across this breaker
                break
        if limit < allowed:
            return {}
        longest: dict[int, int] = {}
        for k, length in enumerate(_z_array(recent)):
            length = min(length, limit)
            if k == 0 or length < allowed:
                continue
            follower = recent[k - 1]  # the token that followed the earlier occurrence
            longest[follower] = max(longest.get(follower, 0), length)
        cap = int(FLOAT_MAX_LOG / math.log(self.dry_base)) if self.dry_base > 1.000001 else 0
        out = {}
        for token, length in longest.items():
            if token in self._single:
                continue
            exponent = length - allowed
            if cap > 0 and exponent > cap:
                exponent = cap
            out[token] = self.dry_multiplier * self.dry_base ** exponent
        return out

    def __call__(self, logits, input_ids):
        import torch

        out = logits.clone()
        for row, history in enumerate(input_ids.tolist()):
            penalty = self.penalties(history)
            if penalty:
                ids = torch.tensor(list(penalty), device=logits.device)
                out[row, ids] = logits[row, ids] - torch.tensor(list(penalty.values()), dtype=logits.dtype,
                                                                device=logits.device)
        return out


@register
class SequenceBias(Transform):
    """Add a bias to the token that would complete a given token sequence.

    As transformers' SequenceBiasLogitsProcessor: a one-token sequence's bias always applies to that token;
    a longer sequence's bias applies to its last token only when the sequence so far ends with the rest
    of it. Biases of several matching sequences add up; -inf bans.

    Args:
        sequence_bias: a map token sequence -> bias. In `--chain`: "ID ID=BIAS;ID=BIAS", e.g.
            `sequence-bias=12 13=-2;15=1`; in a preset, transformers' [[[12, 13], -2.0], [[15], 1.0]].

    Example: probabilities (0.4, 0.3, 0.2, 0.1) after 2 0 with {(0, 1): ln 0.5}: the sequence ends with 0,
    so token 1's weight halves: (0.4, 0.15, 0.2, 0.1) / 0.85.
    """

    name = "sequence-bias"
    kind = "penalty"
    source = "transformers SequenceBiasLogitsProcessor"
    params = (Param("sequence_bias", dict, {}, "IDS=BIAS pairs separated by ';' (ids separated by spaces)",
                    lambda v: True, "token sequence -> bias on its last token", convert=sequence_biases),)

    def biases(self) -> dict[tuple[int, ...], float]:
        return self.sequence_bias

    def __call__(self, logits, input_ids):
        import torch

        biases = self.biases()
        if not biases:
            return logits.clone()
        check_ids_in_vocab(self.name, {i for sequence in biases for i in sequence}, logits.shape[-1])
        bias = torch.zeros_like(logits)
        for sequence, value in biases.items():
            *prefix, last = sequence
            if not prefix:
                bias[:, last] += value
            elif len(prefix) <= input_ids.shape[-1]:
                matching = (input_ids[:, -len(prefix):] == torch.tensor(prefix, device=input_ids.device)).all(-1)
                bias[:, last] += torch.where(matching, value, 0.0).to(logits.dtype)
        return logits + bias


@register
class BadWords(SequenceBias):
    """Ban the token that would complete any of the given token sequences.

    As transformers' NoBadWordsLogitsProcessor (`bad_words_ids`): a sequence bias of -inf on each sequence,
    so a one-token sequence is always banned and a longer one only when the rest of it has just been
    generated. Unlike generate(), an EOS-only sequence is not dropped from the list.

    Args:
        bad_words_ids: token id sequences; in `--chain` "ID ID;ID", e.g. `bad-words=12 13;15`.

    Example: probabilities (0.4, 0.3, 0.2, 0.1) after 1 2 with [[3], [2, 0], [1, 1]]: 3 is always banned,
    0 because the sequence ends with 2, and 1 stays (the sequence does not end with 1): (0.3, 0.2) / 0.5.
    """

    name = "bad-words"
    aliases = ("bad-words-ids", "bad_words_ids")
    kind = "penalty"
    source = "transformers NoBadWordsLogitsProcessor"
    params = (Param("bad_words_ids", list, [], "token id sequences, e.g. \"12 13;15\" (ids, spaces, ';')",
                    lambda v: True, "sequences that may not be completed", convert=token_sequences),)

    def biases(self) -> dict[tuple[int, ...], float]:
        return {sequence: float("-inf") for sequence in self.bad_words_ids}


@register
class MinNewTokens(Transform):
    """Ban the end-of-sequence token(s) until min_new_tokens tokens have been generated.

    As transformers' MinNewTokensLengthLogitsProcessor and vLLM's `min_tokens`. The prompt length is
    `prompt_length` when given; with -1 it is the length of the sequence at the first call after a reset,
    which in the decode loop is the prompt (and in `score`, the first scored position). The EOS ids are
    `eos_token_id` when given, else the model's, which the decode loop passes in before a run; outside a
    run, without `eos_token_id`, using it is a usage error. The decode loop's own `--min-new-tokens` does
    the same for the whole chain.

    Args:
        min_new_tokens: an integer >= 0 (0 is off).
        prompt_length: an integer >= -1 (-1: the sequence's length at the first call after a reset).
        eos_token_id: token ids; in `--chain` "ID;ID" (empty: the model's EOS).

    Example: probabilities (0.4, 0.3, 0.2, 0.1), EOS id 0, a prompt of 2 tokens and min_new_tokens 2:
    after 1 new token EOS is banned, (0, 0.5, 0.333333, 0.166667); after 2 it is not.
    """

    name = "min-new-tokens"
    aliases = ("min-tokens", "min_tokens")
    kind = "stateful"
    source = "transformers MinNewTokensLengthLogitsProcessor; vLLM min_tokens"
    params = (
        Param("min_new_tokens", int, 10, ">= 0 (0 is off)", lambda v: v >= 0, "new tokens before EOS may come"),
        Param("prompt_length", int, -1, ">= -1 (-1: the length at the first call)", lambda v: v >= -1,
              "tokens before the first new one"),
        Param("eos_token_id", list, [], "token ids, e.g. \"0\" or \"0;2\" (empty: the model's EOS)",
              lambda v: True, "ids banned until then", convert=token_ids),
    )

    def __init__(self, **values) -> None:
        super().__init__(**values)
        self._model_eos: tuple[int, ...] = ()
        self._start: int | None = None

    def bind(self, eos_token_ids, seed):
        self._model_eos = tuple(eos_token_ids)

    def reset(self, batch_size, first_row=0):
        self._start = None

    def __call__(self, logits, input_ids):
        import torch

        length = input_ids.shape[-1]
        if self._start is None:
            self._start = self.prompt_length if self.prompt_length >= 0 else length
        if self.min_new_tokens == 0 or length - self._start >= self.min_new_tokens:
            return logits.clone()
        eos = self.eos_token_id or self._model_eos
        if not eos:
            raise UsageError(f"{self.name}: the model's end-of-sequence id is not known here; "
                             "give it as eos_token_id=ID")
        check_ids_in_vocab(self.name, eos, logits.shape[-1])
        return logits.index_fill(-1, torch.tensor(eos, device=logits.device), float("-inf"))
