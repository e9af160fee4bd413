"""A fuzzer for the command line (issue #18): random command lines for every command, built from the real option
list of the Typer app (so a new option is fuzzed as soon as it exists), with valid and invalid values of every
flag, random `--chain` strings, random TOML presets, random SAMPLECLI_* variables and prompts that are not UTF-8,
run through the CLI in process. Whatever happens, the user sees:

- no traceback, and no "internal error" (the last-resort line of the error boundary);
- exit code 0, 1 (an error), 2 (a usage error) or 130 (interrupted);
- nothing on stdout when the exit code is not 0;
- an error as exactly one line, `error: ...`, the last line on stderr.

Commands that need a model get the tiny test model (opened once per set of options, so that a valid command line
costs a decode, not a load). Hypothesis is seeded (`derandomize`), so CI runs the same command lines every time:
SAMPLECLI_FUZZ_EXAMPLES of them (60 by default, under a minute). A longer local run:

    SAMPLECLI_FUZZ_EXAMPLES=3000 python -m pytest -q -p no:cacheprovider tests/test_fuzz_cli.py

Add `SAMPLECLI_FUZZ_SEED=N` for other command lines than CI's (hypothesis then draws them from seed N), and
`SAMPLECLI_FUZZ_LOG=FILE` to append each command line to FILE before it runs (the last one names a hang).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from samplecli.cli import app
from samplecli.config.keys import ALIASES, KEYS
from samplecli.strategies import NAMED, SELECTORS, TRANSFORMS

EXAMPLES = int(os.environ.get("SAMPLECLI_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("SAMPLECLI_FUZZ_SEED", "0"))
LOG = os.environ.get("SAMPLECLI_FUZZ_LOG")
EXIT_CODES = {0, 1, 2, 130}
runner = CliRunner()


def commands() -> dict[tuple[str, ...], object]:
    """Every leaf command of the app by its path, with its click parameters."""
    found: dict[tuple[str, ...], object] = {}

    def walk(command, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            found[path] = command

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = commands()

# --- values ----------------------------------------------------------------------------------------------------

TEXT = st.one_of(
    st.sampled_from(["ROMEO:", "", " ", "But soft", "[bold]x[/]", "[/nope]", "a\nb", "東京 🙂", "ROMEO:\udcff\udcfe",
                     "\x00", "-", "--", "=", ",", ":", "'", '"', "\\", "1e309", "nan"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)
INTS = ["0", "1", "2", "3", "4", "-1", "-7", "abc", "1.5", "", " 2", "0x10", "99999999999999999999999999"]
# counts that make a valid run longer, never huge: a valid --num-samples 10^26 would run for ever, by design
COUNTS = ["0", "1", "2", "3", "-1", "abc", "1.5", "", "1e3"]
FLOATS = ["0", "0.5", "1", "2", "0.95", "-1", "-0.1", "1.5", "nan", "inf", "-inf", "1e-320", "1e309", "abc", "",
          "0.1.2", "1,5", "1e-3"]
PATH_KEYS = ("missing", "directory", "empty", "text", "latin1", "toml", "json", "proc", "full", "nodir")
CHOICES = {
    "format": ["text", "jsonl", "json", "markdown", "table", "xml", "", "TEXT"],
    "view": ["live", "steps", "tree", "none", "nope"],
    "device": ["auto", "cpu", "quantum", "cuda", "mps", ""],
    "dtype": ["auto", "float32", "bfloat16", "float16", "float8", "int4"],
    "early_stopping": ["true", "false", "never", "True", "sometimes", "1", ""],
    "api": ["auto", "llama.cpp", "openai", "", "x"],
}
INT_OPTIONS = {"draws", "at", "top_n", "stride", "concurrency", "top_logprobs", "draft_tokens"}
COUNT_OPTIONS = {"num_samples", "num_return_sequences", "num_beams", "num_beam_groups", "draws", "max_new_tokens",
                 "min_new_tokens", "concurrency", "top_n", "at"}
PATH_OPTIONS = {"output", "file", "reference", "plot", "messages", "chat_template", "load", "save"}


@st.composite
def chain(draw) -> str:
    """A random `--chain`: registry names (and a few that are not), values good and bad, separators good and bad."""
    names = sorted(TRANSFORMS) + sorted(SELECTORS) + ["temp", "nucleus", "top_p", "nope", ""]
    elements = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(names))
        kind = TRANSFORMS.get(name) or SELECTORS.get(name)
        params = [p.name for p in kind.params] if kind is not None else ["x"]
        element = name
        if params and draw(st.booleans()):
            element += "=" + draw(st.sampled_from(FLOATS + INTS))
        for _ in range(draw(st.integers(0, 2))):
            element += f":{draw(st.sampled_from(params + ['bogus']))}={draw(st.sampled_from(FLOATS + INTS))}"
        elements.append(element)
    return draw(st.sampled_from([",", ", ", ",,", ";"])).join(elements)


def spec() -> st.SearchStrategy[str]:
    """compare's `-s`: a name, a name with settings, or a chain."""
    names = st.sampled_from(sorted(NAMED) + ["nope"])
    settings_ = st.lists(st.sampled_from(["num_beams", "top_k", "top_p", "length_penalty", "bogus"]), max_size=3)
    return st.one_of(names, chain(), st.builds(
        lambda n, keys, values: n + "".join(f":{k}={v}" for k, v in zip(keys, values, strict=False)),
        names, settings_, st.lists(st.sampled_from(["1", "2", "4", "0.5", "-1", "x"]), min_size=3, max_size=3)))


