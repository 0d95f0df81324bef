"""The names of the people a card or report speaks of, read from the FHIR server.

Clinicians know their clients and colleagues by name; cards and reports are only shown to
clinicians, so they carry names instead of references (``signals.names``). A name is a courtesy,
not a finding: when the server refuses or lacks one, the text says "this client" or "the
therapist" and the read's failure is logged without any patient data. Bounded: at most
:data:`MAX_PEOPLE` references per call, one search per resource type.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from .._refs import parse_reference
from ..errors import AllianceFhirError
from ..fhirclient.client import FhirClient
from ..signals.names import Names

__all__ = ["MAX_PEOPLE", "fetch_names"]

logger = logging.getLogger(__name__)

MAX_PEOPLE = 20
"""Most people named per card set or report (a bound on the extra reads)."""
_TYPES = ("Patient", "Practitioner", "RelatedPerson", "PractitionerRole")


def fetch_names(client: FhirClient, references: Iterable[str | None]) -> Names:
    """Names of the Patients, Practitioners, RelatedPersons and PractitionerRoles (their practitioner's) on ``client``.

    References to another server, of other types or beyond :data:`MAX_PEOPLE` are left out.
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for reference in references:
        ref = parse_reference(reference)
        if ref is None or ref.type not in _TYPES or not ref.on(client.base_url):
            continue
        if sum(len(ids) for ids in wanted.values()) >= MAX_PEOPLE:
            break
        wanted[ref.type].add(ref.id)
    found: dict[str, str] = {}
    for rtype, ids in sorted(wanted.items()):
        try:
            found.update(_names_of(client, rtype, sorted(ids)))
        except AllianceFhirError as exc:
            # the error's text may carry the search URL (ids): only its kind is logged
            logger.warning(
                "names of %s could not be read (%s): cards and reports use plain words", rtype, type(exc).__name__
            )
    return Names(found)


def _names_of(client: FhirClient, rtype: str, ids: list[str]) -> dict[str, str]:
    params = {"_id": ",".join(ids), "_count": str(len(ids) * 2)}
    if rtype == "PractitionerRole":
        params["_include"] = "PractitionerRole:practitioner"
    # every entry, the included practitioners too (search() keeps only the matches)
    resources = [
        entry["resource"]
        for page in client.search_pages(rtype, params)
        for entry in page.get("entry") or []
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
    ]
    names = Names.from_resources(resources).by_reference
    found = {ref: name for ref, name in names.items() if ref.startswith(f"{rtype}/")}
    if rtype == "PractitionerRole":
        found.update(_role_names(resources, names))
    return found


def _role_names(resources: list[dict[str, Any]], names: Mapping[str, str]) -> dict[str, str]:
    """A PractitionerRole is named by its practitioner."""
    out: dict[str, str] = {}
    for role in resources:
        if role.get("resourceType") != "PractitionerRole" or not isinstance(role.get("id"), str):
            continue
        practitioner = (role.get("practitioner") or {}).get("reference")
        if isinstance(practitioner, str) and practitioner in names:
            out[f"PractitionerRole/{role['id']}"] = names[practitioner]
    return out
