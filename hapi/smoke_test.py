#!/usr/bin/env python3
"""Smoke test of the local HAPI server: python3 hapi/smoke_test.py [BASE_URL]

Checks, against a running server (default http://127.0.0.1:$HAPI_PORT/fhir), what the
alliance-fhir tests rely on. Standard library only. Exits 1 on the first failed check.
Leaves data behind (it uses fixed ids / identifiers, so re-running is fine); it deletes
the Subscription it creates.
"""

import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else f"http://127.0.0.1:{os.environ.get('HAPI_PORT', '8080')}/fhir"
Q_URL = "http://example.org/fhir/Questionnaire/alliance-smoke"
COLORS = "http://example.org/fhir/CodeSystem/smoke-colors"


def call(method, path, body=None, headers=None):
    url = path if path.startswith("http") else BASE + path
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return r.status, dict(r.headers), json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), json.loads(raw) if raw.strip() else None


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        sys.exit(1)


def questionnaire(version, colors, max_score):
    return {
        "resourceType": "Questionnaire",
        "url": Q_URL,
        "version": version,
        "status": "active",
        "item": [
            {
                "linkId": "color",
                "type": "choice",
                "required": True,
                "answerOption": [{"valueCoding": {"system": COLORS, "code": c}} for c in colors],
            },
            {
                "linkId": "score",
                "type": "decimal",
                "extension": [
                    {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueDecimal": 0},
                    {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueDecimal": max_score},
                ],
            },
        ],
    }


def response(canonical, color="red", score=1.5, link="color", ident="smoke-qr-1"):
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": canonical,
        "status": "completed",
        "identifier": {"system": "http://example.org/fhir/smoke", "value": ident},
        "item": [
            {"linkId": link, "answer": [{"valueCoding": {"system": COLORS, "code": color}}]},
            {"linkId": "score", "answer": [{"valueDecimal": score}]},
        ],
    }


def errors(outcome):
    return [i.get("diagnostics", "") for i in outcome.get("issue", []) if i["severity"] in ("error", "fatal")]


def main():
    st, _, cs = call("GET", "/metadata")
    check(st == 200 and cs["fhirVersion"] == "4.0.1", f"metadata 200, fhirVersion {cs and cs.get('fhirVersion')}")

    q1 = {**questionnaire("1.0.0", ["red", "blue"], 10), "id": "alliance-smoke-q"}
    st, _, _ = call("PUT", "/Questionnaire/alliance-smoke-q", q1)
    check(st in (200, 201), f"PUT Questionnaire by id -> {st}")
    query = urllib.parse.urlencode({"url": Q_URL, "version": "2.0.0"})
    st, _, q2 = call("PUT", "/Questionnaire?" + query, questionnaire("2.0.0", ["red", "green"], 5))
    check(st in (200, 201), f"conditional update PUT Questionnaire?url&version -> {st} id={q2 and q2.get('id')}")

    st, _, qr = call("POST", "/QuestionnaireResponse", response(Q_URL + "|1.0.0"))
    check(st == 201, f"POST QuestionnaireResponse -> {st}")

    cases = [
        ("valid v1", response(Q_URL + "|1.0.0"), None),
        ("wrong linkId", response(Q_URL + "|1.0.0", link="colour"), "LinkId 'colour' not found"),
        ("code not in answerOption", response(Q_URL + "|1.0.0", color="purple"), "not in the set of permitted values"),
        ("decimal above maxValue", response(Q_URL + "|1.0.0", score=42), "greater than the allowed maximum"),
        ("green valid in v2", response(Q_URL + "|2.0.0", color="green", score=4), None),
        ("green invalid in v1", response(Q_URL + "|1.0.0", color="green"), "not in the set of permitted values"),
    ]
    for name, body, expected in cases:
        st, _, oo = call("POST", "/QuestionnaireResponse/$validate", body)
        errs = errors(oo)
        ok = st == 200 and (not errs if expected is None else any(expected in e for e in errs))
        check(ok, f"$validate {name}: HTTP {st}, errors {errs}")

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b5e1c7a-5d2e-4a43-9d51-6a1f00000001",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "http://example.org/fhir/smoke", "value": "smoke-p1"}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=http://example.org/fhir/smoke|smoke-p1",
                },
            },
            {
                "resource": {
                    **response(Q_URL + "|1.0.0", ident="smoke-tx-qr"),
                    "subject": {"reference": "urn:uuid:0b5e1c7a-5d2e-4a43-9d51-6a1f00000001"},
                },
                "request": {
                    "method": "POST",
                    "url": "QuestionnaireResponse",
                    "ifNoneExist": "identifier=http://example.org/fhir/smoke|smoke-tx-qr",
                },
            },
        ],
    }
    for attempt in (1, 2):
        st, _, out = call("POST", "", bundle)
        check(st == 200, f"transaction #{attempt} -> {st}: {[e['response']['status'] for e in out['entry']]}")
    st, _, found = call(
        "GET",
        "/QuestionnaireResponse?identifier=http://example.org/fhir/smoke|smoke-tx-qr",
        headers={"Cache-Control": "no-cache"},
    )
    check(found["total"] == 1, f"conditional create in transaction twice -> {found['total']} resource")

    now = time.time()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    time.sleep(0.2)
    for i in range(5):
        call("POST", "/QuestionnaireResponse", response(Q_URL + "|1.0.0", ident=f"smoke-page-{i}"))
    url, seen = "/QuestionnaireResponse?" + urllib.parse.urlencode({"_lastUpdated": "gt" + since, "_count": 2}), []
    while url:
        st, _, page = call("GET", url, headers={"Cache-Control": "no-cache"})
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    check(
        len(seen) == 5 and len(set(seen)) == 5, f"_lastUpdated+_count=2 paging via next links -> {len(seen)} resources"
    )

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((self.command, self.path, self.headers.get("Authorization")))
            self.send_response(204)  # no body: HAPI parses any FHIR body it gets back
            self.end_headers()

        do_POST = do_PUT

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    sub = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "smoke",
        "criteria": "QuestionnaireResponse?identifier=http://example.org/fhir/smoke|smoke-hook",
        "channel": {
            "type": "rest-hook",
            "endpoint": f"http://127.0.0.1:{hook.server_port}/hook",
            "payload": "application/fhir+json",
            "header": ["Authorization: Bearer smoke"],
        },
    }
    st, _, sub = call("POST", "/Subscription", sub)
    deadline = time.time() + 30
    while time.time() < deadline and call("GET", f"/Subscription/{sub['id']}")[2]["status"] != "active":
        time.sleep(0.5)
    check(call("GET", f"/Subscription/{sub['id']}")[2]["status"] == "active", "Subscription requested -> active")
    call("POST", "/QuestionnaireResponse", response(Q_URL + "|1.0.0", ident="smoke-hook"))
    deadline = time.time() + 30
    while time.time() < deadline and not received:
        time.sleep(0.2)
    check(bool(received), f"rest-hook delivered: {received[:1]}")
    call("DELETE", f"/Subscription/{sub['id']}")
    hook.shutdown()

    st, hdrs, _ = call("GET", "/$export?_type=QuestionnaireResponse", headers={"Prefer": "respond-async"})
    poll = hdrs.get("Content-Location")
    check(st == 202 and poll, f"$export kick-off -> {st}")
    deadline = time.time() + 300
    while time.time() < deadline:
        st, _, manifest = call("GET", poll)
        if st != 202:
            break
        time.sleep(0.5)
    check(
        st == 200 and manifest["output"], f"$export finished -> {st}, {len((manifest or {}).get('output', []))} file(s)"
    )
    print("all checks passed")


if __name__ == "__main__":
    main()
