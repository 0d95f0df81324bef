"""Sync never reports what did not happen (issue 11): regression tests and the fault matrix.

Every fault is played by the in-memory fake server. The invariants, checked after each faulty
run: nothing the ledger (or the report) calls written is missing from the server; the
checkpoint did not move past work that did not land; no request waited past its budget; and
once the server behaves, the next run repairs everything, exactly one Observation per response.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import httpx
import pytest

from alliance_fhir._ids import IDENTIFIER_SYSTEM
from alliance_fhir.errors import FhirServerError, UnexpectedResponse
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, process_response, run_sync
from alliance_fhir.server.writes import choose_write_mode

from ..conftest import all_items
from ..fake_fhir import BASE, CAPABILITIES, FakeFhir

MODES = ["transaction", "batch", "single", "search"]
BUDGET = 300.0


def capabilities_for(mode: str) -> dict:
    """A CapabilityStatement advertising only what ``mode`` needs."""
    caps = copy.deepcopy(CAPABILITIES)
    rest = caps["rest"][0]
    rest["interaction"] = [{"code": mode}] if mode in ("transaction", "batch") else []
    rest["resource"][1] = {"type": "Observation", "conditionalUpdate": mode != "search"}
    return caps


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


class Harness:
    def __init__(self, mode: str, store: StateStore, catalog) -> None:  # noqa: ANN001
        self.mode, self.store, self.catalog = mode, store, catalog
        self.fake = FakeFhir()
        self.fake.capabilities = capabilities_for(mode)
        self.sleeps: list[float] = []

    def client(self, **settings) -> FhirClient:  # noqa: ANN003
        config = ServerConfig(
            url=BASE,
            page_size=settings.pop("page_size", 5),
            batch_size=settings.pop("batch_size", 3),
            concurrency=1,
            max_retry_seconds=BUDGET,
            **settings,
        )
        return FhirClient(config, transport=httpx.MockTransport(self.fake), sleep=self.sleeps.append)

    def sync(self, **options):  # noqa: ANN003, ANN201
        with self.client() as client:
            return run_sync(client, self.catalog, self.store, SyncOptions(**options))

    def observations(self) -> dict[str, dict]:
        return {
            i["value"]: o
            for o in self.fake.store["Observation"].values()
            for i in o.get("identifier", [])
            if i.get("system") == IDENTIFIER_SYSTEM
        }

    def assert_nothing_reported_that_is_not_there(self) -> None:
        present = self.observations()
        ids = list(self.fake.store["QuestionnaireResponse"])
        for entry in self.store.lookup(BASE, ids).values():
            if entry.outcome == "written":
                assert entry.observation_identifier in present, f"ledger says written, server lacks {entry.response_id}"

    def assert_repaired(self, n: int) -> None:
        report = self.sync()
        assert report.failed == 0 and report.outstanding == [], report.failures
        assert len(self.fake.store["Observation"]) == n  # exactly one Observation per response
        assert self.store.counts(BASE) == {"written": n}
        assert self.store.checkpoint(BASE) is not None


def post(h: Harness, make_response, n: int) -> None:  # noqa: ANN001
    for i in range(n):
        h.fake.put(make_response("wai-sr", all_items(12, 1 + i % 5), rid=f"qr{i}"))


def is_write(request: httpx.Request) -> bool:
    path = request.url.path.rstrip("/")
    if request.method == "POST" and path == "/fhir":  # a Bundle; only reads (metadata + a lookup) are not a write
        entries = json.loads(request.content).get("entry", [])
        return not all(e.get("request", {}).get("method") == "GET" for e in entries)
    return request.method in ("PUT", "POST") and "/Observation" in path and not path.endswith("/_search")


def is_qr_search(request: httpx.Request) -> bool:
    return request.method == "GET" and request.url.path.endswith("/QuestionnaireResponse")


def once(predicate, answer):  # noqa: ANN001, ANN201
    """A fault that answers the first matching request with ``answer(request)``."""
    left = [1]

    def fault(request: httpx.Request) -> httpx.Response | None:
        if left[0] and predicate(request):
            left[0] -= 1
            return answer(request)
        return None

    return fault


def always(predicate, answer):  # noqa: ANN001, ANN201
    return lambda request: answer(request) if predicate(request) else None


def outcome_200(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "lost"}]}
    )


# ---------------------------------------------------------------- the fault matrix (findings 1-8, every mode)


def _fewer_entries(h: Harness):  # noqa: ANN202
    """The write happens, but the answer accounts for fewer entries (or, one by one, for another resource)."""

    def answer(request: httpx.Request) -> httpx.Response:
        real = h.fake.serve(request)
        body = real.json()
        if body.get("resourceType") == "Bundle":
            body["entry"] = body["entry"][:-1]
        else:
            body = {"resourceType": "Patient", "id": "x"}
        return httpx.Response(200, json=body)

    return always(is_write, answer)


def _entry_refused(h: Harness):  # noqa: ANN202
    """A bundle answered 200 whose last entry says 500 and was not applied (one by one: a 500)."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        if sent.get("resourceType") == "Bundle":
            kept = {**sent, "entry": sent["entry"][:-1]}
            inner = httpx.Request("POST", request.url, json=kept)
            body = h.fake.serve(inner).json()
            body["entry"].append(
                {
                    "response": {
                        "status": "500 Internal Server Error",
                        "outcome": {
                            "resourceType": "OperationOutcome",
                            "issue": [{"severity": "error", "diagnostics": "disk full"}],
                        },
                    }
                }
            )
            return httpx.Response(200, json=body)
        return httpx.Response(
            500, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "disk full"}]}
        )

    return once(is_write, answer)


