"""The CLI's one error-to-exit handler: every library error a command lets through becomes one
``error:`` line on stderr and the README's exit code (1 an input failed, 2 set-up or server)."""

from __future__ import annotations

import json

import httpx
import pytest
import typer
from typer.testing import CliRunner

from alliance_fhir import errors
from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli._common import AllianceGroup, exit_code_for
from alliance_fhir.cli.main import app
from alliance_fhir.fhirclient.client import FhirClient

runner = CliRunner()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InputError("in.json", "not readable JSON"), 1),
        (errors.ScoringError("QuestionnaireResponse/1", "out of range", "3"), 1),
        (errors.TextPackError("pack.json: misses linkIds 3"), 1),
        (errors.FhirValidationError("Observation: invalid"), 1),
        (errors.InstrumentError("unknown instrument 'x'"), 2),
        (errors.ConfigError("no FHIR server"), 2),
        (errors.StateError("cannot open state"), 2),
        (errors.FhirTransportError("GET", "metadata", "ConnectError"), 2),
        (errors.AuthError("GET", "metadata", 401, None), 2),
        (errors.AllianceFhirError("cannot write the package"), 2),
    ],
)
def test_exit_code_by_error_class(error, code):
    assert exit_code_for(error) == code


def test_every_error_class_has_a_documented_code():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert any(c in cli_common.EXIT_CODES for c in cls.__mro__), name


def test_the_group_turns_a_library_error_into_one_line_and_its_code():
    demo = typer.Typer(cls=AllianceGroup)

    @demo.command()
    def fail(kind: str) -> None:
        raise (
            errors.InputError("bad.json", "not JSON")
            if kind == "input"
            else errors.ConfigError("no FHIR server configured")
        )

    @demo.command()
    def other() -> None:  # a second command, so that typer keeps the group
        raise typer.Exit(0)

    result = runner.invoke(demo, ["fail", "input"])
    assert result.exit_code == 1 and result.stderr == "error: bad.json: not JSON\n"
    result = runner.invoke(demo, ["fail", "config"])
    assert result.exit_code == 2 and result.stderr == "error: no FHIR server configured\n"


def test_demo_with_an_unreachable_server_is_one_line_and_exit_2(monkeypatch, tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(refuse), sleep=lambda s: None),
    )
    result = runner.invoke(app, ["demo", "--server", "http://127.0.0.1:9/fhir", "--state", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == result.stderr.splitlines()[-1:]


def test_sync_with_an_unusable_state_file_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(
        app, ["sync", "--server", "http://127.0.0.1:9/fhir", "--state", str(blocker / "state.sqlite")]
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_signals_from_an_unreadable_local_file_is_exit_1(tmp_path):
    bad = tmp_path / "obs.json"
    bad.write_text("{oops")
    result = runner.invoke(app, ["signals", str(bad)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "obs.json" in result.stderr


def test_instruments_list_json_still_parses():
    result = runner.invoke(app, ["instruments", "list", "--json"])
    assert result.exit_code == 0 and isinstance(json.loads(result.stdout), list)


def test_a_command_after_serve_in_the_same_process_logs_http_exchanges_as_its_own_options_say():
    """serve gives the HTTP logger a level of its own; the next command's --verbose must still show exchanges."""
    import logging

    http_log = logging.getLogger("alliance_fhir.http")
    try:
        http_log.setLevel(logging.WARNING)  # what serve without --verbose leaves behind
        cli_common.setup_logging(verbose=True)
        assert http_log.getEffectiveLevel() == logging.INFO
    finally:
        http_log.setLevel(logging.NOTSET)
