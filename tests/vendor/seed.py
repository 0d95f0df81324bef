"""Seed vendor-shaped QuestionnaireResponses into the EHR's store (HAPI behind a vendor proxy).

The fixtures in ``fixtures/`` (see its README for the ids) stand for what the vendor's own portal
stored: vendor questionnaire ids, vendor linkIds, vendor value types. They are written straight to
HAPI, not through the proxy, because they are the EHR's own data, not a client's write.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).parent / "fixtures"
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Seeded:
    """What was stored: the patient id and the server ids of the responses, in the order given."""

    patient: str
    response_ids: tuple[str, ...]


def vendor_response(fixture: str, patient: str, authored: str) -> dict[str, Any]:
    """The fixture ``fixture`` (e.g. ``"epic-srs-qr"``) for ``Patient/patient`` answered at ``authored``."""
    resource: dict[str, Any] = json.loads((FIXTURES / f"{fixture}.json").read_text())
    resource["subject"] = {"reference": f"Patient/{patient}"}
    resource["authored"] = authored
    return resource


QUESTIONNAIRES = {"epic-srs-qr": "epic-srs-questionnaire", "openemr-wai-sr-qr": "openemr-wai-sr-questionnaire"}


def store_questionnaire(client: httpx.Client, fixture: str) -> None:
    """The vendor's own Questionnaire for ``fixture`` (HAPI checks a response's ``questionnaire``
    reference, as an EHR holds its own forms); item texts name the domain only."""
    questionnaire = json.loads((FIXTURES / f"{QUESTIONNAIRES[fixture]}.json").read_text())
    answer = client.put(
        f"Questionnaire/{questionnaire['id']}",
        json=questionnaire,
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
    )
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"seeding Questionnaire/{questionnaire['id']}: HTTP {answer.status_code}")


def seed(upstream: str, fixture: str, authored: list[str], *, patient: str | None = None) -> Seeded:
    """Store one response of ``fixture`` per time in ``authored`` for a new (or given) patient.

    Every write is checked (201 and a server id); anything else raises with the status.
    """
    patient = patient or f"vendor-{uuid.uuid4().hex[:12]}"
    ids: list[str] = []
    with httpx.Client(base_url=upstream.rstrip("/") + "/", timeout=30.0) as client:
        store_questionnaire(client, fixture)
        answer = client.put(
            f"Patient/{patient}",
            json={"resourceType": "Patient", "id": patient, "active": True},
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        )
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"seeding Patient/{patient}: HTTP {answer.status_code}")
        for when in authored:
            answer = client.post(
                "QuestionnaireResponse",
                json=vendor_response(fixture, patient, when),
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            )
            rid = answer.json().get("id") if answer.status_code == 201 else None
            if not rid:
                raise RuntimeError(f"seeding a {fixture} response: HTTP {answer.status_code}")
            ids.append(str(rid))
    return Seeded(patient, tuple(ids))
