"""At a real vocabulary (V = 151,936) the per-step numbers computed the fast way (`topk`, threshold searches,
sums over the kept tokens) equal the straightforward full-vocabulary computation, ties at the cut and -inf
entries included; and `score`, streamed a few positions at a time, prints the numbers the whole window gave."""

from __future__ import annotations

import pytest
import torch

from samplecli.analysis.scoring import _strategy_probs, score, sliding_windows
from samplecli.backends.torch_lm import LM
from samplecli.stats import entropy_nats, kept_measures, kl_nats
from samplecli.strategies import build_strategy
from samplecli.strategies.ranking import drawing_order, top_ids, top_sorted
from samplecli.strategies.selectors import Sample

V = 151_936
NO_IDS = torch.empty((3, 0), dtype=torch.long)


def stable(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sort(x, dim=-1, descending=True, stable=True)


def real_size_logits(case: str, rows: int = 3, seed: int = 0) -> torch.Tensor:
    """Peaked random logits over 152k tokens; "ties": values on a grid of 1/4, so thousands share each value
    (every cut falls among ties); "-inf": a tenth of each row filtered, as a top-N backend or penalty leaves it."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, V, generator=generator) * 4
    if case in ("ties", "ties and -inf"):
        logits = (logits * 4).round() / 4
    if case in ("-inf", "ties and -inf"):
        logits[torch.rand(rows, V, generator=generator) < 0.1] = float("-inf")
    return logits


CASES = ["random", "ties", "-inf", "ties and -inf"]


# the straightforward computations: a stable sort of the whole row, sums over the whole row

def full_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = stable(logits)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    keep_sorted = (probs.cumsum(dim=-1) - probs) < top_p
    keep_sorted[..., 0] = True
    return keep_sorted.scatter(-1, order, keep_sorted)


def full_typical(logits: torch.Tensor, typical_p: float) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    distance = (-logp - (-(logp.exp() * logp).nansum(dim=-1, keepdim=True))).abs()
    sorted_distance, order = torch.sort(distance, dim=-1, stable=True)
    last = (logp.gather(-1, order).exp().cumsum(dim=-1) < typical_p).sum(dim=-1, keepdim=True)
    keep_sorted = sorted_distance <= sorted_distance.gather(-1, last.clamp(max=logits.shape[-1] - 1))
    keep_sorted[..., 0] = True
    return keep_sorted.scatter(-1, order, keep_sorted)


@pytest.mark.parametrize("case", CASES)
def test_the_top_k_of_a_real_vocabulary_is_the_stable_sorts_prefix_ties_at_the_cut_included(case):
    logits = real_size_logits(case)
    values, ids = stable(logits)
    for k in (1, 10, 40, 100, 1000):
        got_values, got_ids = top_sorted(logits, k)
        assert torch.equal(got_ids, ids[:, :k]), k
        assert torch.equal(got_values, values[:, :k]), k
        assert torch.equal(top_ids(logits, k), ids[:, :k])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
def test_top_p_keeps_the_nucleus_a_full_sort_keeps(case, top_p):
    logits = real_size_logits(case)
    kept = build_strategy({"top_p": top_p}).strategy.transforms[0](logits, NO_IDS)
    assert torch.equal(torch.isfinite(kept), full_top_p(logits, top_p) & torch.isfinite(logits))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("typical_p", [0.2, 0.9, 0.95])
def test_typical_keeps_what_a_full_sort_of_the_distances_keeps(case, typical_p):
    logits = real_size_logits(case)
    kept = build_strategy({"typical_p": typical_p}).strategy.transforms[0](logits, NO_IDS)
    assert torch.equal(torch.isfinite(kept), full_typical(logits, typical_p) & torch.isfinite(logits))


@pytest.mark.parametrize("case", CASES)
def test_top_h_takes_its_candidates_in_the_stable_order(case):
    logits = real_size_logits(case)
    top_h = build_strategy({"top_h": 0.6}).strategy.transforms[0]
    got = top_h(logits, NO_IDS)
    # the same transform over the stable sort's 100 best, moved to the front, keeps the same tokens
    order = stable(logits).indices
    front = logits.gather(-1, order)
    expected = top_h(front, NO_IDS)
    assert torch.equal(torch.isfinite(got).gather(-1, order), torch.isfinite(expected))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("settings", [{"top_p": 0.95}, {"top_k": 40}, {"min_p": 0.05}, {"temperature": 1.0}])
def test_the_strategys_entropy_kept_count_and_kl_equal_the_full_sums(case, settings):
    logits = real_size_logits(case)
    logp = torch.log_softmax(logits, dim=-1)
    probs = build_strategy(settings).strategy.distribution(logits, NO_IDS)
    entropy, kept, kl = kept_measures(probs, logp)
    assert torch.equal(kept, (probs > 0).sum(-1).float())
    torch.testing.assert_close(entropy.double(), entropy_nats(probs.double(), is_log=False), rtol=0, atol=1e-6)
    full_kl = kl_nats(probs.double(), logp.double())
    assert torch.equal(torch.isinf(kl), torch.isinf(full_kl))
    finite = torch.isfinite(full_kl)
    torch.testing.assert_close(kl.double()[finite], full_kl[finite], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("settings", [{"top_p": 0.95}, {"top_k": 40}, {"temperature": 1.0}])
def test_a_draw_over_the_drawing_order_is_the_draw_over_the_whole_ranking(case, settings):
    logits = real_size_logits(case)
    probs = build_strategy(settings).strategy.distribution(logits, NO_IDS)
    whole, short = stable(logits).indices, drawing_order(logits, probs)
    assert short.shape[-1] <= V
    for u in torch.linspace(0, 0.999999, 101):
        uniforms = torch.full((logits.shape[0],), float(u))
        drawn = Sample().select(logits, probs, short, uniforms)
        assert torch.equal(drawn, Sample().select(logits, probs, whole, uniforms))


def test_the_alternatives_and_ranks_of_a_step_are_the_full_rankings():
    """The decode loop's top-N and rank at a real vocabulary: top_ids is the stable sort's prefix, and a rank is
    one comparison with the whole row."""
    logits = real_size_logits("ties and -inf")
    chosen = logits.argmax(-1, keepdim=True)
    ranks = (logits > logits.gather(-1, chosen)).sum(-1) + 1
    order = stable(logits).indices
    assert torch.equal(top_ids(logits, 20), order[:, :20])
    position = (order == chosen).nonzero()[:, 1]
    # the stable rank of the chosen token counts the strictly larger ones, then the tied ones with lower ids
    tied_before = ((logits == logits.gather(-1, chosen)) & (torch.arange(V) < chosen)).sum(-1)
    assert torch.equal(position + 1, ranks + tied_before)


# --- score: streamed in pieces, the numbers the whole window gave ---

def whole_window_score(lm, text: str, stride: int | None, strategy) -> dict[str, float]:
    """`score`'s sums the straightforward way: each window's logits at once, in float64."""
    ids = torch.tensor([lm.bos_token_id, *lm.vocab.encode(text, add_special_tokens=False)])
    context = lm.context_length
    stride = stride or context // 2
    totals = {"nats": 0.0, "entropy": 0.0, "tail": 0.0, "strategy_nats": 0.0, "kl": 0.0}
    ranks: list[int] = []
    tied: list[int] = []
    for w in sliding_windows(ids.numel(), context, stride):
        logits = lm.logits(ids[w.start:w.end].tolist()).double()[w.score_from - w.start - 1: w.end - w.start - 1]
        targets = ids[w.score_from: w.end]
        logp = torch.log_softmax(logits, dim=-1)
        target_logp = logp.gather(-1, targets[:, None])[:, 0]
        totals["nats"] -= float(target_logp.sum())
        totals["entropy"] += float(entropy_nats(logp).sum())
        totals["tail"] += float((1.0 - torch.topk(logp, 40, dim=-1).values.exp().sum(-1)).clamp(min=0.0).sum())
        target = logits.gather(-1, targets[:, None])
        ranks += ((logits > target).sum(-1) + 1).tolist()
        band = TIE * logits.abs().amax(-1, keepdim=True)  # others within rounding of the target
        tied += ((logits - target).abs() <= band).sum(-1).sub(1).tolist()
        if strategy is not None:
            probs = _strategy_probs(strategy, logits.float(), ids, w.score_from).double()  # each row its own prefix
            totals["strategy_nats"] -= float(torch.log(probs.gather(-1, targets[:, None])).sum())
            totals["kl"] += float(kl_nats(probs, logp).sum())
    return {**totals, "ranks": ranks, "tied": tied}


TIE = 2e-6  # logits this close (relative to the row's largest) may swap places between the whole window's forward
# and the pieces' (measured: up to ~4e-7 apart)


def check_score_is_the_whole_windows(lm, text: str, stride: int | None, strategy) -> None:
    """`score` streams each window through the model a piece at a time (its KV cache between them): its numbers
    are the whole window's forward's to float rounding, each rank exactly but for logits tied within TIE."""
    got = score(lm, text, stride=stride, strategy=strategy, per_token=True)
    want = whole_window_score(lm, text, stride, strategy)
    close = {"rel": 1e-6, "abs": 1e-6 * got.tokens}
    assert got.nats == pytest.approx(want["nats"], **close)
    assert got.entropy_nats == pytest.approx(want["entropy"], **close)
    assert got.tail_mass == pytest.approx(want["tail"], **close)
    for token, rank, tied in zip(got.per_token, want["ranks"], want["tied"], strict=True):
        assert abs(token.rank - rank) <= tied
    # ranks compared exactly, not excused: at V = 152k a random-init model's logits crowd (half of them tie here)
    assert sum(tied == 0 for tied in want["tied"]) > got.tokens / 3
    assert sum(t.nats for t in got.per_token) == pytest.approx(got.nats, abs=1e-9)
    if strategy is not None:
        assert got.strategy_nats == pytest.approx(want["strategy_nats"], **close)
        assert got.kl_strategy_model == pytest.approx(want["kl"] / got.tokens, **close)


@pytest.fixture(scope="module")
def real_vocab_lm():
    """A random-init Llama at V = 151,936 (hidden 32, one layer, a 96-token context: windows slide) with a
    tokenizer of that size whose ids the text uses only in part: what matters is the width of each row."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=96,
                         bos_token_id=0, eos_token_id=0)
    return LlamaForCausalLM(config).eval()


