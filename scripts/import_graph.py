"""samplecli's import graph: its cycles, and the layering of its packages.

    python scripts/import_graph.py          # prints the layers, the cycles (0 expected) and any violation

Every `import samplecli...` and `from samplecli... import ...` counts, at module level or inside a function
(a lazy import is still a dependency). The packages are layered, lowest first; a module may import from its
own layer or below, never above. The engine and the strategies never import Rich, Typer or transformers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "samplecli"
# lowest first: the leaf modules, the sampler registry, the backends, the loop, settings, analyses, views, CLI
LAYERS = (("errors", "stats", "__init__"), ("strategies",), ("backends",), ("engine",), ("config",), ("analysis",),
          ("views",), ("cli", "__main__"))
NO_UI_OR_MODEL = {"engine": ("rich", "typer", "transformers"), "strategies": ("rich", "typer", "transformers")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(samplecli modules imported, top-level third-party packages imported) by one file."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.split(".")[0] == "samplecli" else theirs).add(
                    alias.name if alias.name.split(".")[0] == "samplecli" else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "samplecli":
                theirs.add(node.module.split(".")[0])
                continue
            for alias in node.names:  # `from samplecli.views import beam` imports the module samplecli.views.beam
                sub = f"{node.module}.{alias.name}"
                ours.add(sub if sub in known else node.module)
    return {m for m in ours if m in known}, theirs


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = modules()
    edges, third = {}, {}
    for name, path in known.items():
        ours, theirs = imports(path, known)
        edges[name] = ours - {name}
        third[name] = theirs
    return edges, third


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def violations(edges: dict[str, set[str]], third: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer, and each UI or transformers import from the engine or the strategies."""
    found = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(source):
                found.append(f"{source} imports {target}, a layer above it")
    for source, packages in sorted(third.items()):
        package = source.split(".")[1] if "." in source else ""
        for banned in NO_UI_OR_MODEL.get(package, ()):
            if banned in packages:
                found.append(f"{source} imports {banned}")
    return found


def main() -> int:
    edges, third = graph()
    found_cycles, found_violations = cycles(edges), violations(edges, third)
    print("layers, lowest first: " + " < ".join("/".join(names) for names in LAYERS))
    print(f"{len(edges)} modules, {sum(len(t) for t in edges.values())} imports between them")
    print(f"import cycles: {len(found_cycles)}")
    for component in found_cycles:
        print("  cycle: " + " <-> ".join(component))
    print(f"layering violations: {len(found_violations)}")
    for line in found_violations:
        print("  " + line)
    return 1 if found_cycles or found_violations else 0


if __name__ == "__main__":
    sys.exit(main())
