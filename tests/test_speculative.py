"""Speculative decoding (`--draft-model`, `--draft ngram`): the round's arithmetic keeps the target's distribution,
greedy speculative decoding is greedy decoding, and what cannot be drafted is refused in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from samplecli.cli.app import app
from samplecli.engine.decode import decode
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.engine.speculative import NgramDraft, check_same_vocabulary, speculative_decode, verify_round
from samplecli.errors import UsageError
from samplecli.strategies import build_strategy
from tests.conftest import build_tiny_model, one_line_error, usage_error

runner = CliRunner()

# a target's strategy distributions at three positions, and a draft's that differ from them
P = torch.tensor([[0.30, 0.25, 0.20, 0.15, 0.07, 0.03],
                  [0.05, 0.40, 0.05, 0.30, 0.10, 0.10],
                  [0.10, 0.10, 0.50, 0.10, 0.10, 0.10]], dtype=torch.float64)
Q = torch.tensor([[0.10, 0.45, 0.05, 0.05, 0.30, 0.05],
                  [0.30, 0.10, 0.30, 0.10, 0.10, 0.10]], dtype=torch.float64)
ROUNDS = 100_000


def tv(counts: torch.Tensor, p: torch.Tensor) -> float:
    return 0.5 * float((counts / counts.sum() - p).abs().sum())


def rounds(q: torch.Tensor, seed: int = 0) -> list:
    """ROUNDS rounds of verify_round on the fixed P and `q`, each drafted token drawn from q's row."""
    generator = torch.Generator().manual_seed(seed)
    drafts = torch.stack([torch.multinomial(row, ROUNDS, replacement=True, generator=generator) for row in q], 1)
    uniforms = torch.rand(ROUNDS, q.shape[0] + 1, generator=generator, dtype=torch.float64)
    return [verify_round(P, q, drafted, u) for drafted, u in zip(drafts.tolist(), uniforms, strict=True)]


@pytest.fixture(scope="module")
def sampled_rounds() -> list:
    return rounds(Q)


def test_the_first_token_of_a_round_follows_the_target_distribution(sampled_rounds):
    counts = torch.bincount(torch.tensor([r.tokens[0] for r in sampled_rounds]), minlength=6).double()
    assert tv(counts, P[0]) < 0.01
    # and not the draft's: the check can tell them apart
    assert tv(counts, Q[0]) > 0.2


def test_the_measured_acceptance_is_the_sum_of_min_p_q(sampled_rounds):
    expected = float(torch.minimum(P[0], Q[0]).sum())  # 1 - TV(p, q) = 0.55
    kept = sum(r.checks[0].accepted for r in sampled_rounds) / ROUNDS
    assert abs(kept - expected) < 4 * (expected * (1 - expected) / ROUNDS) ** 0.5


def test_the_second_token_after_an_accepted_first_follows_the_target_there():
    # the draft always proposes token 1 first: kept with probability P[0, 1]; then its second from Q[1]
    q = torch.stack([torch.nn.functional.one_hot(torch.tensor(1), 6).double(), Q[1]])
    seconds = [r.tokens[1] for r in rounds(q, seed=1) if r.checks[0].accepted]
    assert abs(len(seconds) / ROUNDS - float(P[0, 1])) < 0.01
    counts = torch.bincount(torch.tensor(seconds), minlength=6).double()
    assert tv(counts, P[1]) < 0.01


def test_a_draft_equal_to_the_target_has_every_token_accepted():
    generator = torch.Generator().manual_seed(2)
    for _ in range(2000):
        drafted = torch.multinomial(P[0], 2, replacement=True, generator=generator).tolist()
        outcome = verify_round(P, P[:2], drafted, torch.rand(3, generator=generator, dtype=torch.float64))
        assert outcome.accepted == 2 and all(c.accept_prob == 1.0 for c in outcome.checks)


def test_a_rejected_token_is_replaced_from_the_residual_and_never_by_itself():
    # q puts more on token 4 than p does: rejected, the residual max(0, p - q) has nothing at 4
    outcome = verify_round(P, Q, [4, 0], torch.tensor([0.99, 0.5, 0.5], dtype=torch.float64))
    assert [c.accepted for c in outcome.checks] == [False]
    assert outcome.checks[0].accept_prob == pytest.approx(0.07 / 0.30)
    residual = (P[0] - Q[0]).clamp_min(0)
    assert outcome.last != 4 and residual[outcome.last] > 0


