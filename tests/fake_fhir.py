"""A small in-memory FHIR server as an ``httpx.MockTransport`` handler, for unit tests.

It plays exactly the parts sync uses: QuestionnaireResponse search with paging, Observation
search by identifier, conditional update (``PUT Type?criteria``) alone or inside transaction
Bundles, and ``/metadata``. Faults can be scripted per request.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx

BASE = "http://fhir.test/fhir"
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
Fault = Callable[[httpx.Request], httpx.Response | None]


class FakeFhir:
    def __init__(self, page_size_cap: int = 1000) -> None:
        self.store: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.clock = itertools.count(1)
        self.requests: list[httpx.Request] = []
        self.faults: list[Fault] = []
        self.page_size_cap = page_size_cap
        self.capabilities = CAPABILITIES
        self._ids = itertools.count(1)
        self._searches: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()  # sync writes from several threads; one request at a time here

    # ---------------------------------------------------------------- data
    def stamp(self) -> str:
        """The next ``meta.lastUpdated``: one second after the previous write, as a real server's clock."""
        instant = EPOCH + timedelta(seconds=next(self.clock))
        return instant.isoformat(timespec="milliseconds")

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        rtype = resource["resourceType"]
        rid = resource.get("id") or f"gen{next(self._ids)}"
        old = self.store[rtype].get(rid)
        version = int(old["meta"]["versionId"]) + 1 if old else 1
        meta = {"versionId": str(version), "lastUpdated": self.stamp()}
        if (resource.get("meta") or {}).get("tag"):
            meta["tag"] = resource["meta"]["tag"]
        if (resource.get("meta") or {}).get("security"):
            meta["security"] = resource["meta"]["security"]
        stored = {**resource, "id": rid, "meta": meta}
        self.store[rtype][rid] = stored
        return stored

    # ---------------------------------------------------------------- http
    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            return self._handle(request)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._faulted(request)

    def _faulted(self, request: httpx.Request) -> httpx.Response:
        """The answer to one request, or to one GET inside a batch: the faults see both."""
        for fault in list(self.faults):
            response = fault(request)
            if response is not None:
                return response
        return self.serve(request)

    def serve(self, request: httpx.Request) -> httpx.Response:
        """Answer as a well-behaved server would (faults use it to play a half-broken one)."""
        path = request.url.path.removeprefix("/fhir").strip("/")
        params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        if path == "metadata":
            return _json(200, self.capabilities)
        if request.method == "GET" and "_getpages" in params:
            return self._page(params["_getpages"], int(params["_offset"]), int(params["_count"]))
        if request.method == "GET" and path.partition("/")[0] in _READ_BY_ID and "/" in path:  # read by id
            rtype, _, rid = path.partition("/")
            found = self.store[rtype].get(rid)
            return _json(200, found) if found else _json(404, _outcome(f"{path} is not known"))
        if request.method == "GET":
            return self._search(path, params)
        if request.method == "PUT" and "/" in path:  # update by id
            rtype, _, rid = path.partition("/")
            body = json.loads(request.content)
            return _json(200 if rid in self.store[rtype] else 201, self.put({**body, "id": rid}))
        if request.method == "PUT":
            return self._conditional_put(path, params, json.loads(request.content))
        if request.method == "DELETE" and "/" in path:
            rtype, _, rid = path.partition("/")
            self.store[rtype].pop(rid, None)
            return _json(200, _outcome("deleted"))
        if request.method == "POST" and path and "/" not in path:  # plain create
            body = {k: v for k, v in json.loads(request.content).items() if k != "id"}
            return _json(201, self.put(body))
        if request.method == "POST" and path.endswith("/_search"):
            return self._search(path.removesuffix("/_search"), dict(parse_qsl(request.content.decode())))
        if request.method == "POST" and path == "":
            return self._transaction(json.loads(request.content))
        return _json(400, _outcome("unsupported"))

    def _matches(self, rtype: str, params: dict[str, str]) -> list[dict[str, Any]]:
        found = []
        for res in self.store[rtype].values():
            if "_id" in params and res.get("id") not in params["_id"].split(","):
                continue
            if "identifier" in params:
                wanted = [v.partition("|") for v in params["identifier"].split(",")]
                idents = res.get("identifier", [])
                if not any(
                    i.get("system") == system and value in ("", i.get("value"))
                    for system, _, value in wanted
                    for i in idents
                ):
                    continue
            if "questionnaire" in params and not any(
                res.get("questionnaire") == value or str(res.get("questionnaire")).startswith(value + "|")
                for value in params["questionnaire"].split(",")
            ):  # a canonical without a version matches every version
                continue
            if "status" in params and res.get("status") not in params["status"].split(","):
                continue
            # a reference parameter's commas are OR, as on a real server (an absolute and a relative form)
            if "subject" in params and (res.get("subject") or {}).get("reference") not in params["subject"].split(","):
                continue
            if "_tag" in params and not any(
                f"{t.get('system')}|{t.get('code')}" == params["_tag"] for t in (res.get("meta") or {}).get("tag", [])
            ):
                continue
            holder = "subject" if rtype == "QuestionnaireResponse" else "patient"  # QR's patient param is its subject
            if "patient" in params and (res.get(holder) or {}).get("reference") not in params["patient"].split(","):
                continue
            if "_lastUpdated" in params and res["meta"]["lastUpdated"] < params["_lastUpdated"].removeprefix("ge"):
                continue
            if "url" in params and (
                res.get("url") not in params["url"].split(",")
                or ("version" in params and res.get("version") != params["version"])
            ):
                continue
            found.append(res)
        return sorted(found, key=lambda r: r["meta"]["lastUpdated"])

    def _search(self, rtype: str, params: dict[str, str]) -> httpx.Response:
        matches = [json.loads(json.dumps(r)) for r in self._matches(rtype, params)]
        if params.get("_include") == "Observation:encounter":
            refs = {(m.get("encounter") or {}).get("reference", "") for m in matches}
            matches += [
                dict(e, _included=True) for e in self.store["Encounter"].values() if f"Encounter/{e['id']}" in refs
            ]
        search_id = f"s{next(self._ids)}"
        self._searches[search_id] = matches
        return self._page(search_id, 0, min(int(params.get("_count", "20")), self.page_size_cap))

    def _page(self, search_id: str, offset: int, count: int) -> httpx.Response:
        matches = self._searches[search_id]
        page = matches[offset : offset + count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": sum(1 for m in matches if not m.get("_included")),
            "meta": {"lastUpdated": self.stamp()},
            "entry": [
                {
                    "resource": {k: v for k, v in r.items() if k != "_included"},
                    "search": {"mode": "include" if r.get("_included") else "match"},
                }
                for r in page
            ],
            "link": [],
        }
        if offset + count < len(matches):
            bundle["link"].append(
                {"relation": "next", "url": f"{BASE}?_getpages={search_id}&_offset={offset + count}&_count={count}"}
            )
        return _json(200, bundle)

    def _conditional_put(self, rtype: str, params: dict[str, str], body: dict[str, Any]) -> httpx.Response:
        if body.get("status") == "invalid":
            return _json(422, _outcome("invalid resource"))
        matches = self._matches(rtype, params)
        if len(matches) > 1:
            return _json(412, _outcome("multiple matches"))
        if matches:
            body = {**body, "id": matches[0]["id"]}
            if _same(matches[0], body):
                return _json(200, matches[0])
        stored = self.put(body)
        return _json(200 if matches else 201, stored)

    def _transaction(self, bundle: dict[str, Any]) -> httpx.Response:
        entries: list[dict[str, Any]] = []
        for entry in bundle.get("entry", []):
            url = entry["request"]["url"]
            rtype, _, query = url.partition("?")
            if entry["request"]["method"] == "GET" and bundle.get("type") == "batch":
                answer = self._faulted(httpx.Request("GET", f"{BASE}/{url}"))
                body = answer.json() if answer.content else None
                status = {"status": f"{answer.status_code}"}
                entries.append(
                    {"response": status, "resource": body} if answer.status_code < 400 else {"response": status}
                )
                continue
            resource = entry["resource"]
            if resource.get("status") == "invalid":
                if bundle.get("type") == "batch":
                    entries.append(
                        {"response": {"status": "422 Unprocessable Entity", "outcome": _outcome("invalid resource")}}
                    )
                    continue
                return _json(422, _outcome("invalid resource in transaction"))
            if entry["request"]["method"] == "POST":  # conditional create
                criteria = dict(parse_qsl(entry["request"].get("ifNoneExist", "")))
                if not (criteria and self._matches(rtype, criteria)):
                    self.put({k: v for k, v in resource.items() if k != "id"})
                entries.append({"response": {"status": "201"}})
                continue
            if "/" in rtype:  # PUT Type/id (with If-Match: the version must still be current)
                current = self.store[rtype.split("/")[0]].get(rtype.split("/")[1])
                wanted = entry["request"].get("ifMatch")
                if wanted and current and wanted != f'W/"{current["meta"]["versionId"]}"':
                    return _json(412, _outcome("version conflict"))
                stored = self.put(resource)
                entries.append({"response": {"status": "200", "location": _location(stored)}})
                continue
            response = self._conditional_put(rtype, dict(parse_qsl(query)), resource)
            entries.append({"response": {"status": str(response.status_code), "location": _location(response.json())}})
        return _json(
            200, {"resourceType": "Bundle", "type": f"{bundle.get('type', 'transaction')}-response", "entry": entries}
        )


