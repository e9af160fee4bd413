"""`samplecli inspect`: every number against a direct computation with the registry's `distribution()`, the
draws against the expected distribution, the sweeps and order difference on hand-made distributions, the
renderers (Rich, plain, strict JSON, PNG), and the command line with stdout and stderr kept apart."""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from samplecli.analysis.inspect_plan import make_plan, parse_sweep, parse_temps
from samplecli.analysis.inspect_position import Context
from samplecli.analysis.inspect_report import Position
from samplecli.analysis.inspection import (
    ROUNDING_TOLERANCE,
    analyse,
    draw,
    order_diff,
    parameter_sweep,
    temperature_sweep,
    top_tokens,
    trace,
)
from samplecli.cli import app
from samplecli.errors import UsageError
from samplecli.stats import entropy_nats, kl_nats
from samplecli.strategies import Strategy, build_strategy, parse_chain
from samplecli.strategies.selectors import Sample
from samplecli.views.inspect import dumps_document, inspect_document, show_report

ANSI = "\x1b["
PROMPT = "JULIET:"
NO_SETTINGS = {"temperature": None, "top_k": None, "top_p": None, "min_p": None, "typical_p": None,
               "repetition_penalty": None, "no_repeat_ngram_size": None}
runner = CliRunner()


def settings(**given) -> dict:
    return {**NO_SETTINGS, **given}


def context(probs: list[float], seed: int = 0) -> Context:
    """A hand-made next-token distribution: logits log p, tokens named t0, t1, ..."""
    logits = torch.tensor([probs], dtype=torch.float64).log().float()
    return Context(logits=logits, input_ids=torch.tensor([[0]]), token_text=lambda i: f"t{i}", seed=seed)


def random_context(vocab: int = 50, seed: int = 0) -> Context:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, vocab, generator=generator) * 2
    return Context(logits=logits, input_ids=torch.tensor([[1, 2, 3]]), token_text=lambda i: f"t{i}", seed=seed)


def strict_loads(text: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def report_for(ctx: Context, **plan_args):
    plan = make_plan(settings(**plan_args.pop("sampling", {})), **plan_args)
    traced = None
    if plan.traced is not None:
        traced = plan.traced
        traced.bind((), ctx.seed)
        traced.reset(1)
    position = Position(step=0, prompt_tokens=1, generated_token_ids=[], generated_text="", generated_by=None)
    return analyse(ctx, plan, traced, model="hand-made", prompt="p", position=position)


# --- the stage-by-stage trace -----------------------------------------------------------------------------------


def test_each_stage_is_the_registry_distribution_of_the_chain_up_to_it():
    ctx = random_context()
    transforms, selector = parse_chain("repetition-penalty=1.3,temperature=0.7,top-k=20,top-p=0.8,min-p=0.05")
    strategy = Strategy(transforms, selector)
    top_ids = [t.token_id for t in top_tokens(ctx, 10)]
    stages = trace(ctx, strategy, top_ids)
    raw = torch.softmax(ctx.logits, dim=-1)
    assert [s.name for s in stages] == ["logits", *(str(t) for t in transforms)]
    previous = raw[0]
    for i, stage in enumerate(stages):
        expected = Strategy(transforms[:i], Sample()).distribution(ctx.logits, ctx.input_ids)[0]
        assert stage.probs == pytest.approx(expected[top_ids].tolist(), abs=1e-7)
        assert stage.kept == int((expected > 0).sum())
        assert stage.kept_mass_raw == pytest.approx(float(raw[0][expected > 0].sum()), abs=1e-6)
        assert stage.mass_removed == pytest.approx(float(previous[(previous > 0) & (expected == 0)].sum()), abs=1e-6)
        assert stage.entropy_nats == pytest.approx(float(entropy_nats(expected.double(), is_log=False)), abs=1e-6)
        assert stage.entropy_bits == pytest.approx(stage.entropy_nats / math.log(2))
        kl = float(kl_nats(expected.double(), torch.log_softmax(ctx.logits[0].double(), dim=-1)))
        assert stage.kl_from_raw_nats == pytest.approx(kl, abs=1e-6)
        previous = expected
    final = build_strategy({}, chain="repetition-penalty=1.3,temperature=0.7,top-k=20,top-p=0.8,min-p=0.05")
    assert stages[-1].probs == pytest.approx(
        final.strategy.distribution(ctx.logits, ctx.input_ids)[0][top_ids].tolist(), abs=1e-7)
    assert stages[0].kl_from_raw_nats == 0.0 and stages[0].mass_removed == 0.0


def test_top_p_on_a_hand_made_distribution_keeps_the_crossing_token_and_reports_the_removed_mass():
    ctx = context([0.4, 0.3, 0.2, 0.1])
    stages = trace(ctx, build_strategy({"top_p": 0.6}).strategy, [0, 1, 2, 3])
    raw, cut = stages
    assert raw.probs == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=1e-6) and raw.ranks == [1, 2, 3, 4]
    assert cut.kept == 2 and cut.probs == pytest.approx([0.571429, 0.428571, 0, 0], abs=1e-6)
    assert cut.ranks == [1, 2, None, None]
    assert cut.mass_removed == pytest.approx(0.3, abs=1e-6) and cut.kept_mass_raw == pytest.approx(0.7, abs=1e-6)
    assert cut.entropy_nats == pytest.approx(-(4 / 7 * math.log(4 / 7) + 3 / 7 * math.log(3 / 7)), abs=1e-6)
    assert cut.kl_from_raw_nats == pytest.approx(math.log(1 / 0.7), abs=1e-6)  # KL of a renormalised cut
    assert cut.flags == []


