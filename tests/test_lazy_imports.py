"""Offline work never loads the transport: ``score`` and ``import alliance_fhir`` leave httpx
unimported (it cost 6 % of a 50,000-response ``score`` run), and the server names load on first use.

Each case runs a fresh interpreter: in this process httpx is long imported by other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import alliance_fhir
from alliance_fhir.cli.main import SERVER_COMMANDS, load_server_commands

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wai-sr" / "complete.json"
TRANSPORT = ("httpx", "httpcore")


def imported_modules(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reports importing (the last column of its lines)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def transport_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in TRANSPORT}


def test_score_runs_without_importing_the_transport():
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "alliance_fhir", "score", str(EXAMPLE), "--format", "ndjson"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[0])["resourceType"] == "Observation"
    modules = imported_modules(run.stderr)
    assert "alliance_fhir.scoring.engine" in modules  # the report is read as it should be
    assert transport_modules(modules) == set()


def test_the_package_loads_a_server_name_on_first_use():
    probe = (
        "import sys\n"
        "import alliance_fhir\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore'))\n"
        "client = alliance_fhir.FhirClient\n"
        "print(before, 'httpx' in sys.modules, client.__module__)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == ["[]", "True", "alliance_fhir.fhirclient.client"]


def test_every_lazy_public_name_is_in_all_and_resolves():
    lazy = alliance_fhir._LAZY
    assert set(lazy) <= set(alliance_fhir.__all__)
    for name in lazy:
        assert getattr(alliance_fhir, name).__name__ == name


def test_an_unknown_name_is_an_attribute_error():
    unknown = "Nope"  # by name: type checkers (rightly) see no module __getattr__ to allow it
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(alliance_fhir, unknown)


@pytest.mark.parametrize("module", list(SERVER_COMMANDS))
def test_the_lazy_command_table_names_exactly_what_each_module_registers(module):
    assert tuple(load_server_commands(module)) == SERVER_COMMANDS[module]
