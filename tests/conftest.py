"""Shared fixtures: a tiny GPT-2 and a byte-level BPE tokenizer built here, saved with save_pretrained
and loaded through the same code path as any real model (no download, a second or two to build)."""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["tests.llama_server"]  # the llama_server, start_llama_server, local and remote fixtures

# The fixtures that stand on llama.cpp's build (scripts/build_llama_cpp.py: the server binary, the bundled model as
# GGUF, the vendored source's converter), and the marker for tests that reach it another way (a script they run).
LLAMA_CPP_FIXTURES = frozenset({"llama_server", "start_llama_server", "start_llama_server_module", "remote",
                                "remote_top", "gguf_path"})


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_llama_cpp: runs something that needs llama.cpp's build (built before "
                                       "the first test, once per machine, with no time limit)")


def _build_llama_cpp(config) -> None:
    from tests.llama_server import llama_cpp_module

    build = llama_cpp_module()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not (build.cache_dir() / "bin" / "llama-server").exists():
        reporter.write_line("building llama.cpp's llama-server for the tests that use it (once per machine: "
                            f"minutes; cached in {build.cache_dir()})")
    build.server_binary()
    build.gguf_model(outtype="f32")


def headless_module():
    """scripts/headless.py (the DevTools-protocol driver of a headless Chromium), loaded by path."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "samplecli_scripts_headless"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "scripts" / "headless.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _install_chromium(config) -> None:
    headless = headless_module()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if headless.find_chromium() is None and reporter is not None:
        reporter.write_line(f"installing Chromium for the tests of the HTML pages ({headless.INSTALL}; once)")
    headless.ensure_chromium()


def pytest_sessionstart(session):
    """With pytest-xdist the workers collect, not this process: build here first, once, where its line shows."""
    config = session.config
    if not hasattr(config, "workerinput") and config.pluginmanager.hasplugin("xdist") \
            and config.getoption("numprocesses", None):
        _build_llama_cpp(config)
        _install_chromium(config)


def pytest_collection_finish(session):
    """Build what llama.cpp's tests need before the first test runs, not inside one: on a fresh machine that is
    minutes (llama-server from source), which no test's time limit should have to hold. Cached outside the clone,
    so later runs find it at once. Only when a selected test needs it."""
    if any(LLAMA_CPP_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("needs_llama_cpp")
           for item in session.items):
        _build_llama_cpp(session.config)
    if any("browser" in getattr(item, "fixturenames", ()) for item in session.items):
        _install_chromium(session.config)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (installed before the first test where apt can, as root)."""
    headless = headless_module()
    if headless.find_chromium() is None:
        pytest.fail(f"the HTML pages' tests need Chromium: run `sudo {headless.INSTALL}`, or set $CHROMIUM to one",
                    pytrace=False)
    with headless.Browser() as running:
        yield running


# One intra-op thread, for every test module (none sets its own): the tiny models' forward passes are ~100x faster
# than with torch's default thread pool when the machine is busy (CI shares 2 cores), and results do not depend on
# it. A test that sets another count restores it (test_threads' restore_threads).
torch.set_num_threads(1)

TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n"
    "Café, naïve, Müller, Ångström, smörgåsbord, 東京, 🙂 — “quoted” text.\n"
) * 4


def build_tiny_model(path, vocab_size: int = 300, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64,
                     seed: int = 0):
    """Train a byte-level BPE tokenizer on TINY_TEXT and save it with a random-init GPT-2 to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TINY_TEXT], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# The llama.cpp test distribution: token i has probability P[i].
P = (0.4, 0.3, 0.2, 0.1)
NO_IDS = torch.empty((1, 0), dtype=torch.long)


def log_probs(probs) -> torch.Tensor:
    return torch.log(torch.tensor([probs], dtype=torch.float32))


def distribution_after(transforms, logits=None, input_ids=NO_IDS, selector=None) -> torch.Tensor:
    """The distribution a chain of `transforms` (then `selector`, by default sampling) draws from, row 0."""
    from samplecli.strategies import Strategy
    from samplecli.strategies.selectors import Sample

    logits = log_probs(P) if logits is None else logits
    return Strategy(transforms, selector or Sample()).distribution(logits, input_ids)[0]


def assert_probs(actual: torch.Tensor, expected) -> None:
    """Equal to 1e-6, and every token expected at 0 is exactly 0 (filtered, not merely unlikely)."""
    expected = torch.tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert torch.equal(actual == 0, expected == 0), f"filtered set differs: {actual.tolist()} vs {expected.tolist()}"


def one_line_error(result, *fragments: str, code: int | None = None, started: bool = False) -> str:
    """A CLI run (CliRunner's result) that failed as the error boundary promises: a non-zero exit (`code` where
    given) without a traceback, nothing on stdout, and one line on stderr, `error: ...`, holding every fragment;
    with `started` (a run that failed after it began), that line comes last, after the run's own header lines.
    Returns that line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0, (result.stdout, result.stderr)
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (started or len(lines) == 1), result.stderr
    assert "internal error" not in errors[0], errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def usage_error(fn, *fragments: str) -> str:
    """Call `fn`, expect a UsageError of one line, and check that its message contains every fragment."""
    from samplecli.errors import UsageError

    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def logits_and_history() -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits for 3 rows x 50 tokens (token 7 already filtered, as by an earlier transform) and a
    history with repeats, for the tests that transforms never modify their input."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 50, generator=g)
    logits[:, 7] = float("-inf")
    history = torch.tensor([[1, 2, 3, 1, 2], [4, 5, 4, 5, 4], [9, 8, 7, 6, 9]])
    return logits, history