def test_greedy_keeps_a_drafted_token_exactly_when_it_is_the_targets_choice():
    outcome = verify_round(P, Q, [0, 2], None, greedy=[0, 1, 2])
    assert outcome.tokens == [0, 1] and [c.accepted for c in outcome.checks] == [True, False]


@pytest.fixture(scope="module")
def target_and_drafts(tmp_path_factory):
    from samplecli.backends.torch_lm import load

    root = tmp_path_factory.mktemp("speculative")
    target = load(str(build_tiny_model(root / "target", n_embd=64, seed=0)), device="cpu")
    draft = load(str(build_tiny_model(root / "draft", n_layer=1, n_embd=32, seed=7)), device="cpu")
    other = build_tiny_model(root / "other", vocab_size=280, seed=3)
    return target, draft, other


def tokens_of(events) -> tuple[list[int], Done]:
    events = list(events)
    [done] = [e for e in events if isinstance(e, Done)]
    return [e.token_id for e in events if isinstance(e, Step)], done


@pytest.mark.parametrize("settings", [{"temperature": 0},
                                      {"temperature": 0, "repetition_penalty": 1.5, "frequency_penalty": 0.5}])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_speculative_decoding_is_greedy_decoding(target_and_drafts, settings, k):
    target, draft, _ = target_and_drafts
    prompt = target.vocab.encode("ROMEO:\nBut soft")
    config = DecodeConfig(max_new_tokens=40, seed=0)
    plain, _ = tokens_of(decode(target, build_strategy(settings).strategy, prompt, config))
    for drafter in (draft, None, target):  # another model, prompt lookup, the target itself
        ours, done = tokens_of(speculative_decode(target, drafter, build_strategy(settings).strategy, prompt,
                                                  config, draft_tokens=k))
        assert ours == plain, drafter
        assert done.n_tokens == len(plain) and done.speculation.draft_tokens == k


def test_the_target_as_its_own_draft_keeps_every_drafted_token_when_sampling(target_and_drafts):
    target, _, _ = target_and_drafts
    events = list(speculative_decode(target, target, build_strategy({"temperature": 0.8, "top_k": 50}).strategy,
                                     target.vocab.encode("JULIET:"),
                                     DecodeConfig(max_new_tokens=30, min_new_tokens=30, seed=3),
                                     draft_tokens=4))
    steps = [e for e in events if isinstance(e, Step)]
    [done] = [e for e in events if isinstance(e, Done)]
    assert {s.speculation.outcome for s in steps} <= {"accepted", "bonus"}
    assert done.speculation.accepted == done.speculation.drafted > 0
    # every round but a last cut by the length emits K + 1 tokens from one target forward
    assert done.speculation.rounds == 6 and done.speculation.target_forwards == 7


def test_a_sampled_run_accounts_for_every_round(target_and_drafts):
    target, draft, _ = target_and_drafts
    events = list(speculative_decode(target, draft, build_strategy({"temperature": 1.0}).strategy,
                                     target.vocab.encode("ROMEO:"),
                                     DecodeConfig(max_new_tokens=50, min_new_tokens=50, seed=5),
                                     draft_tokens=3))
    steps = [e for e in events if isinstance(e, Step)]
    [done] = [e for e in events if isinstance(e, Done)]
    s = done.speculation
    assert len(steps) == done.n_tokens == 50 and 0 < s.accepted < s.drafted
    assert sum(st.speculation.outcome == "accepted" for st in steps) == s.accepted
    assert [st.step for st in steps] == list(range(50))
    assert s.target_forwards == s.rounds + 1
    for st in steps:
        sp = st.speculation
        if sp.outcome == "accepted":
            assert sp.uniform < sp.target_prob / sp.draft_prob and sp.draft_token_id == st.token_id
        elif sp.outcome == "resampled":
            assert sp.uniform >= sp.target_prob / sp.draft_prob and sp.draft_token_id != st.token_id
    assert s.expected_per_round == pytest.approx((1 - s.acceptance ** 4) / (1 - s.acceptance))
    judged = [st.speculation for st in steps if st.speculation.outcome != "bonus"]
    assert s.judged == len(judged) and s.acceptance == s.accepted / s.judged
    # each judged token is kept with probability min(1, p/q): the kept count is their sum, within sampling error
    expected = sum(sp.accept_prob for sp in judged)
    spread = sum(sp.accept_prob * (1 - sp.accept_prob) for sp in judged) ** 0.5
    assert abs(s.accepted - expected) < 4 * spread + 1


