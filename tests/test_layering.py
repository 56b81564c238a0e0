"""The one-way dependencies of DESIGN.md, checked by reading imports (no module is executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iso_host"

# Layers, lowest first: a module may import its own package and the layers before it, never one after it.
# Prefix match on dotted names; the first (longest) matching prefix names a module's layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("iso_host.vocab", "iso_host.errors", "iso_host.limits", "iso_host.money", "iso_host.urls"),
    ("iso_host.cards", "iso_host.clock", "iso_host.security", "iso_host.private_files"),
    ("iso_host.wire",),
    ("iso_host.ledger.model", "iso_host.ledger.store", "iso_host.ledger.totals_json", "iso_host.log"),
    ("iso_host.styles",),
    ("iso_host.ledger",),
    ("iso_host.events.ids", "iso_host.events.refusals", "iso_host.events.record"),
    ("iso_host.core.terminals", "iso_host.core.test_cards", "iso_host.core.scenarios", "iso_host.core.rules",
     "iso_host.core.message_auth"),
    ("iso_host.core",),
    ("iso_host.mqtt.topics",),
    ("iso_host.config_checks", "iso_host.config_cards", "iso_host.config", "iso_host.config_keys",
     "iso_host.config_security", "iso_host.config_http", "iso_host.tls"),
    ("iso_host.mqtt.reconnect", "iso_host.mqtt.client"),
    ("iso_host.events", "iso_host.control"),
    ("iso_host.mqtt",),
    ("iso_host.keyed_locks", "iso_host.trace", "iso_host.gate", "iso_host.edge", "iso_host.server", "iso_host.terminal",
     "iso_host.fuzz", "iso_host.event_loops"),
    ("iso_host.workers",),
    ("iso_host.console",),
    ("iso_host.app",),
    ("iso_host.cli",),
)  # fmt: skip
# The sans-IO core: no sockets, threads, databases, clocks or randomness of its own (they are passed in).
PURE = ("iso_host.vocab", "iso_host.errors", "iso_host.money", "iso_host.urls", "iso_host.cards", "iso_host.wire",
        "iso_host.styles", "iso_host.core", "iso_host.ledger.model", "iso_host.ledger.store", "iso_host.ledger.rules",
        "iso_host.ledger.schema", "iso_host.ledger.sql", "iso_host.ledger.invariants", "iso_host.ledger.totals_json",
        "iso_host.events.record", "iso_host.events.refusals", "iso_host.control.commands", "iso_host.control.controls",
        "iso_host.control.signing", "iso_host.security", "iso_host.console.fields",
        "iso_host.fuzz.mutations")  # fmt: skip
IO_IMPORTS = ("asyncio", "socket", "ssl", "threading", "concurrent", "multiprocessing", "subprocess", "selectors",
              "sqlite3", "aiomqtt", "paho", "psycopg", "psycopg_pool", "time", "secrets", "uuid")  # fmt: skip
IO_CALLS = ("os.urandom", "os.getrandom", "datetime.now", "datetime.today", "datetime.utcnow", "date.today")
# ``random`` is absent on purpose: the fuzzer's seeded ``random.Random`` is a pure function of its seed.
# Randomness that is the module's job: fresh keys and PIN block fill (security says so in its docstring).
RANDOMNESS = {"iso_host.security.keys": ("os.urandom",), "iso_host.security.pin": ("secrets",)}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer_of(name: str) -> int | None:
    """The index of the layer whose longest prefix matches ``name``."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return best[0] if best else None


def package_of(name: str) -> str:
    """``iso_host.core.flows.sale`` -> ``iso_host.core.flows``; a top-level module is its own package."""
    parts = name.split(".")
    return ".".join(parts[:-1]) if len(parts) > 2 else name


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


def test_every_module_has_a_layer() -> None:
    """A new module or package gets a place in LAYERS; nothing is exempt by being left off a list."""
    unplaced = [name for name in (module_name(p) for p in MODULES) if name != "iso_host" and layer_of(name) is None]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_layer_imports_only_what_it_may(path: Path) -> None:
    """A module imports its own package and lower layers only."""
    name = module_name(path)
    own = layer_of(name)
    if own is None:
        return
    upward = sorted(
        target
        for target in imports_of(path)
        if target.startswith("iso_host.")
        and not target.startswith(package_of(name) + ".")
        and (layer := layer_of(target)) is not None
        and layer > own
    )
    assert not upward, f"{name} imports {upward}, a higher layer"


def io_of(path: Path) -> set[str]:
    """The I/O a module reaches for itself: modules of IO_IMPORTS, and calls such as ``os.urandom``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {i for i in imports_of(path) if i.split(".")[0] in IO_IMPORTS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if dotted in IO_CALLS:
                found.add(dotted)
    return found


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_the_core_does_no_io(path: Path) -> None:
    """Pure modules take time, randomness, threads, sockets and databases from the edge, never on their own."""
    name = module_name(path)
    if not within(name, PURE):
        return
    io = {item for item in io_of(path) if not item.startswith(RANDOMNESS.get(name, ("-",)))}
    assert not io, f"{name} uses {sorted(io)}; pass it in from the edge (server, app, cli, the stores)"


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
