"""A broken or hostile server never makes the client loop, wait for hours, or trust a wrong answer.

Regression tests for issue 11's findings 2-5, 7, 8 and 11 at the client level (the sync-level
consequences are in test_sync_faults.py).
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alliance_fhir.errors import ConfigError, FhirServerError, FhirTransportError, UnexpectedResponse
from alliance_fhir.fhirclient.auth import build_auth
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.fhirclient.config import AuthSettings
from alliance_fhir.server.settings import ServerConfig, load_config

BASE = "http://fhir.test/fhir"


def make_client(handler, sleeps: list[float] | None = None, **settings) -> FhirClient:  # noqa: ANN001, ANN003
    recorded = sleeps if sleeps is not None else []
    return FhirClient(ServerConfig(url=BASE, **settings), transport=httpx.MockTransport(handler), sleep=recorded.append)


def searchset(entries: int = 1, **extra) -> dict:  # noqa: ANN003
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": str(i)}, "search": {"mode": "match"}} for i in range(entries)
        ],
        **extra,
    }


# ---------------------------------------------------------------- finding 2: only searchset Bundles


@pytest.mark.parametrize(
    "body, reason",
    [
        (
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "db down"}]},
            "got 'OperationOutcome': error: db down",
        ),
        ({"resourceType": "Bundle", "type": "batch-response"}, "got Bundle of type 'batch-response'"),
        ({"resourceType": "Patient", "id": "1"}, "got 'Patient'"),
    ],
)
def test_a_search_answered_with_anything_but_a_searchset_is_an_error(body, reason):
    with make_client(lambda r: httpx.Response(200, json=body)) as client, pytest.raises(UnexpectedResponse) as caught:
        list(client.search("QuestionnaireResponse", {}))
    assert reason in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- finding 3: paging loops


def test_a_next_link_back_to_a_page_already_read_is_an_error_not_a_loop():
    requests: list[httpx.Request] = []

    def looping(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        page = 2 if "page=1" in str(request.url) else 1
        return httpx.Response(
            200, json=searchset(link=[{"relation": "next", "url": f"{BASE}/QuestionnaireResponse?page={page}"}])
        )

    with make_client(looping) as client, pytest.raises(UnexpectedResponse, match="paging loop"):
        list(client.search("QuestionnaireResponse", {}))
    assert len(requests) <= 4


def test_empty_pages_that_keep_pointing_on_are_an_error():
    counter = iter(range(10_000))

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=searchset(0, link=[{"relation": "next", "url": f"{BASE}/x?p={next(counter)}"}]))

    with make_client(endless) as client, pytest.raises(UnexpectedResponse, match="empty but keep pointing"):
        list(client.search("QuestionnaireResponse", {}))


def test_more_pages_than_the_total_allows_is_an_error():
    counter = iter(range(10_000))

    def endless(request: httpx.Request) -> httpx.Response:
        n = next(counter)
        return httpx.Response(
            200, json=searchset(1 if n == 0 else 0, total=1, link=[{"relation": "next", "url": f"{BASE}/x?p={n}"}])
        )

    with make_client(endless) as client, pytest.raises(UnexpectedResponse, match="after all 1 results"):
        list(client.search("QuestionnaireResponse", {}))


# ---------------------------------------------------------------- finding 7: malformed pages


@pytest.mark.parametrize(
    "page, reason",
    [
        (searchset(entry="x"), "entry is not a list"),
        (searchset(entry=[1, 2]), "entry is not a list of objects"),
        (searchset(link={"relation": "next"}), "link is not a list"),
        (searchset(total="many"), "total is not a count"),
        (searchset(meta={"lastUpdated": 7}), "meta.lastUpdated is not an instant"),
        (searchset(meta="x"), "meta.lastUpdated is not an instant"),
        (searchset(link=[{"relation": "next", "url": 12}]), "next link is not an http(s) URL"),
        (searchset(link=[{"relation": "next", "url": "ftp://elsewhere/x"}]), "next link is not an http(s) URL"),
        (searchset(entry=[{"resource": "text"}]), "resource is not an object"),
    ],
)
def test_malformed_pages_are_one_line_errors_naming_the_path(page, reason):
    with make_client(lambda r: httpx.Response(200, json=page)) as client, pytest.raises(UnexpectedResponse) as caught:
        list(client.search("QuestionnaireResponse", {"patient": "Patient/secret"}))
    message = str(caught.value)
    assert (
        reason in message
        and "/fhir/QuestionnaireResponse" in message
        and "secret" not in message
        and "\n" not in message
    )


def test_a_body_that_is_not_json_is_a_one_line_error():
    with (
        make_client(lambda r: httpx.Response(200, content=b"<html>")) as client,
        pytest.raises(FhirTransportError, match="not JSON"),
    ):
        list(client.search("QuestionnaireResponse", {}))


# ---------------------------------------------------------------- finding 4: the retry budget is a deadline


def test_a_retry_after_beyond_the_budget_fails_at_once_without_waiting():
    calls: list[httpx.Request] = []
    sleeps: list[float] = []

    def throttled(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "999999"})

    with make_client(throttled, sleeps, retry_after_cap=999999) as client, pytest.raises(FhirServerError) as caught:
        client.read("Patient", "1")
    assert len(calls) == 1 and sleeps == []
    assert "beyond the retry budget of 300 s" in str(caught.value)


@pytest.mark.parametrize("retry_after", ["100", "119", "1", None])
def test_the_waits_of_one_request_never_add_up_past_the_budget(retry_after):
    sleeps: list[float] = []
    headers = {"Retry-After": retry_after} if retry_after else {}
    with make_client(
        lambda r: httpx.Response(503, headers=headers), sleeps, max_retry_seconds=250, max_attempts=20
    ) as client:
        with pytest.raises(FhirServerError, match="HTTP 503"):
            client.read("Patient", "1")
    assert sum(sleeps) <= 250


def test_a_permanent_client_error_is_not_retried():
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            400, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "bad"}]}
        )

    with make_client(refuse) as client, pytest.raises(FhirServerError, match="HTTP 400"):
        client.read("Patient", "1")
    assert len(calls) == 1


def test_408_is_transient():
    answers = iter([httpx.Response(408), httpx.Response(200, json={"resourceType": "Patient", "id": "1"})])
    with make_client(lambda r: next(answers)) as client:
        assert client.read("Patient", "1")["id"] == "1"


# ---------------------------------------------------------------- finding 5: bounded bodies and time


def test_a_body_over_the_limit_is_refused():
    big = {"resourceType": "Patient", "id": "1", "text": "x" * 5000}
    with make_client(lambda r: httpx.Response(200, json=big), max_response_bytes=4096) as client:
        with pytest.raises(UnexpectedResponse, match="larger than the limit of 4096 bytes"):
            client.read("Patient", "1")


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    def huge(request: httpx.Request) -> httpx.Response:
        def never_read() -> Iterator[bytes]:
            raise AssertionError("the body must not be read")
            yield b""

        return httpx.Response(200, headers={"Content-Length": str(2 * 1024**3)}, content=never_read())

    with make_client(huge) as client, pytest.raises(UnexpectedResponse, match="larger than the limit"):
        client.read("Patient", "1")


def test_a_gzip_bomb_is_stopped_at_the_decompressed_limit():
    bomb = gzip.compress(b"{" + b" " * (200 * 1024 * 1024) + b"}")  # 200 MiB of JSON whitespace in ~200 KB

    def bombing(request: httpx.Request) -> httpx.Response:
        chunks = (bomb[i : i + 65536] for i in range(0, len(bomb), 65536))
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=chunks)

    with (
        make_client(bombing, max_response_bytes=1024 * 1024) as client,
        pytest.raises(UnexpectedResponse, match="larger than the limit"),
    ):
        client.read("Patient", "1")


def test_gzip_bodies_within_the_limit_are_decoded():
    body = gzip.compress(json.dumps({"resourceType": "Patient", "id": "7"}).encode())
    with make_client(
        lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=iter([body]))
    ) as client:
        assert client.read("Patient", "7")["id"] == "7"


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Headers at once, then one byte of body every 0.3 s (far inside any per-read timeout)."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def _read_from(handler: type[http.server.BaseHTTPRequestHandler], *, retry_seconds: float, attempts: int) -> float:
    """Read one resource from a loopback server run by ``handler`` (deadline 1.5 s): the
    transport error it must end in, and the seconds it took."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        config = ServerConfig(
            url=f"http://127.0.0.1:{httpd.server_address[1]}/fhir",
            timeout=30,
            request_deadline=1.5,
            max_retry_seconds=retry_seconds,
            max_attempts=attempts,
        )
        started = time.monotonic()
        with FhirClient(config) as client, pytest.raises(FhirTransportError, match="timed out"):
            client.read("Patient", "1")
        return time.monotonic() - started
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_trickling_its_body_is_cut_off_at_the_request_deadline():
    # two attempts of 1.5 s, within the 4 s budget
    assert _read_from(_Trickle, retry_seconds=4, attempts=2) < 5