def test_prompt_lookup_proposes_what_followed_the_last_ngram():
    draft = NgramDraft(vocab_size=10)
    tokens, q = draft.propose([1, 2, 3, 4, 5, 2, 3], 3, None, None)
    assert tokens == [4, 5, 2] and q.argmax(-1).tolist() == [4, 5, 2] and q.sum().item() == 3
    assert draft.propose([1, 2, 3], 2, None, None)[0] == []


def test_a_draft_with_another_vocabulary_is_refused(target_and_drafts):
    target, _, _ = target_and_drafts
    wider = SimpleNamespace(name="wider", vocab_size=target.vocab_size + 1, vocab=target.vocab)
    usage_error(lambda: check_same_vocabulary(target, wider, "--draft-model wider"), "a draft must share the "
                "model's tokenizer", str(target.vocab_size + 1))
    renamed = SimpleNamespace(size=target.vocab.size, text=lambda i: "x",
                              bytes=lambda i: (120,) if i == 5 else target.vocab.bytes(i))
    other = SimpleNamespace(name="other", vocab_size=target.vocab_size, vocab=renamed)
    usage_error(lambda: check_same_vocabulary(target, other, "--draft-model other"), "token 5")


def test_cli_refuses_a_draft_with_another_tokenizer(target_and_drafts, tmp_path):
    target, _, other = target_and_drafts
    result = runner.invoke(app, ["generate", "ROMEO:", "-m", target.name, "--draft-model",
                                 str(other), "-n", "5", "--temp", "0", "-q"])
    one_line_error(result, "--draft-model", "a draft must share the model's tokenizer")


@pytest.mark.parametrize("argv, fragments", [
    (["--num-beams", "3"], ("--draft-model", "beam search")),
    (["--draft-tokens", "0"], ("--draft-tokens", ">= 1", "0")),
    (["--draft-tokens", "300"], ("--draft-tokens 300", "context is 256 tokens")),
    (["--chain", "mirostat-v2:tau=3"], ("--draft-model", "mirostat-v2", "cannot replay")),
    (["--chain", "xtc:xtc_probability=0.5:xtc_threshold=0.01,temperature=1.5"], ("`xtc`", "cannot replay")),
])
def test_cli_refuses_what_cannot_be_drafted_in_one_line(argv, fragments):
    result = runner.invoke(app, ["generate", "ROMEO:", "--draft", "ngram", "-n", "5", *argv])
    one_line_error(result, *fragments)


def test_cli_shows_each_round_and_the_runs_acceptance_in_jsonl():
    result = runner.invoke(app, ["generate", "ROMEO:\nBut soft, what light", "--draft", "ngram", "--draft-tokens",
                                 "3", "-n", "24", "--min-new-tokens", "24", "--seed", "1", "-f", "jsonl", "-q"])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    [done] = [r for r in records if r["type"] == "done"]
    assert len(steps) == 24 and all(r["speculation"]["outcome"] in ("accepted", "resampled", "bonus")
                                    for r in steps)
    spec = done["speculation"]
    assert spec["draft"] == "ngram" and spec["draft_tokens"] == 3
    assert spec["tokens_per_forward"] == pytest.approx(24 / spec["target_forwards"])
    assert spec["accepted"] == sum(r["speculation"]["outcome"] == "accepted" for r in steps)


def test_greedy_from_the_cli_is_the_same_text_with_and_without_a_draft():
    plain = runner.invoke(app, ["generate", "ROMEO:", "--temp", "0", "-n", "30", "-q"])
    drafted = runner.invoke(app, ["generate", "ROMEO:", "--temp", "0", "-n", "30", "-q", "--draft", "ngram",
                                  "--draft-tokens", "5"])
    assert plain.exit_code == drafted.exit_code == 0, drafted.stderr
    assert drafted.stdout == plain.stdout


def test_check_speculative_refuses_a_backend_that_cannot_verify():
    from samplecli.engine.speculative import check_speculative

    class Remote(SimpleNamespace):
        def why_not(self, capability):
            return "backend `remote` cannot verify, which speculative decoding needs; use a backend that can"

    with pytest.raises(UsageError, match="cannot verify"):
        check_speculative(Remote(name="remote", context_length=None), None, build_strategy({}).strategy, 4, "x")
