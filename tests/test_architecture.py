"""The shape of the package, as docs/architecture.md draws it.

Imports are read from the source (every ``from .x import y``, also those under
``TYPE_CHECKING``): no module imports another module's underscore names, the
import graph has no cycle, every import points to the same or a lower layer,
and no module grows past 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "neffos"

#: bottom to top; a module may import from its own layer and the layers below
LAYERS: list[tuple[str, set[str]]] = [
    ("wire, settings, contracts", {
        "errors", "encoding", "protocol", "config", "_http", "handlers", "exchange.base",
        "transports.base", "transports.messages",
    }),
    ("engine", {
        "liveness", "processing", "asks", "store", "conn", "replies", "dispatch",
    }),
    ("server parts, transports, bus", {
        "handshake", "registry", "listener",
        "transports", "transports.memory", "transports.picows", "transports.websockets",
        "transports.aiohttp",
        "exchange", "exchange.node", "exchange.redis", "exchange.nats",
    }),
    ("server and client", {"server", "client"}),
    ("facade", {"testing", ""}),
]
MAX_LINES = 800


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """(module, imported name) for every relative import of ``name``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                child = f"{target}.{alias.name}".lstrip(".")
                if child in known:  # "from . import transports"
                    found.append((child, ""))
                else:
                    found.append((target, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(name, path, known):
            if target != name and not (path.name == "__init__.py" and target.startswith(name)):
                edges[name].add(target)
    return edges


def test_every_module_has_a_layer() -> None:
    layered = set().union(*(members for _, members in LAYERS))
    assert set(modules()) == layered


def test_no_private_names_cross_modules() -> None:
    known = modules()
    bad = [
        f"{name} imports {target}.{imported}"
        for name, path in known.items()
        for target, imported in imports(name, path, known)
        if imported.startswith("_") and not imported.startswith("__") and target != name
    ]
    assert bad == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, name, target]))
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def test_imports_point_downwards() -> None:
    rank = {m: i for i, (_, members) in enumerate(LAYERS) for m in members}
    upward = [
        f"{name} ({LAYERS[rank[name]][0]}) imports {target} ({LAYERS[rank[target]][0]})"
        for name, targets in graph().items()
        for target in targets
        if rank[target] > rank[name]
    ]
    assert upward == []


def test_no_module_is_too_long() -> None:
    long = {
        name: n for name, path in modules().items()
        if (n := path.read_text().count("\n")) > MAX_LINES
    }
    assert long == {}


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The import reader sees private names, TYPE_CHECKING imports and package imports."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .conn import _private, Conn\n"
        "from . import transports\n"
        "if TYPE_CHECKING:\n"
        "    from .server import Server\n"
    )
    known = modules()
    assert imports("conn", source, known) == [
        ("conn", "_private"), ("conn", "Conn"), ("transports", ""), ("server", "Server"),
    ]
