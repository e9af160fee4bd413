"""Rerun every command shown in README.md and docs/ and put its real output under it; draw the live panel.

A tour is the text between `<!-- TOUR -->` and `<!-- /TOUR -->` (a file may hold several). Each fenced block in
a tour whose first line is `$ COMMAND` is rerun with bash in a scratch directory (stdout and stderr together,
`NO_COLOR=1`, 100 columns), and everything after that first line is replaced by what the command printed.
A tour opened with `<!-- TOUR setup: NAME -->` first runs SETUPS[NAME] (docs/chat.md's: `chat-models`, the tiny
chat models of tests/test_chat.py; docs/two-models.md's: `quantized-ggufs`, the bundled model's GGUFs), then its
commands in order, in one directory. docs/images/live.svg, the
README's picture of the live panel, is drawn from a real run of the bundled model (Rich's `Console(record=True)`
and `export_svg`). Each command of docs/html.md that writes a page (`-f html -o NAME.html`) is run once more to write
docs/examples/NAME.html, and docs/images/html.png is a headless Chromium's screenshot of the first of them
(scripts/headless.py).

    python scripts/update_readme_tour.py                      # README.md, docs/*.md and the picture
    python scripts/update_readme_tour.py docs/commands.md     # only these files
    python scripts/update_readme_tour.py --llama-server 8080  # also docs/remote.md, against llama-server
    python scripts/update_readme_tour.py --check              # write nothing; exit 1 if an output changed

A command that talks to `http://127.0.0.1:8080` needs `--llama-server 8080`: llama.cpp's server then runs on that
port while the commands run, serving the bundled model as GGUF (built and cached by scripts/build_llama_cpp.py);
without it such a command's output is left as it is. `--check` compares through `normalise`,
which blanks what varies from one machine or run to the next (speeds, timings, the last digits of long floats);
tests/test_tour.py runs it. The script exits 1, after writing, if a command failed.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SVG = ROOT / "docs" / "images" / "live.svg"
TOUR = re.compile(r"<!-- TOUR(?: setup: (?P<setup>[\w-]+))? -->(.*?)<!-- /TOUR -->", re.DOTALL)
BLOCK = re.compile(r"```\n\$ (?P<command>[^\n]*)\n(?P<output>.*?)```", re.DOTALL)
SERVER = "http://127.0.0.1:8080"  # the address the docs show for llama-server
ENV = {"NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb"}

EXAMPLES = ROOT / "docs" / "examples"  # the example pages, written by docs/html.md's commands
PNG = ROOT / "docs" / "images" / "html.png"  # the README's picture of a page
WRITES_PAGE = re.compile(r" -f html -o (?P<name>[\w-]+\.html)$")
PNG_SIZE = (1200, 720)  # the window the picture is taken in, CSS pixels

# The run the picture shows: what `samplecli generate PROMPT --seed 1 -n 40` streams, as it stands at its last step.
SVG_PROMPT, SVG_SEED, SVG_TOKENS = "ROMEO:", 1, 40


@dataclass(frozen=True)
class Block:
    command: str
    output: str
    start: int  # the block's span in the file's text
    end: int
    tour: int = 0  # which tour of the file it is in
    setup: str | None = None  # the tour's setup (SETUPS): its blocks then run in order, in one directory

    @property
    def needs_server(self) -> bool:
        """The command talks to llama-server (SERVER): it runs only where one is given."""
        return SERVER in self.command


def tour_files(root: Path = ROOT) -> list[Path]:
    """README.md and every file of docs/ that holds a tour."""
    candidates = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p for p in candidates if TOUR.search(p.read_text(encoding="utf-8"))]


def blocks(text: str) -> list[Block]:
    """The `$ command` blocks of every tour in `text`, in order."""
    found = []
    for index, tour in enumerate(TOUR.finditer(text)):
        for match in BLOCK.finditer(text, tour.start(2), tour.end(2)):
            found.append(Block(match["command"], match["output"].rstrip("\n"), match.start(), match.end(), index,
                               tour["setup"]))
    return found


def needs_server(text: str) -> bool:
    return any(block.needs_server for block in blocks(text))


def environment(home: Path) -> dict[str, str | None]:
    """The commands' environment: this one without what a reader's machine would not have (`SAMPLECLI_*`
    variables, a moved configuration directory, user presets: HOME is an empty `home`), plus ENV. None unsets."""
    dropped = {k: None for k in os.environ
               if k == "XDG_CONFIG_HOME" or (k.startswith("SAMPLECLI_") and k != "SAMPLECLI_CACHE")}
    # this Python's scripts first: `samplecli` and `python3` are the ones of the environment running the tour
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return {**dropped, **ENV, "HOME": str(home), "PATH": path}


# --- running a command: `samplecli` in this process, the rest of a pipeline as programs ---------------------------

_ANSI_C = re.compile(r"\$'((?:[^'\\]|\\.)*)'")
OPERATORS = ("|", ">", "&&", ";")


def words(command: str) -> list[str]:
    """The command's words and operators as bash reads them: quotes removed, `$'...'` decoded."""
    command = _ANSI_C.sub(lambda m: shlex.quote(codecs.decode(m[1], "unicode_escape")), command)
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|>&;")
    lexer.whitespace_split = True
    return list(lexer)


