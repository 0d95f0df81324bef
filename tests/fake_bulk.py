"""Bulk Data ``$export`` on top of the fake FHIR server (an ``httpx.MockTransport`` handler), for
the back-fill's unit tests: a kick-off, scripted polls, a manifest and its NDJSON files."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from .fake_fhir import BASE, FakeFhir

STATUS = f"{BASE}/$export-poll-status?_jobId=job1"
STAMP = "2026-11-20T10:00:00.000+00:00"


class FakeBulk:
    """$export on top of the fake server: a kick-off, ``polls`` answers of 202, then the manifest
    listing one file per ``files`` entry (each a list of NDJSON lines, or raw bytes)."""

    def __init__(self, fhir: FakeFhir) -> None:
        self.fhir = fhir
        self.files: list[list[dict[str, Any]] | bytes] = []
        self.polls = 0
        self.poll_headers: dict[str, str] = {"Retry-After": "7", "X-Progress": "50% done"}
        self.kickoffs: list[dict[str, Any]] = []
        self.downloads: list[str] = []
        self.deleted: list[str] = []
        self.manifest_override: dict[str, Any] | None = None
        self.file_url: Callable[[int], str] = lambda i: f"{BASE}/Binary/f{i}"
        self.file_headers: dict[str, str] = {}
        self.status_url = STATUS
        self.faults: list[Callable[[httpx.Request], httpx.Response | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        for fault in self.faults:
            if (answer := fault(request)) is not None:
                return answer
        path = request.url.path
        if request.method == "POST" and path.endswith("$export"):
            self.kickoffs.append({"path": path, "body": json.loads(request.content)})
            return httpx.Response(202, headers={"Content-Location": self.status_url})
        if str(request.url) == STATUS or "$export-poll-status" in path:
            if request.method == "DELETE":
                self.deleted.append(str(request.url))
                return httpx.Response(202)
            if self.polls > 0:
                self.polls -= 1
                return httpx.Response(202, headers=self.poll_headers)
            return httpx.Response(200, json=self.manifest())
        if "/Binary/" in path:
            self.downloads.append(str(request.url))
            index = int(path.rsplit("f", 1)[1])
            content = self.files[index]
            body = content if isinstance(content, bytes) else b"".join(json.dumps(r).encode() + b"\n" for r in content)
            return httpx.Response(
                200, content=body, headers={"Content-Type": "application/fhir+ndjson", **self.file_headers}
            )
        return self.fhir(request)

    def manifest(self) -> dict[str, Any]:
        if self.manifest_override is not None:
            return self.manifest_override
        output = [{"type": "QuestionnaireResponse", "url": self.file_url(i)} for i in range(len(self.files))]
        return {
            "transactionTime": STAMP,
            "request": f"{BASE}/$export",
            "requiresAccessToken": True,
            "output": output,
            "error": [],
        }
