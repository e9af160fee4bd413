"""The benchmark script runs end to end with tiny sizes, so it cannot rot (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.needs_llama_cpp  # built before the first test (conftest), not inside this one


def test_bench_runs_with_tiny_sizes_and_reports_every_section(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--sizes", "tiny", "--cache",
                             str(tmp_path), "--no-remote"], capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]  # section 9 (llama-server): tests/test_bench_remote.py
    for heading in ("## 1. Decode speed", "## 1b. GGUF models in process", "## 2. Cost of the per-step view",
                    "## 3. `compare`", "## 4. Start-up", "## 5. Memory-bandwidth ceiling", "## 6. Peak memory",
                    "## 7. A Llama-family model", "## 8. Threads, and one busy process"):
        assert heading in result.stdout
    # llama.cpp (llama-cpp-python, in the test extra) is measured, not skipped: its columns hold numbers
    assert "not measured" not in result.stdout, result.stdout
    assert "| bundled | greedy | " in result.stdout and "One greedy step of the bundled model on GGUF" in result.stdout
    assert "llama.cpp's loop on the same weights (GGUF f32)" in result.stdout
    assert "| gpt2-small shape | greedy |" in result.stdout
    assert "| gpt2-small shape | beam search (4 beams) |" in result.stdout
    assert not (tmp_path / "BENCHMARKS.md").exists()
