"""Constraints (#29): `--json-schema`, `--regex`, `--grammar` and `--choice` as a stage of the chain. Every output a
constrained run finishes is in the language (checked by `jsonschema`, `re.fullmatch`, Python's parser), on the bundled
model (byte-level BPE), a SentencePiece model with byte fallback built here, and a GGUF; the allowed set equals a
brute-force check of every token's bytes; mass and cost equal their definitions; draws follow the masked,
renormalised distribution; bad input is one line, before any model loads."""

from __future__ import annotations

import ast
import json
import math
import re

import jsonschema
import pytest
import regex
import torch
from typer.testing import CliRunner

from samplecli.backends import open_backend
from samplecli.cli import app
from samplecli.engine.decode import decode, encode_prompt
from samplecli.engine.events import DecodeConfig, Done, Step
from samplecli.errors import UsageError
from samplecli.strategies import TRANSFORMS, Strategy, build_strategy
from samplecli.strategies.ranking import drawing_order
from samplecli.strategies.selectors import Sample
from samplecli.strategies.transforms import Temperature, TopP
from tests.conftest import one_line_error
from tests.llama_server import llama_cpp_module

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}, "required": ["name"],
     "additionalProperties": False},
    {"type": "object", "properties": {"person": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                         "age": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["name", "age"], "additionalProperties": False}}, "required": ["person"],
     "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", "blue"]},
    # a number's fraction is unbounded (greedy on the bundled model writes 3s for ever): multipleOf bounds it
    {"type": "object", "properties": {"x": {"type": "number", "minimum": -10, "maximum": 10, "multipleOf": 0.25}},
     "required": ["x"], "additionalProperties": False},
    {"type": "string", "pattern": "^[a-z\"\\\\]{1,6}$"},  # quotes and backslashes: escapes in the JSON text
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "none": {"type": "null"}}, "required": ["ok", "none"],
     "additionalProperties": False},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 5}, {"type": "string", "maxLength": 3}]},
    {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 3}},
                                "required": ["id"], "additionalProperties": False}, "maxItems": 2},
    {"type": "object", "properties": {"kind": {"const": "move"}, "to": {"enum": ["north", "south"]},
                                      "steps": {"type": "integer", "minimum": 1, "maximum": 9}},
     "required": ["kind", "to"], "additionalProperties": False},
]
REGEXES = [r"[a-z]{1,8}", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"(yes|no|maybe)", r"[A-Z][a-z]{0,6}( [a-z]{1,5}){0,3}\.",
           r"[a-z]{1,6}@[a-z]{1,6}\.(com|org)", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
           r"(0|[1-9][0-9]{0,3})(\.[0-9]{1,2})?", r"#[0-9a-f]{6}", r"(ab|cd){1,5}x", r"[^\n]{1,10}!"]
ARITHMETIC = ('root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= factor (("*" | "/") factor)*\n'
              'factor ::= "0" | [1-9] [0-9]* | "(" expr ")"\n')
CHOICES = [" yes", " no", " maybe so"]
MAX_NEW = 160  # room for the longest sentence of the finite languages above, a byte a token


def run(lm, settings: dict, prompt: str = "ROMEO:", samples: int = 1, seed: int = 0, max_new: int = MAX_NEW):
    strategy = build_strategy(settings).strategy
    config = DecodeConfig(max_new_tokens=max_new, num_samples=samples, seed=seed, top_n=0)
    events = list(decode(lm, strategy, encode_prompt(lm, prompt), config))
    return [e for e in events if isinstance(e, Done)], [e for e in events if isinstance(e, Step)]


