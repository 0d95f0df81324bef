"""People's names for clinical text: "Robin Rupture", never ``Patient/afdemo-rupture``.

Cards, Tasks and reports are read by clinicians, who know their clients and colleagues by name,
not by FHIR reference. The names come from the server (Patient and Practitioner resources) and are
shown only to clinicians: the CDS service answers nobody else, and a report link is scoped to one
patient. When a name is unknown the text says "this client" or "the therapist" instead of a
reference, so an internal id never reaches a clinician's screen.

Pure functions: the server read lives in ``server.signal_sync.fetch_names``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLIENT", "THERAPIST", "Names", "human_name"]

CLIENT = "this client"
THERAPIST = "the therapist"
_MAX_NAME = 120


def human_name(resource: Any) -> str | None:
    """The display name of a Patient, Practitioner or RelatedPerson: its usual/official name, as people write it.

    ``name.text`` when present, else the given names then the family name. None when the resource
    has no usable name. Control characters are dropped and the result is bounded, because the name
    is server data that ends up in cards and pages (escaped there, too).
    """
    if not isinstance(resource, dict):
        return None
    names = (
        [n for n in resource.get("name") or [] if isinstance(n, dict)] if isinstance(resource.get("name"), list) else []
    )
    names.sort(key=lambda n: {"usual": 0, "official": 1}.get(str(n.get("use")), 2))
    for name in names:
        text = name.get("text")
        if not isinstance(text, str) or not text.strip():
            given = (
                [g for g in name.get("given") or [] if isinstance(g, str)]
                if isinstance(name.get("given"), list)
                else []
            )
            family = name.get("family")
            text = " ".join([*given, family if isinstance(family, str) else ""])
        cleaned = " ".join("".join(ch for ch in text if ch.isprintable()).split())
        if cleaned:
            return cleaned[:_MAX_NAME]
    return None


@dataclass(frozen=True, slots=True)
class Names:
    """Display names by reference (``Patient/1`` -> "Robin Rupture"), with plain-word fallbacks."""

    by_reference: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_resources(cls, resources: Iterable[Any]) -> Names:
        """Names of the Patients, Practitioners and RelatedPersons among ``resources`` (others are ignored)."""
        found: dict[str, str] = {}
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
                continue
            kind = resource.get("resourceType")
            name = human_name(resource)
            if kind in ("Patient", "Practitioner", "RelatedPerson") and name:
                found[f"{kind}/{resource['id']}"] = name
        return cls(found)

    def client(self, reference: str | None) -> str:
        """The client's name, or "this client"."""
        return self.by_reference.get(reference or "", CLIENT)

    def therapist(self, reference: str | None) -> str:
        """The therapist's name, or "the therapist"."""
        return self.by_reference.get(reference or "", THERAPIST)

    def known(self, reference: str | None) -> str | None:
        """The name when known, else None (for texts that leave the person out rather than say "the therapist")."""
        return self.by_reference.get(reference or "")