def _split(items: list[str], operator: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for item in items:
        if item == operator:
            parts.append([])
        else:
            parts[-1].append(item)
    return parts


class Shell:
    """Runs a tour's command line (`samplecli ...`, `printf ... |`, `| python3 -c ...`, `> FILE`, `&&`) with every
    `samplecli` in this process, through Typer's test runner: importing torch and transformers once instead of
    once a command is what lets tests/test_tour.py rerun them all in about a minute. `$(...)` and other shell
    syntax go to bash."""

    def __init__(self, scratch: Path, server: str | None = None) -> None:
        self.work, self.home, self.server = scratch / "work", scratch / "home", server
        self.status = 0  # the last pipeline's, for `echo $?`
        self.work.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)

    def run(self, command: str) -> tuple[int, str]:
        """(exit status, what the terminal shows: stdout and stderr together)."""
        if self.server is not None:
            command = command.replace(SERVER, self.server)
        if "$(" in command or "`" in command:
            status, shown = self._bash(command)
        else:
            status, shown = 0, []
            for part in _split(words(command), ";"):
                for sequence in _split(part, "&&"):
                    status = self.status = self._pipeline(sequence, shown)
                    if status != 0:
                        break
            shown = "".join(shown)
        shown = shown.rstrip()
        return status, shown.replace(self.server, SERVER) if self.server is not None else shown

    def _bash(self, command: str) -> tuple[int, str]:
        env = {k: v for k, v in {**os.environ, **environment(self.home)}.items() if v is not None}
        result = subprocess.run(["bash", "-c", f"{{ {command}; }} 2>&1"], capture_output=True, text=True,
                                cwd=self.work, env=env, timeout=600)
        return result.returncode, result.stdout

    def _pipeline(self, items: list[str], shown: list[str]) -> int:
        stages = _split(items, "|")
        data, status = None, 0
        for i, stage in enumerate(stages):
            target = None
            if ">" in stage:
                stage, target = stage[: stage.index(">")], stage[stage.index(">") + 1]
            last = i == len(stages) - 1 and target is None
            status, out, err = self._stage(stage, data, to_terminal=last)
            shown.append(err)
            if last:
                shown.append(out)
            elif target is not None:
                if target != "/dev/null":
                    (self.work / target).write_text(out, encoding="utf-8")
                out = ""
            data = out
        return status

    def _stage(self, argv: list[str], stdin: str | None, to_terminal: bool) -> tuple[int, str, str]:
        """(status, stdout, stderr) of one program; a `samplecli` that writes to the terminal gives its stdout and
        stderr mixed, in the order written, as `out`."""
        name, args = argv[0], argv[1:]
        if name == "samplecli":
            return self._samplecli(args, stdin, to_terminal)
        if name == "printf":
            return 0, codecs.decode(args[0], "unicode_escape") % tuple(args[1:]), ""
        if name == "echo":
            return 0, " ".join(args).replace("$?", str(self.status)) + "\n", ""
        env = {k: v for k, v in {**os.environ, **environment(self.home)}.items() if v is not None}
        result = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, cwd=self.work, env=env,
                                timeout=600)
        return result.returncode, result.stdout, result.stderr

    def _samplecli(self, args: list[str], stdin: str | None, to_terminal: bool) -> tuple[int, str, str]:
        import traceback

        from typer.testing import CliRunner

        from samplecli.cli import app

        before = os.getcwd()
        os.chdir(self.work)
        try:
            result = CliRunner().invoke(app, args, input=stdin, env=environment(self.home), prog_name="samplecli")
        finally:
            os.chdir(before)
        crash = ""
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crash = "".join(traceback.format_exception(result.exception))
        if to_terminal:
            return result.exit_code, result.output + crash, ""
        return result.exit_code, result.stdout, result.stderr + crash


