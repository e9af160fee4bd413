"""`samplecli inspect` on a remote engine that returns only its top N tokens (`--top-logprobs N` on llama.cpp's
native API, every OpenAI-protocol engine): checked on the real llama-server against the same server's full
distribution (its native API, every token's probability), and, for the engines that name tokens by their text,
against the stub that replays their answers."""

from __future__ import annotations

import json
import math
import os

import pytest
from typer.testing import CliRunner

from samplecli.cli import app
from tests.openai_stub import stub

PROMPT = "ROMEO:\nI"
N = 20
NO_KEY = {k: v for k, v in os.environ.items() if k not in ("SAMPLECLI_API_KEY", "OPENAI_API_KEY")}


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env=NO_KEY)


def document(*args: str) -> dict:
    result = cli("inspect", PROMPT, *args, "--top-n", str(N), "--seed", "1", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def full(llama_server) -> dict:
    """The native API with every token's probability: the exact distribution, top-k = 5 traced."""
    return document("-m", llama_server.url, "--top-k", "5")


@pytest.fixture(scope="module", params=["native --top-logprobs 20", "/v1"])
def top_n(request, llama_server) -> dict:
    if request.param == "/v1":
        return document("-m", llama_server.url + "/v1", "--top-k", "5")
    return document("-m", llama_server.url, "--top-logprobs", str(N), "--top-k", "5")


def test_the_full_distribution_has_no_bounds_and_an_exact_entropy(full):
    assert full["distribution"] == "full" and "entropy_bounds" not in full and "tail_mass" not in full
    assert full["stages"][0]["kept"] == 2048 and full["stages"][0]["kl_from_raw_nats"] == 0.0


def test_the_raw_top_n_shows_the_models_own_probabilities_and_bounds_its_entropy(full, top_n):
    assert top_n["distribution"] == f"top-{N}" and top_n["engine"] == "llama.cpp's server"
    ours, exact = top_n["top"], full["top"]
    assert [t["token_id"] for t in ours[:10]] == [t["token_id"] for t in exact[:10]]
    for mine, theirs in zip(ours[:10], exact[:10], strict=True):
        assert mine["prob"] == pytest.approx(theirs["prob"], abs=1e-3)  # not renormalised over the N
    low, high = top_n["entropy_bounds"]
    assert low <= full["stages"][0]["entropy_nats"] <= high
    assert top_n["tail_mass"] == pytest.approx(1 - sum(t["prob"] for t in exact[:N]), abs=1e-3)
    raw = top_n["stages"][0]
    # unknown without the whole distribution: null, not a number that looks exact
    assert raw["entropy_nats"] is None and raw["entropy_bits"] is None and raw["kl_from_raw_nats"] is None
    assert raw["kept"] == N and raw["kept_mass_raw"] == pytest.approx(1 - top_n["tail_mass"], abs=1e-6)


def test_a_top_k_inside_the_top_n_is_the_exact_distribution(full, top_n):
    ours, exact = top_n["stages"][1], full["stages"][1]
    assert ours["name"] == exact["name"] == "top-k(5)" and ours["kept"] == exact["kept"] == 5
    kept = [t["token_id"] for t, rank in zip(top_n["top"], ours["ranks"], strict=True) if rank is not None]
    assert kept == [t["token_id"] for t, rank in zip(full["top"], exact["ranks"], strict=True) if rank is not None]
    assert ours["probs"][:5] == pytest.approx(exact["probs"][:5], abs=1e-3)
    assert ours["probs"][5:] == [0.0] * (N - 5)
    assert ours["entropy_nats"] == pytest.approx(exact["entropy_nats"], abs=1e-3)
    assert ours["kl_from_raw_nats"] == pytest.approx(exact["kl_from_raw_nats"], abs=1e-3)
    assert ours["kept_mass_raw"] == pytest.approx(exact["kept_mass_raw"], abs=1e-3)


def test_temperatures_and_draws_are_over_the_top_n_renormalised(llama_server):
    doc = json.loads(cli("inspect", PROMPT, "-m", llama_server.url + "/v1", "--temps", "1,1000", "--draws", "2000",
                         "--seed", "3", "-f", "json").stdout)
    one, hot = doc["temperatures"]["rows"]
    assert one["kept"] == hot["kept"] == N
    assert sum(one["probs"]) == pytest.approx(sum(t["prob"] for t in doc["top"]) / (1 - doc["tail_mass"]), abs=1e-6)
    assert doc["temperatures"]["limits"]["hot_entropy_nats"] == pytest.approx(math.log(N))
    assert hot["entropy_nats"] == pytest.approx(math.log(N), abs=1e-3)
    draws = doc["draws"][0]
    assert draws["distinct"] <= N and sum(draws["counts"]) + draws["other_count"] == 2000


def test_the_text_says_once_that_the_rest_counts_as_filtered_and_shows_intervals(llama_server):
    # a width pinned here: the view drops columns that do not fit, and the environment's COLUMNS (80 under some
    # runners, unset under others) must not decide what this test sees
    result = CliRunner().invoke(app, ["inspect", PROMPT, "-m", llama_server.url, "--top-logprobs", str(N), "--top-k",
                                      "5"], env={**NO_KEY, "COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.count(f"top-{N} from llama.cpp's server: the other tokens count as filtered") == 1
    assert "raw entropy ∈ [" in out and "exp(H) ∈ [" in out and "exp(H) = " not in out
    logits_row = next(line for line in out.splitlines() if line.strip().startswith("logits"))
    assert logits_row.split()[1] == str(N) and "[" in logits_row and logits_row.rstrip().endswith("—")


@pytest.mark.parametrize("engine", ["sglang", "ollama"])
def test_engines_that_name_tokens_by_text_are_refused_in_one_line_before_any_completion(engine):
    with stub(engine) as server:
        result = cli("inspect", PROMPT, "-m", server.url + "/v1", "--top-k", "5", "--at", "2")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: inspect needs the next-token distribution by token id, but ")
    assert "names its tokens by their text" in result.stderr
    assert not [path for _, path, _, _ in server.requests if path.startswith("/v1/completions")]


def test_pair_over_a_top_n_engine_is_refused_in_one_line(llama_server):
    result = cli("inspect", PROMPT, "-m", llama_server.url + "/v1", "--pair", "a", "b")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert f"returns only its top {N} per step, which may leave A or B out" in result.stderr


def test_at_step_k_generates_over_the_top_n_as_over_the_full_distribution(llama_server):
    """Greedy picks the argmax, which the top N hold: step 3 follows the same tokens either way."""
    runs = [cli("inspect", "ROMEO:", "-m", url, "--at", "3", "--temp", "0", "--top-n", "5", "-f", "json")
            for url in (llama_server.url, llama_server.url + "/v1")]
    assert all(r.exit_code == 0 for r in runs), [r.stderr for r in runs]
    full, top_n = (json.loads(r.stdout) for r in runs)
    assert top_n["position"]["generated_token_ids"] == full["position"]["generated_token_ids"]
    assert top_n["position"]["drawn_token_id"] == full["position"]["drawn_token_id"] == full["top"][0]["token_id"]
    assert top_n["distribution"] == "top-20" and full["distribution"] == "full"
