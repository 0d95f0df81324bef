"""What sync accepts from a server (issue 23, cases 5, 15, 16, 17): the run-level consequences.

A redirect, endless paging, resources of other types and ids that are not FHIR ids are played by
the in-memory fake server; the client-level rules are in tests/fhirclient/test_hostile_server.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from alliance_fhir.errors import UnexpectedResponse
from alliance_fhir.server.sync import SyncOptions, process_responses, process_stream, run_sync

from ..conftest import all_items
from ..fake_fhir import BASE
from .test_sync_faults import Harness, always, is_qr_search, post, store  # noqa: F401 (store: a fixture)


def _with_entries(h: Harness, *extra: dict[str, Any]):  # noqa: ANN202
    """The QR search answers as usual, plus ``extra`` entries (and a total that counts them)."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = h.fake.serve(request).json()
        body["entry"] += list(extra)
        body["total"] = body.get("total", 0) + sum(1 for e in extra if e.get("search", {}).get("mode") == "match")
        return httpx.Response(200, json=body)

    return always(is_qr_search, answer)


def _match(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "search": {"mode": "match"}}


# ---------------------------------------------------------------- case 5: endless paging


def test_a_server_paging_for_ever_stops_the_sync_and_keeps_the_checkpoint(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    assert h.sync().ok
    checkpoint = store.checkpoint(BASE)
    pages = [0]

    def endless(request: httpx.Request) -> httpx.Response:
        """One real result a page, no total, a fresh next link each time (ending after 500 for today's code)."""
        pages[0] += 1
        body = h.fake.serve(request).json()
        del body["total"]
        body["entry"] = body["entry"][:1]
        body["link"] = [{"relation": "next", "url": f"{BASE}/QuestionnaireResponse?p={pages[0]}"}][: pages[0] < 500]
        return httpx.Response(200, json=body)

    h.fake.faults.append(always(is_qr_search, endless))
    with h.client(max_pages=20) as client, pytest.raises(UnexpectedResponse) as caught:
        run_sync(client, catalog, store, SyncOptions())
    assert "max_pages (20)" in str(caught.value) and "http://fhir.test" in str(caught.value)
    assert pages[0] == 20 and store.checkpoint(BASE) == checkpoint


# ---------------------------------------------------------------- case 15: a redirect is not a result


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_with_a_searchset_body_is_not_read_as_the_search(store, catalog, make_response, status):  # noqa: F811
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)

    def redirect(request: httpx.Request) -> httpx.Response:
        body = h.fake.serve(request).json()  # a valid searchset with both responses
        return httpx.Response(status, headers={"Location": "https://elsewhere.example/fhir"}, json=body)

    h.fake.faults.append(always(is_qr_search, redirect))
    with pytest.raises(UnexpectedResponse, match=f"HTTP {status}"):
        h.sync()
    assert h.observations() == {} and store.checkpoint(BASE) is None


# ---------------------------------------------------------------- case 16: other resources are not skipped responses


def test_other_resources_in_the_search_are_one_warning_not_skipped(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    h.fake.faults.append(
        _with_entries(
            h,
            _match({"resourceType": "Patient", "id": "secret-pat-1", "name": [{"family": "Doe"}]}),
            _match({"resourceType": "Patient", "id": "secret-pat-2", "status": "completed"}),
            _match({"resourceType": "Observation", "id": "secret-obs", "status": "final"}),
        )
    )
    report = h.sync()
    assert (report.found, report.written, report.skipped, report.failed) == (2, 2, 0, 0)
    [warning] = report.warnings
    assert warning.resource == "QuestionnaireResponse search"
    assert warning.reason == "the server returned 2 Patient, 1 Observation (not QuestionnaireResponses): ignored"
    assert report.ok and store.checkpoint(BASE) is not None


def test_included_resources_are_ignored_and_a_search_outcome_is_relayed_once(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    post(h, make_response, 7)  # two pages of 5: the note comes with each page, it is said once
    note = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "processing", "diagnostics": "search\nslow"}],
    }
    h.fake.faults.append(
        _with_entries(
            h,
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
            {"resource": note, "search": {"mode": "outcome"}},
        )
    )
    report = h.sync()
    assert (report.found, report.written, report.skipped) == (7, 7, 0)
    assert [(w.resource, w.reason) for w in report.warnings] == [
        ("QuestionnaireResponse search", "the server notes (search.mode outcome): warning: search\\x0aslow")
    ]


def test_serves_re_read_path_warns_about_other_resources_too(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    good = h.fake.put(make_response("wai-sr", all_items(12, 3), rid="one"))
    with h.client() as client:
        report = process_responses(client, catalog, store, [good, {"resourceType": "Patient", "id": "one"}])
    assert (report.written, report.skipped) == (1, 0)
    assert [w.reason for w in report.warnings] == [
        "the server returned 1 Patient (not QuestionnaireResponses): ignored"
    ]


# ---------------------------------------------------------------- case 17: ids


BAD_IDS: dict[str, Any] = {
    "no id": None,
    "empty": "",
    "ten million characters": "a" * 10_000_000,
    "a newline": "qr\nerror: forged",
    "a slash": "qr/_history/1",
    "sixty-five characters": "a" * 65,
    "a number": 7,
}


def _without_checks(h: Harness, rid: Any, make_response) -> dict[str, Any]:  # noqa: ANN001
    response = make_response("wai-sr", all_items(12, 2), rid="placeholder")
    response["meta"] = {"versionId": "1", "lastUpdated": h.fake.stamp()}
    if rid is None:
        del response["id"]
    else:
        response["id"] = rid
    return response


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_a_response_whose_id_is_not_a_fhir_id_is_refused_in_one_line(store, catalog, make_response, case):  # noqa: F811
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    bad = _without_checks(h, BAD_IDS[case], make_response)
    h.fake.faults.append(_with_entries(h, _match(bad)))
    report = h.sync()
    assert (report.written, report.failed) == (2, 1)
    [failure] = report.failures
    line = f"{failure.resource}: {failure.reason}"
    assert "\n" not in line and len(line) < 400 and "refused, nothing written" in line
    assert len(h.observations()) == 2  # nothing written for it
    assert set(store.lookup(BASE, ["", "qr0", "qr1"])) == {"qr0", "qr1"}  # nothing in the ledger under ""
    assert store.checkpoint(BASE) is None and not report.ok  # read again next run; exit 1


def test_two_responses_without_id_do_not_collide_they_both_fail(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    a, b = (_without_checks(h, None, make_response) for _ in range(2))
    h.fake.faults.append(_with_entries(h, _match(a), _match(b)))
    report = h.sync()
    assert (report.written, report.failed) == (0, 2) and h.observations() == {}
    assert [f.resource for f in report.failures] == ["QuestionnaireResponse (no id)"] * 2


def test_serve_and_backfill_take_the_same_id_rule(store, catalog, make_response):  # noqa: F811
    h = Harness("transaction", store, catalog)
    good = h.fake.put(make_response("wai-sr", all_items(12, 3), rid="ok"))
    bad = _without_checks(h, "x/y", make_response)
    with h.client() as client:
        served = process_responses(client, catalog, store, [bad, good])
        streamed = process_stream(client, catalog, store, [[bad]])
    assert (served.written, served.failed) == (1, 1) and (streamed.failed, streamed.write_failures) == (1, 1)
    assert [f.resource for f in served.failures] == ["QuestionnaireResponse/x/y"]
    assert len(h.observations()) == 1
