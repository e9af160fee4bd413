"""`--format html`: one self-contained page per command (generate, compare, inspect, score), opened from disk in a
real headless Chromium (scripts/headless.py, the DevTools protocol on a pipe): one element per token carrying its
step's numbers as the JSONL prints them, the step shown on hover and on focus, arrow keys, no request leaving the
page under its `default-src 'none'` policy, hostile tokens shown as text, and a 2,000-token page under 3 MB."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from html import unescape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplecli.cli.app import app
from samplecli.views.html import embedded_json, page, rounded
from tests.conftest import build_tiny_model, one_line_error

runner = CliRunner()
HOSTILE = ("</script>", "<img src=x onerror=alert(1)>", '"', "\u2028")


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="samplecli")


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    return result


def page_data(html: str) -> dict:
    """The JSON the page carries."""
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)[1])


def jsonl_steps(stdout: str, sample: int = 0) -> list[dict]:
    return [r for r in map(json.loads, stdout.splitlines()) if r["type"] == "step" and r["sample"] == sample]


def open_clean(browser, path: Path, **options):
    """The page at `path`, loaded, after its script ran to the end; it asked for nothing but itself and logged no
    error (a Content-Security-Policy violation included) and opened no dialog."""
    tab = browser.open(path, **options)
    assert tab.evaluate("document.body.dataset.ready") == "true"
    assert tab.requests() == [tab.url]
    assert tab.errors() == []
    assert tab.dialogs() == []
    return tab


# --- the page's text, without a browser ------------------------------------------------------------------------


def test_the_embedded_data_cannot_close_its_element_and_reads_back_as_it_was():
    data = {"tokens": [*HOSTILE, "a & b", "\u2029", "\ud800", "\x07"], "p": 0.123456789}
    text = embedded_json(data)
    assert not set("<>&\u2028\u2029") & set(text) and text.isascii()
    assert json.loads(text) == data


def test_the_policy_names_the_hashes_of_the_pages_one_script_and_one_style_sheet():
    html = page("score", {"model": "m", "tokens": 0, "characters": 0, "nats_per_token": 1.0, "perplexity": 2.0,
                          "bits_per_char": 1.0, "per_token": []}, worst=[])
    policy = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)[1])
    assert policy.startswith("default-src 'none';")
    script = re.search(r"<script>(.*?)</script>", html, re.S)[1]
    style = re.search(r"<style>(.*?)</style>", html, re.S)[1]
    for source, directive in ((script, "script-src"), (style, "style-src")):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    assert html.count("<script") == 2 and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_the_page_rounds_floats_to_six_digits_where_they_print_the_same_and_leaves_the_rest():
    assert rounded({"a": [0.1234567, 3, "x", None, True], "b": -1.0e-9 / 3}) == \
        {"a": [0.123457, 3, "x", None, True], "b": -3.33333e-10}
    assert rounded(0.66775002) == 0.66775002 and f"{rounded(0.667749):.4f}" == "0.6677"  # printed as the JSONL does


def test_score_output_takes_json_or_html_and_says_so_before_the_model_loads(tmp_path):
    one_line_error(invoke("score", "ROMEO:", "-o", str(tmp_path / "x.txt")), "--output", "-f html", code=2)
    one_line_error(invoke("inspect", "ROMEO:", "-o", str(tmp_path / "x.txt")), "--output", "-f html", code=2)
    one_line_error(invoke("score", "ROMEO:", "-f", "pdf"), "--format", "`pdf`", "html", code=2)
    one_line_error(invoke("inspect", "ROMEO:", "--pair", "a", "b", "-f", "html"), "--pair", "-f html", code=2)
    assert not (tmp_path / "x.txt").exists()


# --- generate ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A run of the bundled model as a page, two samples, and the same run as JSONL."""
    folder = tmp_path_factory.mktemp("generate")
    args = ("generate", "ROMEO:", "-n", "24", "--top-n", "6", "--seed", "3", "--num-samples", "2", "-q")
    ok(*args, "-f", "html", "-o", str(folder / "run.html"))
    return folder / "run.html", ok(*args, "-f", "jsonl").stdout


def test_every_token_is_one_element_carrying_its_steps_numbers_as_the_jsonl_prints_them(browser, generated):
    path, jsonl = generated
    tab = open_clean(browser, path)
    shown = tab.evaluate("[...document.querySelectorAll('#text .tok')].map(t => ({...t.dataset}))")
    steps = jsonl_steps(jsonl)
    assert len(shown) == len(steps) == 24
    for element, step in zip(shown, steps, strict=True):
        assert element == {"step": str(step["step"]), "tokenId": str(step["token_id"]),
                           "prob": f"{step['prob']:.4f}", "sampledProb": f"{step['sampled_prob']:.4f}",
                           "entropy": f"{step['entropy']:.3f}"}
    text = tab.evaluate("document.getElementById('text').innerText")
    assert "·" in text and "↵" in text  # spaces and newlines visible