FAULTS = {
    "1 write answered 200 OperationOutcome": lambda h: always(is_write, outcome_200),
    "1 answer misses entries": _fewer_entries,
    "1 an entry says 5xx": _entry_refused,
    "2 search answered OperationOutcome": lambda h: always(is_qr_search, outcome_200),
    "3 next link loops": lambda h: always(
        lambda r: "_getpages" in str(r.url),
        lambda r: httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [],
                "link": [{"relation": "next", "url": f"{BASE}?_getpages=loop&_offset=0&_count=5"}],
            },
        ),
    ),
    "4 persistent 429 Retry-After 999999": lambda h: always(
        is_write, lambda r: httpx.Response(429, headers={"Retry-After": "999999"})
    ),
    "4 persistent 503 Retry-After 100": lambda h: always(
        is_write, lambda r: httpx.Response(503, headers={"Retry-After": "100"})
    ),
    "5 oversized answer": lambda h: always(
        is_write, lambda r: httpx.Response(200, json={"resourceType": "Bundle", "pad": "x" * 70_000})
    ),
    "6 searchset stamped 2099": lambda h: always(
        is_qr_search, lambda r: _stamped(h, r, "2099-01-01T00:00:00.000+00:00")
    ),
    "7 malformed page": lambda h: always(
        is_qr_search,
        lambda r: httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": {"oops": 1}}),
    ),
    "7 malformed meta": lambda h: always(
        is_qr_search, lambda r: httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "meta": ["x"]})
    ),
    "8 an R5 server": lambda h: always(
        lambda r: r.url.path.endswith("/metadata"),
        lambda r: httpx.Response(200, json={"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"}),
    ),
}