class _TrickleHeaders(http.server.BaseHTTPRequestHandler):
    """The status line and headers one byte every 0.3 s: never a per-read timeout, never an end."""

    def do_GET(self) -> None:  # noqa: N802
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_trickling_its_headers_is_cut_off_at_the_request_deadline():
    assert _read_from(_TrickleHeaders, retry_seconds=2, attempts=1) < 3


# ---------------------------------------------------------------- finding 8: bad URLs fail at once


@pytest.mark.parametrize("url", ["fhir.example.org/fhir", "ftp://fhir.example.org/fhir", "http:///fhir"])
def test_a_url_without_http_scheme_or_host_is_a_config_error(url):
    with pytest.raises(ConfigError, match="server URL"):
        load_config(url)


# ---------------------------------------------------------------- finding 11: credentials


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as caught:
        load_config("https://alice:s3cr3t-pw@ehr.example.org/fhir")
    assert "credentials" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value) and "alice" not in str(caught.value)


def _rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


_PEM = _rsa_pem()  # a real key: the key is loaded and checked when the auth is built


def _smart(token_url: str | None = None, **extra) -> AuthSettings:  # noqa: ANN003
    return AuthSettings(kind="smart", client_id="c", private_key=_PEM, token_url=token_url, **extra)


def _discovering(token_endpoint: str) -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"token_endpoint": token_endpoint}))
    )


