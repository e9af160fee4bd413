"""`--threads`: one thread by default for a model small enough that a second one cannot help (and a busy
machine makes it hurt), one per free core above that; an explicit count wins, and a bad one is one line."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from samplecli.backends import open_backend, threads
from samplecli.backends.threads import SMALL_MODEL_BYTES, busy_cores, cores, default_threads
from samplecli.cli import app


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_is_one_thread_below_the_size_and_one_per_free_core_above(monkeypatch):
    assert default_threads(21_000_000) == 1  # the bundled model's weights
    assert default_threads(SMALL_MODEL_BYTES - 1) == 1
    monkeypatch.setattr(threads, "cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0)
    assert default_threads(500_000_000) == 8  # GPT-2 small on an idle 8-core machine
    monkeypatch.setattr(threads, "busy_cores", lambda: 3)
    assert default_threads(500_000_000) == 5
    monkeypatch.setattr(threads, "busy_cores", lambda: 11)
    assert default_threads(500_000_000) == 1


def test_a_process_spinning_beside_this_one_counts_as_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()
    assert cores() >= 1


def test_loading_sets_torchs_threads_to_the_default_or_the_given_count(restore_threads):
    torch.set_num_threads(2)
    open_backend(None)  # the bundled model: 21 MB of weights
    assert torch.get_num_threads() == 1
    open_backend(None, threads=2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "5000", "two"])
def test_a_bad_thread_count_is_one_line_before_the_model_loads(value):
    result = CliRunner().invoke(app, ["generate", "ROMEO:", "--threads", value, "-m", "/nonexistent/model"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--threads" in lines[0] and value in lines[0], lines
