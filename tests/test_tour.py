"""The README and docs/ show what the commands print now: every `$ command` block of a tour is rerun
(scripts/update_readme_tour.py, `samplecli` in this process) and its output compared, with what varies by machine
blanked; no command is shown outside a tour; no file names a path of the machine it was written on; and the
picture of the live panel is the one a run draws now."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# generated and checked elsewhere: docs/why.md by scripts/why_docs.py and tests/test_why.py
OWN_GENERATOR = {"why.md"}
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:work|home|tmp|Users|root|private|var/folders|opt)/")


def tour_script():
    name = "samplecli_scripts_update_readme_tour"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "update_readme_tour.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.needs_llama_cpp  # docs/two-models.md's GGUFs of the bundled model
def test_every_command_of_the_readme_and_docs_prints_what_they_show():
    tour = tour_script()
    paths = tour.tour_files(ROOT)  # the commands that need llama-server are the next test's
    assert {ROOT / "README.md", ROOT / "docs" / "commands.md", ROOT / "docs" / "chat.md"} <= set(paths)
    problems = tour.check(paths)
    assert not problems, "rerun `python scripts/update_readme_tour.py`:\n\n" + "\n\n".join(problems)


def test_the_remote_engine_doc_and_the_readmes_server_output_print_what_they_show(start_llama_server):
    tour = tour_script()
    llama_server = start_llama_server(**tour.TOUR_SERVER)  # its own: one slot, no prompt cache (deterministic)
    remote = ROOT / "docs" / "remote.md"
    assert tour.needs_server(remote.read_text(encoding="utf-8"))
    assert tour.needs_server(README.read_text(encoding="utf-8"))  # its real output from llama-server
    problems = tour.check([remote, README], server=llama_server.url, server_only=True)
    assert not problems, ("rerun `python scripts/update_readme_tour.py README.md docs/remote.md --llama-server "
                          "8080`:\n\n" + "\n\n".join(problems))


def test_no_command_is_shown_outside_a_tour():
    tour = tour_script()
    for path in DOCS:
        if path.name in OWN_GENERATOR:
            continue
        text = path.read_text(encoding="utf-8")
        shown = [m["command"] for m in tour.BLOCK.finditer(text)]
        assert shown == [b.command for b in tour.blocks(text)], f"{path.name}: a `$ command` block outside a tour"


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_no_doc_names_an_absolute_path(path):
    text = path.read_text(encoding="utf-8")
    found = [line for line in text.splitlines() if ABSOLUTE.search(line)]
    assert not found, f"{path.name} holds a path of the machine it was written on:\n" + "\n".join(found)


def test_the_absolute_path_check_finds_what_it_must_and_only_that():
    for line in ("source preset creative (/work/main/presets/creative.toml)", "see /home/me/x", "at /tmp/x.txt",
                 "/Users/me/samplecli", "in /private/var/x"):
        assert ABSOLUTE.search(line), line
    for line in ("presets/creative.toml", "~/.config/samplecli/presets", "https://example.org/tmp/x", "a/tmp/b",
                 "`/proc/x` cannot be written", "./work/x"):
        assert not ABSOLUTE.search(line), line


def test_normalise_blanks_speeds_timings_and_trailing_spaces_and_nothing_else():
    normalise = tour_script().normalise
    summary = "40 tokens · 486.4 tok/s · mean entropy 2.59 nats (strategy 1.67) · perplexity 5.18"
    assert normalise(summary) == "40 tokens · … tok/s · mean entropy 2.59 nats (strategy 1.67) · perplexity 5.18"
    assert normalise("tokens: 30\ntok/s: 339.0\nPPL: 3.84") == "tokens: 30\ntok/s: …\nPPL: 3.84"
    table = "| strategy | tokens | tok/s | PPL |\n|---|---:|---:|---:|\n| greedy | 40 | 364.8 | 3.73 |\n\nafter | 1 | 2"
    assert normalise(table) == ("| strategy | tokens | tok/s | PPL |\n|---|---:|---:|---:|\n| greedy | 40 | … | 3.73 |"
                                "\n\nafter | 1 | 2")
    record = '{"logprob": -0.013264977373182774, "seconds": 0.0671, "tokens_per_second": 29.79, "n_tokens": 2}'
    assert normalise(record) == '{"logprob": -0.013265, "seconds": …, "tokens_per_second": …, "n_tokens": 2}'
    assert normalise("a title   \n┏━━┓ ") == "a title\n┏━━┓"


def test_a_figure_may_differ_by_one_in_its_last_digit_and_nothing_else_may():
    matches = tour_script().matches
    assert matches("perplexity 61.936 · 15 tokens", "perplexity 61.935 · 15 tokens")
    assert not matches("perplexity 61.936 · 15 tokens", "perplexity 61.933 · 15 tokens")  # three in the last
    assert not matches("perplexity 61.937", "perplexity 61.934")
    assert not matches("nats/token 4.1261", "nats/token 4.1264")  # three in the last digit, 7e-5 of itself
    assert not matches("15 tokens", "16 tokens")  # counts are exact
    assert not matches("p 0.50", "p 0.5")  # a figure shown with other digits
    assert not matches("perplexity 61.936 · the text", "perplexity 61.935 · another text")


def test_the_picture_of_the_live_panel_is_the_one_a_run_draws_now():
    svg = tour_script().live_svg()
    shown = (ROOT / "docs" / "images" / "live.svg").read_text(encoding="utf-8")
    assert svg == shown, "rerun `python scripts/update_readme_tour.py` (it draws docs/images/live.svg)"
    assert "temperature(0.8)" in svg and "top-p(0.95)" in svg  # the default strategy's chain, as the title
    assert "docs/images/live.svg" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_example_pages_are_what_the_docs_commands_write_now():
    tour = tour_script()
    pages = tour.example_pages(ROOT)
    assert set(pages) == {"generate.html", "compare.html", "inspect.html", "score.html"}
    assert {p.name for p in (ROOT / "docs" / "examples").glob("*.html")} == set(pages)
    problems = tour.check_pages(ROOT)
    assert not problems, "rerun `python scripts/update_readme_tour.py` (it writes docs/examples/):\n" + \
        "\n".join(problems)


def test_a_page_differs_from_another_run_only_in_its_timings():
    tour = tour_script()
    shown = (ROOT / "docs" / "examples" / "generate.html").read_text(encoding="utf-8")
    assert tour.same_page(shown, re.sub(r'"tokens_per_second":[\d.e-]+', '"tokens_per_second":1', shown))
    assert not tour.same_page(shown, shown.replace('"finish_reason":"length"', '"finish_reason":"stop"', 1))
    assert not tour.same_page(shown, shown.replace("<h1>samplecli generate</h1>", "<h1>samplecli</h1>"))


def test_the_picture_of_a_page_is_a_screenshot_the_readme_and_docs_show():
    from PIL import Image

    image = Image.open(ROOT / "docs" / "images" / "html.png").convert("RGB")
    assert image.size == tour_script().PNG_SIZE and len(image.getcolors(1 << 20)) > 50  # not blank
    assert "docs/images/html.png" in README.read_text(encoding="utf-8")
    assert "images/html.png" in (ROOT / "docs" / "html.md").read_text(encoding="utf-8")
    assert "docs/examples/generate.html" in README.read_text(encoding="utf-8")