def test_hovering_a_token_shows_its_step_and_alternatives(browser, generated):
    path, jsonl = generated
    tab = open_clean(browser, path)
    step = jsonl_steps(jsonl)[5]
    tab.hover("#text .tok:nth-child(6)")
    assert tab.evaluate("document.querySelector('#detail h2').textContent") == "step 5 of sample 0"
    facts = dict(tab.evaluate("[...document.querySelectorAll('#detail .facts tr')].map(r => [r.cells[0] ? "
                              "r.querySelector('th').textContent : '', r.querySelector('td').textContent])"))
    assert facts["p model"] == f"{step['prob']:.4f}" and facts["p strategy"] == f"{step['sampled_prob']:.4f}"
    assert facts["entropy model"] == f"{step['entropy']:.3f} nats" and facts["kept"] == str(step["kept"])
    rows = tab.evaluate("[...document.querySelectorAll('#detail .alternatives tr')].slice(1).map(r => "
                        "[r.cells[1].textContent, r.cells[2].textContent.trim(), r.className])")
    assert [r[1] for r in rows] == [f"{a['prob']:.4f}" for a in step["top"]]
    assert [r[2] == "chosen" for r in rows] == [a["token_id"] == step["token_id"] for a in step["top"]]
    assert tab.evaluate("document.querySelectorAll('#detail .alternatives svg.bar').length") == 2 * len(step["top"])


def test_the_arrow_keys_step_through_the_tokens_without_a_mouse(browser, generated):
    tab = open_clean(browser, generated[0])
    assert tab.evaluate("document.querySelectorAll('#text .tok[tabindex=\"0\"]').length") == 1  # one tab stop
    tab.evaluate("document.querySelector('#text .tok').focus()")
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowLeft"):
        tab.press(key)
    assert tab.evaluate("document.activeElement.dataset.step") == "2"
    assert tab.evaluate("document.querySelector('#detail h2').textContent") == "step 2 of sample 0"
    tab.press("End")
    assert tab.evaluate("document.activeElement.dataset.step") == "23"
    assert tab.evaluate("document.querySelector('#strip line.cursor').getAttribute('x1')") == "800"


def test_the_samples_are_tabs_and_the_colour_follows_the_toggle(browser, generated):
    path, jsonl = generated
    tab = open_clean(browser, path)
    assert tab.evaluate("[...document.querySelectorAll('#tabs button')].map(b => b.textContent)") == \
        ["sample 0", "sample 1"]
    tab.evaluate("document.getElementById('tab-1').click()")
    ids = tab.evaluate("[...document.querySelectorAll('#text .tok')].map(t => Number(t.dataset.tokenId))")
    assert ids == [s["token_id"] for s in jsonl_steps(jsonl, sample=1)]
    hues = "[...document.querySelectorAll('#text .tok')].map(t => t.style.getPropertyValue('--h'))"
    model = tab.evaluate(hues)
    tab.evaluate("document.querySelector('#colour input[value=sampled_prob]').click()")
    assert tab.evaluate(hues) != model  # top-p and temperature move some token's probability


def test_the_scheme_follows_the_browser_and_the_page_prints(browser, generated):
    background = "getComputedStyle(document.body).backgroundColor"
    light = open_clean(browser, generated[0]).evaluate(background)
    dark_tab = open_clean(browser, generated[0], dark=True)
    assert light != dark_tab.evaluate(background)
    dark_tab.call("Emulation.setEmulatedMedia", media="print")
    assert dark_tab.evaluate("getComputedStyle(document.getElementById('controls')).display") == "none"
    assert dark_tab.evaluate(background) == "rgb(255, 255, 255)"
    assert dark_tab.pdf().startswith(b"%PDF")


def test_a_screenshot_is_not_blank_and_has_the_reviewed_layout(browser, generated):
    from PIL import Image

    tab = open_clean(browser, generated[0], width=1280, height=800)
    image = Image.open(io.BytesIO(tab.screenshot())).convert("RGB")
    assert image.size == (1280, 800) and len(image.getcolors(1 << 20)) > 50
    box = ("(s => { const r = document.querySelector(s).getBoundingClientRect(); "
           "return [r.left, r.top, r.right, r.bottom]; })")
    header, text, detail, strip = (tab.evaluate(f"{box}('{s}')") for s in ("header", "#text", "#detail", "#strip"))
    assert header[3] <= text[1] and text[2] < detail[0]  # the header over the text, the step's panel beside it
    assert strip[1] >= max(text[3], 0) and strip[2] <= 1280  # the entropy strip under the text
    assert tab.evaluate("document.documentElement.scrollWidth") <= 1280  # nothing wider than the window
    narrow = open_clean(browser, generated[0], width=600, height=800)
    text, detail = (narrow.evaluate(f"{box}('{s}')") for s in ("#text", "#detail"))
    assert detail[1] >= text[3]  # a narrow window puts the panel under the text
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 600


