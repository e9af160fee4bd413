"""The OpenAI-compatible protocol (`--api openai`, or a URL ending in /v1): against the real llama-server's
/v1/completions, and against a stub replaying vLLM's, SGLang's and Ollama's answer shapes (tests/data/openai/,
written from each engine's source) for what llama-server cannot produce: `token_id:N` keys, string keys that
merged two tokens, the `content` shape without ids, and the faults."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from typer.testing import CliRunner

from samplecli.backends import open_backend
from samplecli.backends.remote import open_remote
from samplecli.backends.remote.http import RemoteError
from samplecli.backends.remote.openai_logprobs import parse
from samplecli.backends.remote.openai_sampling import translate
from samplecli.cli import app
from samplecli.engine.decode import decode, encode_prompt
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.engine.server_decode import chain_spec, server_chain, server_decode
from samplecli.errors import UsageError
from samplecli.strategies import build_strategy
from tests.openai_stub import recorded, stub

NO_KEY = {k: v for k, v in os.environ.items() if k not in ("SAMPLECLI_API_KEY", "OPENAI_API_KEY")}


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env if env is not None else NO_KEY)


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def completions(server) -> list[dict]:
    return [body for method, path, _, body in server.requests if path == "/v1/completions"]


# --- the two logprobs shapes --------------------------------------------------------------------------------------

def test_the_legacy_shape_with_vllm_token_ids_gives_ids_and_drops_the_chosen_token_ranked_below_the_top_n():
    records = [r for event in recorded("vllm")["stream"] for r in parse(event["choices"][0]["logprobs"], 3, "x")]
    assert [r.chosen.key for r in records] == [198, 40, 686, 537]
    third = records[2]  # " will" ranked below the top 3: vLLM adds it to the object, it is not part of the top 3
    assert [c.key for c in third.candidates] == [1221, 614, 1079] and third.chosen.logprob == -3.912
    assert records[3].candidates[-1].logprob == -math.inf  # vLLM's -9999.0
    assert all(r.short == 0 and r.merged == 0 for r in records)


def test_string_keys_that_merged_on_the_server_are_counted_and_the_content_shape_keeps_both():
    sglang = parse(recorded("sglang")["stream"][0]["choices"][0]["logprobs"], 3, "x")[0]
    assert sglang.short == 1 and [c.key for c in sglang.candidates] == ["\ufffd", " the"]
    content = {"content": [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": [
        {"token": "\ufffd", "logprob": -1.0, "bytes": [0xe2]}, {"token": "\ufffd", "logprob": -2.0, "bytes": [0xf0]},
        {"token": "b", "logprob": -3.0}, {"token": "b", "logprob": -4.0}]}]}
    record = parse(content, 4, "x")[0]
    assert len(record.candidates) == 3 and record.merged == 1  # the two "b" summed: the mass is kept
    assert sum(math.exp(c.logprob) for c in record.candidates) == pytest.approx(sum(
        math.exp(v) for v in (-1.0, -2.0, -3.0, -4.0)))
    llama = parse({"content": [{"id": 7, "token": "x", "logprob": -0.5, "bytes": [120],
                                "top_logprobs": [{"id": 7, "token": "x", "logprob": -0.5, "bytes": [120]}]}]}, 1, "x")
    assert llama[0].chosen.key == 7 and llama[0].candidates[0].key == 7


def test_an_answer_without_logprobs_is_one_line_saying_why():
    with pytest.raises(RemoteError, match=r"^u: the answer has no log-probabilities \(`logprobs` was 20\); .*"
                                          r"--max-logprobs"):
        parse(None, 20, "u")


# --- the strategy as each engine's fields -------------------------------------------------------------------------

def fields(engine: str, settings: dict, chain: str | None = None):
    return translate(engine, *chain_spec(build_strategy(settings, chain=chain).strategy))


def test_each_engine_gets_its_own_fields_with_every_sampler_it_has_set_and_the_chain_in_its_order():
    vllm = fields("vllm", {"temperature": 0.7, "top_k": 40, "repetition_penalty": 1.1})
    assert vllm.fields == {"temperature": 0.7, "top_k": 40, "repetition_penalty": 1.1, "top_p": 1.0, "min_p": 0.0}
    assert str(vllm) == "vLLM: logits -> repetition_penalty(1.1) -> temperature(0.7) -> top_k(40) -> sample"
    assert fields("ollama", {"temperature": 0}).fields == {"temperature": 0.0, "top_p": 1.0}
    assert fields("vllm", {}, chain="top-k=5,temperature=0.5").fields["top_k"] == 5  # the two commute
    assert fields("sglang", {"top_p": 0.9, "min_p": 0.1}).fields["min_p"] == 0.1  # SGLang's order is samplecli's


@pytest.mark.parametrize(("engine", "settings", "says"), [
    ("vllm", {"typical_p": 0.9}, "vLLM has no `typical_p`; use --sample-locally"),
    ("vllm", {"top_p": 0.9, "min_p": 0.1}, "vLLM runs `min-p` before `top-p`"),
    ("vllm", {"presence_penalty": 0.5}, "vLLM counts the presence penalty over the generated tokens only"),
    ("ollama", {"top_k": 40}, "Ollama has no `top_k`; give the server's root URL without /v1 (or --api ollama): "
                              "Ollama's native API takes it"),
    ("ollama", {"logit_bias": {3: 1.0}}, "Ollama has no `logit_bias`; drop it, or run the model's GGUF file in "
                                         "process instead"),
    ("sglang", {"epsilon_cutoff": 3e-4}, "SGLang has no `epsilon_cutoff`; use --sample-locally"),
])
def test_what_an_engine_cannot_run_is_refused_naming_it(engine, settings, says):
    with pytest.raises(UsageError) as refused:
        fields(engine, settings)
    # the way out: --sample-locally where samplecli can sample over the engine, never on Ollama (tokens by text)
    assert says in str(refused.value)
    assert str(refused.value).endswith("use --sample-locally") == (engine != "ollama")


# --- vLLM, SGLang and Ollama, replayed ------------------------------------------------------------------------------

def test_vllm_is_asked_for_token_ids_and_its_steps_carry_them(tmp_path):
    with stub("vllm") as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "--temp", "0.7", "--top-k", "40", "-n", "8",
                     "--seed", "1", "--top-logprobs", "3", "-f", "jsonl")
        sent = completions(server)
    assert result.exit_code == 0, result.stderr
    assert "vLLM: logits -> temperature(0.7) -> top_k(40) -> sample" in result.stderr
    assert sent[0]["return_tokens_as_token_ids"] is True and sent[0]["model"] == "Qwen/Qwen2.5-0.5B"
    assert (sent[0]["logprobs"], sent[0]["top_k"], sent[0]["prompt"], sent[0]["stream"]) == (3, 40, "ROMEO:", True)
    records = jsonl(result.stdout)
    steps, done = records[:-1], records[-1]
    assert [s["token_id"] for s in steps] == [198, 40, 686, 537] and done["text"] == "\nI will not"
    assert done["finish_reason"] == "length"
    third = steps[2]
    assert third["prob"] == pytest.approx(math.exp(-3.912)) and third["distribution"] == "top-3"
    assert [a["token"] for a in third["top"]] == [" shall", " am", " must"]  # vLLM's /detokenize named them
    low, high = third["entropy_bounds"]
    known = [-1.104, -1.871, -2.236]
    assert third["tail_mass"] == pytest.approx(1 - sum(math.exp(v) for v in known))
    assert low < high and low >= -sum(math.exp(v) * v for v in known)


def test_sglang_string_keys_merged_on_the_server_are_said_and_get_no_bounds():
    with stub("sglang") as server:
        result = cli("generate", "ROMEO:", "-m", server.url, "--api", "openai", "--temp", "0.7", "-n", "3",
                     "--top-logprobs", "3", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    steps = [r for r in jsonl(result.stdout) if r["type"] == "step"]
    assert steps[0]["distribution"] == "top-3, 1 merged" and "entropy_bounds" not in steps[0]
    assert steps[1]["distribution"] == "top-3" and len(steps[1]["entropy_bounds"]) == 2
    assert [s["text"] for s in steps] == ["", "\u00e9", " and"]  # the engine's text: never half a character


def test_ollama_is_named_from_its_models_content_shape_parses_and_its_stop_is_an_end_of_sequence():
    with stub("ollama") as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "--temp", "0.5", "-n", "8",
                     "--top-logprobs", "3", "-f", "jsonl")
        refused = cli("generate", "ROMEO:", "-m", server.url + "/v1", "--top-k", "40", "-n", "8")
        sent = completions(server)
    assert result.exit_code == 0, result.stderr
    assert "Ollama: logits -> temperature(0.5) -> sample" in result.stderr
    records = jsonl(result.stdout)
    assert records[-1]["finish_reason"] == "eos" and records[-1]["text"] == "Hello world!"
    assert [a["token"] for a in records[1]["top"]] == [" world", "\ufffd", "\ufffd"]  # two tokens, told apart by bytes
    assert refused.exit_code == 2 and refused.stdout == "" and len(sent) == 1
    assert refused.stderr.strip() == ("error: Ollama has no `top_k`; give the server's root URL without /v1 (or --api "
                                      "ollama): Ollama's native API takes it")


def test_the_key_is_sent_as_a_bearer_token_and_never_shown():
    with stub("vllm", key="k-9f8e7d") as server:
        refused = cli("generate", "ROMEO:", "-m", server.url + "/v1", "-n", "2")
        for variable in ("SAMPLECLI_API_KEY", "OPENAI_API_KEY"):
            accepted = cli("generate", "ROMEO:", "-m", server.url + "/v1", "-n", "2", "-f", "jsonl",
                           env={**NO_KEY, variable: "k-9f8e7d"})
            assert accepted.exit_code == 0, accepted.stderr
            assert "k-9f8e7d" not in accepted.stdout + accepted.stderr
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "401 unauthorized" in refused.stderr
    assert "set SAMPLECLI_API_KEY (or OPENAI_API_KEY)" in refused.stderr and server.url in refused.stderr


# --- faults: one line naming the URL, what happened and what to do; exit 1; what streamed stays -------------------

@pytest.mark.parametrize(("fault", "says"), [
    ("404-model", "/v1/completions: 404 not found: The model `Qwen/Qwen2.5-0.5B` does not exist; check the URL"),
    ("400-logprobs", "/v1/completions: 400 Requested sample logprobs of 30, which is greater than max allowed: 20 "
                     "(the request's `logprobs`, from --top-logprobs); change --top-logprobs and run again"),
    ("no-logprobs", "/v1/completions: the answer has no log-probabilities (`logprobs` was 30); the engine may have "
                    "been started without them"),
])
def test_a_fault_is_one_line_naming_the_url_with_nothing_on_stdout(fault, says):
    with stub("vllm", fault=fault) as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "-n", "4", "--top-logprobs", "30", "-q")
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{server.url}{says}" in result.stderr


def test_a_connection_cut_mid_stream_keeps_what_came_and_says_so_in_one_line():
    with stub("vllm", fault="reset") as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "-n", "8", "-f", "jsonl", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert [r["token_id"] for r in jsonl(result.stdout)] == [198, 40]  # the two tokens that came
    assert result.stderr.count("\n") == 1 and f"{server.url}/v1/completions: " in result.stderr
    assert "what was generated so far is kept" in result.stderr


def test_a_timeout_and_a_closed_port_are_one_line():
    with stub("vllm", fault="slow", delay_s=2.0) as server:
        lm = open_remote(server.url + "/v1", timeout=0.5)
        strategy = build_strategy({}).strategy
        config = DecodeConfig(max_new_tokens=2)
        chain = server_chain(lm, strategy, config)
        with pytest.raises(RemoteError, match=r"/v1/completions: no answer within 0.5 s; the server may be overloaded"):
            list(server_decode(lm, chain, lm.vocab.encode("ROMEO:"), config, label="x"))
        port = server.url
    closed = cli("generate", "ROMEO:", "-m", port + "/v1", "-n", "2")
    assert closed.exit_code == 1 and closed.stdout == "" and closed.stderr.count("\n") == 1
    assert f"{port}: cannot connect" in closed.stderr and "is the server running" in closed.stderr


# --- llama-server's /v1, for real ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def over_openai(llama_server):
    return open_backend(llama_server.url, api="openai")


def test_llama_server_over_the_openai_protocol_is_named_and_its_greedy_is_the_local_models(over_openai):
    local = open_backend(None)
    assert over_openai.kind == "llamacpp" and over_openai.vocab_size == 2048 and over_openai.top_n == 20
    strategy = build_strategy({"temperature": 0}).strategy
    config = DecodeConfig(max_new_tokens=16, seed=1)
    chain = server_chain(over_openai, strategy, config)
    assert str(chain).startswith("llama.cpp /v1: logits")
    for prompt in ("ROMEO:", "JULIET:\nO Romeo,"):
        events = list(server_decode(over_openai, chain, encode_prompt(over_openai, prompt), config, label="x"))
        ids = encode_prompt(local, prompt)
        ours = next(e for e in decode(local, strategy, ids, DecodeConfig(max_new_tokens=16)) if isinstance(e, Done))
        assert events[-1].token_ids == ours.token_ids and events[-1].text == ours.text
        exact = torch.log_softmax(local.logits(ids + list(ours.token_ids[:-1]), keep=16).double(), -1)
        for step in (e for e in events if isinstance(e, Step)):
            row = exact[step.step]
            assert step.logprob == pytest.approx(float(row[step.token_id]), abs=1e-2)
            low, high = step.entropy_bounds
            assert low - 1e-2 <= -float((row.exp() * row).sum()) <= high + 1e-2
            assert step.tail_mass == pytest.approx(1 - float(torch.topk(row, 20).values.exp().sum()), abs=2e-3)


def test_llama_server_v1_url_is_detected_and_seeded_draws_repeat(llama_server):
    args = ["generate", "ROMEO:", "-m", llama_server.url + "/v1", "--temp", "1.1", "--top-k", "30", "-n", "10",
            "--seed", "4", "--num-samples", "2", "-f", "jsonl", "-q"]
    first, again = cli(*args), cli(*args)
    assert first.exit_code == 0, first.stderr
    done = {r["sample"]: r["token_ids"] for r in jsonl(first.stdout) if r["type"] == "done"}  # in arrival order
    assert done == {r["sample"]: r["token_ids"] for r in jsonl(again.stdout) if r["type"] == "done"}
    assert done[0] != done[1]
    post = cli("generate", "ROMEO:", "-m", llama_server.url + "/v1", "-n", "2", "--post-sampling-probs")
    assert post.exit_code == 2 and post.stdout == "" and "--post-sampling-probs: llama.cpp's server over the " \
        "OpenAI protocol returns the raw model's log-probabilities only" in post.stderr


def steps_and_done(stdout: str) -> tuple[list[dict], list[dict]]:
    records = jsonl(stdout)
    return [r for r in records if r["type"] == "step"], [r for r in records if r["type"] == "done"]


def test_sample_locally_over_v1_draws_from_the_same_top_20_as_the_native_api(llama_server):
    """samplecli samples on llama-server's /v1 top-20 answers exactly as on its native /completion asked for the
    same 20: greedy, seeded draws under a chain the server could not run in this order, and beam search."""
    runs = {"greedy": ["--temp", "0", "-n", "12"],
            "draws": ["--top-k", "8", "--temp", "1.3", "--typical-p", "0.9", "-n", "12", "--seed", "3",
                      "--num-samples", "2"],
            "beam": ["--num-beams", "3", "-n", "8"]}
    for name, args in runs.items():
        common = ["generate", "ROMEO:", "--sample-locally", *args, "-f", "jsonl"]
        over_v1 = cli(*common, "-m", llama_server.url + "/v1")
        native = cli(*common, "-m", llama_server.url, "--top-logprobs", "20")
        assert over_v1.exit_code == 0 and native.exit_code == 0, (name, over_v1.stderr, native.stderr)
        v1_steps, v1_done = steps_and_done(over_v1.stdout)
        native_steps, native_done = steps_and_done(native.stdout)
        assert [d["token_ids"] for d in v1_done] == [d["token_ids"] for d in native_done], name
        assert len(v1_steps) == len(native_steps)
        for ours, theirs in zip(v1_steps, native_steps, strict=True):
            assert ours["distribution"] == theirs["distribution"] == "top-20"
            assert ours["logprob"] == pytest.approx(theirs["logprob"], abs=1e-3)
            assert ours.keys() == theirs.keys()
            if "tail_mass" in theirs:  # sampled steps (a beam's step records no bounds)
                assert ours["tail_mass"] == pytest.approx(theirs["tail_mass"], abs=1e-3)
            assert [t["token_id"] for t in ours["top"][:5]] == [t["token_id"] for t in theirs["top"][:5]]


def test_sample_locally_on_vllm_asks_one_token_at_a_time_on_the_ids_so_far_with_token_ids_back():
    with stub("vllm") as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "--sample-locally", "--top-logprobs", "3",
                     "--temp", "0", "-n", "3", "-f", "jsonl")
        asked = completions(server)
    assert result.exit_code == 0, result.stderr
    steps, done = steps_and_done(result.stdout)
    assert done[0]["token_ids"] == [198, 198, 198] and done[0]["text"] == "\n\n\n"  # the recorded answer, thrice
    assert [r["prompt"] for r in asked] == [[1598, 49213, 25], [1598, 49213, 25, 198], [1598, 49213, 25, 198, 198]]
    for body in asked:
        assert (body["max_tokens"], body["temperature"], body["logprobs"], body["stream"]) == (1, 0.0, 3, False)
        assert body["return_tokens_as_token_ids"] is True and body["model"] == "Qwen/Qwen2.5-0.5B"
    assert {s["distribution"] for s in steps} == {"top-3"}
    assert [t["token_id"] for t in steps[0]["top"]] == [198, 25, 13]
    assert steps[0]["logprob"] == pytest.approx(-0.0123)
    assert steps[0]["tail_mass"] == pytest.approx(1 - sum(map(math.exp, (-0.0123, -5.21, -6.02))))


def test_a_chat_on_ollama_goes_to_its_chat_endpoint_as_messages_and_its_deltas_parse():
    with stub("ollama") as server:
        result = cli("generate", "Say hello.", "--system", "Be brief.", "-m", server.url + "/v1", "--top-logprobs",
                     "3", "-n", "8", "-f", "jsonl")
        asked = [body for method, path, _, body in server.requests if path == "/v1/chat/completions"]
    assert result.exit_code == 0, result.stderr
    assert len(asked) == 1 and asked[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": "Say hello."}]
    assert (asked[0]["logprobs"], asked[0]["top_logprobs"], asked[0]["stream"]) == (True, 3, True)
    steps, done = steps_and_done(result.stdout)
    recorded_text = "".join(e["choices"][0]["delta"]["content"] for e in recorded("ollama")["chat_stream"])
    assert done[0]["text"] == recorded_text == "".join(s["text"] for s in steps) and done[0]["finish_reason"] == "eos"
    assert steps[0]["token"] == "Hello" and steps[0]["logprob"] == pytest.approx(-0.3)


@pytest.mark.parametrize("engine", ["sglang", "ollama"])
def test_sample_locally_on_an_engine_that_names_tokens_by_text_is_refused_before_any_completion(engine):
    with stub(engine) as server:
        result = cli("generate", "ROMEO:", "-m", server.url + "/v1", "--sample-locally", "-n", "3")
        asked = completions(server)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "over the OpenAI protocol names its tokens by their text, not their ids" in result.stderr
    assert asked == []


# --- score from prompt log-probabilities ----------------------------------------------------------------------------

def test_vllm_scores_a_text_from_its_prompt_logprobs_exactly_with_the_entropy_as_an_interval():
    with stub("vllm") as server:
        result = cli("score", "ROMEO:", "-m", server.url + "/v1", "--top-logprobs", "3", "--per-token", "-f", "json")
        asked = [body for body in completions(server) if "prompt_logprobs" in body]
    assert result.exit_code == 0, result.stderr
    assert len(asked) == 1 and asked[0]["prompt"] == [1598, 49213, 25] and asked[0]["prompt_logprobs"] == 3
    assert asked[0]["stream"] is False and asked[0]["max_tokens"] == 1
    doc = json.loads(result.stdout)
    assert doc["tokens"] == 2 and doc["nats"] == pytest.approx(1.5 + 4.75)  # no BOS: the first token is context
    assert [(t["token_id"], t["token"], t["rank"]) for t in doc["per_token"]] == [(49213, "MEO", 2), (25, ":", 9)]
    assert doc["entropy_per_token"] is None and doc["ce_minus_entropy"] is None and doc["distribution"] == "top-3"
    heads = [[-0.5, -1.5, -2.5], [-0.5, -1.75, -2.25]]  # the top 3 at each position; ":" ranked 9th is not one
    assert doc["tail3_mass_per_token"] == pytest.approx(sum(1 - sum(map(math.exp, h)) for h in heads) / 2)
    assert doc["outside_top3_tokens"] == 1
    low, high = doc["entropy_bounds_per_token"]
    known = sum(-sum(math.exp(lp) * lp for lp in h) for h in heads) / 2
    assert known < low < high  # the tail adds something, at least as concentrated and at most spread out


def test_compare_on_vllm_scores_the_human_reference_from_its_prompt_logprobs(tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_text("ROMEO:", encoding="utf-8")  # three tokens: one span of two, the generated length
    with stub("vllm") as server:
        result = cli("compare", "ROMEO:", "-m", server.url + "/v1", "-s", "greedy", "--top-logprobs", "3", "-n", "2",
                     "--num-samples", "1", "--reference", str(reference), "-f", "json")
        scored = [body for body in completions(server) if body.get("prompt_logprobs") is not None]
    assert result.exit_code == 0, result.stderr
    assert [body["prompt"] for body in scored] == [[1598, 49213]]
    human = json.loads(result.stdout)["human"]
    # no BOS: "ROM" is context and "MEO" (-1.5 in the recorded answer) the scored token; the entropy is unknown
    assert human["logprob_sum"] == pytest.approx(-1.5) and human["perplexity"] == pytest.approx(math.exp(1.5))
    assert human["tokens"] == 2 and human["mean_entropy_model"] is None


def test_score_from_prompt_logprobs_on_the_terminal_shows_the_interval_and_refuses_a_strategy():
    with stub("vllm") as server:
        shown = cli("score", "ROMEO:", "-m", server.url + "/v1", "--top-logprobs", "3")
        strategy = cli("score", "ROMEO:", "-m", server.url + "/v1", "--top-logprobs", "3", "--top-k", "5")
    assert shown.exit_code == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # the terminal's width may wrap the line
    assert "cross-entropy 3.1250 nats/token; mean entropy in [" in text
    assert "(from the engine's top-3), so CE - H in [" in text and "outside the top 3:" in text
    assert strategy.exit_code == 2 and strategy.stdout == "" and strategy.stderr.count("\n") == 1
    assert "scoring under a strategy needs every token's probability; vLLM returns its top 3" in strategy.stderr


def test_sglang_scores_a_text_through_echo_its_bos_as_context_and_its_ranks_from_the_top_n():
    with stub("sglang") as server:
        result = cli("score", "ROMEO:", "-m", server.url + "/v1", "--top-logprobs", "3", "--per-token", "-f", "json")
        asked = completions(server)
    assert result.exit_code == 0, result.stderr
    assert [(b["prompt"], b["echo"], b["logprobs"], b["max_tokens"], b["stream"]) for b in asked] == [
        ("ROMEO:", True, 1, 1, False), ("ROMEO:", True, 3, 1, False)]  # its tokens once, then their top 3
    doc = json.loads(result.stdout)
    assert doc["tokens"] == 3 and doc["nats"] == pytest.approx(7.5 + 0.05 + 1.3)  # after the engine's own BOS
    # "ROM" ranked below the top 3 (SGLang lists the top N only): its rank counts the candidates above it
    assert [(t["token"], t["rank"]) for t in doc["per_token"]] == [("ROM", 4), ("EO", 1), (":", 2)]
    assert doc["outside_top3_tokens"] == 1 and doc["distribution"] == "top-3" and doc["entropy_per_token"] is None
    heads = [[-2.1, -2.6, -3.0], [-0.05, -3.4, -4.2], [-0.9, -1.3, -2.0]]
    assert doc["tail3_mass_per_token"] == pytest.approx(sum(1 - sum(map(math.exp, h)) for h in heads) / 3)


def test_an_engine_that_does_not_echo_the_text_is_one_line_saying_so():
    with stub("sglang", fault="no-echo") as server:  # answers the generated token only, as llama.cpp's /v1 does
        result = cli("score", "ROMEO:", "-m", server.url + "/v1")
    assert result.exit_code == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "the answer does not echo the text with its log-probabilities" in result.stderr


@pytest.mark.parametrize("engine", ["ollama"])
def test_an_engine_without_prompt_logprobs_cannot_score_in_one_line(engine):
    with stub(engine) as server:
        result = cli("score", "ROMEO:", "-m", server.url + "/v1")
        asked = completions(server)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "gives samplecli no log-probabilities of a given text over the OpenAI protocol" in result.stderr
    assert asked == []  # refused before any request for tokens


def test_llama_server_ignores_echo_on_v1_so_score_there_says_to_use_its_native_api(llama_server):
    prompt_tokens = len(llama_server.post("/tokenize", {"content": "ROMEO: I will"})["tokens"])
    answer = llama_server.post("/v1/completions", {"prompt": "ROMEO: I will", "max_tokens": 1, "echo": True,
                                                   "logprobs": 2})
    choice = answer["choices"][0]
    assert answer["usage"]["prompt_tokens"] == prompt_tokens > 1
    assert len(choice["logprobs"]["content"]) == 1 and not choice["text"].startswith("ROMEO")  # no prompt echoed
    result = cli("score", "ROMEO: I will not stay.", "-m", llama_server.url + "/v1")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "llama.cpp's server ignores `echo` on /v1/completions" in result.stderr
    assert "score with --api llama.cpp" in result.stderr


def test_a_timeout_in_score_is_one_line_that_claims_nothing_kept_and_in_generate_says_what_is_kept():
    """The engine's line says what happened; what is kept is the command's to say: `generate` has written its
    tokens as they came, `score` has no result until its last token. (The stub sleeps 2 s before any completion,
    four times the timeout: it cannot answer in time however busy the machine.)"""
    with stub("vllm", fault="slow", delay_s=2.0) as server:
        scored = cli("score", "ROMEO:", "-m", server.url + "/v1", "--top-logprobs", "3", "--timeout", "0.5")
        generated = cli("generate", "ROMEO:", "-m", server.url + "/v1", "-n", "2", "--timeout", "0.5", "-q")
    for result in (scored, generated):
        assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1
        assert f"{server.url}/v1/completions: no answer within 0.5 s" in result.stderr, result.stderr
    assert "kept" not in scored.stderr and "generated" not in scored.stderr
    assert generated.stderr.rstrip().endswith("raise --timeout to wait longer; what was generated so far is kept")
