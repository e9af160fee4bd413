"""`scripts/bench_vocab.py` runs end to end with tiny sizes and prints its tables whole (no timing is asserted)."""

from __future__ import annotations

from tests.conftest import run_tiny_bench


def test_bench_vocab_prints_a_table_per_row_count_and_the_score_memory_table(tmp_path):
    stdout = run_tiny_bench("bench_vocab.py", "--cache", str(tmp_path))
    tables = [block for block in stdout.split("\n\n") if block.lstrip().startswith("|")]
    assert len(tables) == 3, stdout
    for rows_table in tables[:2]:
        lines = rows_table.strip().splitlines()
        assert lines[0] == "| part | V = 512 | V = 2,048 |"
        parts = [line.split("|")[1].strip() for line in lines[2:]]
        assert parts == ["raw log-softmax + entropy", "top-10 alternatives", "sampling order", "top-p 0.95",
                         "typical 0.95", "top-h candidates (100)", "strategy entropy, kept, KL", "rank + --logprob-of",
                         "**all parts**"]
        for line in lines[2:]:
            cells = line.strip("|").split("|")[1:]
            assert len(cells) == 2 and all("->" in cell for cell in cells), line
    score_lines = tables[2].strip().splitlines()
    assert score_lines[0].startswith("| tokens | tree | peak RSS |")
    assert [line.split("|")[1].strip() for line in score_lines[2:]] == ["16", "96"]
    assert all(" MB |" in line for line in score_lines[2:])