def test_greedy_adds_a_selector_stage_that_is_the_one_hot_argmax():
    ctx = random_context()
    strategy = build_strategy({"temperature": 0}).strategy
    top_ids = [t.token_id for t in top_tokens(ctx, 5)]
    stages = trace(ctx, strategy, top_ids)
    assert [s.kind for s in stages] == ["raw", "selector"]
    assert stages[-1].kept == 1 and stages[-1].probs[0] == 1.0 and stages[-1].entropy_nats == 0.0
    assert stages[-1].kl_from_raw_nats == pytest.approx(-math.log(stages[0].probs[0]), abs=1e-6)


def test_a_tie_at_the_top_k_cut_is_flagged_and_a_clear_cut_is_not():
    tied = trace(context([0.4, 0.2, 0.2, 0.2]), build_strategy({"top_k": 2}).strategy, [0, 1, 2, 3])[-1]
    assert tied.kept == 2 and len(tied.flags) == 1
    assert "tie at the cut" in tied.flags[0] and "'t1' (id 1, kept)" in tied.flags[0]
    assert "'t2' (id 2, removed)" in tied.flags[0]
    clear = trace(context([0.4, 0.3, 0.2, 0.1]), build_strategy({"top_k": 2}).strategy, [0, 1, 2, 3])[-1]
    assert clear.flags == []


def test_a_cut_decided_by_float_rounding_is_flagged():
    # top-p = 0.8 exactly at a cumulative mass of 0.5 + 0.3: the third token stays or goes by rounding
    near = trace(context([0.5, 0.3, 0.15, 0.05]), build_strategy({"top_p": 0.8}).strategy, [0, 1, 2, 3])[-1]
    assert any(f.startswith("float rounding: `top_p` = 0.8") for f in near.flags), near.flags
    far = trace(context([0.5, 0.3, 0.15, 0.05]), build_strategy({"top_p": 0.75}).strategy, [0, 1, 2, 3])[-1]
    assert far.flags == []
    # min-p: a ratio p / p_max of exactly 0.1
    ratio = trace(context([0.5, 0.3, 0.15, 0.05]), build_strategy({"min_p": 0.1}).strategy, [0, 1, 2, 3])[-1]
    assert any("`min_p` = 0.1" in f and f"within {ROUNDING_TOLERANCE:g}" in f for f in ratio.flags), ratio.flags
    assert trace(context([0.5, 0.3, 0.15, 0.05]), build_strategy({"min_p": 0.2}).strategy, [0, 1, 2, 3])[-1].flags == []


