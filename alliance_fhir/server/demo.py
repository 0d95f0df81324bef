"""The demo: synthetic clinic data with realistic alliance trajectories, synced end to end.

Creates (idempotently, by fixed ids) practitioners, patients, sessions (Encounters) and the
clients' responses: a steady SRS client with ORS outcomes, a WAI-SR client with a rupture and
its repair, a client whose alliance starts low, a couple seen together whose ratings split, a
GSRS group, and a HAq-II client. Everything carries the demo tag so ``--cleanup`` removes
exactly what the demo made. All names are invented.

With a results store beside the source (``demo --results-server``, ``make demo-ehr``) the source
plays a stand-in EHR: it holds the people, sessions and responses, and receives what write-back
sends (a note per session); the scores and signals are in the store. The notes carry no demo tag
(they are built as any site's are), so cleanup finds them by the demo's patients and our
write-back identifier.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .._ids import FOCUS_EXTENSION, PROJECT_CODESYSTEM
from ..errors import FhirServerError, InstrumentError
from ..fhirclient.client import FhirClient, search_token
from ..instruments.catalog import Catalog, Instrument
from ..signals.writeback import WRITEBACK_IDENTIFIER_SYSTEM
from .transactions import put_by_id

__all__ = [
    "DEMO_TAG",
    "DemoClient",
    "chart_note",
    "cleanup_demo",
    "demo_clients",
    "demo_patient_ids",
    "demo_resources",
    "demo_response_ids",
    "post_demo_data",
]

DEMO_TAG = {"system": PROJECT_CODESYSTEM, "code": "demo"}
_START = datetime(2026, 9, 7, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class DemoClient:
    """One synthetic client: who, with whom, which instrument, and the total per session."""

    key: str
    name: str
    therapist: str
    instrument: str
    totals: tuple[float, ...]
    encounter_group: str | None = None  # clients sharing it are seen together (couple, group)


def demo_clients() -> list[DemoClient]:
    """The synthetic caseload; totals are chosen to show each alliance pattern."""
    return [
        DemoClient("steady", "Alex Steady", "t1", "srs", (37.2, 38.0, 38.5, 39.0, 38.8, 39.3)),
        DemoClient("steady", "Alex Steady", "t1", "ors", (18.4, 21.0, 24.2, 27.5, 29.0, 31.1)),
        DemoClient("rupture", "Robin Rupture", "t1", "wai-sr", (48, 50, 41, 44, 51)),
        DemoClient("early-low", "Sam Early", "t2", "srs", (31.5, 33.0, 34.9, 36.8)),
        DemoClient("couple-a", "Jo Couple", "t2", "srs", (38.0, 37.5, 38.4), encounter_group="couple"),
        DemoClient("couple-b", "Kim Couple", "t2", "srs", (33.1, 30.2, 31.0), encounter_group="couple"),
        *[
            DemoClient(f"group-{n}", f"Group Member {n}", "t3", "gsrs", totals, encounter_group="group")
            for n, totals in enumerate(
                [(36.0, 37.2, 38.1), (38.5, 38.9, 39.0), (35.0, 32.1, 30.4), (37.7, 37.0, 38.2)], 1
            )
        ],
        DemoClient("helping", "Pat Helping", "t3", "haq-ii", (82, 88, 95)),
    ]


def demo_resources(catalog: Catalog) -> Iterator[dict[str, Any]]:
    """Every resource of the demo (practitioners, patients, encounters, responses), tagged."""
    for key, name in (("t1", "Dana Therapist"), ("t2", "Lee Therapist"), ("t3", "Mo Groupleader")):
        yield _tagged({"resourceType": "Practitioner", "id": f"afdemo-{key}", "name": [{"text": name}]})
    clients = demo_clients()
    for client in {c.key: c for c in clients}.values():
        yield _tagged({"resourceType": "Patient", "id": f"afdemo-{client.key}", "name": [{"text": client.name}]})
    encounters: dict[str, dict[str, Any]] = {}
    for client in clients:
        for session, total in enumerate(client.totals, 1):
            encounter_key = f"{client.encounter_group or client.key}-{session}"
            when = _START + timedelta(weeks=session - 1)
            if encounter_key not in encounters:
                encounters[encounter_key] = _encounter(encounter_key, client, when)
                yield encounters[encounter_key]
            yield _response(catalog, client, session, total, encounter_key, when)


def post_demo_data(client: FhirClient, catalog: Catalog, batch: int = 50) -> int:
    """PUT every demo resource by id in transaction Bundles (idempotent); returns the count."""
    return put_by_id(client, list(demo_resources(catalog)), batch)


def demo_patient_ids() -> list[str]:
    """The demo's Patient ids (fixed), one per client."""
    return list(dict.fromkeys(f"afdemo-{c.key}" for c in demo_clients()))


