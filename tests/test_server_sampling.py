"""Sampling on the server (the default for `--model http://...`): the strategy translated to llama.cpp's
`/completion` fields, checked field by field, and against a real `llama-server` serving the bundled model: its
greedy tokens are the local model's, its seeded draws repeat, its post-sampling probabilities are the strategy's
distribution, and what it cannot run is refused in one line before any request for tokens."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from samplecli.backends.remote.llama_cpp_sampling import translate
from samplecli.cli import app
from samplecli.engine.decode import decode, encode_prompt
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.engine.server_decode import chain_spec, server_chain, server_decode
from samplecli.errors import UsageError
from samplecli.strategies import build_strategy

PROMPTS = ["ROMEO:", "JULIET:\nO Romeo,", "First Citizen:\nBefore we proceed"]


def fields_of(settings: dict, strategy: str | None = None, chain: str | None = None, context: int = 256):
    built = build_strategy(settings, strategy=strategy, chain=chain).strategy
    return translate(*chain_spec(built), context=context, decode=lambda ids: "".join(chr(65 + i) for i in ids))


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# --- the translation, field by field -------------------------------------------------------------------------------

def test_the_default_chain_runs_in_samplecli_order_with_nothing_else_on():
    chain = fields_of({})  # temperature 0.8 then top-p 0.95, as locally
    assert chain.fields["samplers"] == ["temperature", "top_p"]
    assert chain.fields["temperature"] == 0.8 and chain.fields["top_p"] == 0.95
    assert chain.fields["mirostat"] == 0 and chain.fields["dynatemp_range"] == 0.0
    assert "top_k" not in chain.fields and "min_p" not in chain.fields  # left out of `samplers`: not run
    assert str(chain) == "llama.cpp: logits -> temperature(0.8) -> top_p(0.95) -> dist"


def test_an_explicit_chain_keeps_its_order_and_greedy_is_the_servers_temperature_zero():
    chain = fields_of({}, chain="top-k=40,min-p=0.1,temperature=1.5,typical=0.9,top-n-sigma=1")
    assert chain.fields["samplers"] == ["top_k", "min_p", "temperature", "typ_p", "top_n_sigma"]
    assert (chain.fields["top_k"], chain.fields["min_p"], chain.fields["typical_p"]) == (40, 0.1, 0.9)
    greedy = fields_of({"temperature": 0, "repetition_penalty": 1.3})
    assert greedy.fields["samplers"] == ["penalties", "temperature"] and greedy.fields["temperature"] == 0.0
    assert greedy.fields["repeat_penalty"] == 1.3 and greedy.fields["repeat_last_n"] == 256  # the whole context


def test_penalties_share_one_window_and_logit_bias_goes_first_with_false_for_a_ban():
    chain = fields_of({"presence_penalty": 0.5, "frequency_penalty": 0.2, "penalty_last_n": 32,
                       "logit_bias": {5: -math.inf, 7: 2.0}, "top_k": 10})
    assert chain.fields["samplers"] == ["penalties", "top_k"]
    assert chain.fields["repeat_last_n"] == 32 and chain.fields["presence_penalty"] == 0.5
    assert chain.fields["logit_bias"] == [[5, False], [7, 2.0]]
    with pytest.raises(UsageError, match=r"one window .*--penalty-last-n -1; use --sample-locally"):
        fields_of({"repetition_penalty": 1.2, "presence_penalty": 0.5})  # whole sequence vs the last 64
    assert fields_of({"repetition_penalty": 1.2, "presence_penalty": 0.5, "penalty_last_n": -1}) \
        .fields["repeat_last_n"] == 256


def test_mirostat_xtc_and_dry_become_their_fields():
    miro = fields_of({}, chain="temperature=0.9,mirostat-v2:tau=4:eta=0.2")
    assert (miro.fields["mirostat"], miro.fields["mirostat_tau"], miro.fields["mirostat_eta"]) == (2, 4.0, 0.2)
    assert miro.fields["temperature"] == 0.9
    xtc = fields_of({}, chain="xtc:xtc_probability=0.5:xtc_threshold=0.1")
    assert xtc.fields["samplers"] == ["xtc"] and xtc.fields["xtc_probability"] == 0.5
    dry = fields_of({}, chain="dry:dry_multiplier=0.8:dry_sequence_breakers=0;1 2")
    assert dry.fields["dry_sequence_breakers"] == ["A", "BC"] and dry.fields["dry_penalty_last_n"] == 256


@pytest.mark.parametrize(("settings", "chain", "says"), [
    ({"epsilon_cutoff": 3e-4}, None, "has no `epsilon` sampler"),
    ({"top_h": 0.4}, None, "has no `top-h` sampler"),
    ({"no_repeat_ngram_size": 3}, None, "has no `no-repeat-ngram` sampler"),
    ({}, "top-k=40,mirostat", "`top-k` cannot come before it"),
    ({}, "top-k=40,logit-bias:logit_bias=3=1", "`logit-bias` has to come first"),
    ({}, "top-k=40,temperature=0.5,top-k=5", "`top_k` is in the chain twice"),
    ({}, "dry", "sequence breakers"),
    ({}, "xtc:seed=3", "cannot take a seed of its own"),
])
def test_what_the_server_cannot_run_is_refused_naming_the_engine_and_the_way_out(settings, chain, says):
    with pytest.raises(UsageError) as refused:
        fields_of(settings, chain=chain)
    message = str(refused.value)
    assert message.startswith("llama.cpp's server ") and says in message
    assert message.endswith("use --sample-locally") and "\n" not in message


def test_a_streamed_steps_entropy_bounds_are_the_tensor_bounds_without_torch():
    """The bounds a top-N step from a server gets (plain floats) are stats.entropy_bounds_nats' on the same row: the
    hand-made top two of docs (0.5, 0.3 of V = 6) and a random top 20 of 2048."""
    from samplecli.stats import entropy_bounds_nats, top_n_entropy_bounds

    torch.manual_seed(0)
    random = torch.log_softmax(torch.randn(2048).double() * 3, -1)
    for logprobs, vocab in (([math.log(0.5), math.log(0.3)], 6), (torch.topk(random, 20).values.tolist(), 2048)):
        row = torch.full((1, vocab), -math.inf, dtype=torch.float64)
        row[0, : len(logprobs)] = torch.tensor(logprobs, dtype=torch.float64)
        expected = [float(x[0]) for x in entropy_bounds_nats(row, vocab)]
        assert top_n_entropy_bounds(logprobs, vocab) == pytest.approx(expected, abs=1e-12)
    low, high, tail = top_n_entropy_bounds(torch.topk(random, 20).values.tolist(), 2048)
    assert low <= -float((random.exp() * random).sum()) <= high and tail > 0


# --- against the real server -------------------------------------------------------------------------------------

def run_on_server(lm, settings: dict, prompt: str, **config) -> list[Step | Done]:
    strategy = build_strategy(settings).strategy
    config = DecodeConfig(**config)
    chain = server_chain(lm, strategy, config)
    return list(server_decode(lm, chain, encode_prompt(lm, prompt), config, label=str(chain)))


def test_greedy_on_the_server_gives_the_local_models_tokens_and_log_probabilities(remote, local):
    """Where the two models' argmax could flip (top-2 within 2e-2 nats: llama.cpp's tanh GELU moves logits by
    about 4e-3) a differing token is allowed and reported; no such step occurs on these prompts."""
    flips = []
    for prompt in PROMPTS:
        ids = encode_prompt(local, prompt)
        events = run_on_server(remote, {"temperature": 0}, prompt, max_new_tokens=24, seed=1)
        theirs = events[-1]
        ours = next(e for e in decode(local, build_strategy({"temperature": 0}).strategy, ids,
                                      DecodeConfig(max_new_tokens=24)) if isinstance(e, Done))
        steps = [e for e in events if isinstance(e, Step)]
        assert all(s.sampled_by == "server" and s.probs == "raw" and s.distribution == "full" for s in steps)
        if theirs.token_ids != ours.token_ids:
            step = next(i for i, (a, b) in enumerate(zip(theirs.token_ids, ours.token_ids, strict=False)) if a != b)
            top2 = torch.topk(local.logits(ids + list(ours.token_ids[:step]), keep=1)[-1].double(), 2).values
            assert float(top2[0] - top2[1]) < 2e-2, (prompt, step)
            flips.append((prompt, step))
            continue
        assert theirs.text == ours.text
        # step t's distribution follows the prompt and the first t tokens: the logits after the last 24 positions
        # of the prompt and all but the last token
        exact = torch.log_softmax(local.logits(ids + list(ours.token_ids[:-1]), keep=24).double(), -1)
        for step in steps:
            assert step.logprob == pytest.approx(float(exact[step.step, step.token_id]), abs=1e-2)
            row = exact[step.step]
            assert step.entropy == pytest.approx(-float((row.exp() * row).sum()), abs=1e-2)
    assert flips == []


def test_seeded_server_sampling_repeats_and_sample_i_does_not_depend_on_how_many(llama_server):
    args = ["generate", "ROMEO:", "-m", llama_server.url, "--temp", "1.2", "--top-k", "50", "-n", "12",
            "--seed", "7", "-f", "jsonl", "-q", "--top-logprobs", "5"]
    three = cli(*args, "--num-samples", "3")
    assert three.exit_code == 0, three.stderr
    again = cli(*args, "--num-samples", "3")
    one = cli(*args)
    done = {r["sample"]: r["token_ids"] for r in jsonl(three.stdout) if r["type"] == "done"}
    assert done == {r["sample"]: r["token_ids"] for r in jsonl(again.stdout) if r["type"] == "done"}
    assert [r["token_ids"] for r in jsonl(one.stdout) if r["type"] == "done"] == [done[0]]
    assert len({tuple(ids) for ids in done.values()}) == 3  # three seeds, three texts
    steps = [r for r in jsonl(three.stdout) if r["type"] == "step"]
    assert all(s["sampled_by"] == "server" and s["probs"] == "raw" and s["entropy"] is None
               and len(s["entropy_bounds"]) == 2 and s["sampled_prob"] is None for s in steps)


def test_post_sampling_probabilities_are_the_strategys_distribution(remote, local):
    """The server's post-sampling probabilities for temperature 0.7 then top-p 0.9 equal that strategy's
    distribution over the local model's logits (TV < 0.02), sum to 1, and say their entropy is exact."""
    settings = {"temperature": 0.7, "top_p": 0.9}
    strategy = build_strategy(settings).strategy
    config = DecodeConfig(max_new_tokens=6, seed=3, top_n=2048)  # every returned candidate in `top`
    chain = server_chain(remote, strategy, config)
    ids = encode_prompt(local, "JULIET:\nO Romeo,")
    steps = [e for e in server_decode(remote, chain, ids, config, label="x", post_sampling=True)
             if isinstance(e, Step)]
    context = list(ids)
    for step in steps:
        expected = strategy.distribution(local.logits(context, keep=1).float(), torch.tensor([context]))[0]
        assert step.sampled_entropy_exact and abs(step.kept - int((expected > 0).sum())) <= 1  # the nucleus' edge
        assert step.sampled_prob == pytest.approx(float(expected[step.token_id]), abs=2e-2)
        shown = torch.zeros_like(expected)
        for alternative in step.top:
            shown[alternative.token_id] = alternative.sampled_prob
        assert len(step.top) == step.kept and 0.5 * float((shown - expected).abs().sum()) < 2e-2
        assert step.sampled_entropy == pytest.approx(-float((expected * expected.log()).nan_to_num().sum()), abs=5e-2)
        assert step.logprob is None and math.isnan(step.prob)
        context.append(step.token_id)


