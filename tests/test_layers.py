"""The package's shape (docs/ARCHITECTURE.md): imports flow down the layers, no
import cycles, no oversized modules.

Every import counts, lazy ones inside functions and `TYPE_CHECKING` ones too: a
cycle hidden behind a lazy import is still a cycle to whoever changes the code.
The `KNOWN_*` sets are the debts still open in the architecture issue; they may
only shrink (a fixed one must be removed here, or the test fails).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mediaserver"

#: Top to bottom; a module may import its own layer's modules and any layer below.
LAYERS: list[set[str]] = [
    {
        "mediaserver",
        "mediaserver.__main__",
        "mediaserver.cli",
        "mediaserver.server",
        "mediaserver.sip_policy",
    },
    {"mediaserver.cluster", "mediaserver.cluster_admin", "mediaserver.dial_cli"},
    {"mediaserver.bridge", "mediaserver.handle", "mediaserver.outbound"},
    {"mediaserver.dialer", "mediaserver.agent", "mediaserver.apps"},
    {"mediaserver.call", "mediaserver.config"},
    {"mediaserver.pipeline", "mediaserver.media"},
    {
        "mediaserver.sip",
        "mediaserver.codecs",
        "mediaserver.observability",
        "mediaserver.faults",
        "mediaserver.strict",
    },
]

KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_FILE_CYCLES: set[frozenset[str]] = set()
KNOWN_PACKAGE_CYCLES: set[frozenset[str]] = set()
KNOWN_BIG: set[str] = set()
MAX_LINES = 900


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[name].update(n for n in names if n in mods and n != name)
    return edges


def layer(module: str) -> int:
    parts = module.split(".")
    for depth in (2, 1):
        key = ".".join(parts[:depth])
        for i, members in enumerate(LAYERS):
            if key in members:
                return i
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py")


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one member (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_imports_flow_down_the_layers() -> None:
    edges = imports(modules())
    upward = {(a, b) for a, bs in edges.items() for b in bs if layer(b) < layer(a)}
    assert upward == KNOWN_UPWARD


def test_no_import_cycles_between_files_or_subpackages() -> None:
    edges = imports(modules())
    assert {frozenset(c) for c in strongly_connected(edges)} == KNOWN_FILE_CYCLES

    def sub(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = defaultdict(set)
    for a, bs in edges.items():
        packages[sub(a)].update(sub(b) for b in bs if sub(b) != sub(a))
    assert {frozenset(c) for c in strongly_connected(packages)} == KNOWN_PACKAGE_CYCLES


def test_no_module_is_oversized() -> None:
    big = {
        name for name, path in modules().items() if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert big == KNOWN_BIG


def test_the_call_actor_keeps_to_its_job() -> None:
    actor = PACKAGE / "call" / "actor.py"
    assert len(actor.read_text().splitlines()) < 600