def demo_response_ids(catalog: Catalog) -> list[str]:
    """The demo's QuestionnaireResponse ids (fixed): what the state keys the demo's write-back by."""
    return [r["id"] for r in demo_resources(catalog) if r["resourceType"] == "QuestionnaireResponse"]


# Results first, references last: a resource is deleted before what it names.
_RESULT_TYPES = ("Task", "DetectedIssue", "Observation")
_SOURCE_TYPES = ("QuestionnaireResponse", "Encounter", "Patient", "Practitioner")
_WRITTEN_BACK = ("DocumentReference", "Communication")  # the note and message routes' resources


def cleanup_demo(client: FhirClient, results: FhirClient | None = None) -> int:
    """Delete every resource the demo made; returns the count deleted.

    One server: everything carrying the demo tag (results first, references last). With
    ``results`` (a results store beside the source, the stand-in EHR): the notes and messages
    written back into the source go first, then the tagged results in the store, then the tagged
    people, sessions and responses in the source.
    """
    deleted = 0
    if results is not None and results is not client:
        deleted += _delete_written_back(client)
        deleted += _delete_tagged(results, _RESULT_TYPES)
    else:
        deleted += _delete_tagged(client, _RESULT_TYPES)
    return deleted + _delete_tagged(client, _SOURCE_TYPES)


def chart_note(client: FhirClient, patient_id: str) -> str | None:
    """The text of the latest note written back for one demo patient, as the EHR holds it (None: no note).

    The demo prints it to show what a clinician's chart receives; it reads the EHR, not our memory
    of what was sent.
    """
    notes = [
        n
        for n in _written_back(client, "DocumentReference", [patient_id])
        if n.get("status") == "current" and isinstance(n.get("date"), str)
    ]
    if not notes:
        return None
    latest = max(notes, key=lambda n: str(n["date"]))
    for content in latest.get("content") or []:
        data = (content.get("attachment") or {}).get("data")
        if isinstance(data, str):
            return base64.b64decode(data).decode("utf-8", errors="replace")
    return None


def _delete_tagged(client: FhirClient, types: tuple[str, ...]) -> int:
    tag = search_token(DEMO_TAG)
    deleted = 0
    for rtype in types:
        for resource in list(client.search(rtype, {"_tag": tag, "_count": "200", "_elements": "id"})):
            deleted += _delete(client, rtype, str(resource["id"]))
    return deleted


def _delete_written_back(client: FhirClient) -> int:
    """The notes and messages our write-back made for the demo's patients (a successor before what it replaces)."""
    deleted = 0
    for rtype in _WRITTEN_BACK:
        found = _written_back(client, rtype, demo_patient_ids())
        successors_first = sorted(found, key=lambda r: not r.get("relatesTo"))
        for resource in successors_first:
            deleted += _delete(client, rtype, str(resource["id"]))
    return deleted


