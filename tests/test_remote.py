"""`--model http://...`: a real `llama-server` (built from source, serving the bundled model as GGUF) as a
backend, checked against the same model in torch: the same greedy tokens, the same per-step log-probabilities
(to 1e-2: llama.cpp's GPT-2 uses the tanh GELU), draws that follow the strategy's distribution, `compare` and
`score` as they are locally, and every fault as one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samplecli.analysis.scoring import score
from samplecli.backends import open_backend
from samplecli.cli import app
from samplecli.engine.decode import decode, encode_prompt
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.strategies import build_strategy
from tests.conftest import interrupt_once_written

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo,", "First Citizen:\nBefore we proceed"]


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def test_the_server_is_a_full_distribution_backend_with_the_models_facts(remote, local):
    assert remote.vocab_size == local.vocab_size == 2048
    assert remote.context_length == local.context_length == 256
    assert remote.eos_token_ids == [0] and remote.bos_token_id == local.bos_token_id
    assert remote.top_n is None
    for prompt in PROMPTS:
        assert encode_prompt(remote, prompt) == encode_prompt(local, prompt)


def test_per_step_log_probabilities_equal_the_local_models_to_1e_2(remote, local):
    for prompt in PROMPTS:
        ids = encode_prompt(local, prompt)
        greedy = next(e for e in decode(local, build_strategy({"temperature": 0}).strategy, ids,
                                        DecodeConfig(max_new_tokens=8)) if isinstance(e, Done))
        sequence = ids + list(greedy.token_ids)
        theirs = torch.log_softmax(remote.logits(sequence, keep=8).double(), -1)
        ours = torch.log_softmax(local.logits(sequence, keep=8).double(), -1)
        assert float((theirs - ours).abs().max()) < 1e-2


def test_greedy_over_the_server_gives_the_local_tokens_where_the_argmax_is_clear(remote, local):
    for prompt in PROMPTS:
        ids = encode_prompt(local, prompt)
        strategy = build_strategy({"temperature": 0}).strategy
        theirs = next(e for e in decode(remote, strategy, ids, DecodeConfig(max_new_tokens=24)) if isinstance(e, Done))
        ours = next(e for e in decode(local, strategy, ids, DecodeConfig(max_new_tokens=24)) if isinstance(e, Done))
        if theirs.token_ids != ours.token_ids:  # a flip is allowed only where the two best tokens nearly tie
            step = next(i for i, (a, b) in enumerate(zip(theirs.token_ids, ours.token_ids, strict=False)) if a != b)
            top2 = torch.topk(local.logits(ids + list(ours.token_ids[:step]), keep=1)[-1].double(), 2).values
            assert float(top2[0] - top2[1]) < 2e-2, (prompt, step)
        else:
            assert theirs.text == ours.text


def test_draws_on_the_servers_full_distribution_follow_the_strategy(remote):
    """100k draws of the first token under top-k 20 at T 0.9: total variation < 0.01 against the strategy."""
    ids = encode_prompt(remote, "ROMEO:\nI")
    strategy = build_strategy({"temperature": 0.9, "top_k": 20}).strategy
    counts = torch.zeros(remote.vocab_size, dtype=torch.float64)
    for seed in range(10):  # 10 x 10k rows: one request each (every row shares the one prefill)
        for event in decode(remote, strategy, ids, DecodeConfig(max_new_tokens=1, num_samples=10_000, seed=seed,
                                                                top_n=0, record=False)):
            if isinstance(event, Step):
                counts[event.token_id] += 1
    logits = remote.logits(ids, keep=1).float()
    expected = strategy.distribution(logits, torch.tensor([ids]))[0].double()
    assert 0.5 * float((counts / counts.sum() - expected).abs().sum()) < 0.01


def test_compare_of_eight_columns_over_the_server_equals_eight_separate_runs(llama_server):
    specs = ["greedy", "top-k=5", "top-p=0.8", "min-p=0.1", "temperature=0.7", "typical=0.9",
             "top-k=40,temperature=1.2", "sample"]
    args = ["ROMEO:", "-m", llama_server.url, "-n", "6", "--seed", "5", "--num-samples", "1", "-f", "json"]
    result = cli("compare", *args, *[x for s in specs for x in ("-s", s)])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    for spec, section in zip(specs, report["strategies"], strict=True):
        alone = cli("compare", *args, "-s", spec)
        assert alone.exit_code == 0, alone.stderr
        assert json.loads(alone.stdout)["strategies"][0]["texts"] == section["texts"], spec


def test_score_over_the_server_equals_local_score(remote, local):
    text = "ROMEO:\nI will not stay, my lord; the night is\n"
    theirs, ours = score(remote, text), score(local, text)
    assert theirs.tokens == ours.tokens
    assert abs(theirs.nats_per_token - ours.nats_per_token) < 1e-2


@pytest.mark.parametrize("concurrency", [1, 3, 4, 9])
def test_score_over_the_server_asks_each_token_once_in_one_lane_per_slot_in_the_texts_order(llama_server, local,
                                                                                          concurrency):
    """One request per text token, pinned (`id_slot`) to a lane's slot: a lane is a contiguous run of the text,
    its requests' prompts grow one token at a time, so each finds its prefix in its slot's cache; as many lanes as
    --concurrency and the server's slots allow. The numbers are the local model's whatever the lanes."""
    top = open_backend(llama_server.url, concurrency=concurrency)
    asked: list[tuple[int, int]] = []  # (slot, prompt length), as the requests went out
    post = top.http.post

    def recording(path, body, *args, **kwargs):
        if path == "/completion" and body.get("logit_bias") and body["logit_bias"][0][1] > 0:
            asked.append((body["id_slot"], len(body["prompt"])))
        return post(path, body, *args, **kwargs)

    top.http.post = recording
    text = "ROMEO:\nI will not stay, my lord; the night is\n"
    theirs, ours = score(top, text, per_token=True), score(local, text, per_token=True)
    assert theirs.tokens == ours.tokens and [t.token_id for t in theirs.per_token] == [t.token_id for t in
                                                                                        ours.per_token]
    assert [t.nats for t in theirs.per_token] == pytest.approx([t.nats for t in ours.per_token], abs=1e-2)
    lengths = sorted(length for _, length in asked)
    assert lengths == list(range(1, ours.tokens + 1))  # every position once
    lanes = {slot: sorted(length for s, length in asked if s == slot) for slot, _ in asked}
    assert sorted(lanes) == list(range(min(concurrency, top.slots)))
    for run in lanes.values():  # contiguous, each lane about the same length
        assert run == list(range(run[0], run[-1] + 1)) and len(run) >= ours.tokens // len(lanes)


def test_generate_inspect_and_beam_search_run_over_the_server(llama_server):
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "--temp", "0.8", "-n", "5", "--seed", "3", "-f", "jsonl",
                 "--full-distribution")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["type"] == "done" and records[-1]["n_tokens"] == 5
    assert all(r["distribution"] == "full" and r["entropy"] is not None for r in records if r["type"] == "step")
    assert llama_server.url in result.stderr  # the header names the server
    assert all(r["sampled_by"] == "server" for r in records if r["type"] == "step")  # the default: the server draws
    beam = cli("generate", "ROMEO:", "-m", llama_server.url, "--num-beams", "3", "-n", "4", "-f", "json", "-q",
               "--sample-locally")
    assert beam.exit_code == 0, beam.stderr
    assert len(json.loads(beam.stdout)["samples"]) == 1
    shown = cli("inspect", "ROMEO:", "-m", llama_server.url, "--temps", "0.5,1,2", "-f", "json")
    assert shown.exit_code == 0, shown.stderr
    assert len(json.loads(shown.stdout)["temperatures"]["rows"]) == 3


def test_a_closed_port_is_one_line_naming_the_url(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("generate", "ROMEO:", "-m", f"http://127.0.0.1:{port}", "-n", "3")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"http://127.0.0.1:{port}" in result.stderr
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr


def test_a_url_with_no_llama_cpp_server_behind_it_is_one_line(llama_server):
    result = cli("generate", "ROMEO:", "-m", llama_server.url + "/nothing/here", "-n", "3")
    assert result.exit_code == 1 and result.stdout == ""
    assert ("neither llama.cpp's server (GET /props), Ollama (GET /api/version) nor an OpenAI-compatible one (GET "
            "/v1/models) answers there") in result.stderr and result.stderr.count("\n") == 1


def test_a_server_that_wants_a_key_says_so_and_takes_it_from_the_environment(start_llama_server):
    server = start_llama_server(extra_args=("--api-key", "s3cret-k3y"))
    env = {k: v for k, v in os.environ.items() if k not in ("SAMPLECLI_API_KEY", "OPENAI_API_KEY")}
    refused = CliRunner().invoke(app, ["generate", "ROMEO:", "-m", server.url, "-n", "2"], env=env)
    assert refused.exit_code == 1 and "401" in refused.stderr and "SAMPLECLI_API_KEY" in refused.stderr
    accepted = CliRunner().invoke(app, ["generate", "ROMEO:", "-m", server.url, "-n", "2", "-f", "jsonl"],
                                  env={**env, "SAMPLECLI_API_KEY": "s3cret-k3y"})
    assert accepted.exit_code == 0, accepted.stderr
    assert "s3cret-k3y" not in accepted.stdout + accepted.stderr


@pytest.mark.parametrize("where", [(), ("--sample-locally",)], ids=["server-sampling", "sample-locally"])
def test_a_server_killed_mid_generation_is_one_line_and_what_was_written_stays(start_llama_server, where):
    """Sampling on the server, the stream of every token's probability (about 100 kB a token) fills the socket's
    buffers long before 200 tokens, so the server is still mid-stream when it is killed."""
    server = start_llama_server()
    process = subprocess.Popen([sys.executable, "-m", "samplecli", "generate", "ROMEO:", "-m", server.url, "-n", "200",
                                "--temp", "1", "--seed", "1", "-f", "jsonl", "-q", *where], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if len(lines) == 5:
            server.process.kill()
            break
    rest, err = process.communicate(timeout=120)
    lines += rest.splitlines(keepends=True)
    assert process.returncode == 1, err
    assert len(lines) >= 5 and all(json.loads(line)["type"] == "step" for line in lines)
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1 and server.url in errors[0] and "Traceback" not in err
    time.sleep(0)  # the killed server is reaped by the fixture


@pytest.mark.parametrize("where", [("--num-samples", "4"), ("--sample-locally",)],
                         ids=["server-sampling", "sample-locally"])
def test_ctrl_c_over_the_server_exits_130_keeps_what_was_written_and_cancels_what_was_in_flight(llama_server, where,
                                                                                                tmp_path):
    """Ctrl-C while tokens stream from the server (four samples in flight, or a request per token): exit 130, one
    `interrupted` line, the streamed records kept in the file, and the server's slots free again at once."""
    out = tmp_path / "streamed.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    returncode, stdout, err = interrupt_once_written(
        [sys.executable, "-m", "samplecli", "generate", "ROMEO:", "-m", llama_server.url, "-n", "250", "--temp", "1",
         "--seed", "1", "-f", "jsonl", "-o", str(out), "-q", *where], out, env)
    assert returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1] == "interrupted" and stdout == b""
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records and all(r["type"] in ("step", "done") for r in records)
    assert sum(r["type"] == "step" for r in records) < (4 if where[0] == "--num-samples" else 1) * 250
    started = time.monotonic()  # the cancelled requests do not hold the slots: a fresh one answers at once
    answer = llama_server.post("/completion", {"prompt": "ROMEO:", "n_predict": 4, "temperature": 0})
    assert answer["tokens_predicted"] == 4 and time.monotonic() - started < 30


