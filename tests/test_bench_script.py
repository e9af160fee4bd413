"""The benchmark script runs end to end with tiny sizes, so it cannot rot (no timing is asserted)."""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.needs_llama_cpp  # built before the first test (conftest), not inside this one


def test_bench_runs_with_tiny_sizes_and_reports_every_section(tmp_path):
    stdout = run_tiny_bench("bench.py", "--cache", str(tmp_path), "--no-remote")  # section 9: test_bench_remote.py
    for heading in ("## 1. Decode speed", "## 1b. GGUF models in process", "## 2. Cost of the per-step view",
                    "## 3. `compare`", "## 4. Start-up", "## 5. Memory-bandwidth ceiling", "## 6. Peak memory",
                    "## 7. A Llama-family model", "## 8. Threads, and one busy process"):
        assert heading in stdout
    # llama.cpp (llama-cpp-python, in the test extra) is measured, not skipped: its columns hold numbers
    assert "not measured" not in stdout, stdout
    assert "| bundled | greedy | " in stdout and "One greedy step of the bundled model on GGUF" in stdout
    assert "llama.cpp's loop on the same weights (GGUF f32)" in stdout
    assert "| gpt2-small shape | greedy |" in stdout
    assert "| gpt2-small shape | beam search (4 beams) |" in stdout
    assert not (tmp_path / "BENCHMARKS.md").exists()
