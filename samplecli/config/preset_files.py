"""Presets: TOML files of settings, built in (`config/presets/`) or the user's, read with their `extends` chain and
written atomically. Their keys are transformers' GenerationConfig names where one exists, plus ours, with
llama.cpp's and Ollama's spellings accepted as aliases (`config.keys`); every value is validated on loading, and
an error names the file, the line and the table.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samplecli.config.inputs import not_too_deep
from samplecli.config.keys import ALIASES, KEYS, Setting, check_strategy, overlay, validate
from samplecli.errors import SampleCliError, UsageError
from samplecli.strategies.base import closest

BUILTIN_DIR = Path(__file__).resolve().parent / "presets"


def shown_path(path: Path) -> str:
    """A preset's path as the user reads it, never tied to the machine: a built-in as `presets/NAME.toml`, a file
    under the working directory relative to it, one under the home directory as `~/...`."""
    path = Path(path)
    for base, shown in ((BUILTIN_DIR.resolve(), "presets"), (Path.cwd().resolve(), None), (Path.home(), "~")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return str(Path(shown) / relative) if shown else str(relative)
    return str(path)


@dataclass
class Preset:
    """A loaded preset with its bases merged in: the values, where each came from, the aliases it used,
    and any named strategies for `compare`."""

    name: str
    path: Path
    values: dict[str, Setting] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> key, as written in the file(s)
    strategies: dict[str, dict[str, Setting]] = field(default_factory=dict)
    description: str = ""
    chain: list[Path] = field(default_factory=list)  # this file, then its bases


def user_config_dir() -> Path:
    """SAMPLECLI_CONFIG_DIR, else $XDG_CONFIG_HOME/samplecli, else the platform's config directory."""
    if os.environ.get("SAMPLECLI_CONFIG_DIR"):
        return Path(os.environ["SAMPLECLI_CONFIG_DIR"]).expanduser()
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]).expanduser() / "samplecli"
    import typer

    return Path(typer.get_app_dir("samplecli", force_posix=False))


def user_preset_dir() -> Path:
    return user_config_dir() / "presets"


def builtin_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}


def user_presets() -> dict[str, Path]:
    folder = user_preset_dir()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def find_preset(ref: str, relative_to: Path | None = None) -> Path:
    """A preset by name (user presets shadow built-ins) or by path to a .toml file."""
    if not ref.strip():
        raise UsageError(f"preset {ref!r}: a preset is a name (`samplecli presets list`) or a path to a .toml file, "
                         "not empty")
    looks_like_path = ref.endswith(".toml") or "/" in ref or os.sep in ref
    if looks_like_path:
        try:
            path = Path(ref).expanduser()
            if not path.is_absolute() and relative_to is not None:
                path = relative_to.parent / path
            found, folder = path.is_file(), path.is_dir()
        except (OSError, RuntimeError) as exc:  # a name too long, no permission, `~nouser`
            raise UsageError(f"preset file {ref}: cannot open it ({exc})") from exc
        if folder:
            raise UsageError(f"preset {path} is a directory; give a .toml file or a preset name")
        if not found and path.exists():
            raise UsageError(f"preset {path} is not a file (a device or a pipe); give a .toml file")
        if not found:
            raise UsageError(f"preset file {path} does not exist")
        return path
    user, builtin = user_presets(), builtin_presets()
    if ref in user:
        return user[ref]
    if ref in builtin:
        return builtin[ref]
    names = sorted(set(user) | set(builtin))
    with contextlib.suppress(OSError, ValueError):
        if Path(ref).is_dir():
            raise UsageError(f"preset {ref} is a directory; give a .toml file or a preset name")
    raise UsageError(f"unknown preset `{ref}`{closest(ref, names)}; valid: {', '.join(names) or 'none'}")


_TABLE_HEADER = re.compile(r"^[ \t]*\[", flags=re.M)


def _line_of(text: str, key: str, table: str | None = None) -> str:
    """' (line N)' where `key` is set: at the top level, or in `[strategies.TABLE]`; '' when not found."""
    start, end = 0, len(text)
    if table is not None:
        header = re.search(rf"^[ \t]*\[[ \t]*strategies[ \t]*\.[ \t]*[\"']?{re.escape(table)}[\"']?[ \t]*\]",
                           text, flags=re.M)
        if header is None:
            return ""
        start = header.end()
    following = _TABLE_HEADER.search(text, start)
    end = following.start() if following else len(text)
    # [ \t], not \s: a blank line before the key must not count as the key's line
    match = re.compile(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=", flags=re.M).search(text, start, end)
    return f" (line {text[: match.start()].count(chr(10)) + 1})" if match else ""


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"preset {path}: cannot read it ({exc})") from exc
    try:
        with not_too_deep(f"preset {path}"):
            return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"preset {path}: malformed TOML: {exc}") from exc


