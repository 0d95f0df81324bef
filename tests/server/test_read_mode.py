"""Which read mode a server gets (``check``'s "read mode" line) and how sync's options and config choose one."""

from __future__ import annotations

import httpx
import pytest

from alliance_fhir.errors import AuthError, ConfigError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.read_mode import ReadMode, chosen_read_mode, read_mode_finding
from alliance_fhir.server.settings import ServerConfig

from ..fake_fhir import BASE, CAPABILITIES, FakeFhir


def finding(server: FakeFhir, **settings: str) -> tuple[str, bool, str]:
    config = ServerConfig(url=BASE, **settings)
    with FhirClient(config, transport=httpx.MockTransport(server), sleep=lambda _s: None) as client:
        return read_mode_finding(client, config, client.r4_capabilities())


def refuse_server_wide(status: int):  # noqa: ANN201
    def fault(request: httpx.Request) -> httpx.Response | None:
        query = request.url.query.decode()
        if request.url.path.endswith("/QuestionnaireResponse") and "patient=" not in query:
            diagnostics = "QuestionnaireResponse search needs patient= or subject="
            issue = {"severity": "error", "code": "forbidden", "diagnostics": diagnostics}
            return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": [issue]})
        return None

    return fault


def with_group_export(statement: dict) -> dict:
    rest = dict(statement["rest"][0])
    rest["resource"] = [*rest["resource"], {"type": "Group", "operation": [{"name": "export", "definition": "x"}]}]
    return {**statement, "rest": [rest]}


def test_a_server_that_answers_the_server_wide_search_gets_it():
    server = FakeFhir()
    server.capabilities = CAPABILITIES
    name, ok, detail = finding(server)
    assert (name, ok) == ("read mode", True)
    assert detail.startswith("server-wide search")


def test_a_refused_server_wide_search_is_a_finding_that_says_per_patient_and_how():
    server = FakeFhir()
    server.capabilities = with_group_export(CAPABILITIES)
    server.faults.append(refuse_server_wide(403))
    name, ok, detail = finding(server)
    assert not ok
    assert detail.startswith("per patient (server-wide QuestionnaireResponse search refused: HTTP 403: ")
    assert "needs patient= or subject=" in detail
    assert "give --patients Group/ID" in detail and "--via-export Group/ID (Bulk Data Group $export offered)" in detail


def test_refused_credentials_still_stop_check():
    server = FakeFhir()
    server.faults.append(refuse_server_wide(401))
    with pytest.raises(AuthError):
        finding(server)


def test_a_configured_read_mode_is_reported_with_its_target():
    server = FakeFhir()
    server.faults.append(refuse_server_wide(403))
    assert finding(server, read_mode="patients", patients="Group/123") == (
        "read mode",
        True,
        'per patient of Group/123 (configured: [server] read_mode = "patients")',
    )
    _name, ok, detail = finding(server, read_mode="export", patients="Group/123")
    assert not ok and "no Group $export in the CapabilityStatement" in detail


def test_options_choose_the_read_mode_before_the_configuration():
    config = ServerConfig(url=BASE, read_mode="patients", patients="Group/1")
    assert chosen_read_mode(config, None, None) == ReadMode("patients", "Group/1")
    assert chosen_read_mode(config, None, "Group/2") == ReadMode("export", "Group/2")
    assert chosen_read_mode(ServerConfig(url=BASE), None, None) == ReadMode("search")
    with pytest.raises(ConfigError, match="exclude each other"):
        chosen_read_mode(config, "Group/1", "Group/2")
    with pytest.raises(ConfigError, match="needs \\[server\\] patients"):
        chosen_read_mode(ServerConfig(url=BASE, read_mode="export"), None, None)