def test_a_penalty_that_promotes_a_token_from_outside_the_top_names_it():
    ctx = context([0.4, 0.3, 0.2, 0.1])
    ctx.input_ids = torch.tensor([[0, 1]])
    stages = trace(ctx, build_strategy({}, chain="repetition-penalty=100,top-k=2").strategy, [0, 1])
    assert {t.token for t in stages[-1].outside_top} == {"t2", "t3"}


# --- the temperature sweep and the draws -----------------------------------------------------------------------


def test_the_temperature_sweep_matches_the_registry_and_its_limits():
    ctx = random_context(vocab=40)
    temps = (0.001, 0.5, 1.0, 2.0, 1e4)
    strategies = tuple(build_strategy({"temperature": t}).strategy for t in temps)
    top_ids = [t.token_id for t in top_tokens(ctx, 5)]
    sweep = temperature_sweep(ctx, temps, strategies, top_ids)
    for row, strategy in zip(sweep.rows, strategies, strict=True):
        expected = strategy.distribution(ctx.logits, ctx.input_ids)[0]
        h = float(entropy_nats(expected.double(), is_log=False))
        assert row.probs == pytest.approx(expected[top_ids].tolist(), abs=1e-7)
        assert row.entropy_nats == pytest.approx(h, abs=1e-6)
        assert row.effective_candidates == pytest.approx(math.exp(h), rel=1e-6)
        assert row.p_argmax == pytest.approx(float(expected.max())) and row.argmax_token_id == top_ids[0]
    entropies = [row.entropy_nats for row in sweep.rows]
    assert entropies == sorted(entropies)  # hotter is flatter
    assert all(r.argmax_token_id == top_ids[0] for r in sweep.rows)  # ... and the ranking stays
    cold, hot = sweep.rows[0], sweep.rows[-1]
    assert cold.p_argmax > 0.999 and cold.entropy_nats < 0.01  # T -> 0: one-hot
    assert sweep.limits.vocab_size == 40 and sweep.limits.hot_entropy_nats == pytest.approx(math.log(40))
    assert hot.entropy_nats == pytest.approx(math.log(40), abs=1e-4)  # T -> inf: uniform, log V
    assert sweep.limits.cold_token_id == top_ids[0] and not sweep.truncated


def test_draws_match_the_expected_distribution_statistically():
    ctx = random_context(vocab=30, seed=4)
    top_ids = [t.token_id for t in top_tokens(ctx, 8)]
    for temperature in (0.5, 1.0, 3.0):
        probs = build_strategy({"temperature": temperature}).strategy.distribution(ctx.logits, ctx.input_ids)[0]
        n = 20_000
        d = draw(ctx, probs, n, seed=11, top_ids=top_ids, label=f"T={temperature}", temperature=temperature)
        assert sum(d.counts) + d.other_count == n
        assert d.expected == pytest.approx(probs[top_ids].tolist(), abs=1e-7)
        assert d.other_expected == pytest.approx(1 - sum(d.expected), abs=1e-6)
        # Pearson's chi-square with 8 degrees of freedom: mean 8, sd 4; 8 + 5 sd is far in the tail (p < 1e-5)
        assert d.dof == 8 and d.chi2 < d.dof + 5 * math.sqrt(2 * d.dof)
        # the expected total variation over 9 buckets is about sqrt(9 / (2 pi n)); allow 4 times it
        assert d.tv < 4 * math.sqrt(9 / (2 * math.pi * n))
    same = draw(ctx, probs, 500, seed=1, top_ids=top_ids, label="a")
    assert same.counts == draw(ctx, probs, 500, seed=1, top_ids=top_ids, label="b").counts
    assert same.counts != draw(ctx, probs, 500, seed=2, top_ids=top_ids, label="c").counts


def test_greedy_draws_always_give_the_argmax():
    ctx = random_context()
    top_ids = [t.token_id for t in top_tokens(ctx, 3)]
    probs = build_strategy({"temperature": 0}).strategy.distribution(ctx.logits, ctx.input_ids)[0]
    d = draw(ctx, probs, 300, seed=0, top_ids=top_ids, label="T=0")
    assert d.counts == [300, 0, 0] and d.distinct == 1 and d.tv == 0.0


