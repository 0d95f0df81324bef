"""House rules that a test can hold: one-way imports, an explicit public API, one error tree.

The package is layered and the folder shows it::

    base (errors, _ids, _cache, _json, _refs, _text, _time, _version, _security, _config_file, fhirtypes)
      -> instruments -> {scoring, content, signals} -> fhirclient -> server -> service -> cli
                        scoring -> spark (an adapter, pyspark imported lazily)

``fhirclient`` is the transport (HTTP to a FHIR server: settings, auth, retries, Bulk Data);
``server`` the jobs and their state (sync, backfill, signals, publish); ``service`` the
long-running ``serve`` (webhook, CDS Hooks); ``cli`` the commands.

A subpackage may import only the layers in its entry of ``MAY_IMPORT``; siblings never import
each other's code. Relative imports of any depth and absolute ``alliance_fhir...`` imports count.
The HTTP and retry libraries are the transport's alone (``ONLY_IN``): a job that needs the network
goes through ``fhirclient``, so a second server is a second client and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import alliance_fhir
from alliance_fhir import errors

PACKAGE = Path(alliance_fhir.__file__).parent
BASE = {
    "errors",
    "_ids",
    "_cache",
    "_json",
    "_refs",
    "_text",
    "_time",
    "_version",
    "_security",
    "_config_file",
    "_closing",
    "fhirtypes",
}
# Which top-level parts of the package each part may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "_ids": set(),
    "_cache": set(),
    "_json": set(),
    "_refs": set(),
    "_text": set(),
    "_time": set(),
    "_version": set(),
    "_closing": set(),
    "_security": {"errors", "_ids", "_json"},
    "_config_file": {"errors"},  # the config file read once; each layer validates its own table
    "fhirtypes": {"errors"},
    "instruments": BASE,
    "scoring": BASE | {"instruments"},
    "content": BASE | {"instruments"},
    "signals": BASE | {"instruments"},
    "spark": BASE | {"instruments", "scoring"},  # an adapter over scoring (pyspark imported lazily)
    "fhirclient": BASE,  # the transport knows nothing of instruments, scores or state
    "server": BASE | {"instruments", "scoring", "content", "signals", "fhirclient"},
    "service": BASE | {"instruments", "scoring", "content", "signals", "fhirclient", "server"},
    "cli": BASE | {"instruments", "scoring", "content", "signals", "fhirclient", "server", "service", "__init__"},
}
# Third-party libraries only some parts may import: which parts (a subpackage, or one module by its path).
# PyJWT signs the SMART Backend Services assertion (fhirclient/auth.py); the CDS service also verifies
# the JWT each CDS client sends and mints the demo client's, which is CDS Hooks, not FHIR transport.
ONLY_IN: dict[str, set[str]] = {
    "httpx": {"fhirclient"},
    "httpcore": {"fhirclient"},
    "tenacity": {"fhirclient"},
    "jwt": {"fhirclient", "service/cds_auth.py", "service/cds_demo.py"},
}


def part_of(path: Path) -> str:
    """The top-level part (subpackage or base module) a source file belongs to."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _absolute_target(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "alliance_fhir":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(source: str, path: Path) -> set[str]:
    """Top-level parts of ``alliance_fhir`` that ``source`` (the text of ``path``) imports."""
    package_parts = list(path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {t for alias in node.names if (t := _absolute_target(alias.name))}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            target = _absolute_target(node.module)
            if target == "__init__":
                found |= {
                    alias.name
                    for alias in node.names
                    if (PACKAGE / alias.name).exists() or (PACKAGE / f"{alias.name}.py").exists()
                } or {"__init__"}
            elif target:
                found.add(target)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package_parts[: len(package_parts) - (node.level - 1)]
            dotted = base + (node.module.split(".") if node.module else [])
            if dotted:
                found.add(dotted[0])
            else:
                found |= {
                    alias.name
                    if (PACKAGE / alias.name).exists() or (PACKAGE / f"{alias.name}.py").exists()
                    else "__init__"
                    for alias in node.names
                }
    return found


def package_sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and p != PACKAGE / "__init__.py"]


def layer_violations(path: Path, source: str) -> set[str]:
    part = part_of(path)
    allowed = MAY_IMPORT[part] | {part}
    return {t for t in imports_of(source, path) - allowed}


