"""The shape of the package, as docs/topics/architecture.md draws it.

Imports are read from the source: relative and absolute, ``import`` and
``from ... import``, at any depth (also under ``TYPE_CHECKING`` and inside
functions). The checks: every import points to the same or a lower layer, the
import graph has no cycle, no module imports another module's underscore
names, no module touches an underscore attribute that it does not define
itself (other than on ``self``/``cls``), and no module grows past 800 lines.

One exemption, the way packages work: a package's ``__init__`` may import its
own submodules (it re-exports them).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "neffos"

#: bottom to top; a module may import from its own layer and the layers below
LAYERS: list[tuple[str, set[str]]] = [
    ("contracts", {
        "errors", "encoding", "protocol", "stats", "config", "_http", "handlers", "base",
        "exchange.base", "transports.base", "transports.messages", "transports.frames",
    }),
    ("engine", {
        "liveness", "processing", "asks", "store", "conn", "replies", "dispatch",
    }),
    ("server parts, transports, bus", {
        "handshake", "registry", "listener",
        "transports", "transports.memory", "transports.picows", "transports.websockets",
        "transports.aiohttp", "transports.asgi", "transports.aiohttp_web",
        "exchange", "exchange.node", "exchange.redis", "exchange.nats",
    }),
    ("server and client", {"server", "client"}),
    ("facade", {"testing", "metrics", ""}),
    ("applications", {
        "__main__", "cli", "workers",
        "demo", "demo.assets", "demo.server", "demo.client", "demo.cli",
    }),
]
MAX_LINES = 800


def modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, str]]:
    """(module, imported name) for every import of neffos code in ``source``.

    ``name`` is the importing module ("" for the package itself); the imported
    name is "" when a whole module is imported.
    """
    package = name.split(".") if is_package else name.split(".")[:-1]
    package = [p for p in package if p]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "neffos" or alias.name.startswith("neffos."):
                    found.append((alias.name.removeprefix("neffos").lstrip("."), ""))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "neffos" or (node.module or "").startswith("neffos."):
                target = (node.module or "").removeprefix("neffos").lstrip(".")
            else:
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}".lstrip(".")
                if child in known:  # "from . import transports"
                    found.append((child, ""))
                else:
                    found.append((target, alias.name))
    return found


def graph(known: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for target, _ in imports(name, path.read_text(), is_package, set(known)):
            own_child = is_package and (not name or target.startswith(name + "."))
            if target != name and not own_child:
                edges[name].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                return [*path, name, target]
            if target not in state and (cycle := visit(target, [*path, name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def upward(edges: dict[str, set[str]], layers: list[tuple[str, set[str]]]) -> list[str]:
    rank = {m: i for i, (_, members) in enumerate(layers) for m in members}
    return [
        f"{name} ({layers[rank[name]][0]}) imports {target} ({layers[rank[target]][0]})"
        for name, targets in edges.items()
        for target in targets
        if rank[target] > rank[name]
    ]


def private_attributes(source: str) -> list[str]:
    """``x._name`` where ``x`` is not self/cls/super() and this source never defines ``_name``."""
    tree = ast.parse(source)
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr in defined:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
            continue
        found.append(f"line {node.lineno}: .{node.attr}")
    return found


# -- the package ----------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    layered = set().union(*(members for _, members in LAYERS))
    assert set(modules()) == layered


def test_no_private_names_cross_modules() -> None:
    known = modules()
    bad = [
        f"{name} imports {target}.{imported}"
        for name, path in known.items()
        for target, imported in imports(name, path.read_text(), path.name == "__init__.py",
                                        set(known))
        if imported.startswith("_") and not imported.startswith("__") and target != name
    ]
    assert bad == []


def test_no_private_attributes_of_other_modules() -> None:
    bad = {
        name: found
        for name, path in modules().items()
        if (found := private_attributes(path.read_text()))
    }
    assert bad == {}


def test_no_import_cycle() -> None:
    assert find_cycle(graph(modules())) is None


def test_imports_point_downwards() -> None:
    assert upward(graph(modules()), LAYERS) == []


def test_no_module_is_too_long() -> None:
    long = {
        name: n for name, path in modules().items()
        if (n := path.read_text().count("\n")) > MAX_LINES
    }
    assert long == {}


# -- the checks themselves can fail ----------------------------------------------------


def test_the_import_reader_sees_every_kind_of_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import neffos.server\n"
        "from neffos.conn import Conn\n"
        "from .conn import _private\n"
        "from . import transports\n"
        "if TYPE_CHECKING:\n"
        "    from .server import Server\n"
        "def f():\n"
        "    from .client import dial\n"
    )
    known = {"conn", "server", "transports", "client"}
    assert imports("asks", source, False, known) == [
        ("server", ""), ("conn", "Conn"), ("conn", "_private"), ("transports", ""),
        ("server", "Server"), ("client", "dial"),
    ]


def test_a_cycle_and_an_upward_import_are_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    layers = [("low", {"a"}), ("high", {"b"})]
    assert upward({"a": {"b"}, "b": set()}, layers) == ["a (low) imports b (high)"]
    assert upward({"a": set(), "b": {"a"}}, layers) == []


def test_private_attributes_of_others_are_found() -> None:
    source = (
        "class A:\n"
        "    def _mine(self): self._x = 1\n"
        "def f(a, conn):\n"
        "    a._mine(); a._x; conn._theirs; self_like._y\n"
        "    super()._z; self._w\n"
    )
    assert private_attributes(source) == ["line 4: ._theirs", "line 4: ._y"]