def test_the_header_shows_the_servers_chain_and_jsonl_says_who_sampled(llama_server):
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "--top-k", "5", "--temp", "0.7", "-n", "3",
                 "--seed", "2", "--post-sampling-probs", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "llama.cpp: logits -> temperature(0.7) -> top_k(5) -> dist" in result.stderr
    steps = [r for r in jsonl(result.stdout) if r["type"] == "step"]
    assert len(steps) == 3
    for step in steps:
        assert step["probs"] == "post-sampling" and step["sampled_entropy_exact"] is True
        assert step["kept"] <= 5 and step["logprob"] is None and step["entropy"] is None
        assert sum(a["sampled_prob"] for a in step["top"]) == pytest.approx(1, abs=1e-3)


def completions_launched(server) -> int:
    return server.log(tail=10**8).count("processing task")


@pytest.mark.parametrize(("flags", "says"), [
    (["--epsilon-cutoff", "3e-4"], "llama.cpp's server has no `epsilon` sampler; use --sample-locally"),
    (["--num-beams", "3"], "beam search runs in samplecli, not on llama.cpp's server; add --sample-locally"),
    (["--min-new-tokens", "3"], "llama.cpp's server has no minimum length"),
])
def test_a_refusal_is_one_line_with_nothing_on_stdout_and_no_completion_asked(llama_server, flags, says):
    before = completions_launched(llama_server)
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "-n", "4", *flags)
    assert result.exit_code == 2 and result.stdout == ""
    assert says in result.stderr and result.stderr.strip().count("\n") == 0
    assert completions_launched(llama_server) == before
    assert cli("generate", "ROMEO:", "-m", llama_server.url, "-n", "4", "-q", "--sample-locally",
               *flags).exit_code == 0
    assert completions_launched(llama_server) > before  # the log does count completions: the check above is real


