"""`samplecli presets`: list, show and save presets."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from samplecli.cli.app import ModelOpt, app, error_boundary, show_settings
from samplecli.cli.options import SAMPLING_OPTIONS, with_settings
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
        from samplecli.cli.app import stdout_console
        from samplecli.config.settings import SAMPLING_KEYS, resolve, sampling_values
        from samplecli.strategies import build_strategy

        settings = resolve({}, preset=name)
        built = build_strategy(settings.sampling(), strategy=settings.get("strategy"), chain=settings.get("chain"))
        console = stdout_console()
        if settings.preset.description:
            console.print(settings.preset.description, soft_wrap=True, markup=False)
        show_settings(settings, built, console=console)
        for sname, table in settings.preset.strategies.items():
            values = {k: v.value for k, v in table.items()}
            sub = build_strategy(sampling_values({k: values.get(k) for k in SAMPLING_KEYS}),
                                 strategy=values.get("strategy"), chain=values.get("chain"))
            console.print(f"strategy {sname}: {sub.strategy}", markup=False)


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
        from samplecli.config.settings import SAMPLING_KEYS, load_preset, sampling_values, save_preset
        from samplecli.config.tokens import needs_tokenizer, parse_token_bias
        from samplecli.strategies import build_strategy

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