def sentencepiece_model(path, vocab_size: int = 4096):
    """A SentencePiece-style BPE (Metaspace `▁`, byte fallback `<0x..>`) of ~4k tokens trained on the bundled
    model's held-out text, with a random-init GPT-2 of vocabulary 4,096: the tokenizer family of Llama 2 and
    Mistral, and a model whose every choice the constraint has to steer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR

    text = (BUNDLED_MODEL_DIR / "held_out.txt").read_text(encoding="utf-8")
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator([text], trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {token: i for i, token in enumerate(specials + byte_tokens)}
    for token in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
                        eos_token_id=2)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bundled():
    return open_backend(None)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    return open_backend(str(sentencepiece_model(tmp_path_factory.mktemp("sp4k"))))


@pytest.fixture(scope="module")
def gguf_path():
    return llama_cpp_module().gguf_model(outtype="f32")


@pytest.fixture(scope="module")
def gguf(gguf_path):
    return open_backend(str(gguf_path))


def check_all(lm, settings: dict, valid) -> None:
    """Greedy and four sampled outputs: each finished at EOS and is in the language (`valid(text)`)."""
    for strategy in ({**settings, "temperature": 0}, {**settings, "temperature": 1.0}):
        dones, _ = run(lm, strategy, samples=1 if strategy["temperature"] == 0 else 4)
        for done in dones:
            assert done.finish_reason == "eos", (settings, done.finish_reason, done.text)
            assert valid(spelled(lm, done)), (settings, done.text)


def spelled(lm, done: Done) -> str:
    """The text a sequence's tokens spell, byte for byte (a SentencePiece decoder drops the first token's leading
    space in `Done.text`, as Llama's does; the language holds it)."""
    return b"".join(bytes(lm.vocab.bytes(i)) for i in done.token_ids if i not in lm.eos_token_ids).decode("utf-8")


def json_valid(schema):
    def valid(text: str) -> bool:
        jsonschema.validate(json.loads(text), schema)
        return True

    return valid


def arithmetic_valid(text: str) -> bool:
    tree = ast.parse(text, mode="eval")  # Python's expression syntax is a superset of the grammar's language
    return all(isinstance(node, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div))
               for node in ast.walk(tree))


@pytest.mark.parametrize("model", ["bundled", "sentencepiece", "gguf"])
def test_every_finished_output_is_in_the_language_on_three_vocabularies(model, request, tmp_path):
    lm = request.getfixturevalue(model)
    for schema in SCHEMAS:
        check_all(lm, {"json_schema": json.dumps(schema)}, json_valid(schema))
    for pattern in REGEXES:
        check_all(lm, {"regex": pattern}, lambda text, p=pattern: re.fullmatch(p, text) is not None)
    check_all(lm, {"choice": CHOICES}, lambda text: text in CHOICES)
    grammar = tmp_path / "arithmetic.gbnf"
    grammar.write_text(ARITHMETIC)
    for temperature in (0, 1.0):  # an infinite language: an output cut at the limit is a prefix of a sentence
        dones, _ = run(lm, {"grammar": str(grammar), "temperature": temperature}, samples=4, max_new=48)
        finished = [d for d in dones if d.finish_reason == "eos"]
        assert all(arithmetic_valid(spelled(lm, d)) for d in finished), [d.text for d in finished]
        assert all(d.finish_reason in ("eos", "length") for d in dones)
        for done in dones:
            stage = TRANSFORMS["grammar"](grammar=str(grammar))
            stage.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids))
            ids = [i for i in done.token_ids if i not in lm.eos_token_ids]
            accepted, inside = stage.accepts(ids)
            assert inside == len(ids) and (accepted or done.finish_reason == "length")


def brute_force_allowed(lm, pattern: str, prefix: bytes) -> set[int]:
    """Every token whose bytes keep `prefix` a prefix of a sentence of `pattern` (a partial full match), and EOS
    where `prefix` is a sentence; special tokens never."""
    allowed = set()
    special = set(lm.vocab.special)
    for token_id in range(lm.vocab_size):
        if token_id in special:
            continue
        try:
            text = (prefix + bytes(lm.vocab.bytes(token_id))).decode("utf-8")
        except UnicodeDecodeError:
            continue  # the patterns here are ASCII: no sentence holds a byte of a longer character
        if regex.fullmatch(pattern, text, partial=True):
            allowed.add(token_id)
    if regex.fullmatch(pattern, prefix.decode("utf-8")):
        allowed.update(lm.eos_token_ids)
    return allowed


