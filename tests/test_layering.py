"""The one-way dependencies of DESIGN.md, checked by reading imports (no module is executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iso_host"

# Which iso_host modules each layer may import (besides itself). Prefix match on dotted names.
ALLOWED: dict[str, tuple[str, ...]] = {
    "iso_host.wire": ("iso_host.errors",),
    "iso_host.security": (),
    "iso_host.ledger": ("iso_host.errors", "iso_host.log"),  # the SQLite store says when its disk fills
    "iso_host.core.terminals": ("iso_host.security",),
    "iso_host.core.message_auth": ("iso_host.security", "iso_host.wire"),
    "iso_host.core.flows": (
        "iso_host.ledger",
        "iso_host.core.rules",
        "iso_host.wire",
        "iso_host.security",
        "iso_host.errors",
        "iso_host.core.terminals",
        "iso_host.core.test_cards",
    ),
    "iso_host.core.admission": (
        "iso_host.cards",
        "iso_host.core.flows",
        "iso_host.ledger",
        "iso_host.core.message_auth",
        "iso_host.security",
        "iso_host.core.terminals",
        "iso_host.core.test_cards",
        "iso_host.wire",
    ),
    "iso_host.core.scenarios": (),
    "iso_host.core.rules": ("iso_host.ledger",),
    "iso_host.core.test_cards": (),
    "iso_host.core.pipeline": (
        "iso_host.core.admission",
        "iso_host.core.rules",
        "iso_host.errors",
        "iso_host.core.flows",
        "iso_host.ledger",
        "iso_host.wire",
        "iso_host.core.message_auth",
        "iso_host.core.scenarios",
        "iso_host.core.terminals",
        "iso_host.core.test_cards",
        "iso_host.events.record",
    ),
    "iso_host.clock": (),
    "iso_host.mqtt.topics": ("iso_host.errors",),
    "iso_host.events.record": ("iso_host.cards", "iso_host.ledger"),
    "iso_host.control.commands": (
        "iso_host.mqtt.topics",
        "iso_host.cards",
        "iso_host.clock",
        "iso_host.config",
        "iso_host.errors",
        "iso_host.events.record",
        "iso_host.ledger",
        "iso_host.core.scenarios",
        "iso_host.core.terminals",
        "iso_host.core.test_cards",
    ),
}
# Modules that may do I/O with asyncio, threads, sockets or the clock.
EDGE_MODULES = (
    "iso_host.server",
    "iso_host.terminal.client",
    "iso_host.cli.main",
    "iso_host.cli.terminal",
    "iso_host.cli.ledger",
    "iso_host.ledger.sqlite",
    "iso_host.ledger.postgres",
    "iso_host.ledger.reports",
    "iso_host.ledger.deadlines",
    "iso_host.events.relay",
    "iso_host.terminal.script",
    "iso_host.mqtt.client",
    "iso_host.mqtt.tasks",
    "iso_host.cli.broker_flags",
    "iso_host.cli.events",
    "iso_host.cli.control",
    "iso_host.control.listener",
    "iso_host.trace",
    "iso_host.cli.replay",
    "iso_host.keyed_locks",
    "iso_host.cli.fuzz",
)
IO_IMPORTS = ("asyncio", "socket", "threading", "sqlite3", "aiomqtt", "psycopg")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions, with each ``from M import N`` also
    as ``M.N`` (N may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_layer_imports_only_what_it_may(path: Path) -> None:
    """A layer imports only the iso_host layers below it."""
    name = module_name(path)
    layer = next((prefix for prefix in ALLOWED if name == prefix or name.startswith(prefix + ".")), None)
    if layer is None:
        return
    ours = {i for i in imports_of(path) if i.startswith("iso_host")}
    foreign = {i for i in ours if not (i == layer or i.startswith(layer + ".")) and not i.startswith(ALLOWED[layer])}
    assert not foreign, f"{name} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_io_stays_at_the_edge(path: Path) -> None:
    """asyncio, sockets, threads and database drivers appear only in edge modules."""
    name = module_name(path)
    if name.startswith(EDGE_MODULES):
        return
    io = {i for i in imports_of(path) if i.split(".")[0] in IO_IMPORTS}
    assert not io, f"{name} imports {sorted(io)}; only {', '.join(EDGE_MODULES)} may"


def test_the_layering_check_sees_the_package() -> None:
    """The checks above found the modules they are meant to check."""
    names = {module_name(p) for p in MODULES}
    assert {"iso_host.wire.codec", "iso_host.core.pipeline", "iso_host.server", "iso_host.core.flows.sale"} <= names


def _our_imports(path: Path, known: set[str]) -> set[str]:
    """The iso_host modules ``path`` imports; a package's face is left out (its re-exports are not behaviour)."""
    packages = {module_name(p) for p in MODULES if p.name == "__init__.py"}
    return {name for name in imports_of(path) if name in known and name not in packages}


def test_no_import_circle() -> None:
    """No module imports, even from inside a function, a module that imports it back (directly or not)."""
    known = {module_name(p) for p in MODULES}
    graph = {module_name(p): _our_imports(p, known) for p in MODULES}
    circles: list[list[str]] = []
    state: dict[str, str] = {}  # visiting | done

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "visiting"
        for target in sorted(graph[module]):
            if state.get(target) == "visiting":
                circles.append([*trail[trail.index(target) :], target] if target in trail else [module, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)