# --- parameter sweeps and the order difference -----------------------------------------------------------------


def test_top_p_sweep_kept_size_never_shrinks_as_p_grows_and_keeps_at_least_p():
    ctx = random_context(vocab=60, seed=2)
    sweep = parameter_sweep(ctx, parse_sweep("top-p=0.05:1.0:0.05", NO_SETTINGS, None, None))
    kept = [p.kept for p in sweep.points]
    assert len(kept) == 20 and kept == sorted(kept) and kept[-1] == 60
    assert all(p.kept_mass_raw >= p.value - 1e-6 for p in sweep.points)
    for point in sweep.points:
        expected = build_strategy({"top_p": point.value}).strategy.distribution(ctx.logits, ctx.input_ids)[0]
        assert point.kept == int((expected > 0).sum())


def test_top_k_and_min_p_sweeps():
    ctx = random_context(vocab=60, seed=2)
    top_k = parameter_sweep(ctx, parse_sweep("top-k=1,5,10,40", NO_SETTINGS, None, None))
    assert [p.kept for p in top_k.points] == [1, 5, 10, 40] and [p.value for p in top_k.points] == [1, 5, 10, 40]
    min_p = parameter_sweep(ctx, parse_sweep("min-p=0:0.5:0.1", NO_SETTINGS, None, None))
    kept = [p.kept for p in min_p.points]
    assert [p.value for p in min_p.points] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert kept == sorted(kept, reverse=True) and kept[0] == 60


def test_a_sweep_keeps_the_other_settings():
    plan = parse_sweep("top-p=0.5:0.9:0.2", settings(temperature=0.7, top_k=40), None, None)
    assert [str(s) for s in plan.strategies] == [
        f"logits -> temperature(0.7) -> top-k(40) -> top-p({p:g}) -> sample" for p in (0.5, 0.7, 0.9)]


def test_order_diff_on_a_hand_made_case_where_the_orders_differ():
    # T = 2 flattens (0.5, 0.3, 0.15, 0.05) to (0.379, 0.294, 0.208, 0.120): top-p 0.7 then needs three
    # tokens; on the raw distribution two (0.5 + 0.3) already reach it
    ctx = context([0.5, 0.3, 0.15, 0.05])
    plan = make_plan(settings(temperature=2.0, top_p=0.7), order_diff=True)
    first, second = plan.orders
    assert str(first) == "logits -> temperature(2) -> top-p(0.7) -> sample"
    assert str(second) == "logits -> top-p(0.7) -> temperature(2) -> sample"
    diff = order_diff(ctx, first, second, [0, 1, 2, 3])
    assert diff.first.kept == 3 and diff.second.kept == 2
    assert not diff.identical and not diff.same_kept_set
    assert diff.only_first_count == 1 and [t.token_id for t in diff.only_first] == [2] and diff.only_second == []
    p = first.distribution(ctx.logits, ctx.input_ids)[0]
    q = second.distribution(ctx.logits, ctx.input_ids)[0]
    assert diff.first.probs == pytest.approx(p.tolist(), abs=1e-7)
    assert diff.second.probs == pytest.approx(q.tolist(), abs=1e-7)
    assert diff.second.ranks == [1, 2, None, None]
    assert diff.tv == pytest.approx(0.5 * float((p - q).abs().sum()), abs=1e-7)


def test_top_k_commutes_with_temperature_so_both_orders_agree():
    plan = make_plan(settings(temperature=0.5, top_k=3), order_diff=True)
    diff = order_diff(random_context(), *plan.orders, [0, 1])
    assert diff.same_kept_set and diff.tv < 1e-6 and diff.only_first_count == diff.only_second_count == 0