def test_compare_over_the_server_scores_the_reference_with_the_full_distribution_and_keeps_a_top_n_report(
        llama_server, tmp_path):
    """--reference over the native API (every token's probability): the human row is the local model's to 1e-2;
    with --top-logprobs it is scored from each token's own probability, the same perplexity."""
    reference = tmp_path / "reference.txt"
    reference.write_text("ROMEO: I will not stay, my lord; the night is cold and the stars are out.\n" * 4,
                         encoding="utf-8")
    common = ["compare", "ROMEO:", "-s", "greedy", "-n", "8", "--num-samples", "2", "--reference", str(reference),
              "-f", "json"]
    remote, local = cli(*common, "-m", llama_server.url), cli(*common)
    assert remote.exit_code == 0 and local.exit_code == 0, (remote.stderr, local.stderr)
    ours, theirs = json.loads(remote.stdout)["human"], json.loads(local.stdout)["human"]
    assert ours["tokens"] == theirs["tokens"]
    assert math.log(ours["perplexity"]) == pytest.approx(math.log(theirs["perplexity"]), abs=1e-2)
    top_n = cli(*common, "-m", llama_server.url, "--top-logprobs", "20")
    assert top_n.exit_code == 0, top_n.stderr
    # the top N asked for by name: the reference's tokens are still scored exactly, each from its own probability,
    # and the model's entropy along it is unknown
    human = json.loads(top_n.stdout)["human"]
    assert human["mean_entropy_model"] is None and human["tokens"] == theirs["tokens"]
    assert math.log(human["perplexity"]) == pytest.approx(math.log(theirs["perplexity"]), abs=1e-2)
    default = cli(*common, "-m", llama_server.url)  # the default top 20 streams; the reference is scored exactly
    assert json.loads(default.stdout)["human"]["tokens"] == ours["tokens"]


