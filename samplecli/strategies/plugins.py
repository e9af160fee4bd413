"""Samplers from other packages: every entry point in the `samplecli.samplers` group is loaded once, at the
first use of the registry, as pytest and simonw/llm load their plugins.

    # a plugin's pyproject.toml
    [project.entry-points."samplecli.samplers"]
    floor = "samplecli_floor"          # a module whose import registers its samplers (@register)
    # or: floor = "samplecli_floor:Floor", a Transform or Selector class, registered here

A plugin that fails to load (an import error, a class the registry refuses) is skipped; `PROBLEMS` holds one line
naming it, which the CLI shows, and samplecli runs on without it.
"""

from __future__ import annotations

GROUP = "samplecli.samplers"
PACKAGES: dict[str, str] = {}  # sampler name -> the distribution that brought it
PROBLEMS: list[str] = []
_loaded = False


def load_plugins() -> None:
    """Import every `samplecli.samplers` entry point (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from importlib.metadata import entry_points

    from samplecli.strategies.base import SELECTORS, TRANSFORMS, Configurable, register

    for point in entry_points(group=GROUP):
        package = point.dist.name if point.dist is not None else point.value.split(":")[0]
        before = set(TRANSFORMS) | set(SELECTORS)
        try:
            loaded = point.load()
            if isinstance(loaded, type) and issubclass(loaded, Configurable) \
                    and getattr(loaded, "name", None) not in before | set(TRANSFORMS) | set(SELECTORS):
                register(loaded)
        except Exception as exc:  # a plugin's own bug must not stop samplecli (register() adds nothing it refuses)
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            PROBLEMS.append(f"plugin `{point.name}` ({point.value}, package {package}) was not loaded: "
                            f"{type(exc).__name__}: {why}")
        for name in (set(TRANSFORMS) | set(SELECTORS)) - before:  # what importing its module registered
            PACKAGES[name] = package
