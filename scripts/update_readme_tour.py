"""Rerun every command in the README's tour and put its real output under it.

The tour lies between `<!-- TOUR -->` and `<!-- /TOUR -->`. Each fenced block there whose first line is
`$ COMMAND` is rerun with bash (stdout and stderr together, `NO_COLOR=1`, 100 columns, in a scratch
directory) and everything after that first line is replaced by what the command printed.

    python scripts/update_readme_tour.py

It exits 1, after writing, if a command failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        text, failed = update(args.readme.read_text(encoding="utf-8"), scratch)
    args.readme.write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