def test_score_streamed_in_pieces_prints_the_whole_windows_numbers(tiny_lm):
    text = "The quick brown fox jumps over the lazy dog. " * 6
    for stride, strategy in ((None, None), (7, build_strategy({"temperature": 0.8, "top_p": 0.9}).strategy),
                             (40, build_strategy({"top_k": 5, "repetition_penalty": 1.2}).strategy)):
        check_score_is_the_whole_windows(tiny_lm, text, stride, strategy)


def test_the_torch_backends_pieces_are_its_logits_to_float_rounding(tiny_lm):
    ids = tiny_lm.vocab.encode("The quick brown fox jumps over the lazy dog. " * 3)[: tiny_lm.context_length]
    whole = tiny_lm.logits(ids)
    for first, stop, rows in ((0, None, 64), (3, len(ids) - 1, 5), (len(ids) - 2, len(ids), 1)):
        pieces = list(tiny_lm.logit_chunks(ids, first, stop, rows))
        assert all(p.shape[0] <= rows for p in pieces)
        assert torch.allclose(torch.cat(pieces), whole[first:stop], rtol=1e-6, atol=1e-5)


def test_score_at_a_real_vocabulary_is_the_whole_windows(tiny_lm, real_vocab_lm):
    lm = LM.of(real_vocab_lm, tiny_lm.tokenizer, "real-vocab")
    text = "To be, or not to be, that is the question: whether tis nobler in the mind to suffer. " * 3
    check_score_is_the_whole_windows(lm, text, None, build_strategy({"top_p": 0.95}).strategy)
    ids = lm.vocab.encode(text)[:96]
    assert torch.allclose(torch.cat(list(lm.logit_chunks(ids, 10, 95, 32))), lm.logits(ids)[10:95], rtol=1e-6,
                          atol=1e-6)


