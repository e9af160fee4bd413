"""Teacher-forced scoring: the sliding windows, `score()` against the model's own loss, and `samplecli score`.

The oracle is transformers' loss: for each window, `model(input_ids=window, labels=labels)` with the
positions that window does not score set to -100; the text's nats are the sum of loss x scored tokens.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from samplecli.analysis.scoring import default_stride, score, sliding_windows
from samplecli.cli import app
from samplecli.strategies import build_strategy
from tests.conftest import TINY_TEXT, one_line_error, strict_loads

TINY_CONTEXT = 64  # build_tiny_model's n_positions
SHORT_TEXT = "ROMEO: But soft, what light"
LONG_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n"
    "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet.\n"
)
ANSI = "\x1b["

runner = CliRunner()


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input=input, env=env, prog_name="samplecli")


def score_cli(model_dir, *args: str, input: str | None = None, env: dict[str, str] | None = None):
    result = invoke("score", "--model", str(model_dir), *args, input=input, env=env)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def score_json(model_dir, *args: str, input: str | None = None) -> dict:
    result = score_cli(model_dir, "--format", "json", *args, input=input)
    assert result.stderr == ""
    return strict_loads(result.stdout)


def text_ids(lm, text: str) -> list[int]:
    """BOS + the text's tokens: what score() feeds the model."""
    return [lm.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]


# --- the sliding windows ------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(n_tokens=st.integers(0, 600), context=st.integers(2, 128), data=st.data())
def test_sliding_windows_score_every_position_once_within_the_context(n_tokens, context, data):
    stride = data.draw(st.integers(1, context - 1), label="stride")
    windows = sliding_windows(n_tokens, context, stride)
    scored = [p for w in windows for p in range(w.score_from, w.end)]
    assert scored == list(range(1, n_tokens))  # every position after the first, once, in order
    for i, w in enumerate(windows):
        assert 0 <= w.start < w.score_from < w.end <= n_tokens  # each window scores something and sees a token
        assert w.end - w.start <= context
        if n_tokens >= context:
            assert w.end - w.start == context  # windows stay full-length, the last one too
        if i > 0:
            # every scored token sees at least context - stride tokens before it once the first window is full
            assert w.score_from - w.start >= context - stride


@pytest.mark.parametrize(("context", "stride"), [(1, 1), (0, 1), (8, 0), (8, 8), (8, -1)],
                         ids=["context-1", "context-0", "stride-0", "stride-equals-context", "stride-negative"])
def test_sliding_windows_reject_a_context_or_stride_that_cannot_work(context, stride):
    with pytest.raises(ValueError, match="context|stride"):
        sliding_windows(100, context, stride)


def test_the_default_stride_is_half_the_context():
    assert default_stride(64) == 32 and default_stride(1024) == 512


# --- score() against the model's own loss -----------------------------------------------------------------------


def oracle_nats(lm, text: str, stride: int) -> tuple[float, int]:
    """Total nats of the text's tokens from transformers' loss over the same windows, and the token count."""
    ids = text_ids(lm, text)
    total = 0.0
    with torch.no_grad():
        for w in sliding_windows(len(ids), TINY_CONTEXT, stride):
            window = torch.tensor([ids[w.start: w.end]])
            labels = window.clone()
            labels[0, : w.score_from - w.start] = -100  # scored by an earlier window (or BOS): not here
            loss = lm.model(input_ids=window, labels=labels).loss
            total += float(loss) * (w.end - w.score_from)
    return total, len(ids) - 1


@pytest.mark.parametrize(("text", "stride"), [(SHORT_TEXT, None), (LONG_TEXT, 32), (LONG_TEXT, 16), (LONG_TEXT, 63),
                                              (LONG_TEXT, 1)],
                         ids=["short-one-window", "long-stride-32", "long-stride-16", "long-stride-63",
                              "long-stride-1"])
def test_score_equals_the_models_own_loss(tiny_lm, text, stride):
    result = score(tiny_lm, text, stride=stride)
    nats, tokens = oracle_nats(tiny_lm, text, stride or default_stride(TINY_CONTEXT))
    if text is LONG_TEXT:
        assert tokens > 2 * TINY_CONTEXT  # several windows
    else:
        assert tokens < TINY_CONTEXT  # one window
    assert result.tokens == tokens and result.characters == len(text)
    assert result.context == TINY_CONTEXT and result.stride == (stride or 32)
    assert result.nats_per_token == pytest.approx(nats / tokens, abs=1e-4)


