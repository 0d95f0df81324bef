"""The demo: synthetic clinic data with realistic alliance trajectories, synced end to end.

Creates (idempotently, by fixed ids) practitioners, patients, sessions (Encounters) and the
clients' responses: a steady SRS client with ORS outcomes, a WAI-SR client with a rupture and
its repair, a client whose alliance starts low, a couple seen together whose ratings split, a
GSRS group, and a HAq-II client. Everything carries the demo tag so ``--cleanup`` removes
exactly what the demo made. All names are invented.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .._ids import FOCUS_EXTENSION, PROJECT_CODESYSTEM
from ..errors import FhirServerError, InstrumentError
from ..fhirclient.client import FhirClient, search_token
from ..instruments.catalog import Catalog, Instrument
from .transactions import put_by_id

__all__ = ["DEMO_TAG", "DemoClient", "cleanup_demo", "demo_clients", "demo_resources", "post_demo_data"]

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


def cleanup_demo(client: FhirClient) -> int:
    """Delete every resource carrying the demo tag (Observations first, references last)."""
    tag = search_token(DEMO_TAG)
    deleted = 0
    for rtype in (
        "Task",
        "DetectedIssue",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
        "Patient",
        "Practitioner",
    ):
        for resource in list(client.search(rtype, {"_tag": tag, "_count": "200", "_elements": "id"})):
            try:
                client.request("DELETE", f"{rtype}/{resource['id']}")
                deleted += 1
            except FhirServerError:
                continue  # already gone, or still referenced: reported by the count
    return deleted


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
