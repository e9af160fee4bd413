"""Rerun every command in the README's tour and put its real output under it.

The tour lies between `<!-- TOUR -->` and `<!-- /TOUR -->`. Each fenced block there whose first line is
`$ COMMAND` is rerun with bash (stdout and stderr together, `NO_COLOR=1`, 100 columns, in a scratch
directory) and everything after that first line is replaced by what the command printed.

    python scripts/update_readme_tour.py
    python scripts/update_readme_tour.py --readme docs/remote.md --llama-server 8080

With `--llama-server PORT`, llama.cpp's server runs on that port while the commands run, serving the bundled
model as GGUF (built and cached by scripts/llama_cpp.py). It exits 1, after writing, if a command failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```\n\$ (?P<command>[^\n]*)\n(?P<output>.*?)```", re.DOTALL)


def run(command: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb"}
    return subprocess.run(["bash", "-c", f"{{ {command}; }} 2>&1"], capture_output=True, text=True, cwd=cwd, env=env)


def update(text: str, cwd: str) -> tuple[str, list[str]]:
    """The README with every tour block's output replaced, and the commands that failed."""
    start, end = text.index("<!-- TOUR -->"), text.index("<!-- /TOUR -->")
    failed = []

    def fill(match: re.Match) -> str:
        command = match["command"]
        print(f"$ {command}", file=sys.stderr)
        result = run(command, cwd)
        if result.returncode != 0:
            failed.append(command)
            print(f"  exit {result.returncode}:\n{result.stdout}", file=sys.stderr)
        return f"```\n$ {command}\n{result.stdout.rstrip()}\n```"

    return text[:start] + BLOCK.sub(fill, text[start:end]) + text[end:], failed


@contextlib.contextmanager
def serving(port: int | None, scratch: str):
    """llama-server on 127.0.0.1:PORT for the duration, or nothing when no port is given."""
    if port is None:
        yield
        return
    import importlib.util

    # scripts/llama_cpp.py, loaded by path: the name `llama_cpp` belongs to llama-cpp-python
    spec = importlib.util.spec_from_file_location("samplecli_scripts_llama_cpp",
                                                  Path(__file__).resolve().parent / "llama_cpp.py")
    llama_cpp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llama_cpp)

    log = open(Path(scratch) / "llama-server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(llama_cpp.server_binary()), "-m", str(llama_cpp.gguf_model()), "--host",
                                "127.0.0.1", "--port", str(port), "-np", "4", "--ctx-size", "1024", "-t", "1",
                                "--no-webui"], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--llama-server", type=int, metavar="PORT", help="serve the bundled model on this port")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch, serving(args.llama_server, scratch):
        text, failed = update(args.readme.read_text(encoding="utf-8"), scratch)
    args.readme.write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
