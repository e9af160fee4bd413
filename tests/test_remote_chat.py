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
    assert remote_doc["samples"][0]["token_ids"] == local_doc["samples"][0]["token_ids"]


def test_a_template_given_to_samplecli_is_refused_over_the_server_in_one_line(turns_server):
    server, template = turns_server
    result = cli("generate", "Who art thou?", "-m", server.url, "--chat-template", str(template), "-n", "2")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "--chat-template: llama.cpp's server applies the chat template it was started with" in result.stderr
