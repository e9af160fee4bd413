"""llama-server serving a V = 128,256 GGUF (a random-init Llama built here, the bundled tokenizer grown to a Llama 3
vocabulary, converted as the bundled model is): the default request shape (the server's top 20 per token) says in
the header and in JSONL which numbers are exact and which are bounds; --full-distribution gives the exact entropy
the model in process gives; `score` from each token's own probability equals the model in process's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samplecli.cli import app

ROOT = Path(__file__).resolve().parent.parent
V = 128_256


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def real_vocab(tmp_path_factory, start_llama_server_module):
    """(the model's folder, llama-server serving its GGUF f32)."""
    from tests.llama_server import llama_cpp_module

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_peers import build_llama_100m

    folder = build_llama_100m(tmp_path_factory.mktemp("llama3-vocab") / "m", vocab_size=V, hidden=64, layers=1,
                              heads=2, kv_heads=1, intermediate=128, positions=256)
    from transformers import AutoModelForCausalLM

    # a trained model's spread of logits (a random-init head gives a nearly flat row): top-p then keeps a few
    # hundred tokens, not most of the vocabulary
    lm = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        lm.get_output_embeddings().weight.mul_(20.0)
    lm.save_pretrained(folder)
    server = start_llama_server_module(gguf=llama_cpp_module().gguf_model(folder))
    return folder, server


def steps_of(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if json.loads(line)["type"] == "step"]


def test_the_default_says_which_numbers_are_bounds_and_full_distribution_makes_them_exact(real_vocab):
    folder, server = real_vocab
    args = ("ROMEO:", "-n", "6", "--seed", "3", "--temp", "0", "-f", "jsonl")
    default = cli("generate", *args, "-m", server.url)
    assert default.exit_code == 0, default.stderr
    said = default.stderr
    assert "top 20 probabilities per token" in said and f"asks for all {V:,}" in said, said
    local = steps_of(cli("generate", *args, "-m", str(folder)))
    served = steps_of(default)
    assert [s["token_id"] for s in served] == [s["token_id"] for s in local]
    for ours, theirs in zip(served, local, strict=True):
        # the chosen token's probability is exact; the raw entropy is an interval that holds the true one
        assert ours["distribution"] == "top-20" and ours["entropy"] is None
        low, high = ours["entropy_bounds"]
        assert low - 1e-4 <= theirs["entropy"] <= high + 1e-4
        assert ours["prob"] == pytest.approx(theirs["prob"], abs=1e-2)  # llama.cpp's float32 against torch's
    full = cli("generate", *args, "-m", server.url, "--full-distribution")
    assert full.exit_code == 0, full.stderr
    assert "--full-distribution asks" not in full.stderr
    # the exact entropy: what llama.cpp in process computes on the same file (torch's forward differs from
    # llama.cpp's float32 kernels by more than the transport's rounding)
    in_process = steps_of(cli("generate", *args, "-m", str(server.gguf)))
    for ours, theirs in zip(steps_of(full), in_process, strict=True):
        assert ours.get("distribution", "full") == "full"
        assert ours["entropy"] == pytest.approx(theirs["entropy"], abs=1e-3)


def test_score_over_the_server_equals_the_model_in_process_at_a_real_vocabulary(real_vocab):
    folder, server = real_vocab
    text = "ROMEO: I will not stay, my lord; the night is cold."
    ours = cli("score", text, "-m", server.url, "-f", "json")
    theirs = cli("score", text, "-m", str(folder), "-f", "json")
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.stderr + theirs.stderr
    served, local = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert served["tokens"] == local["tokens"]
    assert served["nats_per_token"] == pytest.approx(local["nats_per_token"], abs=1e-3)
    low, high = served["entropy_bounds_per_token"]
    assert served["distribution"] == "top-20" and low - 1e-4 <= local["entropy_per_token"] <= high + 1e-4
