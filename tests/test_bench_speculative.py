"""`scripts/bench_speculative.py` runs end to end at the tiny size and prints its table whole: a row per model, draft
and strategy, every cell a number (no timing is asserted)."""

from __future__ import annotations

from tests.conftest import run_tiny_bench, table_rows


def test_bench_speculative_prints_speculative_against_plain_for_each_draft(tmp_path):
    stdout = run_tiny_bench("bench_speculative.py", "--cache", str(tmp_path))
    rows = table_rows(stdout)
    assert rows[0].startswith("| model | draft | K | strategy | α |")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    drafts = [c[1] for c in cells]
    assert drafts == ["bundled-draft", "ngram", "itself"] * 2 + ["random 32 x 1", "itself"]
    for row in cells:
        assert all(float(cell.rstrip("x").replace(",", "")) >= 0 for cell in row[4:]), row
    # the target as its own draft keeps every token: K + 1 tokens a round
    assert [c[4] for c in cells if c[1] == "itself"] == ["1.000"] * 3
