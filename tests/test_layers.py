"""Imports point down the layer list of ARCHITECTURE.md (shared/design): a module may import its
own layer or any layer below it, never one above. Function-level imports count too (no dodging a
cycle by hiding the import), and so do ``TYPE_CHECKING`` imports (a type is a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

KRAKEN = Path(__file__).resolve().parent.parent / "kraken"

LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(names.split()) for names in (
    "__main__ cli app workers top clikit cli_commands mock private",  # argv, lifecycle, tools
    "admin privacy",                                   # admin API, GDPR
    "gateway",                                         # the lifecycle engine and its endpoints
    "policy",                                          # auth, limits, routing, breaker, health, classify
    "accounts billing audit",                          # through the store interface
    "providers",                                       # wire families
    "upstream http",                                   # client side | inbound transport (siblings)
    "meter telemetry",                                 # records, queue, journal, batch writer | trace spans
    "store",                                           # the store interface and its backends
    "config",                                          # TOML + env -> frozen dataclasses
    "errors metrics metrics_core logs timers shedding sdnotify h2common h1framing plainchunk __init__"
    " speedups _speedups buildinfo fdtable transportindex shutdown"
    " logwriter",                                      # leaves (_speedups: C)
))
"""Top to bottom, as in ARCHITECTURE.md's table; a name is kraken's top-level module or package."""

SIBLINGS_THAT_MUST_NOT_MEET = (frozenset({"upstream", "http"}),)
"""Same layer, and still no import either way: client side and server side share only leaves."""


def layer(top: str) -> int:
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"kraken.{top} is in no layer: add it to LAYERS (and ARCHITECTURE.md)")


def top_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(KRAKEN.rglob("*.py")):
        rel = path.relative_to(KRAKEN.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found.append((name if name != "kraken" else "kraken.__init__", path))
    return found


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kraken":
                names.update(f"kraken.{alias.name}" for alias in node.names)
            elif node.module.startswith("kraken."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("kraken."))
    return {n for n in names if n != "kraken.__version__"}


def violations() -> list[str]:
    found = []
    for module, path in modules():
        mine = top_of(module)
        for target in sorted(imported(path)):
            theirs = top_of(target)
            if theirs == mine:
                continue
            if layer(theirs) < layer(mine):
                found.append(f"{module} imports {target} (a layer above it)")
            elif frozenset({mine, theirs}) in SIBLINGS_THAT_MUST_NOT_MEET:
                found.append(f"{module} imports {target} (siblings that share only leaves)")
    return found


def test_every_import_points_down_the_layer_list():
    assert violations() == []


def test_every_module_has_a_layer():
    for module, _ in modules():
        layer(top_of(module))


@pytest.mark.parametrize("module,target,allowed", [
    ("kraken.gateway.pipeline", "kraken.store.sqlite", True),
    ("kraken.store.sqlite", "kraken.meter.writer", False),
    ("kraken.upstream.pool", "kraken.http.timers", False),
    ("kraken.config", "kraken.billing.pricing", False),
])
def test_the_rule_itself(module, target, allowed):
    mine, theirs = top_of(module), top_of(target)
    down = layer(theirs) >= layer(mine) and frozenset({mine, theirs}) not in SIBLINGS_THAT_MUST_NOT_MEET
    assert down is allowed
