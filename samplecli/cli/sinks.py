"""Where a `generate` run's events go, chosen in one place: the payload (text, JSONL, one JSON document or one HTML
page) on stdout or --output, and the terminal views on stderr (with the coloured text on stdout where it is a
terminal that gets nothing else). Per-token decoding and beam search differ only in their classes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplecli.cli.app import Format, View

if TYPE_CHECKING:
    from rich.console import Console

    from samplecli.views.sinks import Sinks


def open_sinks(err: Console, *, format: Format, view: View, output: Path | None, quiet: bool, beam: bool, chain: str,
               num_samples: int, separator: str, document: dict[str, Any]) -> Sinks:
    """The run's sinks as one, to use as `with open_sinks(...) as sink:`, which closes each (and --output's file)
    however the run ends. `document`: the JSON document's header (--format json)."""
    from samplecli.cli.app import stdout_console
    from samplecli.config.inputs import OutputFile
    from samplecli.views import beam as beam_views
    from samplecli.views import render
    from samplecli.views import sinks as sinks_module

    stdout_tty = sys.stdout.isatty()
    # write failures (a full disk, /dev/full) end the run as one line naming the file; what was written stays
    file = OutputFile.open(output, "--output") if output is not None else None
    payload = file if file is not None else (None if (stdout_tty and format is Format.text)
                                             else OutputFile(sys.stdout, "standard output"))
    sinks: list[sinks_module.Sink] = []
    if payload is not None and format is Format.text:
        sinks.append(sinks_module.TextSink(payload, num_samples, separator))
    elif payload is not None and format is Format.jsonl:
        sinks.append(beam_views.BeamJsonlSink(payload) if beam else sinks_module.JsonlSink(payload))
    elif payload is not None and format is Format.html:
        from samplecli.views.html import HtmlSink

        sinks.append(HtmlSink(payload, document, beam=beam))
    elif payload is not None:
        sinks.append(beam_views.BeamJsonSink(payload, document) if beam else sinks_module.JsonSink(payload, document))
    if not quiet or (stdout_tty and payload is None):
        out = stdout_console() if (stdout_tty and payload is None) else None
        sinks.append(beam_views.BeamTerminalSink(err, out, chain, view.value, summary=not quiet) if beam else
                     render.TerminalSink(err, out, chain, view.value, summary=not quiet, num_samples=num_samples))
    return sinks_module.Sinks(sinks, owned=(file,) if file is not None else ())