# --- validation before the model loads -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragment"), [
    ("0.1,abc", "'abc' is not a number"), ("", "empty"), ("1,,2", "empty item"),
    ("-1", "finite number >= 0"), ("inf", "finite number >= 0"), ("nan", "finite number >= 0"),
])
def test_a_bad_temperature_list_is_refused(text, fragment):
    with pytest.raises(UsageError, match="--temps") as caught:
        parse_temps(text)
    assert fragment in str(caught.value)


def test_temperatures_are_sorted_without_repeats():
    assert parse_temps(" 2, 0.5,1,0.5,0 ") == (0.0, 0.5, 1.0, 2.0)


@pytest.mark.parametrize(("spec", "fragment"), [
    ("top-p", "expected NAME=START:STOP:STEP"), ("top-p=", "expected NAME=START:STOP:STEP"),
    ("top-p=0.5:1.0", "expected NAME=START:STOP:STEP"), ("top-p=1.0:0.5:0.1", "below the start"),
    ("top-p=0.5:1.0:0", "step has to be > 0"), ("top-p=0.5:1.0:-0.1", "step has to be > 0"),
    ("top-p=a:1:0.1", "'a' is not a number"), ("top-q=0.5:1:0.1", "did you mean `top-p`"),
    ("top-p=0.5:1.5:0.5", "`top_p` has to be in (0, 1], but is 1.5"), ("top-k=1.5:3:1", "whole numbers"),
    ("min-p=0:1:0.0001", "at most 1000"), ("repetition-penalty=1:2:0.5", "cannot sweep"),
])
def test_a_bad_sweep_spec_is_refused(spec, fragment):
    with pytest.raises(UsageError) as caught:
        parse_sweep(spec, NO_SETTINGS, None, None)
    assert fragment in str(caught.value) and "--sweep" in str(caught.value)


@pytest.mark.parametrize(("args", "fragment"), [
    ({"at": -1}, "--at has to be an integer >= 0"), ({"draws": 0}, "--draws"), ({"top_n": 0}, "--top-n"),
    ({"chain": "top-k=3", "temps": "1,2"}, "--temps"), ({"chain": "top-k=3", "order_diff": True}, "--order-diff"),
    ({"chain": "top-k=3", "sweeps": ["top-p=0.5:1:0.1"]}, "--chain"),
    ({"strategy": "greedy", "temps": "1,2"}, "ignores the temperature"),
    ({"plot": "out.jpg"}, "ending in .png"),
])
def test_bad_plans_are_refused(args, fragment):
    with pytest.raises(UsageError) as caught:
        make_plan(NO_SETTINGS, **args)
    assert fragment in str(caught.value)


# --- the renderers ---------------------------------------------------------------------------------------------


def full_report():
    ctx = random_context(vocab=40, seed=5)
    return report_for(ctx, sampling={"temperature": 0.7, "top_p": 0.8}, temps="0.5,1,2", draws=200,
                      sweeps=["top-p=0.5:1:0.25"], order_diff=True, top_n=4, seed=3)


def test_the_json_document_is_strict_and_holds_every_number():
    report = full_report()
    document = strict_loads(dumps_document(report))
    assert document == json.loads(json.dumps(inspect_document(report)))
    assert document["type"] == "inspect" and document["vocab_size"] == 40
    assert len(document["top"]) == 4 and {"token_id", "token", "logit", "prob", "logprob"} <= document["top"][0].keys()
    stage_keys = {"name", "kept", "mass_removed", "kept_mass_raw", "entropy_nats", "entropy_bits", "kl_from_raw_nats",
                  "probs", "ranks", "flags"}
    assert [s["name"] for s in document["stages"]] == ["logits", "temperature(0.7)", "top-p(0.8)"]
    assert all(stage_keys <= s.keys() and len(s["probs"]) == 4 for s in document["stages"])
    assert [r["temperature"] for r in document["temperatures"]["rows"]] == [0.5, 1.0, 2.0]
    assert document["temperatures"]["limits"]["hot_entropy_nats"] == pytest.approx(math.log(40))
    assert [d["n"] for d in document["draws"]] == [200, 200, 200]
    assert all(sum(d["counts"]) + d["other_count"] == 200 for d in document["draws"])
    assert [p["value"] for p in document["sweeps"][0]["points"]] == [0.5, 0.75, 1.0]
    assert document["order_diff"]["first"]["order"] == "transformers"