def test_top_n_answers_are_labelled_and_their_entropy_is_an_interval_around_the_truth(llama_server, remote):
    """With --top-logprobs 20 the raw entropy is unknown: its bounds hold the exact entropy that the full
    distribution gives, the tail mass is what the 20 tokens leave, and the chosen token's probability is exact."""
    top = open_backend(llama_server.url)  # the default: the top 20
    assert top.top_n == 20 and "top 20 probabilities" in top.distribution_note
    assert "teacher-force" not in open_backend(llama_server.url, top_logprobs=20).capabilities
    ids = encode_prompt(remote, "ROMEO:\nI")
    strategy = build_strategy({"temperature": 1.0, "top_k": 10}).strategy
    steps = [e for e in decode(top, strategy, ids, DecodeConfig(max_new_tokens=6, seed=2)) if isinstance(e, Step)]
    context = list(ids)
    for step in steps:
        full = torch.log_softmax(remote.logits(context, keep=1)[-1].double(), -1)
        exact = -float((full.exp() * full).nan_to_num().sum())
        low, high = step.entropy_bounds
        assert step.distribution == "top-20" and step.entropy != step.entropy  # NaN: not known
        assert low - 1e-6 <= exact <= high + 1e-6
        top20 = torch.topk(full, 20).values.exp().sum()
        assert step.tail_mass == pytest.approx(1 - float(top20), abs=1e-4)
        assert step.prob == pytest.approx(float(full[step.token_id].exp()), abs=1e-5)
        assert step.kept <= 10
        context.append(step.token_id)


