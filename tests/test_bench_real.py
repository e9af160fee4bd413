"""`scripts/bench_real.py` runs end to end with tiny sizes and prints every table whole, a row per model and path
(no timing is asserted); `write_section` replaces its own section of BENCHMARKS.md and nothing else."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.conftest import run_tiny_bench

ROOT = Path(__file__).resolve().parent.parent


def tables(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in text.split("\n\n") if block.lstrip().startswith("|")]


def test_bench_real_measures_every_path_on_both_models(tmp_path):
    stdout = run_tiny_bench("bench_real.py", "--cache", str(tmp_path), timeout=900, one_thread=False)
    found = tables(stdout)
    assert [t[0] for t in found] == [
        "| model | V | strategy | samplecli tok/s | generate() tok/s | vs generate() | own work |",
        "| model | V | strategy | samplecli tok/s | llama.cpp tok/s | vs llama.cpp |",
        "| model | samplecli | tok/s | peer | tok/s | ratio |",
        "| model | V | setting change, median | slowest | memory per explored token |",
        "| model | command | weights | peak | peak / weights | above the weights |"], stdout
    torch_rows, gguf, served, explored, memory = (t[2:] for t in found)
    assert len(torch_rows) == len(gguf) == 4 and len(explored) == 2 and len(memory) == 4, stdout
    assert [row.split("|")[2].strip() for row in served] == [
        "`generate`, greedy", "`generate`, top-p (T 0.8, p 0.95)", "`generate --sample-locally`, top-p (8 tokens)",
        "`compare`, 4 strategies x 4 samples, --concurrency 4",
        "`score` over the server, 32 tokens (top 20; each token's own probability)"] * 2, stdout
    for row in torch_rows + gguf + served:
        assert "x** |" in row and "not measured" not in row, row
    scored = [row for row in memory if "`score`" in row]
    assert len(scored) == 2 and all(re.search(r"worst of 1 \(runs [\d,]+ MB; target [\d,]+ MB\)", row)
                                    for row in scored), scored


def test_write_section_replaces_section_10_alone(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_real import SECTION, write_section

    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## 9. Remote\n\nnine\n\n## Targets\n\nkept\n", encoding="utf-8")
    write_section(out, f"{SECTION} first\n\none")
    assert out.read_text() == f"# Benchmarks\n\n## 9. Remote\n\nnine\n\n{SECTION} first\n\none\n\n## Targets\n\nkept\n"
    write_section(out, f"{SECTION} again\n\ntwo")
    assert out.read_text() == f"# Benchmarks\n\n## 9. Remote\n\nnine\n\n{SECTION} again\n\ntwo\n\n## Targets\n\nkept\n"