def render(report, terminal: bool) -> str:
    buffer = io.StringIO()
    show_report(Console(file=buffer, width=140, force_terminal=terminal, color_system="standard" if terminal else None,
                        highlight=False), report)
    return buffer.getvalue()


def test_plain_text_has_every_section_and_no_colour_codes_and_a_terminal_gets_colour():
    report = full_report()
    plain = render(report, terminal=False)
    assert ANSI not in plain
    for heading in ("next-token distribution, raw model", "stage by stage: logits -> temperature(0.7) -> top-p(0.8)",
                    "temperature sweep", "entropy against T", "T → 0: one-hot", "T → ∞: uniform over V = 40 tokens",
                    "200 multinomial draws", "sweep top-p=0.5:1:0.25", "order matters"):
        assert heading in plain, heading
    assert "█" in plain  # probability bars
    assert ANSI in render(report, terminal=True)


def test_model_text_is_never_read_as_markup():
    ctx = random_context(vocab=10)
    ctx.token_text = lambda i: "[bold]x[/bold]" if i == int(ctx.logits.argmax()) else f"t{i}"
    plain = render(report_for(ctx, top_n=3), terminal=False)
    assert "'[bold]x[/bold]'" in plain


# --- the command line ------------------------------------------------------------------------------------------


def invoke(*args: str, **kwargs):
    return runner.invoke(app, list(args), prog_name="samplecli", **kwargs)


def ok(*args: str, **kwargs):
    result = invoke(*args, **kwargs)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\nexc: {result.exception!r}"
    assert "Traceback" not in result.stderr + result.stdout
    return result


def test_the_raw_distribution_on_stdout_matches_the_model(tiny_model_dir, tiny_lm):
    result = ok("inspect", PROMPT, "--model", str(tiny_model_dir), "--format", "json", "--top-n", "5")
    assert result.stderr == ""
    document = strict_loads(result.stdout)
    ids = tiny_lm.tokenizer(PROMPT)["input_ids"]
    with torch.inference_mode():
        logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[:, -1, :].float()
    expected = Strategy([], Sample()).distribution(logits, torch.tensor([ids]))[0]
    top = torch.sort(logits[0], descending=True, stable=True).indices[:5].tolist()
    assert [t["token_id"] for t in document["top"]] == top
    assert [t["prob"] for t in document["top"]] == pytest.approx(expected[top].tolist(), abs=1e-6)
    assert document["chain"] is None and len(document["stages"]) == 1
    assert document["position"] == {"step": 0, "prompt_tokens": len(ids), "generated_token_ids": [],
                                    "generated_text": "", "generated_by": None, "drawn_token_id": None,
                                    "drawn_token": None}
    text = ok("inspect", PROMPT, "--model", str(tiny_model_dir), "--top-n", "5")
    assert "next-token distribution, raw model" in text.stdout and ANSI not in text.stdout and text.stderr == ""


def test_at_step_k_matches_the_decode_loop_at_that_step(tiny_model_dir):
    k, n = 4, 6
    args = ("--model", str(tiny_model_dir), "--strategy", "top-p", "--top-p", "0.5", "--seed", "3")
    steps = [json.loads(line) for line in ok("generate", PROMPT, *args, "-n", str(k + 1), "--top-n", str(n),
                                             "--format", "jsonl").stdout.splitlines()]
    step = steps[k]
    assert step["step"] == k
    document = strict_loads(ok("inspect", PROMPT, *args, "--at", str(k), "--top-n", str(n), "-f", "json").stdout)
    assert document["position"]["generated_token_ids"] == [s["token_id"] for s in steps[:k]]
    assert document["position"]["generated_by"] == "logits -> top-p(0.5) -> sample"
    assert document["position"]["drawn_token_id"] == step["token_id"]  # what generate drew at step k
    assert document["position"]["drawn_token"] == step["token"]
    shown = ok("inspect", PROMPT, *args, "--at", str(k), "--top-n", str(n)).stdout
    assert f"drawn at step {k} by that generation: " in shown and f"(id {step['token_id']}" in shown
    assert [t["token_id"] for t in document["top"]] == [a["token_id"] for a in step["top"]]
    assert [t["prob"] for t in document["top"]] == pytest.approx([a["prob"] for a in step["top"]], abs=1e-5)
    final = document["stages"][-1]
    assert final["probs"] == pytest.approx([a["sampled_prob"] for a in step["top"]], abs=1e-5)
    assert final["kept"] == step["kept"]
    assert final["entropy_nats"] == pytest.approx(step["sampled_entropy"], abs=1e-4)