def test_every_part_of_the_package_is_placed_in_the_layer_map():
    unplaced = {part_of(p) for p in package_sources()} - set(MAY_IMPORT)
    assert not unplaced, f"not in the layer map: {unplaced}"


def test_imports_follow_the_layer_map():
    for path in package_sources():
        assert not layer_violations(path, path.read_text()), (
            f"{path.relative_to(PACKAGE)} imports {layer_violations(path, path.read_text())}"
        )


def test_the_layer_check_sees_absolute_and_deep_relative_imports():
    """A test of the test: both spellings of a forbidden import are caught."""
    engine = PACKAGE / "scoring" / "engine.py"
    assert layer_violations(engine, "from alliance_fhir.server.sync import run_sync\n") == {"server"}
    assert layer_violations(engine, "import alliance_fhir.cli.server\n") == {"cli"}
    assert layer_violations(engine, "from alliance_fhir import server\n") == {"server"}
    assert layer_violations(engine, "def f():\n    from ..server import sync\n") == {"server"}
    assert layer_violations(engine, "from ..instruments.catalog import Catalog\nfrom .inputs import Record\n") == set()


def third_party_imports(source: str) -> set[str]:
    """Top-level names of the libraries that ``source`` imports (at any depth: lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def library_violations(path: Path, source: str) -> set[str]:
    """The libraries of ``ONLY_IN`` that ``path`` imports although neither its part nor the file is listed."""
    where = {part_of(path), path.relative_to(PACKAGE).as_posix()}
    return {lib for lib in third_party_imports(source) & set(ONLY_IN) if not ONLY_IN[lib] & where}


def test_only_the_transport_imports_httpx_httpcore_tenacity_and_the_signing_library():
    for path in package_sources():
        assert not library_violations(path, path.read_text()), (
            f"{path.relative_to(PACKAGE)} imports {library_violations(path, path.read_text())}"
        )


def test_the_library_check_sees_every_spelling():
    """A test of the test: plain, dotted, from- and lazy imports are caught; the transport may."""
    sync = PACKAGE / "server" / "sync.py"
    assert library_violations(sync, "import httpx\n") == {"httpx"}
    assert library_violations(sync, "from httpcore import ConnectError\n") == {"httpcore"}
    assert library_violations(sync, "def f():\n    import tenacity.stop\n") == {"tenacity"}
    assert library_violations(sync, "from jwt.algorithms import ECAlgorithm\n") == {"jwt"}
    assert library_violations(PACKAGE / "service" / "cds.py", "import jwt\n") == {"jwt"}
    assert library_violations(PACKAGE / "service" / "cds_auth.py", "import jwt\n") == set()
    assert library_violations(PACKAGE / "fhirclient" / "client.py", "import httpx\nimport tenacity\n") == set()
    assert library_violations(sync, "from .._json import loads\nimport orjson\n") == set()


def test_public_api_is_exactly_all():
    public = {
        name
        for name, value in ((name, getattr(alliance_fhir, name)) for name in dir(alliance_fhir))
        if not name.startswith("_") and not isinstance(value, ModuleType)
    } - {"annotations", "version", "PackageNotFoundError"}
    assert public == set(alliance_fhir.__all__) - {"__version__"}


def test_every_error_is_an_alliance_fhir_error_with_a_docstring():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.AllianceFhirError)
        assert cls.__doc__ and cls.__doc__.strip()


def private_imports(source: str) -> set[str]:
    """Underscore names that ``source`` imports from another module of the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("alliance_fhir")):
            found |= {a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")}
    return found


def test_no_module_imports_another_modules_private_names():
    """Shared helpers live in a ``_``-module with public names (e.g. ``cli/_common.py``), never as
    ``_names`` borrowed across modules."""
    for path in package_sources():
        assert not private_imports(path.read_text()), (
            f"{path.relative_to(PACKAGE)} imports {private_imports(path.read_text())}"
        )


def test_the_private_name_check_sees_both_spellings():
    assert private_imports("from .server import _catalog, err\n") == {"_catalog"}
    assert private_imports("from alliance_fhir.cli.server import _fatal\n") == {"_fatal"}
    assert private_imports("from ._common import err\nfrom os import _exit\n") == set()
