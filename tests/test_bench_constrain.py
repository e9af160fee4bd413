"""`scripts/bench_constrain.py` runs end to end at the tiny size and prints its table whole: a row per tokenizer
family and language, every cell a number (no timing is asserted)."""

from __future__ import annotations

from tests.conftest import run_tiny_bench, table_rows


def test_bench_constrain_prints_the_mask_cost_of_both_libraries_for_both_tokenizer_families():
    stdout = run_tiny_bench("bench_constrain.py")
    rows = table_rows(stdout)
    assert rows[0].startswith("| tokenizer | V | language | samplecli stage | llguidance mask | outlines-core mask")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        ("byte-level BPE", "2,048", "JSON schema"), ("byte-level BPE", "2,048", "regex"),
        ("SentencePiece", "2,048", "JSON schema"), ("SentencePiece", "2,048", "regex")]
    for row in cells:
        assert all(float(cell.replace(",", "")) >= 0 for cell in row[3:]), row
