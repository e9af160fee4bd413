"""`samplecli presets`: list, show and save presets."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from samplecli.cli.app import ModelOpt, app, error_boundary, show_settings
from samplecli.cli.options import SAMPLING_OPTIONS, with_settings
from samplecli.errors import SampleCliError

presets_app = typer.Typer(help="Built-in, user and file presets (TOML).", no_args_is_help=True)
app.add_typer(presets_app, name="presets")


class PresetFormat(StrEnum):
    text = "text"
    json = "json"


FormatOpt = Annotated[PresetFormat, typer.Option("--format", "-f", help="text or json.")]


def _dump(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1))


@presets_app.command("list")
def presets_list(format: FormatOpt = PresetFormat.text) -> None:
    """Built-in and user presets, one line each (a user preset with a built-in's name shadows it)."""
    with error_boundary():
        from samplecli.config.preset_files import (
            builtin_presets,
            load_preset,
            shown_path,
            user_preset_dir,
            user_presets,
        )

        builtin, user = builtin_presets(), user_presets()
        rows = []
        for name in sorted(set(builtin) | set(user)):
            origin = "user" if name in user else "built-in"
            if name in user and name in builtin:
                origin = "user, shadows built-in"
            path = user.get(name) or builtin[name]
            try:
                description, valid = load_preset(name).description, True
            except SampleCliError as exc:
                description, valid = f"(invalid: {exc})", False
            rows.append({"name": name, "origin": origin, "path": shown_path(path), "valid": valid,
                         "description": description})
        if format is PresetFormat.json:
            _dump(rows)
            return
        width = max((len(row["name"]) for row in rows), default=0)  # the longest name sets the column
        for row in rows:
            print(f"{row['name']:<{width}}  {row['origin']:<22}  {row['description']}")
        print(f"\nuser presets live in {shown_path(user_preset_dir())}", file=sys.stderr)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="A preset name or a path to a .toml file.")],
    format: FormatOpt = PresetFormat.text,
) -> None:
    """The resolved settings of a preset (with its bases, the environment), and where each came from."""
    with error_boundary():
        from samplecli.cli.app import stdout_console
        from samplecli.config.preset_files import shown_path
        from samplecli.config.settings import explain, resolve, sampling_values
        from samplecli.strategies import build_strategy
        from samplecli.strategies.schema import SAMPLING_KEYS

        settings = resolve({}, preset=name)
        built = build_strategy(settings.sampling(), strategy=settings.get("strategy"), chain=settings.get("chain"))
        strategies = {}
        for sname, table in settings.preset.strategies.items():
            values = {k: v.value for k, v in table.items()}
            sub = build_strategy(sampling_values({k: values.get(k) for k in SAMPLING_KEYS}),
                                 strategy=values.get("strategy"), chain=values.get("chain"))
            strategies[sname] = str(sub.strategy)
        if format is PresetFormat.json:
            _dump({"name": settings.preset.name, "path": shown_path(settings.preset.path),
                   "description": settings.preset.description, "strategy": str(built.strategy),
                   "settings": [{"setting": key, "value": settings.get(key), "shown": value, "source": source,
                                 "note": note}
                                for key, value, source, note in explain(settings, built.ignored,
                                                                        built.strategy.name)],
                   "strategies": strategies})
            return
        console = stdout_console()
        if settings.preset.description:
            console.print(settings.preset.description, soft_wrap=True, markup=False)
        show_settings(settings, built, console=console)
        for sname, chain in strategies.items():
            console.print(f"strategy {sname}: {chain}", markup=False)


@presets_app.command("save")
@with_settings(*SAMPLING_OPTIONS, "max_new_tokens", "min_new_tokens", "stop_strings", "num_samples", "seed", "top_n")
def presets_save(
    name: Annotated[str, typer.Argument(help="The user preset's name.")],
    model: ModelOpt = None,
    description: Annotated[str | None, typer.Option(help="What the preset is for.")] = None,
    extends: Annotated[str | None, typer.Option(help="A preset this one inherits from.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing user preset.")] = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Write a user preset from flags (atomically; refuses to overwrite without --force)."""
    with error_boundary():
        from samplecli.config.preset_files import load_preset, save_preset
        from samplecli.config.settings import sampling_values
        from samplecli.config.tokens import needs_tokenizer, parse_token_bias
        from samplecli.strategies import build_strategy
        from samplecli.strategies.schema import SAMPLING_KEYS

        values = {**flags, "model": model, "description": description}
        values = {k: v for k, v in values.items() if v is not None}
        if not values and extends is None:
            raise SampleCliError("nothing to save: give at least one setting, e.g. --temp 0.7")
        sampling = {k: values.get(k) for k in SAMPLING_KEYS}
        if needs_tokenizer(parse_token_bias(e)[0] for e in sampling.get("logit_bias") or ()):
            sampling["logit_bias"] = None  # its tokens are resolved against a model's vocabulary when it runs
        build_strategy(sampling_values(sampling), strategy=values.get("strategy"), chain=values.get("chain"))
        if extends is not None:
            base = load_preset(extends)
            # a path is written absolute: the saved file lives elsewhere, and a relative one would move with it
            looks_like_path = extends.endswith(".toml") or "/" in extends or os.sep in extends
            values = {"extends": str(base.path) if looks_like_path else extends, **values}
        path = save_preset(name, values, force=force)
        print(path)
