"""The sinks: what consumes the Step/Done events of a run and writes or shows them (a sink for the payload on
stdout or a file, the terminal views in views/render.py). Each is a context manager: `close(interrupted)` is called
however the run ends, also after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
from typing import IO, TYPE_CHECKING, Any

from samplecli.engine.events import Done, Step
from samplecli.views.records import done_record, dumps, step_record

if TYPE_CHECKING:
    from samplecli.engine.beam_types import BeamStep


class Sink:
    """Receives events. A context manager, as Rich's `Live` is: `with sink:` calls `close(interrupted=...)` when the
    block ends, `interrupted` where it ends by an exception (Ctrl-C, SIGTERM, a failed write)."""

    def step(self, step: Step) -> None:  # noqa: B027 - optional hook
        pass

    def done(self, done: Done) -> None:  # noqa: B027 - optional hook
        pass

    def beam_step(self, step: BeamStep) -> None:  # noqa: B027 - optional hook: a beam search's step
        pass

    def close(self, interrupted: bool = False) -> None:  # noqa: B027 - optional hook
        pass

    def send(self, event: Step | Done | BeamStep) -> None:
        """Hand an event of any decode loop (per token, on a server, beam search) to its hook."""
        if isinstance(event, Step):
            self.step(event)
        elif isinstance(event, Done):
            self.done(event)
        else:
            self.beam_step(event)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.close(interrupted=kind is not None)


class Sinks(Sink):
    """Several sinks as one: each gets every event, and each is closed, a reader gone (`| head`) or not; then the
    files they wrote to (`owned`) close."""

    def __init__(self, sinks: list[Sink], owned: tuple[Any, ...] = ()) -> None:
        self.sinks, self.owned = sinks, owned

    def step(self, step: Step) -> None:
        for sink in self.sinks:
            sink.step(step)

    def done(self, done: Done) -> None:
        for sink in self.sinks:
            sink.done(done)

    def beam_step(self, step: BeamStep) -> None:
        for sink in self.sinks:
            sink.beam_step(step)

    def close(self, interrupted: bool = False) -> None:
        try:
            for sink in self.sinks:
                with contextlib.suppress(BrokenPipeError):
                    sink.close(interrupted=interrupted)
        finally:
            for file in self.owned:
                file.close()


# where a sample of the text output stops because the run was interrupted (Ctrl-C, SIGTERM): on a line of its own
INTERRUPTED = "\n[interrupted]"


class TextSink(Sink):
    """The generated text, plain, flushed per token. With several samples, sample 0 streams and the
    others follow in order, each after a line holding `separator` (by default an empty line, so a blank
    line separates them; their text is held until their turn)."""

    def __init__(self, stream: IO[str], num_samples: int = 1, separator: str = "") -> None:
        self.stream = stream
        self.num_samples = num_samples
        self.between = f"\n{separator}\n"
        self.buffers: dict[int, list[str]] = {}
        self.finished: set[int] = set()
        self.current = 0  # the sample being streamed
        self.started = False  # whether any token came

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()

    def step(self, step: Step) -> None:
        self.started = True
        if step.sample == self.current:
            self._write(step.text)
        else:
            self.buffers.setdefault(step.sample, []).append(step.text)

    def done(self, done: Done) -> None:
        self.finished.add(done.sample)
        while self.current in self.finished:
            self.current += 1
            if self.current < self.num_samples or self.current in self.buffers:
                self._write(self.between + "".join(self.buffers.pop(self.current, [])))

    def close(self, interrupted: bool = False) -> None:
        """After Ctrl-C, every sample decoded so far is written too (a batch decodes them side by side, so the
        samples after the one streaming are held here), each that did not finish ending on INTERRUPTED."""
        if interrupted:
            if not self.started:  # nothing was generated: nothing to keep (an error before the first token)
                return
            if self.current < self.num_samples and self.current not in self.finished:
                self._write(INTERRUPTED)
            for sample in sorted(self.buffers):
                cut = "" if sample in self.finished else INTERRUPTED
                self._write(self.between + "".join(self.buffers.pop(sample)) + cut)
        self._write("\n")


def one_line(text: str) -> str:
    """Text on one line, reversibly: a backslash doubled, a newline and a carriage return as \\n and \\r."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


class OneLineSink(Sink):
    """A piped chat's reply: its text streamed on one line (`one_line`: a reply's own newlines written as \\n),
    the line ended when the reply ends, so that each reply is one line of the output."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def step(self, step: Step) -> None:
        if step.text:
            self.stream.write(one_line(step.text))
            self.stream.flush()

    def close(self, interrupted: bool = False) -> None:
        self.stream.write(" [interrupted]\n" if interrupted else "\n")
        self.stream.flush()


class JsonlSink(Sink):
    """One JSON object per step and per finished sequence, flushed per line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def _line(self, record: dict[str, Any]) -> None:
        self.stream.write(dumps(record) + "\n")
        self.stream.flush()

    def step(self, step: Step) -> None:
        self._line(step_record(step))

    def done(self, done: Done) -> None:
        self._line(done_record(done))


class JsonSink(Sink):
    """One JSON document at the end: the run's settings and each sample with its steps."""

    def __init__(self, stream: IO[str], header: dict[str, Any]) -> None:
        self.stream, self.header = stream, header
        self.steps: dict[int, list[dict[str, Any]]] = {}
        self.samples: dict[int, dict[str, Any]] = {}

    def step(self, step: Step) -> None:
        self.steps.setdefault(step.sample, []).append(step_record(step))

    def done(self, done: Done) -> None:
        self.samples[done.sample] = done_record(done)

    def document(self, interrupted: bool) -> dict[str, Any]:
        """The run as one document: its header, whether it was interrupted, each sample's Done with its steps."""
        samples = [{**self.samples.get(i, {"sample": i, "finish_reason": "interrupted"}), "steps": self.steps[i]}
                   for i in sorted(self.steps)]
        return {**self.header, "interrupted": interrupted, "samples": samples}

    def close(self, interrupted: bool = False) -> None:
        document = self.document(interrupted)
        self.stream.write(json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1) + "\n")
        self.stream.flush()