def test_a_head_with_a_final_soft_cap_gives_its_capped_scores_in_pieces(tiny_lm):
    """Gemma 2 caps its scores after the head: the pieces come from the model's own forward, cap included."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=tiny_lm.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                          final_logit_softcapping=0.05, bos_token_id=0, eos_token_id=0)
    lm = LM.of(Gemma2ForCausalLM(config).eval(), tiny_lm.tokenizer, "softcap")
    ids = lm.vocab.encode("The quick brown fox jumps over the lazy dog.")
    pieces = torch.cat(list(lm.logit_chunks(ids, 1, None, 4)))
    assert torch.allclose(pieces, lm.logits(ids)[1:], rtol=0, atol=1e-6)
    with torch.no_grad():
        uncapped = lm.model.lm_head(lm.model.model(input_ids=torch.tensor([ids]))[0][0, 1:])
    assert float(pieces.abs().max()) < 0.05 < float(uncapped.abs().max())  # the cap, not the bare head
    check_score_is_the_whole_windows(lm, "The quick brown fox jumps over the lazy dog. " * 3, 20,
                                     build_strategy({"min_p": 0.05}).strategy)


def test_the_torch_backend_never_runs_more_than_a_piece_at_once(tiny_lm, monkeypatch):
    """`logit_chunks` bounds memory by its pieces, through the model's own forward: the model sees at most
    PREFIX_ROWS positions before `first` (keeping one score) and `rows` after, never the window at once."""
    from samplecli.backends import lean
    from samplecli.backends.torch_lm import PREFIX_ROWS

    seen: list[tuple[int, int]] = []  # (positions in, scores out)
    forward_for = lean.forward_for

    def recording(model):
        forward, cache = forward_for(model)

        def forward_recorded(**kwargs):
            out = forward(**kwargs)
            seen.append((kwargs["input_ids"].shape[1], out.logits.shape[1]))
            return out

        return forward_recorded, cache

    monkeypatch.setattr(lean, "forward_for", recording)
    ids = tiny_lm.vocab.encode("The quick brown fox jumps over the lazy dog. " * 30)[: tiny_lm.context_length]
    first = len(ids) - 40
    pieces = list(tiny_lm.logit_chunks(ids, first, None, 16))
    assert [p.shape[0] for p in pieces] == [16, 16, 8]
    assert seen == [(min(PREFIX_ROWS, first), 1)] * (first // PREFIX_ROWS) + \
        ([(first % PREFIX_ROWS, 1)] if first % PREFIX_ROWS else []) + [(16, 16), (16, 16), (8, 8)]


def test_a_lean_forward_runs_its_body_a_piece_at_a_time_and_its_head_fewer_rows_and_lets_each_go(tiny_lm,
                                                                                                 monkeypatch):
    """Through a lean forward (the tiny GPT-2's), `logit_chunks` runs the body BODY_ROWS positions at a time
    (the prefix keeping no scores) and the output head `rows` of them at a time; every piece the head makes is
    let go before the next is made (two pieces of 32 rows at V = 152k are 39 MB), and the pieces are the
    model's logits to float rounding."""
    import weakref

    from samplecli.backends import gpt2_fast, torch_lm

    monkeypatch.setattr(torch_lm, "BODY_ROWS", 16)
    monkeypatch.setattr(torch_lm, "PREFIX_ROWS", 20)
    body: list[tuple[int, int]] = []  # (positions in, hidden states out)
    hidden_states = gpt2_fast.GPT2Forward.hidden_states

    def recorded(self, input_ids, cache, keep=0):
        out = hidden_states(self, input_ids, cache, keep)
        body.append((input_ids.shape[1], out.shape[1]))
        return out

    monkeypatch.setattr(gpt2_fast.GPT2Forward, "hidden_states", recorded)
    made: list[weakref.ref] = []
    alive_when_next_made: list[int] = []

    class Heads(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is not torch.Tensor.matmul:
                return func(*args, **(kwargs or {}))
            # the head, about to make a piece: neither the last one nor the view of it handed out is alive
            alive_when_next_made.append(sum(ref() is not None for ref in made))
            scores = func(*args, **(kwargs or {}))
            made.append(weakref.ref(scores))
            return scores

    ids = tiny_lm.vocab.encode("The quick brown fox jumps over the lazy dog. " * 30)[: tiny_lm.context_length]
    first = len(ids) - 40
    rows, sizes = [], []
    with Heads():
        for piece in tiny_lm.logit_chunks(ids, first, None, 12):
            made.append(weakref.ref(piece))
            rows.append(piece.clone())
            sizes.append(piece.shape[0])
            del piece
    assert body == [(20, 1), (first - 20, 1), (16, 16), (16, 16), (8, 8)]
    assert sizes == [12, 4, 12, 4, 8]
    assert alive_when_next_made == [0, 0, 0, 0, 0]
    assert torch.allclose(torch.cat(rows), tiny_lm.logits(ids)[first:], rtol=1e-6, atol=1e-5)


def test_freed_memory_goes_back_to_the_system_on_glibc():
    """Freed buffers in holes of the heap (each smaller than glibc's mmap threshold, so in the heap) are resident
    until `give_back_freed_memory` hands their pages back."""
    from samplecli.backends import memory

    def resident() -> int:
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) * 1024

    glibc = memory._glibc()
    assert glibc is not None  # the suite runs on Linux with glibc
    junk = [bytearray(b"x" * 100_000) for _ in range(800)]  # 80 MB written, so resident
    del junk[::2]  # 40 MB freed in holes between the buffers kept
    before = resident()
    memory.give_back_freed_memory(keep=0)
    assert resident() < before - 30 * 2**20
    after = resident()
    memory.give_back_freed_memory()  # nothing left to give: the second call changes nothing
    assert resident() <= after + 2**20 and len(junk) == 400


def test_pieces_and_decode_steps_leave_no_inference_mode_behind_however_they_are_closed(tiny_lm):
    """Two piece streams (or decodes) entered a then b and closed a then b, as `zip` leaves `score --against`'s
    streams: the thread's grad mode is as it was, and inference mode off, between their steps and after."""
    import torch

    from samplecli.engine.decode import decode
    from samplecli.engine.events import DecodeConfig
    from samplecli.strategies import build_strategy

    ids = tiny_lm.vocab.encode("The quick brown fox jumps over the lazy dog. " * 4)[: tiny_lm.context_length]
    strategy = build_strategy({}).strategy
    streams = [lambda: tiny_lm.logit_chunks(ids, 4, None, 8),
               lambda: decode(tiny_lm, strategy, ids[:5], DecodeConfig(max_new_tokens=4))]
    for make in streams:
        a, b = make(), make()
        next(a)
        next(b)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        a.close()
        b.close()
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