def _table(data: dict[str, Any], path: Path, text: str, source: str, aliases: dict[str, str],
           table: str | None = None) -> dict[str, Setting]:
    where = f" [strategies.{table}]" if table is not None else ""
    values: dict[str, Setting] = {}
    for raw_key, value in data.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in KEYS:
            valid = sorted([*KEYS, *ALIASES])
            raise UsageError(f"preset {path}{_line_of(text, raw_key, table)}{where}: unknown key `{raw_key}`"
                             f"{closest(raw_key, valid)}; valid keys: {', '.join(sorted(KEYS))}")
        if key in values:
            raise UsageError(f"preset {path}{_line_of(text, raw_key, table)}{where}: `{raw_key}` and another "
                             f"spelling of `{key}` are both set; keep one")
        if raw_key != key:
            aliases[raw_key] = key
        at = f"preset {path}{_line_of(text, raw_key, table)}{where}"
        values[key] = Setting(check_strategy(key, validate(key, value, at), at), source)
    if "strategy" in values and "chain" in values:
        raise UsageError(f"preset {path}{where}: `strategy` and `chain` are both set: use one "
                         "(a chain names its own order)")
    return values

def load_preset(ref: str, relative_to: Path | None = None, _seen: tuple[Path, ...] = ()) -> Preset:
    """Load a preset and its `extends` chain (a name or a path, relative to the file that names it)."""
    path = find_preset(ref, relative_to).resolve()
    if path in _seen:
        cycle = " -> ".join(str(p) for p in (*_seen, path))
        raise UsageError(f"preset {path}: `extends` makes a cycle: {cycle}")
    data, text = _read_toml(path)
    name = path.stem
    source = f"preset {name} ({shown_path(path)})"
    base: Preset | None = None
    if "extends" in data:
        parent = data.pop("extends")
        if not isinstance(parent, str) or not parent:
            raise UsageError(f"preset {path}{_line_of(text, 'extends')}: `extends` has to be a preset name or "
                             f"path, but is {parent!r}")
        try:
            base = load_preset(parent, relative_to=path, _seen=(*_seen, path))
        except UsageError as exc:
            if str(exc).startswith("preset ") and "cycle" in str(exc):
                raise
            raise UsageError(f"preset {path}: its base `{parent}` cannot be loaded: {exc}") from exc
    strategies_data = data.pop("strategies", {})
    if not isinstance(strategies_data, dict) or not all(isinstance(v, dict) for v in strategies_data.values()):
        raise UsageError(f"preset {path}: `strategies` has to hold tables ([strategies.NAME])")
    aliases: dict[str, str] = dict(base.aliases) if base else {}
    values = overlay(base.values if base else {}, _table(data, path, text, source, aliases))
    strategies = dict(base.strategies) if base else {}
    for sname, table in strategies_data.items():
        strategies[sname] = _table(table, path, text, source, aliases, sname)
    # a description speaks for its own file only: it is not inherited
    own = values.get("description")
    description = own.value if own is not None and own.source == source else ""
    if own is not None and own.source != source:
        del values["description"]
    return Preset(name=name, path=path, values=values, aliases=aliases, strategies=strategies,
                  description=description, chain=[path, *(base.chain if base else [])])

def to_toml(values: dict[str, Any]) -> str:
    """Write settings as TOML (the types here are the ones KEYS allows)."""
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _is_control(char: str) -> bool:
    # TOML's basic strings allow no raw control character (tab aside): they are written as \uXXXX
    return ord(char) < 0x20 or ord(char) == 0x7F


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _is_control(c) else c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def save_preset(name: str, values: dict[str, Any], force: bool = False) -> Path:
    """Write a user preset atomically (temp file + rename); refuse to overwrite unless `force`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsageError(f"preset name {name!r}: use letters, digits, '.', '_' and '-'")
    for key, value in values.items():
        if key != "extends":
            validate(key, value, f"preset {name}")
    try:
        encoded = to_toml(values).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, from an argument that was not UTF-8
        raise UsageError(f"preset {name}: {exc.object[exc.start:exc.end]!r} is not valid text") from None
    folder = user_preset_dir()
    path = folder / f"{name}.toml"
    if path.exists() and not force:
        raise UsageError(f"preset {path} exists; pass --force to overwrite it")
    tmp = path.with_suffix(f".toml.tmp{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encoded)
        os.replace(tmp, path)
    except OSError as exc:
        raise SampleCliError(f"preset {path}: cannot write it ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
