"""How each write answer is read: only what the server confirms counts as written."""

from __future__ import annotations

import httpx
import pytest

from alliance_fhir._ids import IDENTIFIER_SYSTEM
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.writes import PendingWrite, Writer

BASE = "http://fhir.test/fhir"


def writes(n: int) -> list[PendingWrite]:
    return [
        PendingWrite(
            f"r{i}",
            "1",
            f"id{i}",
            {"resourceType": "Observation", "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"id{i}"}]},
        )
        for i in range(n)
    ]


def write_with(mode: str, answer, n: int = 2) -> list[str | None]:  # noqa: ANN001
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(answer), sleep=lambda s: None)
    with client:
        return [reason for _, reason in Writer(client, mode).write(writes(n))]


def bundle(kind: str, *statuses: str, outcome: dict | None = None) -> httpx.Response:
    entries = [{"response": {"status": s, **({"outcome": outcome} if outcome else {})}} for s in statuses]
    return httpx.Response(200, json={"resourceType": "Bundle", "type": kind, "entry": entries})


def test_status_lines_with_reason_phrases_are_accepted():
    assert write_with("transaction", lambda r: bundle("transaction-response", "201 Created", "200 OK")) == [None, None]


def test_a_2xx_entry_carrying_an_error_outcome_is_not_written():
    error = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "kept nothing"}]}
    reasons = write_with("batch", lambda r: bundle("batch-response", "200", "200", outcome=error))
    assert all(r and "with an error: error: kept nothing" in r for r in reasons)


def test_the_answer_must_match_the_bundle_type_sent():
    reasons = write_with("batch", lambda r: bundle("transaction-response", "200", "200"))
    assert all(r and "expected a batch-response Bundle" in r for r in reasons)


@pytest.mark.parametrize("status", ["", "2", "abc", "299x", "404 Not Found", "500"])
def test_entries_without_a_2xx_status_line_fail(status):
    reasons = write_with("transaction", lambda r: bundle("transaction-response", "200", status))
    assert reasons[0] is None and reasons[1] is not None


def test_a_single_write_answered_with_another_observation_is_not_written():
    other = {"resourceType": "Observation", "identifier": [{"system": IDENTIFIER_SYSTEM, "value": "someone-else"}]}
    reasons = write_with("single", lambda r: httpx.Response(200, json=other), n=1)
    assert reasons[0] and "does not carry our identifier" in reasons[0]


def test_a_single_write_with_no_body_counts_on_its_status():  # Prefer: return=minimal servers
    assert write_with("single", lambda r: httpx.Response(201), n=1) == [None]


def test_a_single_write_answered_202_is_not_written():
    reasons = write_with("single", lambda r: httpx.Response(202), n=1)
    assert reasons[0] and "HTTP 202, expected 200 or 201" in reasons[0]