@pytest.mark.parametrize("pattern", [r"(the|then|thee) (king|kin)", r"[0-9]{1,3}(,[0-9]{3})?", r"a[bc]*d"])
def test_the_allowed_set_equals_a_brute_force_check_and_mass_and_cost_their_definitions(bundled, pattern):
    lm = bundled
    stage = TRANSFORMS["regex"](regex=pattern)
    stage.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids))
    stage.reset(1)
    logits = lm.logits(encode_prompt(lm, "ROMEO:"))[-1:].double()
    generator = torch.Generator().manual_seed(1)
    prefix = b""
    for _ in range(8):
        out = stage(logits, torch.empty((1, 0), dtype=torch.long))
        allowed = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
        assert allowed == brute_force_allowed(lm, pattern, prefix), prefix
        probs = torch.softmax(logits[0], dim=-1).tolist()
        mass = math.fsum(probs[i] for i in allowed)
        (count, recorded), = stage.record
        assert count == len(allowed) and abs(recorded - mass) < 1e-9
        if not allowed - set(lm.eos_token_ids):
            break
        choices = sorted(allowed - set(lm.eos_token_ids))
        token = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        stage.accept(torch.tensor([token]), torch.ones(1, lm.vocab_size))
        prefix += bytes(lm.vocab.bytes(token))


def test_the_cost_of_each_step_is_minus_log_the_mass_the_mask_keeps(bundled):
    _, steps = run(bundled, {"json_schema": json.dumps(SCHEMAS[1]), "temperature": 0})
    assert steps and all(s.constraint is not None for s in steps)
    for step in steps:
        assert step.constraint.allowed >= 1 and 0 < step.constraint.mass <= 1 + 1e-12
        assert abs(step.constraint.cost + math.log(step.constraint.mass)) < 1e-9
        # greedy with the mask first: the chosen token's raw probability is at most the mass inside
        assert step.prob <= step.constraint.mass * (1 + 1e-5)  # the step's probability is float32's