@pytest.mark.parametrize(
    "endpoint, reason",
    [
        ("http://ehr.example.org/token", "must use https"),
        ("https://evil.example.net/token", "'evil.example.net' is not allowed"),
    ],
)
def test_a_discovered_token_endpoint_must_be_https_on_an_allowed_host(endpoint, reason):
    with pytest.raises(ConfigError, match=reason):
        build_auth(_smart(), "https://ehr.example.org/fhir", _discovering(endpoint))


def test_token_hosts_and_loopback_are_allowed():
    assert (
        build_auth(
            _smart(token_hosts=["login.example.org"]),
            "https://ehr.example.org/fhir",
            _discovering("https://login.example.org/oauth/token"),
        )
        is not None
    )
    assert build_auth(_smart(), "http://127.0.0.1:9/fhir", _discovering("http://127.0.0.1:9/token")) is not None


# ---------------------------------------------------------------- issue 23, case 5: paging ends by what the run can prove


def _paging(pages: list[httpx.Request], *, entries: int = 1, total: int | None = None, stop_after: int = 300):
    """A server sending a fresh next link with every page. ``stop_after``: today's code would follow
    it for ever, so the fake ends after that many pages to let such a test fail instead of hang."""

    def handler(request: httpx.Request) -> httpx.Response:
        pages.append(request)
        link = [] if len(pages) >= stop_after else [{"relation": "next", "url": f"{BASE}/x?page={len(pages)}"}]
        extra = {"total": total} if total is not None else {}
        return httpx.Response(200, json=searchset(entries, link=link, **extra))

    return handler


def test_fresh_next_links_without_a_total_stop_at_max_pages_with_one_line_naming_the_server():
    pages: list[httpx.Request] = []
    with make_client(_paging(pages), max_pages=50) as client, pytest.raises(UnexpectedResponse) as caught:
        list(client.search("QuestionnaireResponse", {"_count": "1", "subject": "Patient/secret"}))
    message = str(caught.value)
    assert len(pages) == 50
    assert "max_pages (50)" in message and "http://fhir.test/fhir/QuestionnaireResponse" in message
    assert "\n" not in message and "secret" not in message


def test_max_pages_defaults_to_10000_and_is_configurable(monkeypatch):
    assert ServerConfig(url=BASE).max_pages == 10_000
    monkeypatch.setenv("ALLIANCE_FHIR_MAX_PAGES", "25")
    assert load_config(BASE).max_pages == 25
    with pytest.raises(ConfigError, match="max_pages"):
        load_config(BASE, max_pages=0)


def test_a_page_with_more_results_than_the_count_asked_for_is_an_error():
    with make_client(lambda r: httpx.Response(200, json=searchset(3))) as client:
        with pytest.raises(UnexpectedResponse, match="holds 3 results, more than the 2 asked for"):
            list(client.search("QuestionnaireResponse", {"_count": "2"}))


def test_results_written_while_paging_beyond_the_total_are_read_not_refused():
    """HAPI counts the total when a search starts and pages on through what was written meanwhile."""
    pages: list[httpx.Request] = []
    with make_client(_paging(pages, total=2, stop_after=3)) as client:
        assert len(list(client.search("QuestionnaireResponse", {"_count": "1"}))) == 3


def test_a_server_that_pages_fewer_than_asked_is_followed_to_the_end():
    """A server may lower the page size (HAPI caps it): short non-final pages are not an error."""
    pages: list[httpx.Request] = []
    with make_client(_paging(pages, total=7, stop_after=7)) as client:
        assert len(list(client.search("QuestionnaireResponse", {"_count": "200"}))) == 7


