"""The live panel as a user's terminal shows it: `samplecli generate` in a real pseudo-terminal of 80x16, 80x24 and
120x40, its bytes played through a terminal emulator (pyte), every frame checked (the panel whole at the bottom,
the text above it filling the screen, nothing cut to "..."), and the last frame compared with a snapshot that was
reviewed by eye (tests/snapshots/live_*.txt; `SAMPLECLI_UPDATE_SNAPSHOTS=1` rewrites them, to be reviewed again)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from tests.conftest import controlling_terminal

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).parent / "snapshots"
# a paragraph with no line break (newline banned): the text a chat model writes, and the case that froze the panel
LONG_PARAGRAPH = ("generate", "ROMEO:", "-n", "250", "--seed", "1", "--logit-bias", "199=-inf")
VERSE = ("generate", "ROMEO:", "-n", "250", "--seed", "1")  # Shakespeare's short lines: more rows than 40
SIZES = ((80, 16, LONG_PARAGRAPH), (80, 24, VERSE), (120, 40, VERSE))


def spawn(args: tuple[str, ...], columns: int, lines: int, cwd: Path = ROOT):
    """`samplecli ARGS` with a pseudo-terminal of `columns` x `lines` as its controlling terminal: (master, slave,
    process)."""
    import pty

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
    process = subprocess.Popen([sys.executable, "-m", "samplecli", *args], stdin=slave, stdout=slave, stderr=slave,
                               cwd=cwd, close_fds=True, env=env, preexec_fn=controlling_terminal)
    return master, slave, process


def run_in_terminal(args: tuple[str, ...], columns: int, lines: int, timeout: float = 600) -> bytes:
    """Everything `samplecli ARGS` writes to a pseudo-terminal of `columns` x `lines` (stdout and stderr both)."""
    master, slave, process = spawn(args, columns, lines)
    output = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # the child closed the terminal
                    break
                output += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=60) == 0, output[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
        os.close(slave)
    return output


# Rich's Live starts each redraw by going back to the view's first line ("\r", erase the line, one up, ...), and
# clears a transient view when it stops ("\r", one up, erase, ...): the screen just before either holds a frame
REDRAW = re.compile(rb"(?=\r\x1b\[2K\x1b\[1A|\r\x1b\[1A\x1b\[2K)")


def frames(output: bytes, columns: int, lines: int) -> tuple[list[list[str]], list[str]]:
    """(each live frame as the screen showed it, the screen at the end)."""
    screen = pyte.Screen(columns, lines)
    stream = pyte.ByteStream(screen)
    shown = []
    for piece in REDRAW.split(output):
        if piece.startswith(b"\r\x1b["):
            shown.append([row.rstrip() for row in screen.display])
        stream.feed(piece)
    return shown, [row.rstrip() for row in screen.display]


def check_frame(rows: list[str], columns: int, lines: int) -> None:
    """One frame: the panel whole on screen (its top and bottom borders), no row cut with "...", every caption
    number whole."""
    bottom = max(i for i, row in enumerate(rows) if row.startswith("╰"))
    assert any(row.startswith("╭") for row in rows[:bottom]), "\n".join(rows)
    assert not any(row.rstrip().endswith(("...", "…")) for row in rows), "\n".join(rows)
    caption = " ".join(row.strip("│ ") for row in rows if "step " in row and "token " in row or "kept" in row)
    assert re.search(r"p=\d\.\d{3}", caption) and re.search(r"kept \d+", caption), "\n".join(rows)


@pytest.mark.parametrize(("columns", "lines", "args"), SIZES, ids=[f"{c}x{r}" for c, r, _ in SIZES])
def test_the_live_panel_fills_the_terminal_and_keeps_the_newest_text_in_view(columns, lines, args):
    output = run_in_terminal(args, columns, lines)
    shown, end = frames(output, columns, lines)
    live = [rows for rows in shown if any("H(model)=" in row for row in rows)]
    assert live, output[-2000:]
    for rows in live:
        check_frame(rows, columns, lines)
    # the last frame drawn (when the view stops, the line under it scrolls it up by one before it is cleared):
    # the panel at the bottom of the screen, the text above it, the last step (the 250th token) shown
    last = next(rows for rows in reversed(live) if rows[lines - 1].startswith("╰"))
    assert "step 249" in "\n".join(last)
    text_rows = [row for row in last[: next(i for i, row in enumerate(last) if row.startswith("╭"))]]
    assert len(text_rows) >= 3, "\n".join(last)  # the text fills every line above the panel
    assert any(row.startswith("│ ▶ ") for row in last)  # the chosen token is a row, even when outside the top 5
    # the run's text ends with the frame's last text row, as the terminal wrapped it
    final_text = "".join(row for row in end if row and not row.startswith(("bundled", "250 tokens")))
    assert "".join(text_rows[-1].split())[-20:] in "".join(final_text.split())
    compare_snapshot(f"live_{columns}x{lines}.txt", "\n".join(last) + "\n")
    # the summary after the run: flowed at the terminal's width, each number whole on one line
    summary = end[next(i for i, row in enumerate(end) if row.startswith("250 tokens")):]
    for name in ("mean entropy", "logprob", "perplexity"):
        assert any(re.search(rf"{name} -?\d+\.\d\d( |$)", row) for row in summary), "\n".join(summary)


def compare_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("SAMPLECLI_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert path.exists(), f"no snapshot {name}: run with SAMPLECLI_UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text(), f"{name} changed; review it and rerun with SAMPLECLI_UPDATE_SNAPSHOTS=1"


COMPARE = ("compare", "ROMEO:", "-n", "200", "-s", "greedy", "-s", "top-p", "-s", "top-k", "--seed", "1")


@pytest.mark.parametrize(("columns", "lines"), ((80, 16), (120, 24)), ids=["80x16-stacked", "120x24-side-by-side"])
def test_compare_s_live_view_keeps_every_column_whole_on_screen(columns, lines):
    output = run_in_terminal(COMPARE, columns, lines)
    shown, _ = frames(output, columns, lines)
    live = [rows for rows in shown if any("greedy" in row for row in rows) and any("top-k" in row for row in rows)]
    assert live, output[-2000:]
    for rows in live:  # all three columns with their borders, whatever the texts' lengths so far
        screen = "\n".join(rows)
        if columns == 80:
            assert screen.count("╭─") == 3 and screen.count("╰─") == 3, screen
        else:
            assert screen.count("┏") == 1 and screen.count("└") == 1, screen
    last = next(rows for rows in reversed(live) if rows[lines - 1].startswith(("╰", "└")))
    compare_snapshot(f"compare_{columns}x{lines}.txt", "\n".join(last) + "\n")


# --- chat: a reply streams with its live panel, and the conversation stays on screen above the next prompt ------


def chat_in_terminal(args: tuple[str, ...], columns: int, lines: int, messages: list[bytes], cwd: Path = ROOT,
                     timeout: float = 600) -> bytes:
    """Everything `samplecli chat ARGS` writes to a pseudo-terminal of `columns` x `lines` while each of
    `messages` is typed at its `you> ` prompt, then Ctrl-D."""
    master, slave, process = spawn(("chat", *args), columns, lines, cwd)
    output, prompts = b"", 0
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end and process.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    output += os.read(master, 1 << 16)
                except OSError:
                    break
            if output.count(b"you> ") > prompts:  # the next prompt: the next message, or Ctrl-D at the end
                prompts += 1
                os.write(master, messages[prompts - 1] if prompts <= len(messages) else b"\x04")
            elif prompts > len(messages) and not ready:
                os.write(master, b"\x04")  # readline may not have read the first ^D yet
        assert process.wait(timeout=60) == 0, output[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
        os.close(slave)
    return output


CHAT_SIZES = ((80, 16), (80, 24), (120, 40))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("samplecli_scripts_chat_models",
                                                  ROOT / "scripts" / "make_chat_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_chat_model(tmp_path_factory.mktemp("chat") / "chat-model", "chatml", context=4096)


@pytest.mark.parametrize(("columns", "lines"), CHAT_SIZES, ids=[f"{c}x{r}" for c, r in CHAT_SIZES])
def test_chat_streams_each_reply_with_its_panel_and_keeps_the_conversation_on_screen(chat_model, columns, lines):
    # the model by a relative name (the header shows it), from its folder
    args = ("-m", chat_model.name, "--seed", "5", "-n", "60", "--logit-bias", "<|im_end|>=-inf")
    output = chat_in_terminal(args, columns, lines, [b"Hello\r", b"/temp 0.5\r", b"How are you?\r"],
                              cwd=chat_model.parent)
    # the screen as the last prompt showed it, waiting for the next message (before Ctrl-D ended the chat)
    shown, end = frames(output[: output.rindex(b"you> ") + 5], columns, lines)
    live = [rows for rows in shown if any("H(model)=" in row for row in rows)]
    assert live, output[-2000:]
    for rows in live:
        check_frame(rows, columns, lines)
    screen = "\n".join(end)
    # after the second reply: its header with the setting the /temp command made, its summary, the next prompt
    last = max(i for i, row in enumerate(end) if row)
    assert "temperature(0.5)" in screen and "60 tokens" in screen and end[last] == "you>", screen
    # the reply text and the setting's answer flowed at the terminal's width: no word cut at the edge
    assert not any(row.startswith(("e", "ple")) and len(row) < 4 for row in end), screen
    compare_snapshot(f"chat_{columns}x{lines}.txt", re.sub(r"\d+\.\d tok/s", "(speed) tok/s", screen) + "\n")


# what a chain stage or a decoding mode adds to the live panel's caption and the summary: a constraint (#29), the
# mask's allowed count, the mass inside and its cost; speculative decoding (#30), each token's round and how the
# draft's token fared
CAPTIONS = {
    "constrained": (("generate", "ROMEO:", "-n", "250", "--seed", "1", "--regex", "[A-Za-z ,.]{1,2000}"),
                    r"mask allows \d+ .*mass [\d.e-]+ .*cost \d+\.\d\d nats",
                    (r"constraint cost \d+\.\d\d nats \(worst \d+\.\d\d at step \d+\)",)),
    "speculative": (("generate", "ROMEO:", "-n", "120", "--seed", "1", "--draft-model", "bundled-draft"),
                    r"round \d+ ",
                    (r"α \d\.\d{3} \(\d+/\d+ judged kept\)", r"\d\.\d\d tokens per target forward")),
}


@pytest.mark.parametrize("kind", sorted(CAPTIONS))
@pytest.mark.parametrize(("columns", "lines"), ((80, 16), (80, 24), (120, 40)), ids=["80x16", "80x24", "120x40"])
def test_the_live_panel_shows_what_a_constraint_or_a_draft_adds_to_each_step(kind, columns, lines):
    args, caption_pattern, summary_patterns = CAPTIONS[kind]
    output = run_in_terminal(args, columns, lines)
    shown, end = frames(output, columns, lines)
    live = [rows for rows in shown if any("H(model)=" in row for row in rows)]
    assert live, output[-2000:]
    for rows in live:
        check_frame(rows, columns, lines)
        caption = " ".join(row.strip("│ ") for row in rows)
        assert re.search(caption_pattern, caption), "\n".join(rows)
    # the last frame of the last step (a short text leaves the panel above the bottom row on a tall terminal)
    final_step = f"step {int(args[args.index('-n') + 1]) - 1}"
    last = next(rows for rows in reversed(live) if final_step in "\n".join(rows))
    compare_snapshot(f"live_{kind}_{columns}x{lines}.txt", "\n".join(last) + "\n")
    summary = " ".join(end)
    for pattern in summary_patterns:
        assert re.search(pattern, summary), summary
