"""The state location has one reading, whatever its source (``--state``, ``ALLIANCE_FHIR_STATE_DB``,
``[server] state_db``) and whichever command takes it: a SQLite file path, or a ``postgresql://``
(``postgres://``) URL. Anything else that looks like a URL, and empty text, is a configuration
error (exit 2) that names the accepted forms, creates nothing, and never repeats a password."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.errors import ConfigError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import load_config
from alliance_fhir.server.state import StateStore
from alliance_fhir.service import run as service_run

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()
PASSWORD = "pw-never-shown-4711"

BAD_LOCATIONS = [
    f"postgresq://u:{PASSWORD}@h/db",  # a misspelt scheme
    f"mysql://u:{PASSWORD}@h/db",
    f"POSTGRESQL://u:{PASSWORD}@h/db",  # libpq knows the lower-case schemes only
    f"postgresql:/u:{PASSWORD}@h/db",  # one slash short
    "sqlite:///state.sqlite",  # refused: a SQLite state is given as the file path itself
    "file:state.sqlite",
    f"state/{PASSWORD}://x",
    "",
    "   ",
]
# Every command that takes --state (the option, the environment and the file reach the same parser).
COMMANDS = [
    ["sync"],
    ["failures"],
    ["demo"],
    ["serve"],  # refused before anything is bound
    ["subscribe", "--endpoint", "http://127.0.0.1:1/hook"],
    ["backfill"],
]


@pytest.fixture(autouse=True)
def _clean(isolated_cli, monkeypatch):  # noqa: ANN001
    fake = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(fake), sleep=lambda s: None),
    )
    # were a bad location ever accepted, serve would end at once instead of serving forever
    monkeypatch.setattr(service_run, "run_service", lambda *args, **kwargs: False)


def _invoke(command: list[str], source: str, location: str, tmp_path: Path) -> tuple[int, str]:
    """Run ``command`` with the state location given by ``source``; exit code and all output."""
    args = [*command, "--server", BASE]
    env: dict[str, str] = {}
    if source == "option":
        args += ["--state", location]
    elif source == "environment":
        env["ALLIANCE_FHIR_STATE_DB"] = location
    else:
        config = tmp_path / "alliance-fhir.toml"
        config.write_text(f"[server]\nstate_db = {json.dumps(location)}\n")
        config.chmod(0o600)
        args += ["--config", str(config)]
    result = runner.invoke(app, args, env=env)
    return result.exit_code, result.stdout + result.stderr


def _assert_refused(code: int, output: str, tmp_path: Path) -> None:
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "SQLite file path" in output and "postgresql://" in output, output
    assert PASSWORD not in output
    assert list((tmp_path / "work").iterdir()) == []  # no ./postgresq:/... and no other file
    assert not (tmp_path / "data").exists()  # nor the default state file


@pytest.mark.parametrize("source", ["option", "environment", "config file"])
@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_a_state_location_that_is_neither_a_file_nor_postgresql_is_refused_and_creates_nothing(
    source, location, tmp_path
):
    code, output = _invoke(["failures"], source, location, tmp_path)
    _assert_refused(code, output, tmp_path)
    where = {"option": "option --state", "environment": "ALLIANCE_FHIR_STATE_DB", "config file": "[server] state_db"}
    assert where[source] in output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("source", ["option", "environment", "config file"])
def test_every_command_that_takes_a_state_reads_it_the_same_way(command, source, tmp_path):
    code, output = _invoke(command, source, f"mysql://u:{PASSWORD}@h/db", tmp_path)
    _assert_refused(code, output, tmp_path)


def test_a_postgresql_password_never_reaches_a_message(monkeypatch, tmp_path):
    """A PostgreSQL URL is accepted as such; when it cannot be opened, the message hides the password."""
    url = f"postgresql://alliance:{PASSWORD}@127.0.0.1:1/state?connect_timeout=2"
    code, output = _invoke(["failures"], "environment", url, tmp_path)
    assert code == 2 and "error: state database postgresql://alliance:***@127.0.0.1:1/state" in output, output
    assert PASSWORD not in output
    assert list((tmp_path / "work").iterdir()) == []
    code, output = _invoke(["failures"], "option", url, tmp_path)  # on the command line: refused before use
    assert code == 2 and "no password on the command line" in output and PASSWORD not in output


def test_file_paths_are_still_files(tmp_path):
    config = load_config(BASE, state_db="~/state.sqlite")
    assert config.state_location() == Path("~/state.sqlite").expanduser()
    assert load_config(BASE, state_db="./a:b.sqlite").state_location() == Path("a:b.sqlite")
    assert load_config(BASE).state_location() == tmp_path / "data" / "alliance-fhir" / "state.sqlite"
    assert load_config(BASE, state_db="postgres://u@h/db").state_location() == "postgres://u@h/db"


def test_the_library_store_reads_its_location_the_same_way(tmp_path):
    with pytest.raises(ConfigError, match="URL scheme 'mysql:'") as info:
        StateStore(f"mysql://u:{PASSWORD}@h/db")
    assert PASSWORD not in str(info.value)
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_password_in_state_on_the_command_line(command, tmp_path):
    """``--state`` is checked where every command reads its settings, so none can pass a password on."""
    url = f"postgresql://alliance:{PASSWORD}@127.0.0.1:1/state"
    code, output = _invoke(command, "option", url, tmp_path)
    assert code == 2 and "no password on the command line" in output and PASSWORD not in output
    assert list((tmp_path / "work").iterdir()) == []
