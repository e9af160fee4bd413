"""docs/why.md from docs/why.toml: each question's answer, its command and the command's real output.

docs/why.toml holds, per question, the answer (two paragraphs whose `{name}` placeholders are figures),
the `samplecli` commands (`a | b` feeds a's stdout to b) and each figure as [regex on the output, value].
This script reruns the commands in process on the bundled model, checks every figure against the run,
and writes docs/why.md. tests/test_why.py reads the same TOML and checks the same figures.

    python scripts/why_docs.py            # write docs/why.md; exit 1 if a figure no longer matches
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOML = ROOT / "docs" / "why.toml"
DOC = ROOT / "docs" / "why.md"
ENV = {"NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb"}


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    answer: str
    commands: list[str]  # each: samplecli commands joined by " | "
    figures: dict[str, tuple[str, str, int | None]]  # name -> (regex with one group, the value the answer quotes,
    # which command's output it reads: None for any)
    extra: str = ""  # markdown after the output (a worked example)


def load(path: Path = TOML) -> list[Section]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Section(id=s["id"], title=s["title"], answer=s["answer"].strip(), commands=s["commands"],
                    figures={k: (v[0], v[1], v[2] if len(v) > 2 else None) for k, v in s.get("figures", {}).items()},
                    extra=s.get("extra", "").strip())
            for s in data["section"]]


def run(command: str, cwd: Path = ROOT) -> str:
    """Every stage of `command` in process; returns the last stage's stdout and stderr (stderr after).
    A stage's stdout is the next one's stdin. Raises RuntimeError when a stage fails."""
    import os

    from typer.testing import CliRunner

    from samplecli.cli.app import app

    runner = CliRunner()
    stdin, shown = None, ""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        for stage in command.split(" | "):
            args = shlex.split(stage)
            result = runner.invoke(app, args, input=stdin, env=ENV, prog_name="samplecli")
            if result.exit_code != 0:
                raise RuntimeError(f"`samplecli {stage}` exited {result.exit_code}: {result.stderr}"
                                   f"{result.exception!r}")
            stdin = result.stdout
            shown = result.stdout + (("\n" + result.stderr) if result.stderr.strip() else "")
    finally:
        os.chdir(here)
    return shown


def run_all(section: Section) -> list[str]:
    return [run(command) for command in section.commands]


def measured(section: Section, outputs: list[str]) -> dict[str, str | None]:
    """Each figure as the run shows it (None where its regex finds nothing)."""
    found = {}
    for name, (pattern, _, index) in section.figures.items():
        match = re.search(pattern, "\n".join(outputs) if index is None else outputs[index], re.MULTILINE)
        found[name] = match.group(1) if match else None
    return found


def mismatches(section: Section, outputs: list[str]) -> list[str]:
    return [f"{section.id}.{name}: the docs quote {section.figures[name][1]!r}, the run shows {value!r}"
            for name, value in measured(section, outputs).items() if value != section.figures[name][1]]


def shown_command(command: str) -> str:
    return " | ".join(f"samplecli {stage}" for stage in command.split(" | "))


def render(sections: list[Section], outputs: dict[str, list[str]]) -> str:
    parts = [
        "# Why: the questions behind samplecli, each answered by a command\n",
        "Each section answers one question in plain words and shows one command's real output on the bundled "
        "model (Tiny Shakespeare, V = 2048 tokens). Every number the answers quote is read from that output by "
        "`tests/test_why.py`; `python scripts/why_docs.py` reruns the commands from `docs/why.toml` and writes "
        "this page.\n",
    ]
    for i, s in enumerate(sections, 1):
        values = {name: value for name, (_, value, _) in s.figures.items()}
        blocks = "\n".join(f"$ {shown_command(c)}\n{out.rstrip()}" for c, out in zip(s.commands, outputs[s.id],
                                                                                     strict=True))
        parts.append(f"## {i}. {s.title}\n\n{s.answer.format(**values)}\n\n```\n{blocks}\n```\n")
        if s.extra:
            parts.append(s.extra.format(**values) + "\n")
    return "\n".join(parts)


def main() -> int:
    sections = load()
    outputs, bad = {}, []
    only = set(sys.argv[1:])
    for s in sections:
        if only and s.id not in only:
            continue
        print(f"[{s.id}]", file=sys.stderr)
        outputs[s.id] = run_all(s)
        bad += mismatches(s, outputs[s.id])
    if not only:
        DOC.write_text(render(sections, outputs), encoding="utf-8")
    else:
        for s in sections:
            if s.id in only:
                print("\n\n".join(outputs[s.id]))
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
