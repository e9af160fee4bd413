"""The command line: parses flags, picks renderers, and owns the single error boundary (`app.py`).

One module per command; importing this package registers them on `app`, in the order `--help` lists them.
"""

import importlib

from samplecli.cli.app import app

for _command in ("generate", "chat", "score", "compare", "inspect_cmd", "explore", "strategies_cmd", "presets"):
    importlib.import_module(f"samplecli.cli.{_command}")


__all__ = ["app"]