@pytest.fixture(scope="session")
def random_logits() -> torch.Tensor:
    """4 x 1000 tie-free random logits: the oracle tests compare filtered sets, which ties would blur."""
    g = torch.Generator().manual_seed(20240601)
    logits = torch.randn(4, 1000, generator=g) * 3
    assert all(row.unique().numel() == 1000 for row in logits), "the oracle needs tie-free logits"
    return logits


@pytest.fixture(scope="session")
def repeating_ids() -> torch.Tensor:
    """Random ids from a small alphabet whose tail repeats an earlier stretch, so every n-gram size bans
    something; each row differs."""
    g = torch.Generator().manual_seed(7)
    head = torch.randint(0, 60, (4, 24), generator=g)
    return torch.cat([head, head[:, 3:10]], dim=1)


def assert_same_as(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Identical filtered sets (same -inf positions) and the same finite logits to 1e-6."""
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs)), "filtered sets differ"
    finite = torch.isfinite(theirs)
    assert torch.isfinite(ours[finite]).all()
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-6, atol=1e-6)


def strict_loads(text: str):
    """json.loads that rejects NaN, Infinity and -Infinity, as any strict JSON reader would."""
    import json

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name} (NaN and Infinity are not JSON)")

    return json.loads(text, parse_constant=refuse)


def with_output_bias(model_dir):
    """A fresh copy of the tiny model whose output layer has a (zero) bias that a test can set, e.g. to
    make EOS likely or impossible; generate() and the decode loop see the same model."""
    from samplecli.backends.torch_lm import load

    lm = load(str(model_dir), device="cpu")
    head = lm.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
    lm.model.lm_head = biased
    return lm


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from samplecli.backends.torch_lm import load

    return load(str(tiny_model_dir), device="cpu")


def _holds_something(path) -> bool:
    """Whether `path` is a file with something in it. samplecli probes that it can write an --output file before
    it loads the model (it creates and removes it), so the file may vanish between two looks."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def default_signals() -> None:
    """In a child, before it runs samplecli: SIGINT and SIGTERM at their default disposition and unblocked. A child
    inherits an ignored signal and the signal mask of the thread that forks it: where a library of this long-lived
    test process left SIGINT ignored or blocked, a Ctrl-C test would wait for a reply that never stops."""
    import signal

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def controlling_terminal() -> None:
    """A child's set-up to run in a pseudo-terminal (its stdin): its own session with the terminal as its controlling
    terminal, so that ^C typed there is its SIGINT, and the default signals."""
    import fcntl
    import os
    import termios

    default_signals()
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def interrupt_once_written(argv: list[str], out, env: dict[str, str], within_s: float = 600,
                           signal_number: int | None = None) -> tuple[int, bytes, str]:
    """Run `argv`, send it SIGINT (Ctrl-C; or `signal_number`) as soon as `out` holds something, and return (exit
    status, stdout, stderr). The child gets SIGINT's default disposition back: a shell may start background jobs
    with it ignored. `within_s` only guards against a hang (a loaded machine may take minutes to start)."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + within_s
        while not _holds_something(out):
            assert process.poll() is None, process.communicate()[1].decode("utf-8", "replace")
            assert time.monotonic() < deadline, "nothing was streamed to the output file"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT if signal_number is None else signal_number)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr.decode("utf-8", "replace")


def run_tiny_bench(script: str, *args: str, timeout: int = 600, one_thread: bool = True) -> str:
    """Run `scripts/SCRIPT --sizes tiny ARGS` from this tree (on one torch thread unless told otherwise) and
    return what it printed, once it has exited 0: the bench scripts' tests run them end to end this way."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), **({"OMP_NUM_THREADS": "1"} if one_thread else {})}
    result = subprocess.run([sys.executable, str(root / "scripts" / script), "--sizes", "tiny", *args],
                            capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def table_rows(text: str) -> list[str]:
    """The rows of the Markdown tables in `text`, their header rows included and their rules left out."""
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