def test_beam_search_shows_each_returned_beam_as_a_tab(browser, tmp_path):
    ok("generate", "ROMEO:", "-n", "6", "--num-beams", "3", "--num-return-sequences", "2", "-q", "-f", "html",
       "-o", str(tmp_path / "beam.html"))
    tab = open_clean(browser, tmp_path / "beam.html")
    assert tab.evaluate("[...document.querySelectorAll('#tabs button')].map(b => b.textContent)") == \
        ["beam 1", "beam 2"]
    assert tab.evaluate("document.querySelectorAll('#text .tok').length") > 0
    assert tab.evaluate("document.querySelectorAll('details.beam tr').length") == 1 + 6


# --- compare, inspect, score ------------------------------------------------------------------------------------


def test_compare_aligns_the_columns_by_step_and_marks_where_they_part(browser, tmp_path):
    args = ("compare", "ROMEO:", "-s", "greedy", "-s", "top-k=40", "-s", "temperature=1.5", "-n", "12", "--seed", "1")
    ok(*args, "-f", "html", "-o", str(tmp_path / "compare.html"))
    report = json.loads(ok(*args, "-f", "json").stdout)
    tab = open_clean(browser, tmp_path / "compare.html")
    cells = tab.evaluate("[...document.querySelectorAll('#grid tr')].slice(1).map(r => "
                         "[...r.querySelectorAll('td.tokcell')].map(c => c.querySelector('.tok').dataset.prob))")
    assert len(cells) == 12 and all(len(row) == 3 for row in cells)
    marked = tab.evaluate("[...document.querySelectorAll('#grid tr')].slice(1).map(r => "
                          "[...r.querySelectorAll('td.tokcell')].map(c => c.classList.contains('diverge')))")
    for column, section in enumerate(report["strategies"]):
        assert [row[column] for row in marked] == [step == section["diverges_at"] for step in range(12)]
    metrics = tab.evaluate("[...document.querySelectorAll('#metrics tr')].slice(1).map(r => r.cells[0].textContent)")
    assert metrics == ["greedy", "top-k=40", "temperature=1.5", "human"]
    assert tab.evaluate("document.documentElement.scrollWidth") <= 1280  # a wide table scrolls in its own box
    tab.hover("#grid tr:nth-child(3) td.tokcell:nth-child(3) .tok")
    assert tab.evaluate("document.querySelector('#detail h2').textContent") == "top-k=40, step 1"
    tab.evaluate("document.querySelector('#grid tr:nth-child(3) td.tokcell:nth-child(3) .tok').focus()")
    tab.press("ArrowDown")  # down the column
    assert tab.evaluate("document.querySelector('#detail h2').textContent") == "top-k=40, step 2"
    tab.press("ArrowRight")  # along the row
    assert tab.evaluate("document.querySelector('#detail h2').textContent") == "temperature=1.5, step 2"


def test_inspect_draws_the_distribution_the_stages_and_the_sweep(browser, tmp_path):
    args = ("inspect", "ROMEO:\nI", "--top-k", "40", "--top-p", "0.9", "--temps", "0.5,1,2", "--top-n", "5",
            "--seed", "1")
    ok(*args, "-f", "html", "-o", str(tmp_path / "inspect.html"))
    report = json.loads(ok(*args, "-f", "json").stdout)
    tab = open_clean(browser, tmp_path / "inspect.html")
    probs = tab.evaluate("[...document.querySelectorAll('#distribution tr')].slice(1).map(r => r.cells[4].textContent)")
    assert probs == [f"{t['prob']:.4f}" for t in report["top"]]
    stages = tab.evaluate("[...document.querySelectorAll('#stages tr')].slice(1).map(r => r.cells[0].textContent)")
    assert stages == [s["name"] for s in report["stages"]]
    assert tab.evaluate("document.querySelectorAll('#sweep circle').length") == 3