def test_the_default_is_the_top_20_with_null_entropy_and_bounds_said_in_the_header_and_score_stays_exact(
        llama_server, local):
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "-n", "3", "--seed", "4", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()][:-1]
    assert all(s["distribution"] == "top-20" and s["entropy"] is None and len(s["entropy_bounds"]) == 2
               and 0 <= s["tail_mass"] <= 1 for s in steps)
    assert "top 20 probabilities per token" in result.stderr and "--full-distribution asks for all 2,048" \
        in result.stderr
    full = cli("generate", "ROMEO:", "-m", llama_server.url, "-n", "3", "--seed", "4", "-f", "jsonl",
               "--full-distribution")
    assert full.exit_code == 0 and "--full-distribution asks" not in full.stderr
    assert all(json.loads(line).get("distribution", "full") == "full" for line in full.stdout.splitlines())
    # a given text is scored from each token's own probability (exact) and the top 20 (the entropy an interval),
    # or with --full-distribution from every token's: the local model's numbers either way
    text = "ROMEO: I will not stay"
    theirs = json.loads(cli("score", text, "-f", "json").stdout)
    for extra in ((), ("--top-logprobs", "20"), ("--full-distribution",)):
        ours = cli("score", text, "-m", llama_server.url, "-f", "json", *extra)
        assert ours.exit_code == 0, ours.stderr
        report = json.loads(ours.stdout)
        assert report["nats_per_token"] == pytest.approx(theirs["nats_per_token"], abs=1e-4), extra
        if extra == ("--full-distribution",):
            assert report["entropy_per_token"] == pytest.approx(theirs["entropy_per_token"], abs=1e-4)
        else:
            low, high = report["entropy_bounds_per_token"]
            assert report["distribution"] == "top-20" and low - 1e-6 <= theirs["entropy_per_token"] <= high + 1e-6
    both = cli("generate", "ROMEO:", "-m", llama_server.url, "--full-distribution", "--top-logprobs", "5")
    assert both.exit_code == 2 and "give one" in both.stderr and both.stdout == ""