# Types read by id here (``GET Type/id``); others answer a search, as the sync tests expect.
_READ_BY_ID = ("Group", "List", "DocumentReference", "Communication")

CAPABILITIES: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "software": {"name": "FakeFhir", "version": "0"},
    "rest": [
        {
            "mode": "server",
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": [
                {
                    "type": "QuestionnaireResponse",
                    "searchParam": [{"name": "questionnaire"}, {"name": "status"}, {"name": "subject"}],
                },
                {"type": "Observation", "conditionalCreate": True, "conditionalUpdate": True},
            ],
        }
    ],
}


def _location(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """No change (HAPI's no-op update): the same content, and no security label that is not already there."""
    strip = lambda r: {k: v for k, v in r.items() if k not in ("meta",)}  # noqa: E731
    labels = lambda r: {(c.get("system"), c.get("code")) for c in (r.get("meta") or {}).get("security", [])}  # noqa: E731
    return strip(old) == strip(new) and labels(new) <= labels(old)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


def fail_times(
    times: int,
    status: int,
    headers: dict[str, str] | None = None,
    when: Callable[[httpx.Request], bool] = lambda r: True,
) -> Fault:
    """A fault that answers ``status`` to the first ``times`` requests matching ``when``."""
    left = [times]

    def fault(request: httpx.Request) -> httpx.Response | None:
        if left[0] > 0 and when(request):
            left[0] -= 1
            return httpx.Response(status, headers=headers, json=_outcome(f"injected {status}"))
        return None

    return fault
