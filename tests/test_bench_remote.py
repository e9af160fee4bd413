"""The remote-engine benchmark (scripts/bench_remote.py, bench.py's section on llama-server) runs end to end with
tiny sizes against a real `llama-server -np 4` it starts and stops itself, so it cannot rot (no timing is
asserted)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.needs_llama_cpp  # built before the first test (conftest), not inside this one
NUMBER = r"\d+\.\d"


def test_remote_bench_runs_with_tiny_sizes_and_reports_every_table():
    out = run_tiny_bench("bench_remote.py", timeout=300)
    assert "Not measured" not in out, out
    for heading in ("### (a) `generate`, sampled on the server", "### (b) `generate --sample-locally`",
                    "### (c) `compare`: 4 strategies x 4 samples"):
        assert heading in out
    for strategy in ("greedy", r"top-p \(T 0\.8, p 0\.95\)"):
        # (a): samplecli, plain stream, plain whole, ratio, plain stream + n_probs, ratio, samplecli top-20, ratio;
        # (b): three numbers
        assert re.search(rf"^\| {strategy} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| \*\*\d+\.\d\dx\*\* \| {NUMBER} \| "
                         rf"\*\*\d+\.\d\dx\*\* \| {NUMBER} \| \*\*\d+\.\d\dx\*\* \|$", out, re.M), out
        assert re.search(rf"^\| {strategy} \| {NUMBER} \| {NUMBER} \| \*\*\d+\.\d\dx\*\* \|$", out, re.M), out
    rows = re.findall(rf"^\| (\d+) \| (\d+) \| {NUMBER} \| {NUMBER} \| \*\*\d+\.\d\dx\*\* \|$", out, re.M)
    assert [int(c) for c, _ in rows] == [1, 4, 16]
    assert all(0 < int(tokens) <= 16 * 8 for _, tokens in rows)  # 16 rows of at most 8 tokens
