"""The bundled default model: shipped in the wheel, loaded offline, and as good as its model card says."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from samplecli.backends.torch_lm import BUNDLED_MODEL_DIR
from samplecli.config.preset_files import builtin_presets

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
# the training corpus as the model was trained on it: its length in characters and the SHA-256 of its UTF-8, and
# of its last tenth (the held-out text)
CORPUS_CHARS = 1_115_394
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
HELD_OUT_SHA256 = "c54f3753a4e6e3c3d1759212815a7caf826e68a33021b25312984400bed40a1f"
MAX_BYTES = 25 * 1024 * 1024

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(),
                                reason="the bundled model has not been trained into samplecli/bundled_model")


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    # an endpoint that cannot answer: any attempt to reach a hub fails at once
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", "NO_COLOR": "1", **extra})
    return env


def test_the_bundled_model_is_a_standard_directory_under_25_mb():
    names = {p.name for p in BUNDLED_MODEL_DIR.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in BUNDLED_MODEL_DIR.iterdir()) <= MAX_BYTES


def test_generate_without_model_uses_the_bundled_model_with_no_network(tmp_path):  # run from outside the clone
    result = subprocess.run([sys.executable, "-m", "samplecli", "generate", "ROMEO:", "-n", "30", "--seed", "1"],
                            capture_output=True, text=True, env=offline_env(), timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 20
    assert "bundled" in result.stderr


def test_loading_the_bundled_model_sets_the_hub_offline(monkeypatch):
    from samplecli.backends.torch_lm import load

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    lm = load(None, device="cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert lm.name == "bundled"


def test_the_shipped_held_out_text_is_the_last_tenth_of_the_corpus():
    """held_out.txt is tinyshakespeare.txt[int(0.9 n):], checked against the corpus's digests (taken from the
    file the model was trained on), and against the file itself where it lies beside the checkout: the test
    runs wherever the clone is."""
    held_out = (BUNDLED_MODEL_DIR / "held_out.txt").read_text(encoding="utf-8")
    assert len(held_out) == CORPUS_CHARS - int(CORPUS_CHARS * 0.9)
    assert hashlib.sha256(held_out.encode("utf-8")).hexdigest() == HELD_OUT_SHA256
    if CORPUS.is_file():
        text = CORPUS.read_text(encoding="utf-8")
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == CORPUS_SHA256 and len(text) == CORPUS_CHARS
        assert held_out == text[int(len(text) * 0.9):]


def test_samplecli_score_reproduces_the_model_card_held_out_figure():
    from samplecli.analysis.scoring import score
    from samplecli.backends.torch_lm import load

    stats = json.loads((BUNDLED_MODEL_DIR / "training.json").read_text())
    held_out = (BUNDLED_MODEL_DIR / "held_out.txt").read_text(encoding="utf-8")
    result = score(load(None, device="cpu"), held_out)
    assert abs(result.nats_per_char - stats["held_out"]["nats_per_char"]) < 1e-4
    assert result.nats_per_char <= 1.50  # the quality bar the bundled model is held to
    card = (BUNDLED_MODEL_DIR / "README.md").read_text()
    assert f"{stats['held_out']['nats_per_char']:.4f}" in card


def test_a_built_wheel_contains_the_model_and_runs_from_a_non_editable_install(tmp_path):
    import setuptools

    # build with the installed setuptools when it is new enough, else in pip's isolated build environment
    isolation = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation,
                            "-q", "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("samplecli-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"):
        assert f"samplecli/bundled_model/{name}" in names
        assert f"samplecli/bundled_draft/{name}" in names  # its draft for speculative decoding (#30)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = offline_env(PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "import samplecli; print(samplecli.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    run = subprocess.run([sys.executable, "-m", "samplecli", "generate", "ROMEO:", "-n", "10", "--seed", "2", "-q"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


@pytest.mark.parametrize("preset", sorted(builtin_presets()))
def test_every_built_in_preset_runs_on_the_bundled_model(preset):
    from typer.testing import CliRunner

    from samplecli.cli import app

    result = CliRunner().invoke(app, ["generate", "ROMEO:", "--preset", preset, "-n", "4", "--seed", "1", "-q",
                                      "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    dones = [line for line in result.stdout.splitlines() if '"type": "done"' in line]
    assert dones, result.stdout


def test_the_bundled_draft_is_a_small_model_with_the_bundled_models_tokenizer():
    from samplecli.backends.torch_lm import BUNDLED_DRAFT_DIR

    assert sum(p.stat().st_size for p in BUNDLED_DRAFT_DIR.iterdir()) < 3_000_000
    assert (BUNDLED_DRAFT_DIR / "tokenizer.json").read_bytes() == (BUNDLED_MODEL_DIR / "tokenizer.json").read_bytes()
    stats = json.loads((BUNDLED_DRAFT_DIR / "training.json").read_text())
    assert stats["parameters"] < 1_000_000 and stats["vocab_size"] == 2048
