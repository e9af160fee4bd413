"""The Python examples of docs/strategies.md run as written (the plugin's test among them), and the code is
ruff-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    text = (ROOT / "docs" / "strategies.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_examples_of_the_docs_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 3
    # the API example, "adding a strategy", the plugin's test (run on the class registered in this process), then
    # the class through the same chain syntax as `--chain`
    script = "\n\n".join(blocks) + """

test_the_floor_runs_from_the_command_line_and_the_registry_lists_it()

from samplecli.strategies import build_strategy, describe_registry
built = build_strategy({}, chain="floor=0.2,temperature=0.9")
assert str(built.strategy) == "logits -> floor(0.2) -> temperature(0.9) -> sample", built.strategy
p = built.strategy.distribution(torch.tensor([[2.0, 1.0, 0.5, -1.0]]), torch.tensor([[0]]))
assert (p[0, 2:] == 0).all() and abs(float(p.sum()) - 1) < 1e-6
assert "floor" in [row["name"] for row in describe_registry()]
try:
    Floor(floor=1.5)
except Exception as exc:
    assert "`floor` has to be in [0, 1), but is 1.5" in str(exc)
else:
    raise AssertionError("Floor(floor=1.5) was accepted")
"""
    path = tmp_path / "readme_example.py"
    path.write_text(script, encoding="utf-8")
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None and shutil.which(str(Path(sys.executable).parent / "ruff")) is None,
                    reason="ruff is not installed (pip install -e '.[test]')")
def test_the_code_is_ruff_clean():
    ruff = shutil.which(str(Path(sys.executable).parent / "ruff")) or shutil.which("ruff")
    result = subprocess.run([ruff, "check", "samplecli", "tests", "scripts"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
