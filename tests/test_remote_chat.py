"""`--chat` over llama.cpp's server: the conversation goes through the chat template the server was started with
(`/apply-template`, as its `/v1/chat/completions` does), tokenized as the server tokenizes a chat prompt; the
template's end-of-turn tokens stop a reply; a template given to samplecli is refused in one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from samplecli.backends import open_backend
from samplecli.cli import app

# a template no server has built in, so that the answer can only come from the file the server was given; it
# closes an assistant's turn with the bundled model's end-of-sequence token, a special token of its vocabulary
TURNS = ("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if m.role == 'assistant' %}<|endoftext|>{% endif %}"
         "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")  # a block eats a newline
MESSAGES = [{"role": "system", "content": "Speak as Romeo."}, {"role": "user", "content": "Who art thou?"}]
RENDERED = "[system] Speak as Romeo.\n[user] Who art thou?\n[assistant]"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def turns_server(tmp_path_factory):
    from tests.llama_server import start

    folder = tmp_path_factory.mktemp("turns")
    template = folder / "turns.jinja"
    template.write_text(TURNS, encoding="utf-8")
    server = start(extra_args=("--jinja", "--chat-template-file", str(template)), n_parallel=1, log_dir=folder)
    yield server, template
    server.stop()


def test_the_servers_own_template_makes_the_prompt_and_its_end_of_turn_token_is_found(turns_server):
    server, _ = turns_server
    lm = open_backend(server.url)
    ids = lm.chat(MESSAGES)
    assert lm.vocab.decode(ids, skip_special_tokens=False) == RENDERED
    assert ids == lm.vocab.encode(RENDERED)
    eos = lm.eos_token_ids[0]
    assert lm.end_of_turn_ids == (eos,)  # "<|endoftext|>" after the reply: a special token, parsed as one
    assert lm.eos_token_ids == [eos]


def test_chat_over_the_server_answers_what_the_local_model_answers_with_the_same_template(turns_server):
    server, template = turns_server
    args = ["--system", "Speak as Romeo.", "--temp", "0", "-n", "8", "-f", "json", "-q"]
    remote = cli("generate", "Who art thou?", "-m", server.url, *args)
    local = cli("generate", "Who art thou?", "--chat-template", str(template), *args)
    assert remote.exit_code == 0, remote.stderr
    assert local.exit_code == 0, local.stderr
    remote_doc, local_doc = json.loads(remote.stdout), json.loads(local.stdout)
    assert remote_doc["chat"] is True and remote_doc["prompt"] == RENDERED == local_doc["prompt"]
    assert "warning" not in remote.stderr  # the template the server was started with: no ChatML fallback
    assert remote_doc["samples"][0]["token_ids"] == local_doc["samples"][0]["token_ids"]


def test_a_template_given_to_samplecli_is_refused_over_the_server_in_one_line(turns_server):
    server, template = turns_server
    result = cli("generate", "Who art thou?", "-m", server.url, "--chat-template", str(template), "-n", "2")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "--chat-template: llama.cpp's server applies the chat template it was started with" in result.stderr


def test_chat_over_the_openai_protocol_goes_to_the_engines_chat_endpoint_and_answers_as_the_native_api(turns_server):
    """Over /v1 the messages go to /v1/chat/completions and the engine applies its template; llama-server's
    /apply-template shows it. Greedy answers what the native API answers, step by step."""
    server, template = turns_server
    args = ["--system", "Speak as Romeo.", "--temp", "0", "-n", "8", "-f", "jsonl"]
    over_v1 = cli("generate", "Who art thou?", "-m", server.url + "/v1", *args)
    native = cli("generate", "Who art thou?", "-m", server.url, *args)
    assert over_v1.exit_code == 0 and native.exit_code == 0, (over_v1.stderr, native.stderr)
    ours, theirs = ([json.loads(line) for line in run.stdout.splitlines()] for run in (over_v1, native))
    assert [r["type"] for r in ours] == [r["type"] for r in theirs] and len(ours) > 2
    for a, b in zip(ours, theirs, strict=True):
        assert a["token_ids"] if a["type"] == "done" else a["token_id"]  # something was generated
        if a["type"] == "step":
            assert (a["token_id"], a["text"]) == (b["token_id"], b["text"])
            assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
        else:
            assert (a["token_ids"], a["text"], a["finish_reason"]) == (b["token_ids"], b["text"], b["finish_reason"])
    shown = cli("generate", "Who art thou?", "-m", server.url + "/v1", *args[:-2], "--explain-settings")
    assert shown.exit_code == 0, shown.stderr
    assert f"the conversation, as llama.cpp's server gets it (it applies its chat template):\n{RENDERED}" \
        in shown.stderr
    for refused, says in ((["--chat-template", str(template)], "--chat-template: llama.cpp's server applies its "
                           "own chat template to the messages over the OpenAI protocol"),
                          (["--sample-locally"], "--sample-locally: a chat over the OpenAI protocol is templated by "
                           "llama.cpp's server, so samplecli has no token ids of it; drop --sample-locally")):
        result = cli("generate", "Who art thou?", "-m", server.url + "/v1", "--chat", *refused, "-n", "2")
        assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
        assert says in result.stderr


def test_samplecli_chat_over_the_openai_protocol_lets_the_engine_sample_each_reply(turns_server, tmp_path):
    """`samplecli chat` on piped stdin over /v1: each reply is the engine's (it templates and samples): the first is
    what `generate --chat` gets, the second what it gets with the first reply in the conversation."""
    server, _ = turns_server
    common = ["-m", server.url + "/v1", "--temp", "0", "-n", "6"]
    piped = CliRunner().invoke(app, ["chat", *common, "--system", "Speak as Romeo."],
                               input="Who art thou?\nAnd whence?\n")
    assert piped.exit_code == 0, piped.stderr
    assert "llama.cpp /v1: logits -> temperature(0: the argmax)" in piped.stderr
    first = cli("generate", "Who art thou?", "--system", "Speak as Romeo.", *common, "-f", "json", "-q")
    assert first.exit_code == 0, first.stderr
    reply = json.loads(first.stdout)["samples"][0]["text"]
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps([{"role": "system", "content": "Speak as Romeo."},
                                        {"role": "user", "content": "Who art thou?"},
                                        {"role": "assistant", "content": reply}]), encoding="utf-8")
    second = cli("generate", "And whence?", "--messages", str(conversation), *common, "-f", "json", "-q")
    assert second.exit_code == 0, second.stderr
    assert piped.stdout == reply + "\n" + json.loads(second.stdout)["samples"][0]["text"] + "\n"


def test_compare_of_a_chat_over_the_openai_protocol_samples_on_the_engine_and_refuses_sample_locally(turns_server):
    server, _ = turns_server
    common = ["Who art thou?", "--system", "Speak as Romeo.", "-m", server.url + "/v1", "-n", "6"]
    report = cli("compare", *common, "-s", "greedy", "-s", "top-k=5", "--seed", "2", "-f", "json")
    alone = cli("generate", *common, "--temp", "0", "-f", "json", "-q")
    assert report.exit_code == 0 and alone.exit_code == 0, (report.stderr, alone.stderr)
    doc = json.loads(report.stdout)
    assert doc["prompt"] == RENDERED and not doc["coupled"]
    greedy = next(c for c in doc["strategies"] if c["label"] == "greedy")
    assert greedy["token_ids"][0] == json.loads(alone.stdout)["samples"][0]["token_ids"]
    refused = cli("compare", *common, "-s", "greedy", "--sample-locally")
    assert refused.exit_code == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "a chat over the OpenAI protocol is templated by llama.cpp's server" in refused.stderr