def test_score_colours_the_text_by_surprisal_and_lists_the_worst_positions(browser, tmp_path):
    text = "ROMEO:\nI will not stay, for the night is cold."
    written = ok("score", text, "-f", "html", "-o", str(tmp_path / "score.html"))
    assert written.stdout == "" and written.stderr == f"wrote {tmp_path / 'score.html'}\n"
    report = json.loads(ok("score", text, "--per-token", "-f", "json").stdout)
    tab = open_clean(browser, tmp_path / "score.html")
    nats = tab.evaluate("[...document.querySelectorAll('#text .tok')].map(t => t.dataset.nats)")
    assert nats == [f"{t['nats']:.3f}" for t in report["per_token"]]
    worst = sorted(report["per_token"], key=lambda t: -t["nats"])[:10]
    listed = tab.evaluate("[...document.querySelectorAll('.worst a')].map(a => a.textContent)")
    assert listed == [f"position {t['position']}" for t in worst]
    tab.evaluate("document.querySelector('.worst a').click()")
    assert tab.evaluate("document.activeElement.dataset.step") == str(worst[0]["position"])


# --- hostile tokens and size ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    """A tiny random GPT-2 whose vocabulary holds a token that closes a script element, one that is an image
    with an onerror handler, a quote and U+2028."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = build_tiny_model(tmp_path_factory.mktemp("hostile"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(list(HOSTILE))
    model = GPT2LMHeadModel.from_pretrained(path)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hostile_tokens_render_as_text_and_run_nothing(browser, hostile_model, tmp_path):
    bias = [arg for token in HOSTILE for arg in ("--logit-bias", f"{token}=8")]
    ok("generate", "ROMEO: </script>", "-m", str(hostile_model), "-n", "16", "--top-n", "8", "--seed", "1",
       "-q", *bias, "-f", "html", "-o", str(tmp_path / "generate.html"))
    ok("score", "".join(HOSTILE) + " ROMEO", "-m", str(hostile_model), "-f", "html", "-o",
       str(tmp_path / "score.html"))
    shown = {"</script>", "<img·src=x·onerror=alert(1)>", '"', "\u2028"}
    for name in ("generate.html", "score.html"):
        tab = open_clean(browser, tmp_path / name)
        tab.hover("#text .tok")
        texts = set(tab.evaluate("[...document.querySelectorAll('#text .tok, #detail td')].map(t => t.textContent)"))
        assert shown <= texts, shown - texts
        assert tab.evaluate("document.querySelectorAll('img, script').length") == 2  # its own two scripts
        assert tab.dialogs() == [] and tab.errors() == []


def test_a_lone_surrogate_and_a_control_character_show_as_escapes(browser, generated, tmp_path):
    data = page_data(generated[0].read_text(encoding="utf-8"))
    del data["kind"], data["top_columns"]
    steps = data["samples"][0]["steps"]
    steps[0]["text"], steps[1]["text"] = "\ud800", "a\x07b"
    steps[2]["top"][0][1] = "\x1b[31m"
    (tmp_path / "odd.html").write_text(page("generate", data), encoding="utf-8")
    tab = open_clean(browser, tmp_path / "odd.html")
    texts = tab.evaluate("[...document.querySelectorAll('#text .tok')].slice(0, 2).map(t => t.textContent)")
    assert texts == ["\\ud800", "a\\x07b"]
    tab.hover("#text .tok:nth-child(3)")
    assert tab.evaluate("document.querySelector('#detail .alternatives tr:nth-child(2) td.mono').textContent") == \
        "\\x1b[31m"


def test_a_2000_token_page_with_20_alternatives_a_step_stays_under_3_mb_and_opens(browser, tmp_path):
    model = build_tiny_model(tmp_path / "model", n_positions=2048)
    ok("generate", "", "-m", str(model), "-n", "2000", "--min-new-tokens", "2000", "--top-n", "20", "--seed", "1",
       "-q", "-f", "html", "-o", str(tmp_path / "long.html"))
    size = (tmp_path / "long.html").stat().st_size
    assert size < 3_000_000, size
    tab = open_clean(browser, tmp_path / "long.html")
    assert tab.evaluate("document.querySelectorAll('#text .tok').length") == 2000
    tab.hover("#text .tok:last-child")
    assert tab.evaluate("document.querySelectorAll('#detail .alternatives tr').length") == 1 + 20


def test_a_run_interrupted_before_its_first_token_still_writes_a_page_that_says_so(browser, tmp_path):
    from samplecli.views.html import HtmlSink

    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), HtmlSink(stream, {"model": "bundled", "prompt": "ROMEO:", "strategy":
                                                             "logits -> greedy", "seed": None, "max_new_tokens": 8}):
        raise KeyboardInterrupt
    (tmp_path / "cut.html").write_text(stream.getvalue(), encoding="utf-8")
    assert "interrupted: this page holds what was generated before the run stopped" in stream.getvalue()
    tab = open_clean(browser, tmp_path / "cut.html")
    assert tab.evaluate("document.querySelectorAll('#text .tok').length") == 0
