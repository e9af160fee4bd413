"""Ollama's native API (`/api/generate`, `/api/chat`), against a recorded exchange written from Ollama's API
documentation (tests/data/ollama/native.json; Ollama cannot run here): detection, every sampler setting in
`options` with the others at their off values, the order Ollama runs them in, its log-probabilities per step, and
refusals that never advise a flag that is then refused."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from samplecli.cli import app
from tests.conftest import one_line_error
from tests.ollama_stub import DATA, ollama_stub

runner = CliRunner()
RECORDED = json.loads(DATA.read_text())


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="samplecli")


def sent(server, path: str) -> list[dict]:
    return [body for _, where, _, body in server.requests if where == path]


def test_a_plain_prompt_goes_to_api_generate_raw_with_every_option_and_logprobs_per_step():
    with ollama_stub() as server:
        result = invoke("generate", "Hello", "-m", server.url, "-n", "3", "--seed", "1", "-f", "jsonl", "-q")
    assert result.exit_code == 0, result.stderr
    [body] = sent(server, "/api/generate")
    assert body["prompt"] == "Hello" and body["raw"] is True and body["stream"] is True
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["model"] == "llama3.2:1b"
    options = body["options"]
    # samplecli's default chain, and every other sampler off: Ollama would fill them from the Modelfile
    assert options["temperature"] == 0.8 and options["top_p"] == 0.95 and options["num_predict"] == 3
    assert {k: options[k] for k in ("top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                                    "frequency_penalty")} == {"top_k": 0, "min_p": 0.0, "typical_p": 1.0,
                                                              "repeat_penalty": 1.0, "presence_penalty": 0.0,
                                                              "frequency_penalty": 0.0}
    assert isinstance(options["seed"], int)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    recorded = [line["logprobs"][0] for line in RECORDED["generate_stream"] if not line["done"]]
    assert [s["token"] for s in steps] == [e["token"] for e in recorded]
    for step, entry in zip(steps, recorded, strict=True):
        assert math.isclose(step["prob"], math.exp(entry["logprob"]), rel_tol=1e-12)
        assert [a["token"] for a in step["top"][:3]] == [t["token"] for t in entry["top_logprobs"]]
        assert step["distribution"] == "top-20" and step["entropy_bounds"] is not None  # bounds, never a guess
    assert records[-1]["finish_reason"] == "length" and records[-1]["text"] == "Hello, world"


def test_the_samplers_go_in_options_and_the_header_shows_ollamas_order():
    with ollama_stub() as server:
        result = invoke("generate", "Hello", "-m", server.url, "-n", "3", "--seed", "4", "--top-k", "40", "--min-p",
                        "0.05", "--repetition-penalty", "1.1", "--temp", "0.7",
                        "--view", "none")
    assert result.exit_code == 0, result.stderr
    options = sent(server, "/api/generate")[0]["options"]
    assert (options["top_k"], options["min_p"], options["repeat_penalty"], options["repeat_last_n"],
            options["temperature"], options["top_p"]) == (40, 0.05, 1.1, -1, 0.7, 1.0)  # -1: all, as samplecli's
    assert ("Ollama: logits -> repeat_penalty(1.1) -> top_k(40) -> temperature(0.7) -> min_p(0.05) -> sample"
            in result.stderr)


def test_greedy_is_temperature_zero():
    with ollama_stub() as server:
        result = invoke("generate", "Hello", "-m", server.url, "-n", "3", "--temp", "0", "--view", "none")
    assert result.exit_code == 0, result.stderr
    assert sent(server, "/api/generate")[0]["options"]["temperature"] == 0.0
    assert "temperature(0: the argmax)" in result.stderr


def test_a_chat_goes_to_api_chat_with_its_messages_and_ends_on_the_models_turn():
    with ollama_stub() as server:
        result = invoke("generate", "Hi", "--chat", "--system", "Be brief.", "-m", server.url, "-n", "5",
                        "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    [body] = sent(server, "/api/chat")
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert "raw" not in body and body["logprobs"] is True
    sample = json.loads(result.stdout)["samples"][0]
    assert sample["text"] == "Hello," and sample["finish_reason"] == "eos"


@pytest.mark.parametrize(("args", "fragments", "not_advised"), [
    (["--chain", "top-p=0.9,temperature=0.8"], ["Ollama runs `temperature` before `top_p`", "put temperature first"],
     "--sample-locally"),
    (["--sample-locally"], ["--sample-locally: Ollama names its tokens by their text", "-m FILE.gguf"], None),
    (["--num-beams", "2"], ["beam search runs in samplecli, not on Ollama", "-m FILE.gguf"], "--sample-locally"),
    (["--strategy", "mirostat"], ["Ollama has no `mirostat` selector", "-m FILE.gguf"], "--sample-locally"),
    (["--post-sampling-probs"], ["raw model's log-probabilities only"], None),
    (["--repetition-penalty", "1.1", "--presence-penalty", "0.5"], ["counts every penalty over one window"],
     "--sample-locally"),
])
def test_what_ollama_cannot_run_is_one_line_with_a_way_out_that_works(args, fragments, not_advised):
    with ollama_stub() as server:
        result = invoke("generate", "Hello", "-m", server.url, "-n", "3", *args)
    one_line_error(result, *fragments)
    assert not sent(server, "/api/generate")  # refused before any generation
    if not_advised is not None:
        assert not_advised not in result.stderr


def test_score_over_ollama_is_refused_in_one_line_naming_the_way_out():
    with ollama_stub() as server:
        result = invoke("score", "Hello there", "-m", server.url)
    one_line_error(result, "Ollama returns no log-probabilities of a given text", "-m FILE.gguf")


def test_an_ollama_without_logprobs_says_which_version_has_them():
    with ollama_stub(fault="old") as server:
        result = invoke("generate", "Hello", "-m", server.url, "-n", "3", "--view", "none")
    assert result.exit_code != 0
    assert "0.12.11" in result.stderr and "Traceback" not in result.stderr


def test_ollamas_v1_refusals_point_to_its_native_api_not_to_sample_locally():
    from samplecli.backends.remote.openai_sampling import translate

    with pytest.raises(Exception, match="native API") as caught:
        translate("ollama", [("top-k", {"top_k": 40})], ("sample", {}))
    assert "--sample-locally" not in str(caught.value)