# --- tokens inside a UTF-8 character: llama-server holds them back with their probabilities ----------------------


MULTI_BYTE = 'root ::= "—é" [a-z ]+'  # a grammar whose text starts with two multi-byte characters


def test_a_streamed_token_held_inside_a_character_is_counted_and_named(llama_server, remote):
    """The server streams the text of a multi-byte character with the token that completes it, and that token's
    probabilities alone: the held tokens come back with their ids (the server's tokenization of the character),
    no probabilities, and the text decodes whole; the stream's length is the server's."""
    from samplecli.backends.remote.llama_cpp_sampling import ServerChain

    chain = ServerChain({"grammar": MULTI_BYTE, "temperature": 0, "samplers": ["temperature"]}, [])
    ids = remote.vocab.encode("ROMEO:")
    stream = remote.sample_stream(ids, chain, max_new_tokens=6, seed=1)
    tokens = list(stream)
    answer = llama_server.post("/completion", {"prompt": ids, "n_predict": 6, "grammar": MULTI_BYTE,
                                                "temperature": 0, "samplers": ["temperature"],
                                                "return_tokens": True})
    assert [t.token_id for t in tokens] == answer["tokens"]  # every generated token, in order, by id
    held = [t for t in tokens if t.held]
    assert held and all(t.logprob is None and t.candidates == () for t in held)
    assert all(t.logprob is not None for t in tokens if not t.held)
    assert remote.vocab.decode([t.token_id for t in tokens]) == answer["content"]
    assert stream.finish_reason == "length"


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory, start_llama_server_module):
    """A random-init GPT-2 whose vocabulary is the bundled one grown to 4,096 tokens by filler tokens, most of them
    partial UTF-8 byte strings, and as likely to be drawn as any (the case of a real model's CJK and byte tokens):
    its folder, the model loaded here, and llama-server serving its GGUF."""
    from samplecli.backends.torch_lm import load
    from tests.llama_server import llama_cpp_module

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import build_gpt2_small_shape

    # 4,095 tokens: the bundled 2,048 and filler (the draws below were checked on this model)
    folder = build_gpt2_small_shape(tmp_path_factory.mktemp("byte-model") / "m", vocab_size=4095, n_layer=2,
                                    n_embd=64, n_head=2, n_positions=256)
    server = start_llama_server_module(gguf=llama_cpp_module().gguf_model(folder))
    return folder, load(str(folder)), open_backend(server.url, full_distribution=True), server