def run(command: str, scratch: str, server: str | None = None) -> tuple[int, str]:
    """(exit status, stdout and stderr together) of `command`, in `scratch`/work with HOME `scratch`/home;
    `server`: the llama-server to use instead of the address the docs show (the output is written back with the
    docs' address)."""
    return Shell(Path(scratch), server).run(command)


def chat_models(work: Path) -> None:
    """docs/chat.md's models and files: scripts/make_chat_models.py's tiny ChatML, plain and instruct models
    (random-init, seeded Qwen2s with a trained tokenizer), a conversation, a mistaken one and a ChatML template."""
    here = str(Path(__file__).resolve().parent)  # scripts/, where the sibling script is
    if here not in sys.path:
        sys.path.insert(0, here)
    from make_chat_models import CHATML
    from make_chat_models import main as make_chat_models

    make_chat_models([str(work)])
    (work / "q.json").write_text('[{"role":"user","content":"What is the capital of France?"}]\n', encoding="utf-8")
    (work / "bad.json").write_text('[{"role":"wizard","content":"Hello"}]\n', encoding="utf-8")
    (work / "chatml.jinja").write_text(CHATML.replace("'", '"') + "\n", encoding="utf-8")


QUANTIZATIONS = ("f32", "f16", "q8_0", "q4_k_m", "q4_0")  # docs/two-models.md's GGUFs of the bundled model
HELD_OUT_CHARACTERS = 20_000  # of the bundled model's held-out text: ~8k tokens, seconds per model


def quantized_ggufs(work: Path) -> None:
    """docs/two-models.md's files: the bundled model as GGUF in each of QUANTIZATIONS (`bundled-q4_0.gguf`, ...:
    scripts/build_llama_cpp.py converts and quantizes them once, cached) and the first HELD_OUT_CHARACTERS of its
    held-out text, `held_out.txt`."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from build_llama_cpp import gguf_model

    for kind in QUANTIZATIONS:
        (work / f"bundled-{kind}.gguf").symlink_to(gguf_model(outtype=kind))
    text = (ROOT / "samplecli" / "bundled_model" / "held_out.txt").read_text(encoding="utf-8")
    (work / "held_out.txt").write_text(text[:HELD_OUT_CHARACTERS], encoding="utf-8")


# A tour's `<!-- TOUR setup: NAME -->`: what its commands need in their directory, made before they run.
SETUPS = {"chat-models": chat_models, "quantized-ggufs": quantized_ggufs}


def run_all(blocks: list[Block], server: str | None = None) -> list[tuple[int, str]]:
    """Every block's (status, output), one after another: each in its own scratch directory, or, in a tour with a
    setup, all of the tour's in one directory made by the setup, in order (a command may read what one before it
    wrote)."""
    results = []
    with contextlib.ExitStack() as stack:
        shells: dict[int, Shell] = {}
        for block in blocks:
            if block.setup is None:
                scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="samplecli-tour-"))
                results.append(Shell(Path(scratch), server).run(block.command))
                continue
            if block.tour not in shells:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="samplecli-tour-")))
                shells[block.tour] = Shell(scratch, server)
                SETUPS[block.setup](shells[block.tour].work)
            results.append(shells[block.tour].run(block.command))
    return results


def rewrite(text: str, outputs: list[str]) -> str:
    """`text` with each tour block's output replaced, in order."""
    found = blocks(text)
    parts, last = [], 0
    for block, output in zip(found, outputs, strict=True):
        parts += [text[last : block.start], f"```\n$ {block.command}\n{output}\n```"]
        last = block.end
    return "".join(parts) + text[last:]