def test_draws_under_a_constraint_follow_the_masked_renormalised_strategy_distribution(bundled):
    lm = bundled
    pattern = r"(the|an?|my) [a-z]+"
    stage = TRANSFORMS["regex"](regex=pattern)
    strategy = Strategy([stage, Temperature(temperature=0.8), TopP(top_p=0.9)], Sample())
    strategy.bind_vocabulary(lm.vocab, lm.vocab_size, tuple(lm.eos_token_ids))
    strategy.reset(1)
    raw = lm.logits(encode_prompt(lm, "ROMEO:\nWhat is"))[-1:].float()
    # the expected distribution, by definition: the brute-force mask, then T = 0.8, then the nucleus of 0.9
    allowed = sorted(brute_force_allowed(lm, pattern, b""))
    masked = torch.full_like(raw[0].double(), -math.inf)
    masked[allowed] = raw[0, allowed].double() / 0.8
    probs = torch.softmax(masked, dim=-1)
    ordered, ids = probs.sort(descending=True)
    keep = ids[: int(((ordered.cumsum(0) - ordered) < 0.9).sum())]
    expected = torch.zeros_like(probs)
    expected[keep] = probs[keep] / probs[keep].sum()

    processed = strategy.process(raw, torch.empty((1, 0), dtype=torch.long))
    distribution = strategy.selector.distribution(processed)
    counts = torch.zeros(lm.vocab_size, dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    draws = 100_000
    for _ in range(draws // 10_000):
        rows = 10_000
        uniforms = torch.rand(rows, generator=generator)
        many = distribution.expand(rows, -1)
        chosen = strategy.selector.select(processed.expand(rows, -1), many, drawing_order(raw.expand(rows, -1), many),
                                          uniforms)
        counts += torch.bincount(chosen, minlength=lm.vocab_size).double()
    tv = 0.5 * (counts / draws - expected).abs().sum().item()
    assert len(keep) > 1 and tv < 0.01, (len(keep), tv)


def test_choice_picks_one_of_the_choices_and_reports_each_steps_mask(bundled):
    dones, steps = run(bundled, {"choice": CHOICES, "temperature": 1.0}, samples=8, seed=3)
    assert {d.text for d in dones} <= set(CHOICES) and all(d.finish_reason == "eos" for d in dones)
    assert steps[0].constraint.allowed >= 3


def test_the_mask_after_top_k_can_leave_nothing_and_the_run_ends_with_finish_reason_constraint(bundled):
    # top-k 1 keeps the raw argmax; a mask to digits after it leaves nothing: the run ends, no token drawn from it
    built = build_strategy({"regex": "[0-9]+", "top_k": 1}, chain="top-k=1,regex,sample")
    assert str(built.strategy) == "logits -> top-k(1) -> regex([0-9]+) -> sample"
    config = DecodeConfig(max_new_tokens=5, seed=0, top_n=0)
    events = list(decode(bundled, built.strategy, encode_prompt(bundled, "ROMEO:"), config))
    done = next(e for e in events if isinstance(e, Done))
    assert done.finish_reason == "constraint" and done.n_tokens == 0 and done.text == ""


def test_the_flags_put_the_constraint_first_and_greedy_keeps_it():
    built = build_strategy({"regex": "[a-z]+", "temperature": 0})
    assert str(built.strategy) == "logits -> regex([a-z]+) -> greedy"
    built = build_strategy({"choice": ["a", "b"], "top_p": 0.9})
    assert str(built.strategy) == "logits -> choice(a|b) -> top-p(0.9) -> sample"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("--json-schema", '{"type": "integr"}', "Invalid type: integr"),
    ("--json-schema", "{not json", "not JSON"),
    ("--regex", "(", "unclosed group"),
    ("--regex", "[^\\x00-\\U0010FFFF]", "language is empty"),
    ("--choice", "", "non-empty"),
    ("--grammar", "{tmp}/missing.gbnf", "no such file"),
    ("--grammar", "{tmp}/lexer.lark", "circular reference"),
    ("--grammar", "{tmp}/bad.gbnf", "GBNF"),
])
def test_bad_constraints_are_one_line_naming_the_flag_before_the_model_loads(flag, value, why, tmp_path):
    (tmp_path / "lexer.lark").write_text('start: A\nA: A "x" | "y"\n')  # recursion inside a lexer token
    (tmp_path / "bad.gbnf").write_text("root ::= (\n")
    value = value.replace("{tmp}", str(tmp_path))
    result = cli("generate", "x", "--model", str(tmp_path / "no-model-here"), flag, value)
    one_line_error(result, flag, why, code=2)


def test_a_left_recursive_grammar_is_taken(tmp_path, bundled):
    grammar = tmp_path / "left.gbnf"
    grammar.write_text('root ::= list\nlist ::= list "," item | item\nitem ::= "a" | "b"\n')
    dones, _ = run(bundled, {"grammar": str(grammar), "temperature": 1.0}, samples=4, max_new=12)
    # an infinite language: a sentence where it ended at EOS, else a prefix of one (it may end in a comma)
    assert all(re.fullmatch(r"[ab](,[ab])*" + ("" if d.finish_reason == "eos" else ",?"), d.text) for d in dones)


