"""
The layering rules of C{docs/architecture.md}, checked on the source.

Every C{import} in every module of C{callapi/} (also those inside
functions) is read with L{ast}; each package may import only what its layer
allows, only the entry points touch the global reactor, and no module grows
past the size limit without saying why in its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "callapi"

#: Largest module, in lines, that needs no explanation in its docstring.
MAX_LINES = 600
#: What a longer module's docstring must say (followed by the reason).
LONG_MODULE_MARK = "This module is long because"

#: Layer -> callapi modules (prefixes) it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The OpenSIPS layer knows nothing of commands or the API doors.
    "callapi.opensips": (
        "callapi.scenarios",
        "callapi.rpc",
        "callapi.ws",
        "callapi.web",
        "callapi.tap",
        "callapi.core",
        "callapi.cli",
        "callapi.manhole",
        "callapi.demo",
        "callapi.emulator",
        "callapi.testing",
    ),
    # Commands know the OpenSIPS layer but not the doors that run them.
    "callapi.scenarios": (
        "callapi.rpc",
        "callapi.ws",
        "callapi.web",
        "callapi.tap",
        "callapi.core",
        "callapi.cli",
        "callapi.manhole",
        "callapi.demo",
        "callapi.emulator",
        "callapi.testing",
    ),
    # Pure modules: no reactor, no I/O layers.
    "callapi.errors": ("callapi.",),
    "callapi.jsonrpc": ("callapi.opensips", "callapi.scenarios", "callapi.rpc", "callapi.ws"),
    "callapi.validation": ("callapi.opensips", "callapi.scenarios", "callapi.rpc", "callapi.ws"),
    # The session logic does not know Autobahn's shell.
    "callapi.rpc": ("callapi.ws", "callapi.tap", "callapi.cli", "callapi.emulator", "callapi.testing"),
}

#: The emulator is a product of its own: of the daemon it uses only logging.
EMULATOR_ALLOWED = ("callapi.emulator", "callapi.logging")

#: Modules that may import the global reactor (program entry points).
REACTOR_ALLOWED = {
    "callapi.tap",
    "callapi.emulator.cli",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every module name C{module} imports (absolute and relative forms)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_layers(module: str, path: Path) -> None:
    """No module imports a layer above its own."""
    imported = _imports(module, path)
    for layer, forbidden in FORBIDDEN.items():
        if _under(module, layer):
            bad = sorted(n for n in imported for f in forbidden if _under(n, f))
            assert not bad, f"{module} ({layer} layer) must not import {bad}"
    if _under(module, "callapi.emulator"):
        bad = sorted(
            n for n in imported if _under(n, "callapi") and not any(_under(n, a) for a in EMULATOR_ALLOWED)
        )
        assert not bad, f"the emulator imports daemon modules: {bad}"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_only_entry_points_touch_the_global_reactor(module: str, path: Path) -> None:
    """Everything but the entry points receives its reactor or clock."""
    if module in REACTOR_ALLOWED:
        return
    imported = _imports(module, path)
    assert "twisted.internet.reactor" not in imported, (
        f"{module} imports the global reactor; take a reactor/clock argument instead"
    )


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_module_size(module: str, path: Path) -> None:
    """Small modules with one job; a long one says why in its docstring."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert LONG_MODULE_MARK in doc, (
        f"{module} has {lines} lines (> {MAX_LINES}); split it by concern or explain "
        f"in its docstring ({LONG_MODULE_MARK!r} ...)"
    )