# --- what varies from one machine or run to the next --------------------------------------------------------------

_SPEED = re.compile(r"\d+(?:\.\d+)? tok/s")
_SPEED_FIELD = re.compile(r"(tok/s: )\d+(?:\.\d+)?")
_TIMING = re.compile(r'("(?:seconds|tokens_per_second)": )[0-9.e+-]+')
_LONG_FLOAT = re.compile(r"-?\d+\.\d{7,}(?:e-?\d+)?")


def _long_float(match: re.Match) -> str:
    return f"{float(match[0]):.5g}"


def normalise(output: str) -> str:
    """`output` without what varies by machine and run: tokens per second (in a summary line, a report's
    `tok/s:` field and a Markdown table's `tok/s` column), JSON's `seconds` and `tokens_per_second`, the
    digits of a long float beyond the fifth significant one (a different CPU may sum in another order), and
    trailing spaces."""
    output = _SPEED.sub("… tok/s", output)
    output = _SPEED_FIELD.sub(r"\1…", output)
    output = _TIMING.sub(r"\1…", output)
    output = _LONG_FLOAT.sub(_long_float, output)
    # trailing spaces are invisible, and Rich pads a title to the table's width: a server's address of another
    # length (the tests' llama-server runs on a free port, the docs show 8080) pads it differently
    lines, speed_column = [line.rstrip() for line in output.split("\n")], None
    for i, line in enumerate(lines):
        cells = line.split(" | ")
        if line.startswith("| ") and "tok/s" in cells:
            speed_column = cells.index("tok/s")
        elif speed_column is not None and line.startswith("| ") and len(cells) > speed_column:
            if not set(cells[speed_column]) <= set("-:|"):
                cells[speed_column] = "…"
            lines[i] = " | ".join(cells)
        elif not line.startswith("|"):
            speed_column = None
    return "\n".join(lines)


_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


# The llama-server the tours' server commands run against, here and in tests/test_tour.py: one slot and no prompt
# cache, so that every figure it computes depends on the request alone. With several slots the server batches
# concurrent requests together, and with a prompt cache it evaluates only what a request adds to the one before;
# either changes the order of its float sums (the same `score` printed a perplexity of 61.937, 61.939 and 61.934).
TOUR_SERVER = {"n_parallel": 1, "extra_args": ("--no-cache-prompt",)}


def matches(shown: str, now: str) -> bool:
    """Whether the output a file shows is what a command prints now: equal once normalised, except that a
    decimal figure may differ by one in its last digit (rounding: 61.935 and 61.936 are the same perplexity,
    summed in another order on another thread layout). Counts, words and the number of digits shown must be
    equal."""
    shown, now = normalise(shown), normalise(now)
    if shown == now:
        return True
    shown_numbers, now_numbers = list(_NUMBER.finditer(shown)), list(_NUMBER.finditer(now))
    if _NUMBER.sub("#", shown) != _NUMBER.sub("#", now) or len(shown_numbers) != len(now_numbers):
        return False
    for a, b in zip(shown_numbers, now_numbers, strict=True):
        if a[0] == b[0]:
            continue
        if a[1] is None or b[1] is None or len(a[1]) != len(b[1]):
            return False
        difference = abs(float(a[0]) - float(b[0]))
        if difference > 1.5 * 10 ** -len(a[1]):
            return False
    return True