def value_for(key: str) -> st.SearchStrategy[object]:
    """A TOML value for a settings key: of its type (in range or not), or of another type."""
    kind = KEYS[key].type if key in KEYS else "str"
    typed = {
        "int": st.integers(-3, 5), "float": st.sampled_from([0.0, 0.5, 0.9, 1.0, 2.0, -1.0, 1e300]),
        "str": st.one_of(st.sampled_from(sorted(NAMED)), chain()), "bool": st.booleans(),
        "strings": st.lists(st.sampled_from(["\n\n", "END", "", "x"]), max_size=2),
        "biases": st.lists(st.sampled_from(["15=-inf", "0=2", "999999=1", "x", "the=1"]), max_size=2),
        "choice": st.sampled_from(["true", "false", "never", "sometimes"]),
    }[kind]
    return st.one_of(typed, st.sampled_from([1, "x", [1, 2], True, 0.5]))


def toml_value(value: object) -> str:
    from samplecli.config.preset_files import _toml_value

    return _toml_value(value)


@st.composite
def preset_text(draw) -> str:
    """A TOML preset: known keys, aliases, unknown keys; values of their type or not; sometimes broken TOML."""
    keys = sorted(KEYS) + sorted(ALIASES) + ["extends", "tempreature", "strategies"]
    lines = []
    for key in draw(st.lists(st.sampled_from(keys), max_size=5)):
        if key == "extends":
            lines.append(f"extends = {toml_value(draw(st.sampled_from(['greedy', 'nope', '../x.toml', ''])))}")
        elif key == "strategies":
            lines.append(f"[strategies.{draw(st.sampled_from(['a', 'b']))}]")
        else:
            lines.append(f"{key} = {toml_value(draw(value_for(ALIASES.get(key, key))))}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.sampled_from(["temperature = ", "[strategies", "x = [1,", "= 2"])))
    return "\n".join(lines) + "\n"


@st.composite
def environment(draw) -> dict[str, str]:
    """SAMPLECLI_* variables: settings with values good and bad (TOML, bare, broken), and names misspelt."""
    names = [f"SAMPLECLI_{k.upper()}" for k in KEYS] + ["SAMPLECLI_TEMPRATURE", "SAMPLECLI_X", "SAMPLECLI_TOPK"]
    env = {}
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        key = name[len("SAMPLECLI_"):].lower()
        raw = draw(st.one_of(st.builds(toml_value, value_for(key)), st.sampled_from(
            ['["\\n\\n"', "0.9.1", "{", "'x", "", "greedy", "top-k=5", "[1, 2]", "true", "1e309"])))
        env[name] = raw
    env["COLUMNS"] = str(draw(st.sampled_from([20, 40, 80, 100, 200])))
    return env


@st.composite
def command_line(draw, paths: dict[str, str], model: str):
    """(argv, stdin, env) for one random command."""
    path = draw(st.sampled_from(sorted(COMMANDS)))
    command = COMMANDS[path]
    argv: list[str] = list(path)
    options = [p for p in command.params if p.param_type_name == "option"]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    takes_model = any(p.name == "model" for p in options)
    for param in draw(st.lists(st.sampled_from(options), max_size=4, unique_by=lambda p: p.name)) if options else []:
        flag = draw(st.sampled_from(param.opts + list(getattr(param, "secondary_opts", []))))
        if param.is_flag:
            argv.append(flag)
            continue
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            value = draw(option_value(param.name, paths, model, path[0]))
            if draw(st.integers(0, 4)) == 0:
                argv.append(f"{flag}={value}" if flag.startswith("--") else f"{flag}{value}")
            else:
                argv += [flag, value]
    if takes_model and "--model" not in argv and "-m" not in argv and draw(st.integers(0, 9)) > 0:
        argv += ["--model", model]  # the tiny model; now and then the bundled one's config, unloaded
    for _ in arguments:
        if draw(st.integers(0, 3)) > 0:
            argv.append(draw(TEXT) if path[-1] != "save" else draw(st.sampled_from(["mine", "x y", "../up", ""])))
    if draw(st.integers(0, 12)) == 0:
        argv.append(draw(st.sampled_from(["--nope", "-z", "extra", "--help", "--model"])))
    stdin = draw(st.one_of(st.none(), st.sampled_from([b"ROMEO:", b"\xff\xfeROMEO:\xc3(", b"", b"a\nb\n"])))
    return argv, stdin, draw(environment())


def mostly(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """Two draws in three from `valid`, so that a command line of several options often runs."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(invalid))


VALID_FORMATS = {"generate": ["text", "jsonl", "json"], "compare": ["text", "json", "markdown"],
                 "inspect": ["text", "json"], "score": ["table", "json"], "strategies": ["table", "json"]}
VALID_CHOICES = {"view": ["live", "steps", "tree", "none"], "device": ["auto", "cpu"], "dtype": ["auto", "float32"],
                 "early_stopping": ["true", "false", "never"], "api": ["auto"]}


def option_value(name: str, paths: dict[str, str], model: str, command: str) -> st.SearchStrategy[str]:
    ints, floats = [v for v in INTS if v in ("0", "1", "2", "3")], ["0", "0.5", "0.9", "0.95", "1", "2", "0.1"]
    if name == "chain":
        return chain()
    if name == "specs":
        return spec()
    if name in ("preset", "presets", "extends"):
        return st.one_of(mostly(["greedy", "holtzman", "nucleus", paths["toml"]],
                                ["nope", paths["directory"], paths["missing"], "", "/dev/zero"]),
                         st.just(paths["random_toml"]))
    if name == "model":
        return mostly([model], [paths["missing"], paths["directory"], "bundled", "org/nope", "/nonexistent/x",
                                "http://127.0.0.1:9"])
    if name == "draft_model":  # speculative decoding: a draft of the same tokenizer, prompt lookup, or not a draft
        return mostly([model, "ngram"], ["bundled-draft", paths["missing"], paths["directory"], "http://127.0.0.1:9"])
    if name in PATH_OPTIONS:
        valid = {"output": paths["out"], "file": paths["text"], "reference": paths["text"], "plot": paths["png"],
                 "messages": paths["json"], "save": paths["out"]}.get(name, paths["missing"])
        return mostly([valid], [paths[k] for k in PATH_KEYS] + [paths["missing"] + ".png"])
    if name == "format":
        return mostly(VALID_FORMATS.get(command, ["text"]), CHOICES["format"])
    if name in CHOICES:
        return mostly(VALID_CHOICES[name], CHOICES[name])
    if name == "sweep":
        setting = st.sampled_from(["top-p", "top-k", "min-p", "temperature", "typical_p", "nope", ""])
        values = st.sampled_from(["0.5:1:0.25", "0:1:1e-320", "1:0:0.1", "1,5,10", "0.1:0.2:0", "x", "", "1:2:3:4"])
        return st.one_of(st.sampled_from(["top-p=0.5:1:0.25", "top-k=1,5,10", "min-p=0:0.3:0.1"]),
                         st.builds(lambda s, v: f"{s}={v}", setting, values))
    if name == "temps":
        return st.one_of(mostly(["0.5,1,2", "1", "0,1"], ["", ",", "-1", "nan", "1,,2", "x"]),
                         st.lists(st.sampled_from(FLOATS), max_size=4).map(",".join))
    if name == "logit_bias":
        return mostly(["15=-inf", "0=2", "7=-1.5"], ["999999=1", "x", "=1", "the=1", " the=-2", "1=nan", "1=inf",
                                                      "1="])
    if name == "logprob_of":
        return mostly(["0", "15", "7"], ["99999", "", "the", " the", "ROMEO"])
    if name == "seed":
        return mostly(["0", "1", "42"], INTS + ["9223372036854775807", "9223372036854775808"])
    if name in COUNT_OPTIONS:
        return mostly(["1", "2", "3"], COUNTS)
    if name in INT_OPTIONS or KEYS.get(name) is not None and KEYS[name].type == "int":
        return mostly(ints, INTS)
    if KEYS.get(name) is not None and KEYS[name].type == "float":
        return mostly(floats, FLOATS)
    if name == "strategy":
        return st.one_of(st.sampled_from(sorted(NAMED)), st.sampled_from(sorted(NAMED)), st.just("nope"), TEXT)
    return TEXT


def check(result, argv) -> None:
    """The invariants of issue #18 for one command line."""
    shown = f"argv={argv!r}\nexit={result.exit_code}\nstdout={result.stdout[-2000:]!r}\nstderr={result.stderr!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (shown, repr(result.exception))
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, shown
    assert result.exit_code in EXIT_CODES, shown
    if result.exit_code != 0:
        assert result.stdout == "", shown
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        if result.exit_code != 130:
            assert len(errors) == 1, shown
            assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0], shown
    assert "internal error" not in result.stderr, shown


@pytest.fixture(scope="module")
def fuzz_paths(tmp_path_factory) -> dict[str, str]:
    """Files and places the path options get: missing, a directory, empty, text, not UTF-8, TOML, JSON, /proc."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "dir").mkdir()
    (root / "empty.txt").write_text("")
    (root / "text.txt").write_text("But soft, what light through yonder window breaks?\n" * 5)
    (root / "latin1.txt").write_bytes("café naïve".encode("latin-1"))
    (root / "preset.toml").write_text('temperature = 0.7\ntop_k = 40\ndescription = "fuzz"\n')
    (root / "messages.json").write_text('[{"role": "user", "content": "hi"}]')
    return {"missing": str(root / "missing" / "x.txt"), "directory": str(root / "dir"),
            "empty": str(root / "empty.txt"), "text": str(root / "text.txt"), "latin1": str(root / "latin1.txt"),
            "toml": str(root / "preset.toml"), "json": str(root / "messages.json"), "proc": "/proc/x",
            "full": "/dev/full", "nodir": str(root / "nodir" / "sub" / "out.txt"), "png": str(root / "plot.png"),
            "random_toml": str(root / "random.toml"), "out": str(root / "out.txt"), "root": str(root)}


@pytest.fixture(scope="module")
def cached_models(tiny_model_dir):
    """Open each (model, options) once: a valid command line then costs its decode, not a model load."""
    import samplecli.backends as backends

    real, opened = backends.open_backend, {}

    def open_once(model=None, **options):
        if model != str(tiny_model_dir):
            return real(model, **options)
        key = (model, tuple(sorted(options.items())))
        if key not in opened:
            opened[key] = real(model, **options)
        return opened[key]

    backends.open_backend = open_once
    yield
    backends.open_backend = real


@pytest.fixture(autouse=True)
def no_settings_from_the_machine(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("SAMPLECLI_") and not name.startswith("SAMPLECLI_FUZZ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SAMPLECLI_CONFIG_DIR", str(tmp_path / "config"))


def test_the_fuzzer_knows_every_command_and_option():
    assert {path[0] for path in COMMANDS} >= {"generate", "compare", "inspect", "score", "strategies", "presets"}
    generate = {p.name for p in COMMANDS[("generate",)].params}
    assert {"temperature", "chain", "output", "num_beams", "model", "device"} <= generate


@pytest.mark.usefixtures("cached_models")
def test_no_command_line_shows_a_traceback_or_more_than_one_line_of_error(fuzz_paths, tiny_model_dir):
    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED == 0, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        Path(fuzz_paths["random_toml"]).write_text(data.draw(preset_text()), encoding="utf-8")
        argv, stdin, env = data.draw(command_line(fuzz_paths, str(tiny_model_dir)))
        Path(fuzz_paths["png"]).unlink(missing_ok=True)
        if LOG:  # each command line before it runs: the last one names what hung or was killed
            with open(LOG, "a", encoding="utf-8", errors="backslashreplace") as log:
                log.write(f"{argv!r} stdin={stdin!r} env={env!r}\n")
        result = runner.invoke(app, argv, input=stdin, env=env, prog_name="samplecli")
        event(f"{' '.join(argv[:1])}: exit {result.exit_code}")  # --hypothesis-show-statistics tells them apart
        if LOG:
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(f"-> exit {result.exit_code}\n")
        check(result, argv)

    run()