def test_generate_writes_the_constraint_per_step_in_jsonl_and_its_cost_in_the_summary():
    result = cli("generate", "ROMEO:", "--choice", " yes", "--choice", " no", "--temp", "0", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all(set(r["constraint"]) == {"allowed", "mass", "cost", "unmasked_same"} for r in steps)
    assert records[-1]["text"] in (" yes", " no")
    assert "constraint cost" in result.stderr


# --- on engines ---------------------------------------------------------------------------------------------------

def test_the_same_constraint_over_the_real_llama_server_gives_valid_output(llama_server, tmp_path):
    schema = SCHEMAS[3]
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "--json-schema", json.dumps(schema), "--temp", "0",
                 "-n", "40", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    # llama.cpp's JSON grammar lets whitespace follow the value (the bundled model writes newlines until the limit):
    # the value is complete, and valid, all the same
    jsonschema.validate(json.loads(done["text"]), schema)
    assert "llama.cpp: logits -> json-schema(inline) -> temperature(0: the argmax)" in result.stderr
    result = cli("generate", "ROMEO:", "-m", llama_server.url, "--choice", " yes", "--choice", " no", "--seed", "4",
                 "-n", "8", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["text"] in (" yes", " no")


def test_a_grammar_the_engine_rejects_and_a_constraint_it_lacks_are_one_line_naming_the_engine(llama_server,
                                                                                             tmp_path):
    left = tmp_path / "left.gbnf"
    left.write_text('root ::= list\nlist ::= list "," item | item\nitem ::= "a" | "b"\n')
    result = cli("generate", "x", "-m", llama_server.url, "--grammar", str(left), "-n", "3")
    one_line_error(result, "400", "llama.cpp's GBNF parser refuses left recursion", "--sample-locally", started=True)
    result = cli("generate", "x", "-m", llama_server.url, "--regex", "[a-z]+", "-n", "3")
    one_line_error(result, "llama.cpp's server takes JSON schemas and GBNF grammars, not `regex` constraints",
                   started=True)


@pytest.mark.parametrize(("engine", "settings", "fields"), [
    ("vllm", {"regex": "[a-z]+"}, {"structured_outputs": {"regex": "[a-z]+"}}),
    ("vllm", {"choice": ["a", "b"]}, {"structured_outputs": {"choice": ["a", "b"]}}),
    ("vllm", {"json_schema": '{"type": "integer"}'}, {"structured_outputs": {"json": {"type": "integer"}}}),
    ("sglang", {"regex": "[a-z]+"}, {"regex": "[a-z]+"}),
    ("sglang", {"json_schema": '{"type": "integer"}'}, {"json_schema": '{"type": "integer"}'}),
    ("sglang", {"choice": ["a", "b"]}, {"ebnf": 'root ::= "a" | "b"\n'}),
])
def test_vllm_and_sglang_get_their_structured_output_fields(engine, settings, fields):
    from samplecli.backends.remote.openai_sampling import translate
    from samplecli.engine.server_decode import chain_spec

    chain = translate(engine, *chain_spec(build_strategy({**settings, "temperature": 0}).strategy))
    assert {k: v for k, v in chain.fields.items() if k in fields} == fields
    with pytest.raises(UsageError, match="has no structured-output field"):
        translate("openai", *chain_spec(build_strategy(settings).strategy))


def test_explore_samples_inside_the_language_along_its_path(bundled):
    from samplecli.analysis.exploration import Session

    session = Session(bundled, "ROMEO:", {"regex": r"[A-Z][a-z]{1,5} (and|or) [a-z]{1,5}\.", "temperature": 1.0},
                      seed=2)
    for _ in range(24):
        session.forward()
        node = session.sample()
        if node.end is not None:
            break
    ids = [i for i in session.ids()[len(session.prompt_ids):] if i not in bundled.eos_token_ids]
    text = b"".join(bytes(bundled.vocab.bytes(i)) for i in ids).decode()
    assert node.end == "eos" and re.fullmatch(r"[A-Z][a-z]{1,5} (and|or) [a-z]{1,5}\.", text), text


def test_compare_puts_each_strategy_without_the_constraint_and_then_with_it():
    result = cli("compare", "ROMEO:", "--choice", " ay", "--choice", " nay", "-s", "greedy", "-s", "top-p=0.9",
                 "-n", "6", "--seed", "1", "-f", "json")
    assert result.exit_code == 0, result.stderr
    columns = json.loads(result.stdout)["strategies"]
    assert [c["label"] for c in columns] == ["greedy", "greedy + choice", "top-p=0.9", "top-p=0.9 + choice"]
    assert columns[1]["chain"] == "logits -> choice( ay| nay) -> greedy"
    assert all(text in (" ay", " nay") for c in columns[1::2] for text in c["texts"])
    assert not any(text in (" ay", " nay") for c in columns[::2] for text in c["texts"])
