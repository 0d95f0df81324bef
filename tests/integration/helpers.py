"""Small helpers for the integration tests against a real FHIR server."""

from __future__ import annotations

import uuid
from typing import Any

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig


def client(base_url: str, **settings: Any) -> FhirClient:
    return FhirClient(ServerConfig(url=base_url, **settings))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def errors(outcome: dict[str, Any]) -> list[str]:
    """The error/fatal issues of an OperationOutcome, as 'location: diagnostics' lines."""
    return [
        f"{','.join(i.get('expression') or i.get('location') or [])}: {i.get('diagnostics', '')}"
        for i in outcome.get("issue", [])
        if i.get("severity") in ("error", "fatal")
    ]


def validate(c: FhirClient, resource: dict[str, Any]) -> dict[str, Any]:
    """``POST Type/$validate`` (HAPI answers 200 with an OperationOutcome, errors or not)."""
    response = c._http.post(
        f"{c.base_url}/{resource['resourceType']}/$validate",
        json=resource,
        headers={"Content-Type": "application/fhir+json"},
    )
    body = response.json()
    assert body.get("resourceType") == "OperationOutcome", body
    return body  # type: ignore[no-any-return]