def test_post_sampling_probs_without_sampling_on_a_server_is_refused(llama_server):
    result = cli("generate", "ROMEO:", "-n", "2", "--post-sampling-probs")
    assert result.exit_code == 2 and result.stdout == "" and "--post-sampling-probs" in result.stderr


# --- compare, sampled on the server ------------------------------------------------------------------------------

COMPARE_SPECS = ["greedy", "top-p=0.9", "top-k=5", "min-p=0.1", "temperature=0.7,top-k=40", "typical=0.9",
                 "top-n-sigma=1", "temperature=1.3,min-p=0.05"]


def test_compare_on_the_server_gives_each_column_what_generate_gives_with_its_strategy(llama_server):
    """Eight columns, two samples each, as sixteen concurrent requests; column i's texts are those of `generate`
    with the same chain and seed (sample j has generate's seed for sample j), and its chain is the server's."""
    specs = [arg for spec in COMPARE_SPECS for arg in ("-s", spec)]
    result = cli("compare", "ROMEO:", "-m", llama_server.url, *specs, "-n", "10", "--seed", "5", "--num-samples",
                 "2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert "sampled on the server" in result.stderr and "coupled" not in result.stderr
    report = json.loads(result.stdout)
    assert report["coupled"] is False and len(report["strategies"]) == 8
    for spec, section in zip(COMPARE_SPECS, report["strategies"], strict=True):
        assert section["chain"].startswith("llama.cpp: logits -> ")
        alone = cli("generate", "ROMEO:", "-m", llama_server.url, "--chain", spec, "-n", "10", "--seed", "5",
                    "--num-samples", "2", "-f", "jsonl", "-q")
        assert alone.exit_code == 0, alone.stderr
        done = [r for r in jsonl(alone.stdout) if r["type"] == "done"]
        assert [d["token_ids"] for d in sorted(done, key=lambda d: d["sample"])] == section["token_ids"], spec
        assert done[0]["strategy"] == section["chain"]
    texts = {tuple(map(tuple, s["token_ids"])) for s in report["strategies"]}
    assert len(texts) > 4  # the columns do differ


def test_compare_refuses_a_column_the_server_cannot_run_naming_it_and_runs_it_with_sample_locally(llama_server):
    before = completions_launched(llama_server)
    for spec, says in (("beam:num_beams=3", "-s 'beam:num_beams=3': beam search runs in samplecli, not on "
                                            "llama.cpp's server; add --sample-locally"),
                       ("epsilon=3e-4", "-s 'epsilon=3e-4': llama.cpp's server has no `epsilon` sampler")):
        result = cli("compare", "ROMEO:", "-m", llama_server.url, "-s", "greedy", "-s", spec, "-n", "3")
        assert result.exit_code == 2 and result.stdout == "" and result.stderr.strip().count("\n") == 0
        assert says in result.stderr
    assert completions_launched(llama_server) == before
    local = cli("compare", "ROMEO:", "-m", llama_server.url, "-s", "greedy", "-s", "beam:num_beams=3",
                "-s", "epsilon=3e-4", "-n", "3", "--sample-locally", "-f", "json")
    assert local.exit_code == 0, local.stderr
    assert "coupled" in local.stderr and json.loads(local.stdout)["coupled"] is True
    assert completions_launched(llama_server) > before


# --- compare --post-sampling-probs: each column's strategy's distribution, as the server drew from it -------------

def test_compare_columns_carry_the_post_sampling_probabilities_generate_gets(remote):
    """Sampled on the server with post_sampling, a top-k=3 column's steps hold that strategy's distribution: at
    most 3 candidates summing to 1, the drawn token among them, its entropy exact; a greedy column's is one token
    of probability 1. Each step is the one `generate --post-sampling-probs` gets with that chain and seed, and
    the raw run draws the same tokens but returns the model's probabilities instead."""
    from samplecli.analysis.compare import collect, on_server, parse_spec

    config = DecodeConfig(max_new_tokens=8, num_samples=2, seed=6, top_n=2048)  # every returned candidate in `top`
    columns = on_server(remote, [parse_spec("top-k=3"), parse_spec("greedy")], config)
    ids = encode_prompt(remote, "JULIET:\nO Romeo,")
    post = collect(remote, columns, ids, config, coupled=False, post_sampling=True)
    raw = collect(remote, columns, ids, config, coupled=False)
    top_k, greedy = (result.steps for result in post)
    for steps in top_k.values():
        assert len(steps) == 8
        for step in steps:
            assert step.sampled_by == "server" and step.probs == "post-sampling" and step.sampled_entropy_exact
            assert 1 <= step.kept == len(step.top) <= 3 and step.logprob is None and math.isnan(step.entropy)
            assert sum(a.sampled_prob for a in step.top) == pytest.approx(1, abs=1e-3)
            chosen = {a.token_id: a.sampled_prob for a in step.top}
            assert step.sampled_prob == pytest.approx(chosen[step.token_id], abs=1e-6)
            assert step.sampled_entropy == pytest.approx(-sum(p * math.log(p) for p in chosen.values() if p > 0))
    assert any(step.kept == 3 for steps in top_k.values() for step in steps)
    assert all(s.kept == 1 and s.sampled_prob == pytest.approx(1) for steps in greedy.values() for s in steps)
    for column, post_result, raw_result in zip(columns, post, raw, strict=True):
        assert post_result.token_ids() == raw_result.token_ids()  # asking for other numbers draws nothing else
        for sample, steps in raw_result.steps.items():
            assert all(s.probs == "raw" and math.isnan(s.sampled_prob) and s.logprob is not None for s in steps)
            # the strategy renormalises what it keeps: the drawn token is likelier under it than under the model
            gains = [p.sampled_prob - r.prob for p, r in zip(post_result.steps[sample], steps, strict=True)]
            assert min(gains) > -1e-3 and max(gains) > 1e-2
        alone = [e for e in server_decode(remote, column.server_chain, ids, config, label="x", post_sampling=True)
                 if isinstance(e, Step)]
        for sample, steps in post_result.steps.items():
            mine = [s for s in alone if s.sample == sample]
            assert [s.token_id for s in steps] == [s.token_id for s in mine]
            assert [s.kept for s in steps] == [s.kept for s in mine]
            assert [s.sampled_prob for s in steps] == pytest.approx([s.sampled_prob for s in mine], abs=1e-3)


def test_compare_post_sampling_probs_reports_the_strategys_entropy_and_not_the_models(llama_server):
    base = ["compare", "ROMEO:", "-m", llama_server.url, "-s", "top-k=3", "-s", "greedy", "-n", "8", "--seed", "4",
            "--num-samples", "2", "-f", "json"]
    post, raw = cli(*base, "--post-sampling-probs"), cli(*base, "--full-distribution")  # raw: every token's
    assert post.exit_code == 0, post.stderr
    assert raw.exit_code == 0, raw.stderr
    assert "sampled on the server, post-sampling probabilities" in post.stderr
    assert "post-sampling" not in raw.stderr
    post_report, raw_report = json.loads(post.stdout), json.loads(raw.stdout)
    assert post_report["probs"] == "post-sampling" and raw_report["probs"] == "raw"
    (top_k, greedy), (raw_top_k, raw_greedy) = post_report["strategies"], raw_report["strategies"]
    assert [top_k["token_ids"], greedy["token_ids"]] == [raw_top_k["token_ids"], raw_greedy["token_ids"]]
    assert 0 < top_k["metrics"]["mean_entropy_strategy"] < math.log(3)
    assert greedy["metrics"]["mean_entropy_strategy"] == 0
    for metrics in (top_k["metrics"], greedy["metrics"]):
        assert metrics["mean_entropy_model"] is None and metrics["perplexity"] is None
    for metrics in (raw_top_k["metrics"], raw_greedy["metrics"]):
        assert metrics["mean_entropy_strategy"] is None and metrics["mean_entropy_model"] > 0
        assert metrics["perplexity"] > 1
    alone = cli("generate", "ROMEO:", "-m", llama_server.url, "--chain", "top-k=3", "-n", "8", "--seed", "4",
                "--num-samples", "2", "--post-sampling-probs", "-f", "jsonl", "-q")
    assert alone.exit_code == 0, alone.stderr
    records = jsonl(alone.stdout)
    done = sorted((r for r in records if r["type"] == "done"), key=lambda r: r["sample"])
    assert [d["token_ids"] for d in done] == top_k["token_ids"]
    entropies = [r["sampled_entropy"] for r in records if r["type"] == "step"]
    assert top_k["metrics"]["mean_entropy_strategy"] == pytest.approx(sum(entropies) / len(entropies), abs=1e-3)


@pytest.mark.parametrize(("where", "flags", "says"), [
    ("native", ["--sample-locally"], "--post-sampling-probs is for sampling on a remote engine (--model http://... "
                                     "without --sample-locally)"),
    ("local", [], "--post-sampling-probs is for sampling on a remote engine"),
    ("/v1", [], "--post-sampling-probs: llama.cpp's server over the OpenAI protocol returns the raw model's "
                "log-probabilities only (llama-server gives both with --api llama.cpp)"),
])
def test_compare_post_sampling_probs_is_refused_where_generate_refuses_it(llama_server, where, flags, says):
    model = {"native": ["-m", llama_server.url], "local": [], "/v1": ["-m", llama_server.url + "/v1"]}[where]
    before = completions_launched(llama_server)
    result = cli("compare", "ROMEO:", *model, "-s", "greedy", "-s", "top-k=3", "-n", "3", "--post-sampling-probs",
                 *flags)
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert says in result.stderr and result.stderr.strip().count("\n") == 0
    assert completions_launched(llama_server) == before
