"""The package's shape (scripts/import_graph.py): no import cycles, no package importing a layer above it, and
the engine and the strategies free of Rich, Typer and transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402 - a script beside the tests' root


def test_the_package_has_no_import_cycles():
    edges, _ = import_graph.graph()
    assert import_graph.cycles(edges) == []
    assert len(edges) > 50  # the whole package was read


def test_no_module_imports_a_layer_above_it_and_the_engine_knows_no_ui_or_transformers():
    edges, third = import_graph.graph()
    assert import_graph.violations(edges, third) == []


def test_the_checker_finds_a_cycle_and_a_violation_when_there_is_one():
    edges = {"samplecli.engine.decode": {"samplecli.cli.app"}, "samplecli.cli.app": {"samplecli.engine.decode"}}
    assert import_graph.cycles(edges) == [["samplecli.cli.app", "samplecli.engine.decode"]]
    found = import_graph.violations(edges, {"samplecli.strategies.base": {"rich"}})
    assert found == ["samplecli.engine.decode imports samplecli.cli.app, a layer above it",
                     "samplecli.strategies.base imports rich"]


def test_lazy_imports_count_as_dependencies(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from samplecli.views import render\n    import rich.console\n")
    ours, theirs = import_graph.imports(module, {"samplecli.views.render": module, "samplecli.views": module})
    assert ours == {"samplecli.views.render"} and theirs == {"rich"}


def test_the_script_reports_zero_cycles():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert "import cycles: 0" in result.stdout and "layering violations: 0" in result.stdout


def test_the_add_a_backend_example_in_the_docs_runs_and_prints_what_it_says(tmp_path):
    code, result = _docs_example(tmp_path, "class Bigrams(Backend):")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bcab" and "print(done.text)  # bcab" in code


def test_the_sampler_state_example_in_the_docs_runs(tmp_path):
    code, result = _docs_example(tmp_path, "probe = strategy.clone()")
    assert result.returncode == 0, result.stderr
    assert "strategy.accept(" in code and "assert probe.selector.mu" in code


def test_the_step_path_example_in_the_docs_runs_and_prints_what_it_says(tmp_path):
    code, result = _docs_example(tmp_path, "measure_served(")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b 0.269 2 ['a', 'b']", "b server 0.3"]
    assert "# b 0.269 2 ['a', 'b']" in code and "# b server 0.3" in code

def _docs_example(tmp_path, marker: str):
    """The one ```python block of docs/architecture.md that holds `marker`, run as a script."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    [code] = [block for block in re.findall(r"```python\n(.*?)```", text, flags=re.S) if marker in block]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    return code, subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)


def test_the_settings_declaration_example_in_the_docs_runs_and_prints_what_it_says(tmp_path):
    code, result = _docs_example(tmp_path, 'temperature = BY_NAME["temperature"]')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flag --temp: `temperature` has to be >= 0, but is -1.0",
                                          "temperature: `temperature` has to be >= 0, but is -1.0"]


def test_the_declarations_the_docs_show_are_the_ones_in_the_schema():
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    [shown] = [block for block in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "SAMPLING: tuple" in block]
    schema = (ROOT / "samplecli" / "strategies" / "schema.py").read_text(encoding="utf-8")
    for line in shown.splitlines()[1:-1]:  # between `SAMPLING = (` and `)`
        assert line in schema.splitlines(), line


def test_the_commands_run_example_in_the_docs_runs_and_refuses_a_bad_flag_before_the_model_loads(tmp_path):
    code, result = _docs_example(tmp_path, "@with_run(")
    assert result.returncode == 0, result.stderr
    *text, refusal = result.stdout.strip().splitlines()
    assert "".join(text).strip() and "started.open()" in code and "with TextSink(sys.stdout) as sink:" in code
    assert refusal == "2 error: flag --temp: `temperature` has to be >= 0, but is -1.0"
