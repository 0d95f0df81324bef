"""House rules that a test can hold: one-way imports, an explicit public API, one error tree."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import alliance_fhir
from alliance_fhir import errors

PACKAGE = Path(alliance_fhir.__file__).parent
# Left to right: a module may import only modules earlier in this list.
ORDER = [
    "errors", "fhirtypes", "models", "catalog", "content", "package", "scoring", "observations",
    "trajectory", "signals", "signal_resources", "report",
    "inputs", "offline",
    "_retry", "config", "auth", "client", "state", "publish", "sync", "demo",
    "signal_sync", "cli_server", "cli_signals", "cli",
]


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {alias.name for alias in node.names}
    return found


def test_every_module_is_placed_in_the_dependency_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(ORDER)


def test_imports_only_point_left():
    for position, module in enumerate(ORDER):
        allowed = set(ORDER[:position]) | ({"__version__"} if module == "cli" else set())
        assert imports_of(module) <= allowed, f"{module} imports {imports_of(module) - allowed}"


def test_public_api_is_exactly_all():
    public = {
        name for name, value in vars(alliance_fhir).items() if not name.startswith("_") and not isinstance(value, ModuleType)
    } - {"annotations", "version", "PackageNotFoundError"}
    assert public == set(alliance_fhir.__all__) - {"__version__"}


def test_every_error_is_an_alliance_fhir_error_with_a_docstring():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.AllianceFhirError)
        assert cls.__doc__ and cls.__doc__.strip()
