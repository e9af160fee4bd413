"""`scripts/bench_constrain.py` runs end to end at the tiny size and prints its table whole: a row per tokenizer
family and language, every cell a number (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_constrain_prints_the_mask_cost_of_both_libraries_for_both_tokenizer_families():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_constrain.py"), "--sizes", "tiny"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| tokenizer | V | language | samplecli stage | llguidance mask | outlines-core mask")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        ("byte-level BPE", "2,048", "JSON schema"), ("byte-level BPE", "2,048", "regex"),
        ("SentencePiece", "2,048", "JSON schema"), ("SentencePiece", "2,048", "regex")]
    for row in cells:
        assert all(float(cell.replace(",", "")) >= 0 for cell in row[3:]), row