def partial(vocab, token_id: int) -> bool:
    try:
        bytes(vocab.bytes(token_id)).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_score_over_the_server_reads_every_position_whose_best_token_is_inside_a_character(byte_model):
    """A one-token request whose token the server holds back (it ends inside a UTF-8 character) comes without
    probabilities: it is asked again with that token banned (the probabilities are the raw model's, before any
    bias), so every position is scored, as the model in process scores it."""
    _, local_model, remote_model, _ = byte_model
    text = "ROMEO: I will not stay, my lord; the night is cold and the stars are out."
    ids = local_model.vocab.encode(text)
    contexts = [ids[: i + 1] for i in range(len(ids) - 1)]
    held = [c for c in contexts if partial(local_model.vocab, int(local_model.logits(c, keep=1)[-1].argmax()))]
    assert held  # contexts after which the server's own draw is held back: the case this test is about
    for context in held:
        exact = torch.log_softmax(local_model.logits(context, keep=1)[-1].double(), -1)
        served = remote_model.distribution(context).double()
        assert torch.allclose(served.exp(), exact.exp(), atol=1e-5)
    theirs, ours = score(remote_model, text), score(local_model, text)
    assert theirs.tokens == ours.tokens >= len(ids) - 1
    assert abs(theirs.nats_per_token - ours.nats_per_token) < 1e-3


def test_score_from_the_top_n_reads_each_text_token_the_server_holds_back_from_the_distribution(byte_model):
    """By default a given text's token is made the server's greedy choice (a logit bias) and answers with its own
    probability; a token inside a UTF-8 character is held back without one, and is read from the next-token
    distribution instead: every position scored, as the model in process scores it."""
    _, local_model, _, server = byte_model
    text = "naïve café — 東京の夜, ROMEO. Ünïcödé ✓"
    ids = local_model.vocab.encode(text)
    assert sum(partial(local_model.vocab, token) for token in ids) >= 5  # the text's own tokens are held back
    remote_model = open_backend(server.url)
    assert remote_model.top_n == 20
    theirs, ours = score(remote_model, text, per_token=True), score(local_model, text, per_token=True)
    assert theirs.distribution == "top-20" and theirs.tokens == ours.tokens == len(ids)
    for served, exact in zip(theirs.per_token, ours.per_token, strict=True):
        assert served.token_id == exact.token_id and served.nats == pytest.approx(exact.nats, abs=1e-3)
        assert served.rank == exact.rank or (served.rank > 20 and exact.rank > 20)


def test_generate_and_compare_count_and_show_every_token_the_server_held_back(byte_model):
    """Sampling from a model whose vocabulary is mostly partial UTF-8: every generated token is a step (its
    numbers "not returned by the engine" where the server held it back), the count is the server's, the text is
    the tokens' text, and the summary says how many tokens came without probabilities."""
    _, local_model, _, server = byte_model
    args = ("ROMEO:", "-m", server.url, "--temp", "1", "--top-k", "0", "-n", "24", "--seed", "3")
    result = cli("generate", *args, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    steps, done = records[:-1], records[-1]
    assert len(steps) == done["n_tokens"] == 24 and done["finish_reason"] == "length"
    assert done["text"] == "".join(s["text"] for s in steps)  # the server's own text, held bytes included
    known = [s["token_id"] for s in steps if s["token_id"] >= 0]  # a held id the server's text cannot give: -1
    assert len(known) >= 20
    held = [s for s in steps if s["distribution"] == "not returned by the engine"]
    assert held and all(s["logprob"] is None and s["top"] == [] for s in held)
    assert all(s["logprob"] is not None for s in steps if s not in held)
    summary = cli("generate", *args, "--view", "none")
    count = len(held)
    assert f"{count} token{'s' if count > 1 else ''} without probabilities (not returned by the engine" \
        in summary.stderr
    compared = cli("compare", "ROMEO:", "-m", server.url, "-s", "temperature=1", "-s", "top-k=50", "-n", "24",
                   "-f", "json", "--seed", "3")
    assert compared.exit_code == 0, compared.stderr
    assert all(len(column["token_ids"][0]) == 24 for column in json.loads(compared.stdout)["strategies"])


def test_chat_on_a_server_whose_model_has_no_template_warns_that_the_server_fell_back_to_chatml(llama_server):
    """The bundled model has no chat template: llama-server wraps the messages in ChatML anyway, whose markers the
    vocabulary has no token for; the run goes on (it is the server's template) with one warning line saying so."""
    result = cli("generate", "Who art thou?", "-m", llama_server.url, "--chat", "-n", "2", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fell back to ChatML" in warnings[0] and "--chat-template NAME" in warnings[0]