# ---------------------------------------------------------------- issue 23, case 15: only 2xx is an answer


REDIRECTS = [301, 302, 303, 307, 308]


def _redirect(status: int, body: dict) -> httpx.Response:  # type: ignore[type-arg]
    return httpx.Response(status, headers={"Location": "https://elsewhere.example/fhir/x?patient=secret"}, json=body)


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_redirect_answering_a_search_is_not_its_result(status):
    with make_client(lambda r: _redirect(status, searchset(2, total=2))) as client:
        with pytest.raises(UnexpectedResponse) as caught:
            list(client.search("QuestionnaireResponse", {}))
    message = str(caught.value)
    assert f"HTTP {status}" in message and "redirects are not followed" in message
    assert "https://elsewhere.example" in message and "secret" not in message and "\n" not in message


OPERATIONS = {
    "read": lambda c: c.read("Patient", "1"),
    "metadata": lambda c: c.r4_capabilities(),
    "conditional update": lambda c: c.conditional_update("Observation", {"identifier": "s|v"}, {"resourceType": "x"}),
    "transaction": lambda c: c.transaction({"resourceType": "Bundle", "type": "transaction"}, idempotent=True),
    "delete": lambda c: c.request("DELETE", "Observation/1"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("status", [302, 307])
def test_every_request_path_refuses_a_redirect(operation, status):
    body = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "id": "1"}
    with make_client(lambda r: _redirect(status, body)) as client, pytest.raises(UnexpectedResponse, match="redirect"):
        OPERATIONS[operation](client)


# ---------------------------------------------------------------- issue 23, case 18: every element of a searchset


_MATCH = {"resource": {"resourceType": "Patient", "id": "1"}, "search": {"mode": "match"}}
MALFORMED: dict[str, dict[str, Any]] = {
    "entry not a list": {"entry": "x"},
    "entry an object": {"entry": {"a": 1}},
    "entry of numbers": {"entry": [1]},
    "entry of strings": {"entry": ["garbage"]},
    "entry without a resource": {"entry": [{"search": {"mode": "match"}}]},
    "entry resource a string": {"entry": [{"resource": "text"}]},
    "entry resource a list": {"entry": [{"resource": [1]}]},
    "entry fullUrl a number": {"entry": [{**_MATCH, "fullUrl": 5}]},
    "entry search a string": {"entry": [{**_MATCH, "search": "match"}]},
    "entry search.mode unknown": {"entry": [{**_MATCH, "search": {"mode": "bogus"}}]},
    "entry search.mode a number": {"entry": [{**_MATCH, "search": {"mode": 1}}]},
    "link of strings": {"link": ["garbage"]},
    "link of numbers": {"link": [1]},
    "link an object": {"link": {"a": 1}},
    "link a string": {"link": "x"},
    "link without a url": {"link": [{"relation": "next"}]},
    "link without a relation": {"link": [{"url": f"{BASE}/x"}]},
    "link relation a number": {"link": [{"relation": 5, "url": f"{BASE}/x"}]},
    "self link url a number": {"link": [{"relation": "self", "url": 5}]},
    "next link url a list": {"link": [{"relation": "next", "url": [f"{BASE}/x"]}]},
    "total a string": {"total": "many"},
    "total negative": {"total": -1},
    "total a boolean": {"total": True},
    "total a fraction": {"total": 1.5},
    "meta a string": {"meta": "x"},
    "meta a list": {"meta": []},
    "meta.lastUpdated a number": {"meta": {"lastUpdated": 7}},
}


@pytest.mark.parametrize("variant", list(MALFORMED))
def test_every_searchset_element_is_checked_for_its_type(variant):
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [_MATCH], **MALFORMED[variant]}
    with make_client(lambda r: httpx.Response(200, json=page)) as client, pytest.raises(UnexpectedResponse) as caught:
        list(client.search("QuestionnaireResponse", {"patient": "Patient/secret"}))
    message = str(caught.value)
    assert "http://fhir.test/fhir/QuestionnaireResponse" in message
    assert "\n" not in message and "secret" not in message and "garbage" not in message


def test_a_well_formed_searchset_with_every_element_passes():
    page = searchset(
        1,
        total=1,
        meta={"lastUpdated": "2026-11-01T00:00:00Z"},
        link=[{"relation": "self", "url": f"{BASE}/QuestionnaireResponse"}],
    )
    page["entry"].append(
        {"fullUrl": f"{BASE}/Patient/9", "resource": {"resourceType": "Patient"}, "search": {"mode": "include"}}
    )
    with make_client(lambda r: httpx.Response(200, json=page)) as client:
        assert [r["id"] for r in client.search("QuestionnaireResponse", {})] == ["0"]