def test_a_longer_stride_gives_less_context_and_so_a_different_score(tiny_lm):
    # the windows really differ: were the context ignored, every stride would give the same number
    assert score(tiny_lm, LONG_TEXT, stride=63).nats != score(tiny_lm, LONG_TEXT, stride=1).nats


# --- samplecli score --------------------------------------------------------------------------------------------


SCORE_KEYS = {"tokens", "characters", "nats", "nats_per_token", "nats_per_char", "bits_per_char", "perplexity"}


def test_score_json_has_the_documented_numbers_and_they_agree(tiny_model_dir, tiny_lm):
    document = score_json(tiny_model_dir, SHORT_TEXT)
    assert SCORE_KEYS <= document.keys()
    assert document["characters"] == len(SHORT_TEXT)
    assert document["tokens"] == len(text_ids(tiny_lm, SHORT_TEXT)) - 1
    assert document["nats_per_token"] == pytest.approx(document["nats"] / document["tokens"], rel=1e-12)
    assert document["nats_per_char"] == pytest.approx(document["nats"] / document["characters"], rel=1e-12)
    assert document["bits_per_char"] == pytest.approx(document["nats_per_char"] / math.log(2), rel=1e-12)
    assert document["perplexity"] == pytest.approx(math.exp(document["nats_per_token"]), rel=1e-12)
    assert document["nats"] == pytest.approx(score(tiny_lm, SHORT_TEXT).nats, rel=1e-9)
    assert "strategy" not in document and "per_token" not in document


