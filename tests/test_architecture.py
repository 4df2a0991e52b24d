"""The folder layout is the architecture: these tests keep the layers honest.

Lower layers (`queue/`, `auth/`, `store/`, `backends/`, `records/`, `lifecycle/`, `admin/`,
`localmodel/`, `translate/`) never import the HTTP layer (`api/`) or the app; and there are no import
circles, neither between modules nor between the packages.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "seadragon_gw"
LOWER = ("queue", "auth", "store", "backends", "records", "lifecycle", "admin", "localmodel", "translate")
HTTP = ("seadragon_gw.api", "seadragon_gw.app", "seadragon_gw.cli", "seadragon_gw.server")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Modules `path` imports at run time (imports under `if TYPE_CHECKING:` do not count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    type_checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from . import migrations` imports the submodule, not the package
            submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in _MODULES]
            yield from submodules or [module]


_MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


@functools.cache
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in _MODULES.items():
        graph[name] = {m for m in _imports(path) if m.startswith("seadragon_gw") and m != name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_the_http_layer(layer: str) -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items() if module.startswith(f"seadragon_gw.{layer}")
        for target in targets if target.startswith(HTTP)
    )
    assert offenders == []


def test_no_import_circles_between_modules() -> None:
    graph = {m: {t for t in ts if t in _graph()} for m, ts in _graph().items()}
    assert _cycle(graph) is None


def test_no_import_circles_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        source = _package(module)
        packages.setdefault(source, set()).update(_package(t) for t in targets if _package(t) != source)
    assert _cycle(packages) is None
