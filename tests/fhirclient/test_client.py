"""FhirClient and the retry policy, against MockTransport handlers (no network, no sleeping)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from alliance_fhir.errors import AuthError, Conflict, FhirServerError, FhirTransportError, NotFound, UnexpectedResponse
from alliance_fhir.fhirclient._retry import RetryPolicy, parse_retry_after
from alliance_fhir.fhirclient.client import FhirClient, safe_path
from alliance_fhir.server.settings import ServerConfig

BASE = "http://fhir.test/fhir"


def make_client(handler, sleeps: list[float] | None = None, **settings) -> FhirClient:  # noqa: ANN001, ANN003
    recorded = sleeps if sleeps is not None else []
    return FhirClient(ServerConfig(url=BASE, **settings), transport=httpx.MockTransport(handler), sleep=recorded.append)


def outcome(text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_retry_after_is_honoured_and_capped():
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "5"}),
            httpx.Response(429, headers={"Retry-After": "200"}),
            httpx.Response(200, json={"resourceType": "Patient", "id": "1"}),
        ]
    )
    sleeps: list[float] = []
    with make_client(lambda r: next(answers), sleeps, retry_after_cap=60) as client:
        assert client.read("Patient", "1")["id"] == "1"
    assert sleeps == [5.0, 60.0]


def test_backoff_without_retry_after_is_jittered_and_grows():
    answers = iter([httpx.Response(502)] * 4 + [httpx.Response(200)])
    waits: list[float] = []
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0, sleep=waits.append)
    assert policy.call(lambda _left: next(answers), "GET", "/x").status_code == 200
    assert len(waits) == 4
    assert all(0 <= w <= cap for w, cap in zip(waits, [1, 2, 4, 8], strict=True))


def test_attempts_are_bounded():
    calls = []

    def always_busy(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": "1"})

    with make_client(always_busy, max_attempts=3) as client, pytest.raises(FhirServerError, match="HTTP 503"):
        client.read("Patient", "1")
    assert len(calls) == 3


def test_connection_errors_and_timeouts_are_retried_for_idempotent_requests():
    answers = iter([httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(200, json={"id": "1"})])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    with make_client(handler) as client:
        assert client.read("Patient", "1") == {"id": "1"}


def test_plain_post_is_never_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    with make_client(handler) as client, pytest.raises(FhirServerError):
        client.request("POST", "Observation", json={"resourceType": "Observation"})
    assert len(calls) == 1


def test_idempotent_transaction_is_retried():
    answers = iter(
        [httpx.Response(504), httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})]
    )
    with make_client(lambda r: next(answers)) as client:
        assert client.transaction({"resourceType": "Bundle"}, idempotent=True)["type"] == "transaction-response"


def test_timeout_gives_a_transport_error():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with make_client(handler, max_attempts=2) as client, pytest.raises(FhirTransportError, match="timed out"):
        client.read("Patient", "1")


@pytest.mark.parametrize(
    "status, error",
    [
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (410, NotFound),
        (409, Conflict),
        (412, Conflict),
        (422, FhirServerError),
        (500, FhirServerError),
    ],
)
def test_error_statuses_map_to_our_errors_with_the_outcome(status, error):
    with make_client(lambda r: httpx.Response(status, json=outcome("nope"))) as client, pytest.raises(error) as info:
        client.read("Patient", "1")
    assert info.value.status == status and "nope" in str(info.value) and info.value.outcome is not None


def test_paging_follows_next_links_and_stays_on_our_origin():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "fhir.test"
        page = int(request.url.params.get("page", "1"))
        links = [{"relation": "next", "url": f"http://internal-hapi:8080/fhir?page={page + 1}"}] if page < 3 else []
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "searchset",
                "link": links,
                "entry": [
                    {"resource": {"id": f"{page}"}, "search": {"mode": "match"}},
                    {"resource": {"id": "inc"}, "search": {"mode": "include"}},
                ],
            },
        )

    with make_client(handler) as client:
        assert [r["id"] for r in client.search("QuestionnaireResponse", {})] == ["1", "2", "3"]


def test_non_json_answer_is_a_transport_error():
    with (
        make_client(lambda r: httpx.Response(200, text="<html>proxy</html>")) as client,
        pytest.raises(FhirTransportError),
    ):
        client.read("Patient", "1")


def test_log_lines_have_no_query_values(caplog):
    with make_client(lambda r: httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})) as client:
        with caplog.at_level(logging.INFO, logger="alliance_fhir.http"):
            client.request("GET", "QuestionnaireResponse", params={"subject": "Patient/jane-doe", "_count": "5"})
    [line] = [r.getMessage() for r in caplog.records]
    assert (
        "jane-doe" not in line
        and "subject=&_count=" in line
        and "GET http://fhir.test/fhir/QuestionnaireResponse" in line
    )


def test_safe_path():
    assert safe_path("http://x/fhir/Observation?identifier=a|b&_count=2") == "/fhir/Observation?identifier=&_count="


def test_searches_are_fresh_and_ask_for_an_accurate_total():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": 0, "link": []})

    with make_client(handler) as client:
        assert list(client.search("Observation", {"code": "x"})) == []
    assert seen[0].headers["Cache-Control"] == "no-cache" and seen[0].url.params["_total"] == "accurate"


def test_a_search_that_stops_short_of_its_total_is_an_error():
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 3,
        "link": [],
        "entry": [{"resource": {"id": "1"}, "search": {"mode": "match"}}],
    }
    with (
        make_client(lambda r: httpx.Response(200, json=page)) as client,
        pytest.raises(FhirServerError, match="ended after 1 of 3"),
    ):
        list(client.search("Observation", {}))


def test_error_lines_name_host_and_path_never_credentials():
    from alliance_fhir.fhirclient.client import safe_origin

    assert (
        safe_origin("https://alice:s3cret@ehr.example.org:8443/fhir/Observation?x=1") == "https://ehr.example.org:8443"
    )
    answer = lambda request: httpx.Response(500, json={"resourceType": "OperationOutcome", "issue": []})  # noqa: E731
    client = FhirClient(
        ServerConfig(url=BASE, max_attempts=1), transport=httpx.MockTransport(answer), sleep=lambda s: None
    )
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    assert str(info.value).startswith("GET http://fhir.test/fhir/Patient/p1: HTTP 500")


# ---------------------------------------------------------------- /metadata and a lookup in one batch

R4 = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
LOOKUP = {"url": "http://example.org/Questionnaire/q", "_count": "200"}


def searchset(*resources: dict, next_url: str | None = None) -> dict:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        "link": [{"relation": "next", "url": next_url}] if next_url else [],
    }
    return bundle


def batch_answer(*entries: dict) -> httpx.Response:
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "batch-response", "entry": list(entries)})


def test_metadata_and_a_lookup_travel_in_one_batch():
    seen: list[httpx.Request] = []
    q = {"resourceType": "Questionnaire", "id": "7", "url": LOOKUP["url"]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return batch_answer(
            {"response": {"status": "200 OK"}, "resource": R4},
            {"response": {"status": "200"}, "resource": searchset(q)},
        )

    with make_client(handler) as c:
        statement, found = c.r4_capabilities_and_search("Questionnaire", LOOKUP)
        assert statement == R4 and found == [q]
        assert c.r4_capabilities() == R4  # kept: no second /metadata
    assert len(seen) == 1 and seen[0].method == "POST"
    sent = json.loads(seen[0].content)
    assert sent["type"] == "batch"
    assert [e["request"]["url"] for e in sent["entry"]] == [
        "metadata",
        "Questionnaire?url=http://example.org/Questionnaire/q&_count=200",
    ]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(405, json=outcome("batch not supported")),
        httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}),
        batch_answer({"response": {"status": "404"}}, {"response": {"status": "200"}, "resource": searchset()}),
    ],
    ids=["batch refused", "wrong bundle type", "metadata entry failed"],
)
def test_a_server_without_the_batch_gets_plain_requests_and_the_r4_check(answer):
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        return answer if request.method == "POST" else httpx.Response(200, json=R4)

    with make_client(handler) as c:
        statement, found = c.r4_capabilities_and_search("Questionnaire", LOOKUP)
    assert statement == R4 and found is None  # the caller searches itself
    assert paths == ["POST /fhir", "GET /fhir/metadata"]


def test_a_lookup_with_more_pages_or_a_bad_page_is_left_to_the_caller():
    pages = [searchset(next_url="http://fhir.test/fhir?page=2"), {"resourceType": "OperationOutcome"}]
    for page in pages:
        handler = lambda _r, page=page: batch_answer(  # noqa: E731
            {"response": {"status": "200"}, "resource": R4}, {"response": {"status": "200"}, "resource": page}
        )
        with make_client(handler) as c:
            assert c.r4_capabilities_and_search("Questionnaire", LOOKUP) == (R4, None)


def test_an_r5_server_is_refused_from_the_batch_answer():
    r5 = {"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"}
    handler = lambda _r: batch_answer(  # noqa: E731
        {"response": {"status": "200"}, "resource": r5}, {"response": {"status": "200"}, "resource": searchset()}
    )
    with make_client(handler) as c, pytest.raises(UnexpectedResponse, match="5.0.0"):
        c.r4_capabilities_and_search("Questionnaire", LOOKUP)