def test_score_reads_the_same_text_from_an_argument_a_file_or_stdin(tiny_model_dir, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(SHORT_TEXT, encoding="utf-8")
    from_argument = score_json(tiny_model_dir, SHORT_TEXT)
    assert score_json(tiny_model_dir, "--file", str(path)) == from_argument
    assert score_json(tiny_model_dir, input=SHORT_TEXT) == from_argument
    # a file's trailing newline is part of its text, and the same newline piped in scores the same
    path.write_text(SHORT_TEXT + "\n", encoding="utf-8")
    with_newline = score_json(tiny_model_dir, "--file", str(path))
    assert with_newline["characters"] == len(SHORT_TEXT) + 1
    assert score_json(tiny_model_dir, input=SHORT_TEXT + "\n") == with_newline


def test_score_stride_flag_reaches_the_windows(tiny_model_dir, tiny_lm):
    document = score_json(tiny_model_dir, LONG_TEXT, "--stride", "16")
    assert document["stride"] == 16 and document["context"] == TINY_CONTEXT
    nats, tokens = oracle_nats(tiny_lm, LONG_TEXT, 16)
    assert document["nats_per_token"] == pytest.approx(nats / tokens, abs=1e-4)


def first_choice_text(lm) -> str:
    """A two-token text whose second token is the model's most probable one after the first (rank 1)."""
    specials = set(lm.tokenizer.all_special_ids)
    candidates = [i for i in range(lm.vocab_size) if i not in specials]
    with torch.no_grad():
        logits = lm.model(torch.tensor([[lm.bos_token_id, c] for c in candidates])).logits[:, -1]
    for first, row in zip(candidates, logits, strict=True):
        best = int(row.argmax())
        text = lm.tokenizer.decode([first, best])
        if best not in specials and lm.tokenizer(text, add_special_tokens=False)["input_ids"] == [first, best]:
            return text + SHORT_TEXT
    raise AssertionError("no token is followed by a printable first choice")


def model_logits(lm, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits predicting each text token, the text tokens), for a text within one window."""
    ids = torch.tensor(text_ids(lm, text))
    assert ids.numel() <= TINY_CONTEXT
    with torch.no_grad():
        logits = lm.model(ids.unsqueeze(0)).logits[0, :-1].double()
    return logits, ids[1:]


def test_per_token_rows_give_each_tokens_probability_surprisal_and_rank(tiny_model_dir, tiny_lm):
    text = first_choice_text(tiny_lm)
    document = score_json(tiny_model_dir, text, "--per-token")
    rows = document["per_token"]
    logits, targets = model_logits(tiny_lm, text)
    assert [r["position"] for r in rows] == list(range(document["tokens"])) == list(range(len(targets)))
    assert [r["token_id"] for r in rows] == targets.tolist()
    for row, row_logits, target in zip(rows, logits, targets.tolist(), strict=True):
        assert row["prob"] == pytest.approx(math.exp(-row["nats"]), rel=1e-9)
        assert row["nats"] == pytest.approx(-float(torch.log_softmax(row_logits, -1)[target]), abs=1e-5)
        assert row["rank"] == 1 + int((row_logits > row_logits[target]).sum()) >= 1
        assert (row["rank"] == 1) == (int(row_logits.argmax()) == target)
        assert row["token"] == tiny_lm.tokenizer.decode([target])
    assert rows[1]["rank"] == 1  # the text was built so
    assert sum(r["nats"] for r in rows) == pytest.approx(document["nats"], rel=1e-9)


def test_score_table_shows_the_summary_and_per_token_rows(tiny_model_dir):
    document = score_json(tiny_model_dir, SHORT_TEXT, "--per-token")
    result = score_cli(tiny_model_dir, SHORT_TEXT, "--per-token", env={"COLUMNS": "200"})
    assert result.stderr == "" and ANSI not in result.stdout
    out = result.stdout
    title = " ".join(out.split())  # Rich wraps a table's title to the table's width
    assert f"{document['tokens']} tokens, {len(SHORT_TEXT)} characters" in title
    for header in ("nats/token", "bits/char", "perplexity", "surprisal", "rank"):
        assert header in out
    assert f"{document['nats_per_token']:.4f}" in out and f"{document['perplexity']:.3f}" in out
    for row in document["per_token"]:
        assert f"{row['prob']:.4f}" in out and f"{row['nats']:.3f}" in out


def test_score_table_notes_the_sliding_window_for_a_long_text(tiny_model_dir):
    out = score_cli(tiny_model_dir, LONG_TEXT, "--stride", "16", env={"COLUMNS": "200"}).stdout
    assert "sliding window: context 64, stride 16" in out


def test_top_k_1_makes_every_token_but_the_first_choices_impossible(tiny_model_dir, tiny_lm):
    text = first_choice_text(tiny_lm)
    document = score_json(tiny_model_dir, text, "--top-k", "1", "--per-token")
    strategy = document["strategy"]
    assert strategy["chain"] == "logits -> top-k(1) -> sample"
    assert strategy["nats"] is None and strategy["nats_per_token"] is None  # infinite: not a JSON number
    not_first_choice = [r["position"] for r in document["per_token"] if r["rank"] != 1]
    assert 1 not in not_first_choice and not_first_choice  # some tokens possible, some not
    assert strategy["impossible_positions"] == not_first_choice
    assert strategy["impossible_tokens"] == len(not_first_choice)
    for row in document["per_token"]:
        assert row["strategy_prob"] == (1.0 if row["rank"] == 1 else 0.0)
    table = score_cli(tiny_model_dir, text, "--top-k", "1", env={"COLUMNS": "200"}).stdout
    assert f"impossible: it gives probability 0 to {len(not_first_choice)} of {document['tokens']} tokens" in table


def test_temperature_1_is_the_model_itself(tiny_model_dir):
    document = score_json(tiny_model_dir, SHORT_TEXT, "--temp", "1")
    strategy = document["strategy"]
    assert strategy["chain"] == "logits -> temperature(1) -> sample"
    assert strategy["impossible_positions"] == [] and strategy["impossible_tokens"] == 0
    assert strategy["nats_per_token"] == pytest.approx(document["nats_per_token"], abs=1e-4)
    assert strategy["kl_strategy_model"] == pytest.approx(0.0, abs=1e-5)


def test_temperature_half_has_the_cross_entropy_and_kl_of_the_sharpened_distribution(tiny_model_dir, tiny_lm):
    document = score_json(tiny_model_dir, SHORT_TEXT, "--temp", "0.5")
    logits, targets = model_logits(tiny_lm, SHORT_TEXT)
    log_model = torch.log_softmax(logits, -1)
    log_sharp = torch.log_softmax(logits / 0.5, -1)
    nats = -float(log_sharp.gather(-1, targets.unsqueeze(-1)).sum())
    kl = float((log_sharp.exp() * (log_sharp - log_model)).sum(-1).mean())
    strategy = document["strategy"]
    assert strategy["nats"] == pytest.approx(nats, rel=1e-4)
    assert strategy["kl_strategy_model"] == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert strategy["kl_strategy_model"] > 1e-4  # a sharper distribution is measurably different


def test_score_in_process_matches_the_strategy_numbers(tiny_lm):
    strategy = build_strategy({"temperature": 0.5}).strategy
    result = score(tiny_lm, LONG_TEXT, stride=16, strategy=strategy)
    assert result.strategy == str(strategy) and result.impossible == []
    assert math.isfinite(result.strategy_nats) and result.kl_strategy_model > 0


# --- bad input: one line, a non-zero exit, no traceback ---------------------------------------------------------


def test_an_empty_text_is_refused(tiny_model_dir):
    one_line_error(invoke("score", "", "--model", str(tiny_model_dir)), "empty")
    one_line_error(invoke("score", "--model", str(tiny_model_dir), input=""), "empty")


def test_an_empty_file_is_refused(tiny_model_dir, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    one_line_error(invoke("score", "--file", str(path), "--model", str(tiny_model_dir)), "empty")


def test_text_and_file_together_are_refused(tiny_model_dir, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(SHORT_TEXT)
    result = invoke("score", SHORT_TEXT, "--file", str(path), "--model", str(tiny_model_dir))
    one_line_error(result, "--file", "not both")


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf-8"])
def test_an_unreadable_file_is_one_line_naming_it(tiny_model_dir, tmp_path, kind):
    path = tmp_path / kind
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf-8":
        path.write_bytes(b"caf\xe9 \xff\xfe")
    result = invoke("score", "--file", str(path), "--model", str(tiny_model_dir))
    one_line_error(result, "--file", str(path), "cannot read")


@pytest.mark.parametrize("stride", ["0", "-1", "64", "1000", "abc", "1.5"])
def test_a_bad_stride_is_one_line_naming_it(tiny_model_dir, stride):
    result = invoke("score", SHORT_TEXT, "--stride", stride, "--model", str(tiny_model_dir))
    one_line_error(result, "--stride", stride)


@pytest.mark.parametrize(("args", "fragments"), [
    (["--format", "xml"], ["--format", "xml"]),
    (["--top-p", "1.5"], ["top_p", "1.5"]),
    (["--strategy", "nucleos"], ["unknown strategy", "nucleos"]),
], ids=["format", "top-p", "strategy"])
def test_bad_score_flags_fail_before_the_model_loads(tmp_path, args, fragments):
    missing_model = tmp_path / "no-such-model"
    result = invoke("score", SHORT_TEXT, "--model", str(missing_model), *args)
    one_line_error(result, *fragments)
    assert result.exit_code == 2 and str(missing_model) not in result.stderr


def test_score_tells_its_progress_up_to_every_token_of_the_text(tiny_lm):
    """`score`'s progress (a bar on a terminal for a long text): how many of the text's tokens are scored, rising
    after each piece to all of them, whatever the windows (here several, the text being longer than the context)."""
    from samplecli.analysis.scoring import score

    heard: list[tuple[int, int]] = []
    result = score(tiny_lm, TINY_TEXT * 2, stride=16, progress=lambda scored, total: heard.append((scored, total)))
    assert len(heard) > 2 and all(total == result.tokens for _, total in heard)
    scored = [n for n, _ in heard]
    assert scored == sorted(scored) and scored[-1] == result.tokens and scored[0] > 0


def test_window_pieces_let_each_backend_piece_go_before_the_next_and_join_a_lone_row():
    """`_without_lone_rows` holds back only a piece's last rows (as float64), never the backend's whole piece,
    while the next one is computed (two 32-row pieces at V = 152k are 39 MB); a lone last row joins the rows
    before it; the rows handed on are the backend's rows, in order, at their positions."""
    import weakref

    from samplecli.analysis.scoring import _without_lone_rows

    made: list[weakref.ref] = []
    alive_when_next_made: list[int] = []
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(n, 50, generator=generator) for n in (64, 17, 1)]

    def pieces():
        for piece in rows:
            alive_when_next_made.append(sum(ref() is not None for ref in made))
            fresh = piece.clone()
            made.append(weakref.ref(fresh))
            yield fresh
            del fresh

    out = list(_without_lone_rows(pieces(), 10, 8))
    assert alive_when_next_made == [0, 0, 0]
    assert [(position, chunk.shape[0]) for position, chunk in out] == \
        [(10, 8), (18, 8), (26, 8), (34, 8), (42, 8), (50, 8), (58, 8), (66, 8), (74, 8), (82, 10)]
    assert all(chunk.dtype == torch.float64 for _, chunk in out)
    assert torch.equal(torch.cat([chunk for _, chunk in out]), torch.cat(rows).double())
