"""`samplecli presets`: list, show and save presets."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from samplecli.cli.app import (
    INT,
    ChainOpt,
    MinPOpt,
    ModelOpt,
    NgramOpt,
    RepOpt,
    StrategyOpt,
    TempOpt,
    TopKOpt,
    TopPOpt,
    TypicalOpt,
    app,
    error_boundary,
    sampling_settings,
    show_settings,
)
from samplecli.errors import SampleCliError

presets_app = typer.Typer(help="Built-in, user and file presets (TOML).", no_args_is_help=True)
app.add_typer(presets_app, name="presets")


@presets_app.command("list")
def presets_list() -> None:
    """Built-in and user presets, one line each (a user preset with a built-in's name shadows it)."""
    with error_boundary():
        from samplecli.config.settings import builtin_presets, load_preset, user_preset_dir, user_presets

        builtin, user = builtin_presets(), user_presets()
        for name in sorted(set(builtin) | set(user)):
            origin = "user" if name in user else "built-in"
            if name in user and name in builtin:
                origin = "user, shadows built-in"
            try:
                description = load_preset(name).description
            except SampleCliError as exc:
                description = f"(invalid: {exc})"
            print(f"{name:<14} {origin:<24} {description}")
        print(f"\nuser presets live in {user_preset_dir()}", file=sys.stderr)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="A preset name or a path to a .toml file.")],
) -> None:
    """The resolved settings of a preset (with its bases, the environment), and where each came from."""
    with error_boundary():
        from rich.console import Console

        from samplecli.config.settings import resolve
        from samplecli.strategies import build_strategy

        settings = resolve({}, preset=name)
        built = build_strategy(settings.sampling(), strategy=settings.get("strategy"), chain=settings.get("chain"))
        console = Console(highlight=False)
        if settings.preset.description:
            console.print(settings.preset.description, soft_wrap=True, markup=False)
        show_settings(settings, built, console=console)
        for sname, table in settings.preset.strategies.items():
            values = {k: v.value for k, v in table.items()}
            sub = build_strategy({k: values.get(k) for k in settings.sampling()}, strategy=values.get("strategy"),
                                 chain=values.get("chain"))
            console.print(f"strategy {sname}: {sub.strategy}", markup=False)


@presets_app.command("save")
def presets_save(
    name: Annotated[str, typer.Argument(help="The user preset's name.")],
    strategy: StrategyOpt = None,
    chain: ChainOpt = None,
    temp: TempOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    typical_p: TypicalOpt = None,
    repetition_penalty: RepOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", "-n", parser=INT)] = None,
    seed: Annotated[int | None, typer.Option(parser=INT)] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    model: ModelOpt = None,
    description: Annotated[str | None, typer.Option(help="What the preset is for.")] = None,
    extends: Annotated[str | None, typer.Option(help="A preset this one inherits from.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing user preset.")] = False,
) -> None:
    """Write a user preset from flags (atomically; refuses to overwrite without --force)."""
    with error_boundary():
        from samplecli.config.settings import load_preset, save_preset
        from samplecli.strategies import build_strategy

        values = {**sampling_settings(temp, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size),
                  "strategy": strategy, "chain": chain, "max_new_tokens": max_new_tokens, "seed": seed,
                  "stop_strings": stop or None, "model": model, "description": description}
        values = {k: v for k, v in values.items() if v is not None}
        if not values and extends is None:
            raise SampleCliError("nothing to save: give at least one setting, e.g. --temp 0.7")
        build_strategy({k: values.get(k) for k in sampling_settings(*[None] * 7)}, strategy=values.get("strategy"),
                       chain=values.get("chain"))
        if extends is not None:
            base = load_preset(extends)
            # a path is written absolute: the saved file lives elsewhere, and a relative one would move with it
            looks_like_path = extends.endswith(".toml") or "/" in extends or os.sep in extends
            values = {"extends": str(base.path) if looks_like_path else extends, **values}
        path = save_preset(name, values, force=force)
        print(path)
