"""Samplers and backends from other packages, through entry points: a tiny plugin package is built and installed
(pip, into a directory on the path of a fresh samplecli process), and its sampler works from the CLI; a broken
plugin is one line naming it, and samplecli runs on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
import torch

from samplecli.strategies import Param, Transform, register


@register
class Floor(Transform):
    """Drop tokens whose probability is below `floor` (a plugin's sampler)."""

    name = "floor"
    kind = "truncation"
    source = "a test plugin"
    params = (Param("floor", float, 0.02, "in [0, 1)", lambda v: 0 <= v < 1, "probability floor"),)

    def __call__(self, logits, input_ids):
        probs = torch.softmax(logits, dim=-1)
        return logits.masked_fill(probs < self.floor, float("-inf"))
'''

BROKEN = '''
from samplecli.strategies import Param, Transform


class Bad(Transform):
    """A sampler whose default breaks its own rule: the registry refuses it."""

    name = "bad"
    kind = "truncation"
    params = (Param("level", float, 5.0, "in [0, 1]", lambda v: 0 <= v <= 1, "a level"),)

    def __call__(self, logits, input_ids):
        return logits
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """pip-install a package with a working sampler, a sampler class the registry refuses, and an import
    error, each an entry point of `samplecli.samplers`; return the directory it was installed into."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "samplecli-floor"
    (source / "samplecli_floor").mkdir(parents=True)
    (source / "samplecli_floor" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (source / "samplecli_floor" / "broken.py").write_text(textwrap.dedent(BROKEN))
    (source / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "samplecli-floor"
        version = "0.1.0"

        [project.entry-points."samplecli.samplers"]
        floor = "samplecli_floor"
        bad = "samplecli_floor.broken:Bad"
        missing = "samplecli_floor.nowhere"
    '''))
    target = root / "site"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target", str(target),
                    str(source)], check=True, capture_output=True, text=True, timeout=300)
    return target


def samplecli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "samplecli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_an_installed_plugins_sampler_works_in_a_chain_from_the_cli(site):
    result = samplecli(site, "generate", "ROMEO:", "--chain", "floor=0.05,temperature=0.9", "-n", "6", "--seed", "2",
                       "-f", "jsonl", "-q")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["strategy"] == "logits -> floor(0.05) -> temperature(0.9) -> sample"
    for step in records[:-1]:  # every kept token had at least 5% under the raw model
        assert all(alt["sampled_prob"] == 0 for alt in step["top"] if alt["prob"] < 0.05)


def test_strategies_lists_the_plugins_sampler_with_its_package(site):
    result = samplecli(site, "strategies", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["samplers"]}
    assert rows["floor"]["package"] == "samplecli-floor" and rows["temperature"]["package"] == "samplecli"
    assert "bad" not in rows


def test_broken_plugins_are_one_line_each_and_samplecli_runs_on(site):
    result = samplecli(site, "generate", "ROMEO:", "--temp", "0", "-n", "3", "-q")
    assert result.returncode == 0 and result.stdout.strip()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "Traceback" not in result.stderr
    assert any("`bad`" in w and "samplecli-floor" in w and "default of `level`" in w for w in warnings)
    assert any("`missing`" in w and "ModuleNotFoundError" in w for w in warnings)


def test_without_the_plugin_its_sampler_is_unknown():
    result = subprocess.run([sys.executable, "-m", "samplecli", "generate", "ROMEO:", "--chain", "floor=0.05"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "unknown sampler `floor`" in result.stderr