# --- the picture of the live panel --------------------------------------------------------------------------------


def live_svg() -> str:
    """The live panel of a real run on the bundled model, as Rich draws it on a 100x30 terminal, in SVG."""
    from rich.console import Console

    from samplecli.backends import open_backend
    from samplecli.engine.decode import decode, encode_prompt
    from samplecli.engine.events import DecodeConfig, Step
    from samplecli.strategies import build_strategy
    from samplecli.views.render import RunState, live_view

    lm = open_backend(None)
    strategy = build_strategy({}).strategy  # samplecli's default: temperature 0.8, top-p 0.95
    state = RunState(keep_steps=False)
    config = DecodeConfig(max_new_tokens=SVG_TOKENS, seed=SVG_SEED)
    for event in decode(lm, strategy, encode_prompt(lm, SVG_PROMPT), config):
        if isinstance(event, Step):
            state.add(event)
    console = Console(record=True, width=100, height=30, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    console.print(live_view(state, str(strategy), console))
    return console.export_svg(title=f'samplecli generate "{SVG_PROMPT}" --seed {SVG_SEED} -n {SVG_TOKENS}')


# --- the example pages and their picture --------------------------------------------------------------------------


def example_pages(root: Path = ROOT) -> dict[str, str]:
    """docs/html.md's commands that write a page, by the page's name: the one place an example is declared."""
    found = blocks((root / "docs" / "html.md").read_text(encoding="utf-8"))
    return {m["name"]: b.command for b in found if (m := WRITES_PAGE.search(b.command))}


def write_pages(folder: Path, root: Path = ROOT) -> list[str]:
    """Run each example's command and put its page in `folder`; the failures, one entry each."""
    failures = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, command in example_pages(root).items():
        with tempfile.TemporaryDirectory(prefix="samplecli-page-") as scratch:
            shell = Shell(Path(scratch))
            status, output = shell.run(command)
            if status != 0:
                failures.append(f"`{command}` exits {status}:\n{output}")
            else:
                (folder / name).write_bytes((shell.work / name).read_bytes())
    return failures


def headless():
    """scripts/headless.py, the headless Chromium driver beside this script."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import headless as module

    return module


def page_picture(path: Path) -> bytes:
    """A PNG of the page at `path` as a reader first sees it (light scheme, PNG_SIZE) with the mouse on a token."""
    with headless().Browser() as browser:
        tab = browser.open(path, width=PNG_SIZE[0], height=PNG_SIZE[1])
        tab.hover("#text .tok:nth-child(12)")
        tab.evaluate("window.scrollTo(0, 0)")
        return tab.screenshot()


_DATA = re.compile(r'(<script type="application/json" id="data">)(.*?)(</script>)', re.DOTALL)
_SPEED_CELL = re.compile(r'(<td class="num speed">)[^<]*(</td>)')
TIMINGS = ("seconds", "tokens_per_second")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _close(a, b) -> bool:
    """Equal data, a float within 1e-4 of the other (relative; another CPU may sum in another order)."""
    import math

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-4,
                                                                                          abs_tol=1e-6)
    return a == b


def same_page(shown: str, now: str) -> bool:
    """Whether two pages are the same but for what varies by machine and run: their data equal without timings
    (floats to 1e-4), and the rest of their HTML `matches` with the speeds blanked."""
    import json

    shown_data, now_data = _DATA.search(shown), _DATA.search(now)
    if shown_data is None or now_data is None:
        return False
    if not _close(_without_timings(json.loads(shown_data[2])), _without_timings(json.loads(now_data[2]))):
        return False
    frame = [_SPEED_CELL.sub(r"\1…\2", _DATA.sub(r"\1\3", page)) for page in (shown, now)]
    return matches(*frame)


def check_pages(root: Path = ROOT) -> list[str]:
    """The example pages that are not what their commands write now, one entry each."""
    with tempfile.TemporaryDirectory(prefix="samplecli-pages-") as scratch:
        problems = write_pages(Path(scratch), root)
        for name in example_pages(root):
            shown, now = root / "docs" / "examples" / name, Path(scratch) / name
            if not shown.exists():
                problems.append(f"docs/examples/{name} is missing")
            elif now.exists() and not same_page(shown.read_text(encoding="utf-8"), now.read_text(encoding="utf-8")):
                problems.append(f"docs/examples/{name} is not what `{example_pages(root)[name]}` writes now")
    return problems


# --- running it ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(port: int | None, scratch: str):
    """llama-server on 127.0.0.1:PORT for the duration, or nothing when no port is given."""
    if port is None:
        yield
        return
    import importlib.util

    # scripts/build_llama_cpp.py, loaded by path (scripts/ is not a package), under the name the tests give it
    name = "samplecli_scripts_llama_cpp"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "build_llama_cpp.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    server = sys.modules[name].serve(port, log_dir=Path(scratch), **TOUR_SERVER)
    try:
        yield
    finally:
        server.stop()


def check(paths: list[Path], server: str | None = None, server_only: bool = False) -> list[str]:
    """What no longer matches, one entry per block: the file, the command, and both outputs (normalised).
    Blocks that need llama-server are checked only when `server` is given; `server_only`: only those."""
    problems = []
    for path in paths:
        found = [b for b in blocks(path.read_text(encoding="utf-8"))
                 if (server is not None or not b.needs_server) and (b.needs_server or not server_only)]
        for block, (status, output) in zip(found, run_all(found, server), strict=True):
            if status != 0:
                problems.append(f"{path.name}: `{block.command}` exits {status}:\n{output}")
            elif not matches(block.output, output):
                problems.append(f"{path.name}: `{block.command}` now prints:\n{output}\n--- the file shows:\n"
                                f"{block.output}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="the files to update (default: all with a tour)")
    parser.add_argument("--readme", type=Path, action="append", help="a file to update (the same as FILES)")
    parser.add_argument("--llama-server", type=int, metavar="PORT", help="serve the bundled model on this port")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an output changed")
    args = parser.parse_args(argv)
    chosen = [p.resolve() for p in [*args.files, *(args.readme or [])]]
    paths = chosen or tour_files()
    failed = False
    with tempfile.TemporaryDirectory() as scratch, serving(args.llama_server, scratch):
        server = f"http://127.0.0.1:{args.llama_server}" if args.llama_server is not None else None
        if args.check:
            problems = check(paths, server) + (check_pages() if not chosen else [])
            print("\n\n".join(problems) or "every output matches", file=sys.stderr)
            return 1 if problems else 0
        for path in paths:
            text = path.read_text(encoding="utf-8")
            found = blocks(text)
            runnable = [b for b in found if server is not None or not b.needs_server]
            if len(runnable) < len(found):
                print(f"{path.name}: {len(found) - len(runnable)} command(s) left as they are (they need "
                      "--llama-server 8080)", file=sys.stderr)
            results = dict(zip(runnable, run_all(runnable, server), strict=True))
            for block, (status, output) in results.items():
                print(f"{path.name}: $ {block.command}", file=sys.stderr)
                if status != 0:
                    failed = True
                    print(f"  exit {status}:\n{output}", file=sys.stderr)
            path.write_text(rewrite(text, [results[b][1] if b in results else b.output for b in found]),
                            encoding="utf-8")
    if not chosen:
        SVG.parent.mkdir(parents=True, exist_ok=True)
        SVG.write_text(live_svg(), encoding="utf-8")
        for failure in write_pages(EXAMPLES):
            failed = True
            print(failure, file=sys.stderr)
        first = next(iter(example_pages()), None)
        if first is not None and (EXAMPLES / first).exists():
            PNG.write_bytes(page_picture(EXAMPLES / first))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