def _stamped(h: Harness, request: httpx.Request, stamp: str) -> httpx.Response:
    body = h.fake.serve(request).json()
    body["meta"] = {"lastUpdated": stamp}
    return httpx.Response(200, json=body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_matrix(mode, fault, store, catalog, make_response):
    h = Harness(mode, store, catalog)
    post(h, make_response, 7)  # two search pages, three write batches
    h.fake.faults.append(FAULTS[fault](h))
    started = time.monotonic()
    with h.client(max_response_bytes=65_536) as client:
        try:
            report = run_sync(client, catalog, store, SyncOptions())
        except FhirServerError as exc:  # a search/metadata fault stops the run: one line, nothing moved
            assert "\n" not in str(exc)
            report = None
    assert time.monotonic() - started < 10
    assert sum(h.sleeps) <= BUDGET  # one budget for the run: no split, no second wait after the server failed
    h.assert_nothing_reported_that_is_not_there()
    if report is not None:
        assert report.write_mode == mode  # chosen from a server advertising only that
        assert report.written <= len(h.observations())
        if report.failed or fault.startswith("6"):
            assert store.checkpoint(BASE) is None, "the checkpoint moved past work that did not land"
        assert report.ok is (report.failed == 0 and not report.outstanding)
    else:
        assert store.checkpoint(BASE) is None
    h.fake.faults.clear()
    h.assert_repaired(7)


# ---------------------------------------------------------------- findings, one by one


@pytest.mark.parametrize("mode", MODES)
def test_finding_1_only_entries_that_landed_count(mode, store, catalog, make_response):
    h = Harness(mode, store, catalog)
    post(h, make_response, 3)
    h.fake.faults.append(_entry_refused(h))
    report = h.sync()
    assert report.failed >= 1 and not report.ok
    assert report.written == len(h.observations()) < 3
    assert any("disk full" in f.reason for f in report.failures)
    assert store.checkpoint(BASE) is None


def test_finding_2_a_search_error_in_a_200_keeps_the_checkpoint(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 3)
    h.sync()
    before = store.checkpoint(BASE)
    h.fake.faults.append(always(is_qr_search, outcome_200))
    with pytest.raises(UnexpectedResponse, match="expected a searchset Bundle, got 'OperationOutcome': error: lost"):
        h.sync()
    assert store.checkpoint(BASE) == before


def test_finding_4_a_throttled_batch_is_not_split_and_does_not_wait(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 6)
    h.fake.faults.append(always(is_write, lambda r: httpx.Response(429, headers={"Retry-After": "999999"})))
    report = h.sync()
    writes = [r for r in h.fake.requests if is_write(r)]
    assert len(writes) == 1 and h.sleeps == []  # one attempt, no per-entry retries, and the next batch not even tried
    assert report.failed == 6 and "beyond the retry budget" in report.failures[0].reason
    assert "not attempted: an earlier write of this run failed" in report.failures[-1].reason


def test_finding_6_a_stamp_far_ahead_is_refused(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    h.fake.faults.append(always(is_qr_search, lambda r: _stamped(h, r, "2099-01-01T00:00:00.000+00:00")))
    report = h.sync()
    assert report.written == 2 and report.checkpoint is None and store.checkpoint(BASE) is None
    assert any("ahead of ours (tolerance 300 s)" in w.reason for w in report.warnings)


def test_finding_6_a_stamp_within_the_tolerance_is_taken(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    soon = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 60))
    h.fake.faults.append(always(is_qr_search, lambda r: _stamped(h, r, soon)))
    assert h.sync().checkpoint == soon


def test_finding_8_an_r5_server_is_refused_before_anything(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    h.fake.faults.append(FAULTS["8 an R5 server"](h))
    with pytest.raises(UnexpectedResponse, match="speaks FHIR '5.0.0'; alliance-fhir needs FHIR R4"):
        h.sync()
    assert [r.url.path for r in h.fake.requests] == ["/fhir"]  # the batch of reads (metadata + lookup), nothing after


def test_finding_9_literal_references_are_found_and_scored_as_that_version(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    h.fake.put(
        {
            "resourceType": "Questionnaire",
            "id": "1005",
            "url": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr",
            "version": "1.0.0",
        }
    )
    relative = make_response("wai-sr", all_items(12, 2), rid="rel")
    relative["questionnaire"] = "Questionnaire/1005"
    absolute = make_response("wai-sr", all_items(12, 3), rid="abs")
    absolute["questionnaire"] = f"{BASE}/Questionnaire/1005"
    foreign = make_response("wai-sr", all_items(12, 3), rid="foreign")
    foreign["questionnaire"] = "Questionnaire/999"
    for response in (relative, absolute, foreign):
        h.fake.put(response)
    report = h.sync()
    search = next(r for r in h.fake.requests if is_qr_search(r))
    assert "Questionnaire/1005" in dict(search.url.params)["questionnaire"].split(",")
    values = {
        o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in h.observations().values()
    }
    assert values == {"rel": 24, "abs": 36}  # 12 x Sometimes (2), 12 x Fairly often (3), scored as wai-sr|1.0.0
    assert report.found == 2 and report.failed == 0


def test_finding_9_responses_seen_but_not_ours_are_reported(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    stranger = make_response("wai-sr", all_items(12, 3), rid="stranger")
    stranger["questionnaire"] = "Questionnaire/999"
    h.fake.put(stranger)
    # a server that ignores the questionnaire filter returns it anyway
    h.fake.faults.append(always(is_qr_search, lambda r: h.fake._search("QuestionnaireResponse", {})))
    report = h.sync()
    assert [u.resource for u in report.unattributed] == ["QuestionnaireResponse/stranger"]
    assert "'Questionnaire/999' is none of ours" in report.unattributed[0].reason
    assert report.written == 0 and report.found == 0


def test_the_bare_url_warning_reaches_the_report(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    bare = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="bare")
    bare["questionnaire"] = "http://alliance-fhir.org/fhir/Questionnaire/srs"
    h.fake.put(bare)
    report = h.sync()
    assert any(w.resource == "QuestionnaireResponse/bare" and "has no version" in w.reason for w in report.warnings)


def test_statuses_are_filtered_on_our_side(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    draft = make_response("wai-sr", all_items(12, 3), rid="draft")
    draft["status"] = "in-progress"
    h.fake.put(draft)
    report = h.sync()
    search = next(r for r in h.fake.requests if is_qr_search(r))
    assert "status" not in dict(search.url.params)
    assert (report.found, report.skipped, report.written, report.failed) == (2, 1, 2, 0)


def test_finding_10_failures_stay_outstanding_until_fixed(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    bad = make_response("wai-sr", all_items(12, 3), rid="bad")
    bad["item"][2]["answer"] = [{"valueInteger": 9}]
    h.fake.put(bad)
    first = h.sync()
    assert first.failed == 1 and not first.ok
    for _ in range(2):
        later = h.sync()
        assert later.failed == 0 and not later.ok
        assert [(f.response_id, f.outcome) for f in later.outstanding] == [("bad", "failed")]
        assert later.outstanding[0].since == first.outstanding[0].since and "item '3'" in later.outstanding[0].reason
    bad["item"][2]["answer"] = [{"valueInteger": 4}]
    h.fake.put(bad)
    fixed = h.sync()
    assert fixed.ok and fixed.written == 1 and fixed.outstanding == []


def test_finding_10_a_write_failure_is_outstanding_and_retried_every_run(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)
    h.fake.faults.append(always(is_write, outcome_200))
    h.sync()
    second = h.sync()
    assert {f.outcome for f in second.outstanding} == {"write-failed"} and len(second.outstanding) == 2
    h.fake.faults.clear()
    assert h.sync().ok and len(h.observations()) == 2


def test_a_dismissed_failure_is_no_longer_outstanding_and_keeps_who_and_why(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    bad = make_response("wai-sr", all_items(12, 3), rid="bad")
    bad["item"][2]["answer"] = [{"valueInteger": 9}]
    h.fake.put(bad)
    h.sync()
    assert store.dismiss(BASE, "bad", "dr.kim", "test record, entered by mistake") is not None
    assert h.sync().ok
    by, why, reason = store.dismissal(BASE, "bad")
    assert (by, why) == ("dr.kim", "test record, entered by mistake") and "item '3'" in reason
    bad["status"] = "amended"
    h.fake.put(bad)  # it changed: processed again, and fails again
    assert not h.sync().ok


def test_search_mode_repairs_duplicates_left_by_a_race(store, catalog, make_response):
    h = Harness("search", store, catalog)
    post(h, make_response, 1)
    h.sync()
    [obs] = list(h.fake.store["Observation"].values())
    h.fake.put({k: v for k, v in obs.items() if k not in ("id", "meta")})  # another run created the same one
    store.reset(BASE)
    h.sync()
    assert len(h.fake.store["Observation"]) == 1


@pytest.mark.parametrize(
    "mode, expected", [("transaction", "transaction"), ("batch", "batch"), ("single", "single"), ("search", "search")]
)
def test_auto_write_mode_follows_the_capability_statement(mode, expected):
    plan = choose_write_mode(capabilities_for(mode))
    assert plan.mode == expected and plan.reason


def test_single_forced_on_a_server_without_conditional_update_searches_first():
    assert choose_write_mode(capabilities_for("search"), "single").mode == "search"


def test_process_response_is_syncs_path_for_one_response(store, catalog, make_response):
    h = Harness("transaction", store, catalog)
    response = h.fake.put(make_response("wai-sr", all_items(12, 4), rid="one"))
    with h.client() as client:
        report = process_response(client, catalog, store, response)
    assert (report.written, report.failed) == (1, 0) and len(h.observations()) == 1
    assert store.lookup(BASE, ["one"])["one"].outcome == "written"


@pytest.mark.parametrize(
    "resource",
    [
        {
            "resourceType": "QuestionnaireResponse",
            "id": "m1",
            "status": "completed",
            "meta": "junk",
            "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
            "item": "nope",
        },
        {
            "resourceType": "QuestionnaireResponse",
            "id": 7,
            "status": "completed",
            "meta": {"versionId": 3},
            "questionnaire": ["not", "a", "string"],
        },
        {"resourceType": "Patient", "id": "p1", "status": "completed"},
        {
            "resourceType": "QuestionnaireResponse",
            "id": "m2",
            "status": "amended",
            "item": [{"linkId": 1, "answer": {"x": 1}}],
            "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
        },
    ],
)
def test_finding_7_malformed_resources_are_one_line_failures_not_tracebacks(store, catalog, make_response, resource):
    h = Harness("transaction", store, catalog)
    post(h, make_response, 2)

    def answer(request: httpx.Request) -> httpx.Response:
        body = h.fake.serve(request).json()
        body["entry"].append({"resource": resource, "search": {"mode": "match"}})
        body["total"] = body.get("total", 0) + 1
        return httpx.Response(200, json=body)

    h.fake.faults.append(always(is_qr_search, answer))
    report = h.sync()
    assert report.written == 2
    problems = report.failures + report.unattributed + report.warnings  # a Patient: a warning (issue 23, case 16)
    assert len(problems) == 1 and "\n" not in problems[0].reason
