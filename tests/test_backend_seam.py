"""The backend seam: the engine and the commands reach a model only through a backend's verbs. Driven here
end to end (the loop, beam search, inspect, score and the CLI itself) through a backend with no torch model
behind it, a bigram table whose every number is known (tests/memory_backend.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from samplecli.analysis.inspect_plan import make_plan
from samplecli.analysis.inspection import inspect
from samplecli.analysis.scoring import score
from samplecli.backends.base import (
    CHAT,
    DISTRIBUTION,
    PROMPT_LOGPROBS,
    REORDER,
    SAMPLE_LOCALLY,
    SCORE,
    SERVER_SAMPLING,
    TEACHER_FORCE,
    Backend,
)
from samplecli.cli import app
from samplecli.engine.beam import beam_decode
from samplecli.engine.beam_types import BeamSettings
from samplecli.engine.decode import decode, encode_prompt
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.errors import UsageError
from samplecli.strategies import build_strategy
from tests.memory_backend import ALPHABET, OPENED, TableBackend


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    weights = [math.exp(v - top) for v in row]
    return [w / sum(weights) for w in weights]


def test_the_memory_backend_satisfies_the_protocol():
    assert isinstance(TableBackend(), Backend)


def test_greedy_through_the_seam_follows_the_table_and_reports_its_probabilities():
    backend = TableBackend()
    ids = encode_prompt(backend, "a")
    events = list(decode(backend, build_strategy({"temperature": 0}).strategy, ids, DecodeConfig(max_new_tokens=6)))
    steps = [e for e in events if isinstance(e, Step)]
    done = next(e for e in events if isinstance(e, Done))
    assert done.text == "bcabca"  # after a: b, after b: c, after c: a (the table's largest logit)
    previous = ids[-1]
    for step in steps:
        expected = softmax(backend.table[previous])
        assert step.prob == pytest.approx(expected[step.token_id], abs=1e-6)
        assert step.entropy == pytest.approx(-sum(p * math.log(p) for p in expected), abs=1e-6)
        assert step.distribution == "full"
        previous = step.token_id
    assert backend.calls["start"] == 1 and backend.calls["advance"] == 5  # no forward after the last token


def test_samples_share_one_prefill_and_draw_from_the_strategys_distribution():
    backend = TableBackend()
    ids = encode_prompt(backend, "a")
    strategy = build_strategy({"temperature": 1.0, "top_k": 2}).strategy
    events = list(decode(backend, strategy, ids, DecodeConfig(max_new_tokens=1, num_samples=4000, seed=3, top_n=0)))
    assert backend.calls["start"] == 1
    counts = {}
    for e in events:
        if isinstance(e, Step):
            counts[e.token_id] = counts.get(e.token_id, 0) + 1
    row = backend.table[ids[-1]]
    kept = sorted(range(len(row)), key=lambda i: -row[i])[:2]
    probs = softmax([row[i] for i in kept])
    assert set(counts) == set(kept)
    for token, p in zip(kept, probs, strict=True):  # 4000 draws: the standard error is under 0.008
        assert counts[token] / 4000 == pytest.approx(p, abs=0.03)


def test_beam_search_through_the_seam_reorders_rows_and_scores_from_the_table():
    backend = TableBackend()
    ids = encode_prompt(backend, "a")
    events = list(beam_decode(backend, None, ids, DecodeConfig(max_new_tokens=4), BeamSettings(num_beams=3)))
    dones = [e for e in events if isinstance(e, Done)]
    assert backend.calls["reorder"] >= 1
    best = dones[0]
    previous, total = ids[-1], 0.0
    for token in best.token_ids:
        total += math.log(softmax(backend.table[previous])[token])
        previous = token
    assert best.logprob_sum == pytest.approx(total, abs=1e-5)
    greedy = next(e for e in decode(backend, build_strategy({"temperature": 0}).strategy, ids,
                                    DecodeConfig(max_new_tokens=4)) if isinstance(e, Done))
    assert best.score >= greedy.logprob_sum / len(greedy.token_ids) - 1e-9


def test_a_backend_without_a_capability_is_refused_in_one_line_naming_both():
    backend = TableBackend()
    backend.capabilities = frozenset({TEACHER_FORCE})
    with pytest.raises(UsageError, match="backend `memory` cannot reorder, which beam search"):
        list(beam_decode(backend, None, [1], DecodeConfig(max_new_tokens=2), BeamSettings(num_beams=2)))
    backend.capabilities = frozenset({REORDER})
    with pytest.raises(UsageError, match="backend `memory` cannot teacher-force"):
        score(backend, "abc")


def test_the_contracts_optional_verbs_refuse_in_the_line_why_not_gives():
    backend = TableBackend()  # declares reorder and teacher-force only
    assert backend.why_not(REORDER) is None and backend.why_not(SCORE) is None
    assert backend.why_not(DISTRIBUTION, [1, 2]) is None and backend.why_not(SAMPLE_LOCALLY) is None
    refusals = {CHAT: lambda: backend.chat([{"role": "user", "content": "hi"}]),
                PROMPT_LOGPROBS: lambda: backend.prompt_logprobs([1, 2]),
                SERVER_SAMPLING: lambda: backend.server_chain([], ("sample", {}))}
    for capability, call in refusals.items():
        why = backend.why_not(capability)
        assert why.startswith(f"backend `memory` cannot {capability}, which ") and "\n" not in why
        with pytest.raises(UsageError) as refused:
            call()
        assert str(refused.value) == why
    backend.capabilities = frozenset({REORDER})
    why = backend.why_not(SCORE)  # neither teacher forcing nor prompt log-probabilities: the former's line
    assert why is not None and why == backend.why_not(TEACHER_FORCE)
    assert backend.encode_for_scoring("abc") == backend.vocab.encode("abc", add_special_tokens=False)


def test_a_backend_has_to_implement_start():
    class NoStart(Backend):
        name = "none"

    with pytest.raises(TypeError, match="start"):
        NoStart()


def test_inspect_through_the_seam_shows_the_tables_distribution():
    backend = TableBackend()
    plan = make_plan({"temperature": 0.5}, top_n=4)
    report = inspect(backend, "ab", plan)
    expected = softmax(backend.table[ALPHABET.index("b")])
    for token in report.top:
        assert token.prob == pytest.approx(expected[token.token_id], abs=1e-6)
    assert backend.calls["logits"] == 1 and backend.calls["start"] == 0


def test_score_through_the_seam_is_the_sum_of_the_tables_surprisals():
    backend = TableBackend()
    result = score(backend, "abca")
    ids = backend.vocab.encode("abca")
    expected = -sum(math.log(softmax(backend.table[a])[b]) for a, b in zip(ids, ids[1:], strict=False))
    assert result.nats == pytest.approx(expected, abs=1e-9)
    assert result.tokens == 3


@pytest.fixture
def runner():
    OPENED.clear()
    return CliRunner()


def test_the_cli_generates_through_a_registered_backend(runner):
    result = runner.invoke(app, ["generate", "a", "-m", "memory:table", "--temp", "0", "-n", "5", "-f", "jsonl", "-q"])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["type"] == "done" and records[-1]["text"] == "bcabc"
    assert all(r["distribution"] == "full" for r in records if r["type"] == "step")
    assert OPENED and OPENED[0].calls["start"] == 1


def test_the_cli_runs_beam_search_and_inspect_through_a_registered_backend(runner):
    beam = runner.invoke(app, ["generate", "a", "-m", "memory:table", "--num-beams", "2", "-n", "3", "-f", "json",
                               "-q"])
    assert beam.exit_code == 0, beam.stderr
    assert json.loads(beam.stdout)["samples"][0]["text"] == "bca"
    assert OPENED[-1].calls["reorder"] >= 1
    shown = runner.invoke(app, ["inspect", "ab", "-m", "memory:table", "--temp", "0.5", "-f", "json"])
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(shown.stdout)
    expected = softmax(TableBackend().table[ALPHABET.index("b")])
    assert document["top"][0]["prob"] == pytest.approx(max(expected), abs=1e-6)


def test_the_engine_never_touches_a_model_attribute():
    """The backend here has no `model`, `tokenizer` or cache: had the loop reached past the seam, it would fail."""
    backend = TableBackend()
    for name in ("model", "tokenizer"):
        assert not hasattr(backend, name)
    list(decode(backend, build_strategy({}).strategy, [1], DecodeConfig(max_new_tokens=3, seed=1)))
    list(beam_decode(backend, build_strategy({"repetition_penalty": 1.3}).strategy, [1],
                     DecodeConfig(max_new_tokens=3), BeamSettings(num_beams=2, stochastic=True)))
    assert torch.is_tensor(backend.logits([1, 2], keep=1))


def test_entropy_bounds_on_a_hand_made_top_two():
    """V = 6, the top two returned: p = (0.5, 0.3), tail m = 0.2 over 4 unseen tokens, each at most 0.3. Lower:
    the tail in one token (0.2 < 0.3); upper: the tail spread evenly, 0.05 each."""
    from samplecli.stats import entropy_bounds_nats

    logp = torch.tensor([[math.log(0.5), math.log(0.3)] + [-math.inf] * 4])
    low, high, tail = entropy_bounds_nats(logp, 6)
    known = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3))
    assert float(tail[0]) == pytest.approx(0.2, abs=1e-7)
    assert float(low[0]) == pytest.approx(known - 0.2 * math.log(0.2), abs=1e-7)
    assert float(high[0]) == pytest.approx(known - 0.2 * math.log(0.05), abs=1e-7)
    # the true entropy of any completion lies between, e.g. (0.5, 0.3, 0.1, 0.1, 0, 0)
    some = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 2 * 0.1 * math.log(0.1))
    assert float(low[0]) <= some <= float(high[0])


def test_a_top_n_backend_gets_exact_probabilities_and_bounded_entropies_through_the_loop():
    full = TableBackend()
    top = TableBackend()
    top.top_n = 3  # the table's rows become the true log-probs of the 3 most probable tokens, the rest unknown
    for prev, row in full.table.items():
        logp = torch.log_softmax(torch.tensor(row, dtype=torch.float64), -1)
        keep = torch.topk(logp, 3).indices
        top.table[prev] = [float(logp[i]) if i in keep else -math.inf for i in range(len(row))]
    strategy = build_strategy({"temperature": 1.0}).strategy
    events = list(decode(top, strategy, [1], DecodeConfig(max_new_tokens=5, seed=7)))
    previous = 1
    for step in (e for e in events if isinstance(e, Step)):
        truth = softmax(full.table[previous])
        exact = -sum(p * math.log(p) for p in truth)
        assert step.distribution == "top-3" and math.isnan(step.entropy)
        assert step.entropy_bounds[0] - 1e-9 <= exact <= step.entropy_bounds[1] + 1e-9
        assert step.prob == pytest.approx(truth[step.token_id], abs=1e-6)  # not renormalised over the 3
        assert step.tail_mass == pytest.approx(1 - sum(sorted(truth)[-3:]), abs=1e-6)
        assert step.kept == 3  # the unseen tokens count as filtered
        previous = step.token_id