def _written_back(client: FhirClient, rtype: str, patient_ids: list[str]) -> list[dict[str, Any]]:
    """The ``rtype`` resources with our write-back identifier about these patients (relative or absolute)."""
    subjects = [f"Patient/{p}" for p in patient_ids]
    subjects += [f"{client.base_url}/{s}" for s in subjects]
    found = client.search(rtype, {"subject": ",".join(subjects), "_count": "200"})
    return [r for r in found if any(i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM for i in r.get("identifier", []))]


def _delete(client: FhirClient, rtype: str, rid: str) -> int:
    try:
        client.request("DELETE", f"{rtype}/{rid}")
    except FhirServerError:
        return 0  # already gone, or still referenced: reported by the count
    return 1


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    resource["meta"] = {"tag": [DEMO_TAG]}
    return resource


def _encounter(key: str, client: DemoClient, when: datetime) -> dict[str, Any]:
    return _tagged(
        {
            "resourceType": "Encounter",
            "id": f"afdemo-enc-{key}",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
                "display": "ambulatory",
            },
            "subject": {"reference": f"Patient/afdemo-{client.key}"},
            "participant": [{"individual": {"reference": f"Practitioner/afdemo-{client.therapist}"}}],
            "period": {"start": when.isoformat(), "end": (when + timedelta(minutes=50)).isoformat()},
        }
    )


def _response(
    catalog: Catalog, client: DemoClient, session: int, total: float, encounter: str, when: datetime
) -> dict[str, Any]:
    instrument = catalog.get(client.instrument)
    links = [s.link_id for s in sorted(instrument.items.values(), key=lambda s: int(s.link_id))]
    values = _spread(Decimal(str(total)), len(links), instrument.mapping.item_scale.kind == "vas", instrument)
    items = []
    for link, value in zip(links, values, strict=True):
        spec = instrument.items[link]
        if spec.kind == "choice":
            raw = _unreverse(instrument, link, value)
            system, code = next(k for k, w in spec.options.items() if w == raw)
            items.append({"linkId": link, "answer": [{"valueCoding": {"system": system, "code": code}}]})
        else:
            items.append({"linkId": link, "answer": [{"valueDecimal": float(value)}]})
    return _tagged(
        {
            "resourceType": "QuestionnaireResponse",
            "id": f"afdemo-{client.key}-{client.instrument}-{session}",
            "extension": [
                {"url": FOCUS_EXTENSION, "valueReference": {"reference": f"Practitioner/afdemo-{client.therapist}"}}
            ],
            "questionnaire": instrument.canonical,
            "status": "completed",
            "subject": {"reference": f"Patient/afdemo-{client.key}"},
            "encounter": {"reference": f"Encounter/afdemo-enc-{encounter}"},
            "authored": (when + timedelta(minutes=52)).isoformat(),
            "author": {"reference": f"Patient/afdemo-{client.key}"},
            "item": items,
        }
    )


def _spread(total: Decimal, n: int, vas: bool, instrument: Instrument) -> list[Decimal]:
    """n item values (after reversal) that add up to ``total``: as even as the scale allows."""
    scale = instrument.mapping.item_scale
    step = Decimal("0.1") if vas else Decimal(1)
    units = int(total / step)
    base, extra = divmod(units, n)
    values = [(base + (1 if i < extra else 0)) * step for i in range(n)]
    if not Decimal(str(scale.min)) <= min(values) <= max(values) <= Decimal(str(scale.max)):
        raise InstrumentError(f"demo total {total} does not fit {n} items of {instrument.id}")
    return values


def _unreverse(instrument: Instrument, link: str, value: Decimal) -> Decimal:
    """The raw answer whose reversed value is ``value`` (reverse-keyed items are stored raw)."""
    scale = instrument.mapping.item_scale
    reversed_items = {i for s in instrument.mapping.scales for i in s.reverse_items}
    flip = Decimal(str(int(scale.min))) + Decimal(str(int(scale.max)))
    return flip - value if link in reversed_items else value