def test_a_full_run_on_the_model(tiny_model_dir, tmp_path):
    result = ok("inspect", PROMPT, "--model", str(tiny_model_dir), "--chain", "temperature=0.7,top-k=40,top-p=0.9",
                "--seed", "1", "--top-n", "4", "--draws", "300", "-f", "json")
    document = strict_loads(result.stdout)
    assert [s["kept"] for s in document["stages"]][:3] == [300, 300, 40]
    assert document["draws"][0]["label"] == "the strategy" and document["draws"][0]["temperature"] is None
    result = ok("inspect", PROMPT, "--model", str(tiny_model_dir), "--temps", "0.1,1,5", "--draws", "200",
                "--sweep", "top-p=0.5:1:0.25", "--sweep", "top-k=1,10", "--order-diff", "--temp", "0.5",
                "--top-p", "0.8", "--seed", "2", "--top-n", "3")
    assert "note: --temps replaces temperature=0.5" in result.stderr
    for heading in ("stage by stage", "temperature sweep", "200 multinomial draws", "sweep top-p=0.5:1:0.25",
                    "sweep top-k=1,10", "order matters"):
        assert heading in result.stdout
    assert ANSI not in result.stdout + result.stderr


@pytest.mark.parametrize(("args", "fragments"), [
    (["--temps", "0.1,abc"], ["--temps", "'abc'"]),
    (["--sweep", "top-p=0.5:1.0"], ["--sweep", "NAME=START:STOP:STEP"]),
    (["--sweep", "top-p=1:0.5:0.1"], ["--sweep", "below the start"]),
    (["--at", "-1"], ["--at", "-1"]),
    (["--draws", "0"], ["--draws", "0"]),
    (["--top-n", "0"], ["--top-n", "0"]),
    (["--temp", "-1"], ["temperature", "-1"]),
    (["--chain", "top-k=3", "--order-diff"], ["--order-diff", "--chain"]),
    (["--format", "xml"], ["--format", "xml"]),
    (["--plot", "out.gif"], ["--plot", ".png"]),
])
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, args, fragments):
    missing_model = tmp_path / "no-such-model"  # were the model loaded first, this would be the error
    result = invoke("inspect", PROMPT, "--model", str(missing_model), *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(missing_model) not in line
    for fragment in fragments:
        assert fragment in line, line


def test_at_past_the_end_of_the_context_is_one_line(tiny_model_dir):
    result = invoke("inspect", PROMPT, "--model", str(tiny_model_dir), "--at", "100")
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--at 100" in line and "context of 64 tokens" in line


def test_without_matplotlib_plot_says_how_to_get_it(tiny_model_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    result = invoke("inspect", PROMPT, "--model", str(tiny_model_dir), "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "pip install 'samplecli[plot]'" in line
    assert not (tmp_path / "p.png").exists()


def test_plot_writes_a_png(tiny_model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "entropy.png"
    result = ok("inspect", PROMPT, "--model", str(tiny_model_dir), "--temps", "0.1,0.5,1,2,5", "--plot", str(path),
                "--top-n", "5", "-f", "json")
    strict_loads(result.stdout)
    assert f"wrote {path}" in result.stderr
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 500 and len(data) > 20_000


def test_inspect_help_does_not_import_torch():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "samplecli", "inspect", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--order-diff" in run.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "samplecli.cli" in modules
    assert not {m for m in modules if m.split(".")[0] in ("torch", "transformers", "matplotlib")}
