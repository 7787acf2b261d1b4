"""The rooms of the code (docs/architecture.md, "Rooms and layers"): the import graph of chrnode/
and actors/ has no cycle, and the layers import only downwards.

The graph is read from the source with ast, not by importing: every ``import`` and ``from ...
import`` counts, at the top of a module, inside a function (a deferred import is still a
dependency; deferring it only hides a cycle) or under ``if TYPE_CHECKING:`` (no exemption: a
lower module that names an upper type in a hint still depends on it; it says what it needs with
a Protocol of its own instead, as chrnode/device/link.py, ports.py and tickets.py do).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.testing.anvil import REPO_ROOT

PACKAGES = ("chrnode", "actors")

# The modules of chrnode/ that are adapters to the actor system, and so may import Thespian or
# actors/ (docs/architecture.md says the same list). Everything else in chrnode/ is library code
# that runs without an actor system. chrnode/testing/ is exempt as a whole: its helpers start
# real actor systems for the tests.
ACTOR_ADAPTERS = frozenset(
    {
        "chrnode.actorsys",  # starts/joins the Thespian system, its transport's quirks
        "chrnode.daemon",  # the daemon process: builds the tree, watches root, admin and logger
        "chrnode.heartbeat",  # asks the tree's actors from the daemon's thread
        "chrnode.forkhooks",  # closes Thespian's inherited sockets after a fork
        "chrnode.logsink",  # receives Thespian's log forwarding
    }
)

# What the device client (chrnode/device/) may use: a device needs the codecs and the TLS transport,
# never the node's server side, its storage, its chain client, its RPC or its actors.
DEVICE_FORBIDDEN = (
    "actors",
    "thespian",
    "chrnode.rpc",
    "chrnode.storage",
    "chrnode.chain",
    "chrnode.net",
    "chrnode.peer",
    "chrnode.dht",
    "chrnode.edge.server",
    "chrnode.edge.server_upkeep",
    "chrnode.edge.session",
    "chrnode.edge.handlers",
    "chrnode.edge.ports",
    "chrnode.edge.admission",
    "chrnode.daemon",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement, wherever it stands."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            yield base, [alias.name for alias in node.names]
        yield from _imports(node, module, is_package)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of chrnode/ and actors/ it imports, plus foreign top-level packages
    (e.g. "thespian") so that the layer rules can see them."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for target, names in _imports(tree, name, path.name == "__init__.py"):
            if target.split(".")[0] not in PACKAGES:
                edges.add(target.split(".")[0])
                continue
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            edges.update(subs or [target])
            if len(subs) < len(names):
                edges.add(target)
        edges.discard(name)
        graph[name] = {e for e in edges if e in modules or e.split(".")[0] not in PACKAGES}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"not a cycle: {sorted(component)}")


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader itself: deferred, relative, TYPE_CHECKING and `from pkg import module` imports
    are all edges (else a green test below would prove nothing)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from chrnode import crypto\n"
        "from . import frame\n"
        "import thespian.actors\n"
        "if TYPE_CHECKING:\n"
        "    from chrnode.edge.server import EdgeServer\n"
        "def later():\n"
        "    from chrnode.edge.codes import OK\n"
    )
    found = dict(_imports(ast.parse(source), "chrnode.edge.reader", False))
    assert found == {
        "typing": ["TYPE_CHECKING"],
        "chrnode": ["crypto"],
        "chrnode.edge": ["frame"],
        "thespian.actors": [],
        "chrnode.edge.server": ["EdgeServer"],
        "chrnode.edge.codes": ["OK"],
    }
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_the_tree() -> None:
    graph = import_graph()
    assert "chrnode.device.client" in graph and "actors.supervisor" in graph
    assert "chrnode.device.key" in graph["chrnode.device.client"]
    assert "thespian" in graph["actors.base"]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("forbidden", ["actors", "thespian"])
def test_chrnode_imports_no_actor_system_outside_its_adapters(forbidden: str) -> None:
    graph = import_graph()
    offenders = sorted(
        name
        for name, edges in graph.items()
        if name.startswith("chrnode")
        and not name.startswith("chrnode.testing")
        and name not in ACTOR_ADAPTERS
        and any(e == forbidden or e.startswith(forbidden + ".") for e in edges)
    )
    assert not offenders, f"{forbidden} imported outside the adapters {sorted(ACTOR_ADAPTERS)}: {offenders}"


def test_the_adapters_are_still_adapters() -> None:
    """The list is kept exact: a module that no longer imports the actor system leaves it."""
    graph = import_graph()
    stale = sorted(
        name
        for name in ACTOR_ADAPTERS
        if not any(e.split(".")[0] in ("actors", "thespian") for e in graph.get(name, {"actors"}))
    )
    assert not stale, f"no longer adapters (drop them from the list and the docs): {stale}"
    assert ACTOR_ADAPTERS <= graph.keys()


def test_the_device_client_needs_no_node() -> None:
    graph = import_graph()
    offenders = sorted(
        f"{name} -> {e}"
        for name, edges in graph.items()
        if name.startswith("chrnode.device")
        for e in edges
        if any(e == f or e.startswith(f + ".") for f in DEVICE_FORBIDDEN)
    )
    assert not offenders, offenders


def test_the_running_tree_imports_no_test_helper() -> None:
    """chrnode/testing/ starts real nodes and chains for tests; no actor depends on it."""
    graph = import_graph()
    offenders = sorted(
        f"{name} -> {e}"
        for name, edges in graph.items()
        if name.startswith("actors")
        for e in edges
        if e.startswith("chrnode.testing")
    )
    assert not offenders, offenders
