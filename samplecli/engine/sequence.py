"""One sequence while it is generated, whichever path draws its tokens (the decode loop or a server): its tokens,
its likelihood so far, its text, why it ended, and its `Done`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from samplecli.engine.detokenize import Detokenizer, ServerText
from samplecli.engine.events import Done


@dataclass
class SequenceState:
    index: int
    detok: Detokenizer
    started: float
    token_ids: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    finish_reason: str | None = None

    def push(self, token_id: int, logprob: float, is_eos: bool, last: bool, at_limit: str,
             text: str | None = None) -> str:
        """Add this step's token and its raw log-probability; return the text it releases (see `settle`). `text`
        is the engine's own text for the token where a server streams text (the OpenAI protocol): it is shown as
        it came, cut at stop strings alike."""
        self.token_ids.append(token_id)
        self.logprob_sum += logprob
        if text is not None:
            if not isinstance(self.detok, ServerText):
                self.detok = ServerText(self.detok.stop)
            delta = self.detok.push_text(text)
        else:
            delta = self.detok.push(token_id) if not is_eos else ""
        return delta + self.settle(is_eos, last, at_limit)

    def settle(self, is_eos: bool, last: bool, at_limit: str) -> str:
        """After this step's token: set why the sequence ends, if it does (EOS, a stop string, or `last` step:
        `at_limit`), and return the text the detokenizer still held back when it ended at EOS or the limit."""
        if is_eos:
            self.finish_reason = "eos"
        elif self.detok.stopped:
            self.finish_reason = "stop"
        elif last:
            self.finish_reason = at_limit
        return self.detok.finish() if self.finish_reason in ("eos", at_limit) else ""

    def end(self, strategy: str, seed: int, sample: int, column: int) -> Done:
        """The `Done` of a sequence ended without a token this step (its `finish_reason` set): the text the
        detokenizer still held back is released into it."""
        self.detok.finish()
        return self.done(strategy, seed, sample, column)

    def done(self, strategy: str, seed: int, sample: int, column: int) -> Done:
        """The sequence's `Done`, timed from `started`."""
        seconds = time.perf_counter() - self.started
        count = len(self.token_ids)
        perplexity = math.exp(-self.logprob_sum / count) if count and math.isfinite(self.logprob_sum) else None
        return Done(
            sample=sample, text=self.detok.text, token_ids=tuple(self.token_ids), finish_reason=self.finish_reason,
            n_tokens=count, logprob_sum=self.logprob_sum, perplexity=perplexity, seconds=seconds,
            tokens_per_second=count / seconds if seconds > 0 else 0.0, strategy=strategy, seed=seed, column=column,
        )
