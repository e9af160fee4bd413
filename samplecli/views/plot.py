"""`inspect --plot FILE.png`: the entropy-temperature curve and the top tokens' probabilities at a few
temperatures, drawn with matplotlib's Agg backend (the optional extra `samplecli[plot]`).

A renderer: it draws the Report's numbers and computes nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from samplecli.analysis.inspect_report import Report
from samplecli.errors import SampleCliError
from samplecli.views.tokens import printable

INSTALL_HINT = "pip install 'samplecli[plot]'"
BAR_TEMPERATURES = 4  # how many of the swept temperatures get bars
BAR_TOKENS = 10


def _safe(text: str) -> str:
    """Text the default font can draw: escaped like the terminal views, and characters beyond Latin-1
    written as \\uXXXX."""
    return "".join(ch if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" for ch in printable(text))


def _label(token: str, token_id: int) -> str:
    return f"'{_safe(token)}'\n#{token_id}"


def _spread(count: int, wanted: int) -> list[int]:
    """Up to `wanted` indices spread evenly over range(count), first and last included."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def write_plot(report: Report, path: str | Path) -> None:
    """Write the figure as a PNG. Raises SampleCliError when matplotlib is missing or the file cannot be written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SampleCliError(f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    sweep = report.temperatures
    if sweep is None or not sweep.rows:
        raise SampleCliError("--plot needs a temperature sweep (--temps)")
    limits = sweep.limits

    fig = Figure(figsize=(14, 5.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    curve_ax, bars_ax = fig.subplots(1, 2, width_ratios=(1, 1.35))

    if sweep.curve:
        curve_ax.plot([t for t, _ in sweep.curve], [h for _, h in sweep.curve], color="tab:blue", lw=2,
                      label="entropy H(T)")
    curve_ax.plot([r.temperature for r in sweep.rows if r.temperature > 0],
                  [r.entropy_nats for r in sweep.rows if r.temperature > 0], "o", color="tab:orange", ms=7,
                  label="swept temperatures")
    hot = (f"T → ∞: uniform, log V = {limits.hot_entropy_nats:.2f} nats (V = {limits.vocab_size})"
           if report.distribution == "full" else  # a top-N engine's other tokens are filtered
           f"T → ∞: uniform over the {report.distribution}, log N = {limits.hot_entropy_nats:.2f} nats")
    curve_ax.axhline(limits.hot_entropy_nats, color="tab:red", ls="--", lw=1.2,
                     label=hot + ("\n(temperature alone; the chain's truncation caps H below)"
                                  if sweep.truncated else ""))
    curve_ax.axhline(0, color="tab:green", ls="--", lw=1.2, label="T → 0: one-hot on the argmax (greedy), H = 0")
    curve_ax.set_xscale("log")
    curve_ax.set_ylim(-0.05 * limits.hot_entropy_nats, 1.08 * limits.hot_entropy_nats)
    curve_ax.set_xlabel("temperature T (log scale)")
    curve_ax.set_ylabel("entropy of the next-token distribution (nats)")
    curve_ax.set_title("Higher T flattens the distribution: entropy rises")
    curve_ax.grid(True, which="both", alpha=0.3)
    curve_ax.legend(loc="center right", fontsize=8.5)

    tokens = report.top[:BAR_TOKENS]
    chosen = [sweep.rows[i] for i in _spread(len(sweep.rows), BAR_TEMPERATURES)]
    width = 0.8 / len(chosen)
    for k, row in enumerate(chosen):
        xs = [i + (k - (len(chosen) - 1) / 2) * width for i in range(len(tokens))]
        bars_ax.bar(xs, row.probs[: len(tokens)], width=width, label=f"T = {row.temperature:g}  "
                    f"(H = {row.entropy_nats:.2f} nats)")
    bars_ax.set_xticks(range(len(tokens)), [_label(t.token, t.token_id) for t in tokens], fontsize=8.5)
    bars_ax.set_xlabel("the most probable tokens under the raw model, in rank order")
    bars_ax.set_ylabel("probability")
    bars_ax.set_title("Same ranking at every T; the mass spreads out as T rises")
    bars_ax.grid(True, axis="y", alpha=0.3)
    bars_ax.legend(fontsize=8.5)

    where = "" if report.position.step == 0 else f"at step {report.position.step} "
    fig.suptitle(f"{report.model}: the next token {where}after the prompt '{_safe(report.prompt)[:60]}'",
                 fontsize=12)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a glyph the font lacks is drawn as a box, not an error
            fig.savefig(Path(path), format="png")
    except OSError as exc:
        raise SampleCliError(f"--plot {path}: cannot write it ({exc.__class__.__name__}: {exc})") from exc
