"""What each EHR vendor's public documents say its FHIR R4 API accepts, as data for the vendor proxy.

These profiles are OUR READING of public documents, not a certification and not a vendor's word.
Every line that encodes a vendor fact cites its public source in a comment. "Re-checked" means the
source was read again (stored copy, December 2026) while writing this table; "not re-checked" means
the fact comes from the anchors review (/work/shared/reviews/ehr-and-mbc-anchors-2026-12.md §1) only.
Where a vendor documents that something is refused but not the HTTP status it answers with, the
proxy answers 403 with an OperationOutcome (``REFUSED``) and the comment says the status is ours.

Interaction codes are FHIR's (``read``, ``search-type``, ``create``, ``update``, ``delete``,
``patch``, ``vread``, ``history-type``, ``history-instance``) plus the system ones
(``transaction``, ``batch``, ``history-system``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The status a refused write gets where the vendor's documents do not say which one it answers with.
REFUSED = 403
# The status for a resource type the vendor does not offer at all (FHIR's "unknown resource type").
NO_SUCH_TYPE = 404

READ = frozenset({"read", "search-type"})
READ_CREATE = READ | {"create"}
READ_WRITE = READ | {"create", "update"}

# A guard looks at a create/update body and returns why the vendor refuses it, or None to let it through.
Guard = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class ResourceRule:
    """One resource type as the vendor offers it.

    ``search_params`` trims the CapabilityStatement's searchParam list (None keeps HAPI's list: the
    vendor's exact parameters were not re-checked). ``scoped_by`` makes a type-level search without
    one of these parameters a refusal (Epic's patient-scoped QuestionnaireResponse search).
    """

    interactions: frozenset[str]
    search_params: tuple[str, ...] | None = None
    scoped_by: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    guard: Guard | None = None
    supported_profiles: tuple[str, ...] = ()
    documentation: str = ""


@dataclass(frozen=True)
class Profile:
    """A vendor: its resources, system interactions and operations; ``resources=None`` is HAPI as is."""

    name: str
    title: str
    resources: Mapping[str, ResourceRule] | None
    system_interactions: frozenset[str] = frozenset()
    system_operations: tuple[str, ...] = ()
    instantiates: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def is_open(self) -> bool:
        return self.resources is None


def _codes(resource: dict[str, Any], element: str) -> set[str]:
    return {
        str(coding.get("code"))
        for concept in resource.get(element) or []
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
        if isinstance(coding, dict)
    }


def epic_observation_guard(resource: dict[str, Any]) -> str | None:
    """Epic's R4 Observation create is documented for Vital Signs (flowsheet rows), LDA and DICOM only."""
    if "vital-signs" in _codes(resource, "category"):
        return None
    return "Observation create is offered for vital signs (flowsheet rows) only; this Observation is not in category vital-signs"


def oracle_qr_update_guard(resource: dict[str, Any]) -> str | None:
    """Oracle Millennium's QuestionnaireResponse update body allows status in-progress only."""
    if resource.get("status") == "in-progress":
        return None
    return "QuestionnaireResponse update accepts status in-progress only"


# ---------------------------------------------------------------- open: HAPI as it is

OPEN = Profile(name="open", title="Open server (HAPI FHIR as it is)", resources=None)

# ---------------------------------------------------------------- Epic
# Source for every Epic line unless another is named: the R4 API catalogue
# https://open.epic.com/Interface/FHIR (re-checked in a stored copy, December 2026); each spec is
# https://fhir.epic.com/Sandbox?api=<number>.
EPIC = Profile(
    name="epic",
    title="Epic (R4)",
    resources={
        "Patient": ResourceRule(
            READ
        ),  # Patient.Read/Search (Demographics) R4, api 931/932 (re-checked); Patient.Create 930 left out: we never create patients
        "Practitioner": ResourceRule(
            READ
        ),  # Practitioner.Read/Search (Organizational Directory) R4, api 935/936 (re-checked)
        "Encounter": ResourceRule(READ),  # Encounter.Read/Search (Patient Chart) R4, api 908/909 (re-checked)
        "Group": ResourceRule(
            READ, operations=("export",)
        ),  # Group.Read/Search (Employer Group) api 10315/10476; Bulk Data Kick-off api 10169 (re-checked)
        "Questionnaire": ResourceRule(
            READ
        ),  # Questionnaire.Read/Search (Patient-Entered Questionnaires) R4, api 10025/10081 (re-checked)
        "QuestionnaireResponse": ResourceRule(
            READ_CREATE,  # QR.Create (Patient-Entered Questionnaires) api 10023, QR.Read api 10024, QR.Search api 10082 (re-checked); no update listed
            search_params=(
                "patient",
                "subject",
                "_id",
            ),  # parameter names of api 10082 NOT re-checked (spec page not in the stored copy)
            scoped_by=(
                "patient",
                "subject",
            ),  # the search is per patient (Patient-Entered Questionnaires, api 10082); refusal status not documented: ours
        ),
        "Observation": ResourceRule(
            READ_CREATE,  # Observation.Read/Search for vital signs, labs, Assessments (api 968/973, 11053/11052) and more (re-checked)
            guard=epic_observation_guard,  # Observation.Create (Vital Signs) api 963, (Lines, Drains, Airways) 962, (DICOM) 11224; no survey create (re-checked)
        ),
        "DocumentReference": ResourceRule(
            READ_CREATE,  # DocumentReference.Create (Clinical Notes) R4 api 1046, Read/Search 1047/1048 (re-checked); Update only for "Document Information" (10051)
        ),
        "Flag": ResourceRule(
            READ
        ),  # Flag.Read/Search (Patient FYI, Health Concerns, ...) R4 only, no create (re-checked)
        "Task": ResourceRule(
            READ
        ),  # Task.Read/Search (Community Resource, Episode Checklist); Task.Update only for Community Resource (api 10087); no create (re-checked)
        "Communication": ResourceRule(
            READ
        ),  # Communication.Create only for Community Resource Communication (api 10090), which ours are not (re-checked)
        "Binary": ResourceRule(frozenset({"read"})),  # Binary.Read (Clinical Notes) R4 api 1044 (re-checked)
        # No DetectedIssue, CodeSystem or Subscription at all: absent from the catalogue (re-checked); Epic points
        # notification needs to "an event based interface" (CDS Hooks entry on open.epic.com, re-checked).
    },
    system_interactions=frozenset(),  # no transaction or batch in the catalogue (re-checked: no "Bundle" transaction spec listed)
    system_operations=("export",),  # Bulk Data Kick-off/Status/File/Delete, api 10169-10172 (re-checked)
    notes=(
        "CDS Hooks supported (open.epic.com CDS Hooks entry, re-checked); SMART EHR launch, standalone and backend services (Authentication entry, re-checked).",
        "Conditional create/update are not in the catalogue's titles: not advertised here, and refused (status ours).",
    ),
)

# ---------------------------------------------------------------- Oracle Health (Millennium)
# Sources: https://docs.oracle.com/en/industries/health/millennium-platform-apis/mfrap/ (the R4 API),
# pages named per line; re-checked where it says so (stored copies, December 2026).
ORACLE = Profile(
    name="oracle",
    title="Oracle Health Millennium (R4)",
    resources={
        "Patient": ResourceRule(READ),  # mfrap Patient read/search (not re-checked)
        "Practitioner": ResourceRule(READ),  # mfrap Practitioner read/search (not re-checked)
        "Encounter": ResourceRule(READ),  # mfrap Encounter read/search (not re-checked)
        "Group": ResourceRule(
            frozenset(), operations=("export",)
        ),  # mfbda/bulk_data_access.html: Group export (not re-checked)
        "Questionnaire": ResourceRule(
            READ
        ),  # mfrap/api-questionnaire.html: get list / get by id; social history only (re-checked)
        "QuestionnaireResponse": ResourceRule(
            READ
            | {
                "update"
            },  # mfrap/api-questionnaireresponse.html "currently, only social history is supported" (re-checked); op-questionnaireresponse-id-put.html (not re-checked)
            search_params=(
                "patient",
                "_id",
            ),  # "first search QuestionnaireResponse by patient" (mfrap/api-questionnaire.html, re-checked); other names not re-checked
            guard=oracle_qr_update_guard,  # op-questionnaireresponse-id-put.html: update body allows status in-progress only (not re-checked)
        ),
        "Observation": ResourceRule(
            READ_CREATE
        ),  # mfrap/op-observation-post.html documents POST /Observation (not re-checked); which categories it takes is not re-checked
        "DocumentReference": ResourceRule(
            READ_WRITE
        ),  # mfrap/op-documentreference-post.html create; api-documentreference.html "writing and updating documents" (re-checked)
        "Binary": ResourceRule(
            frozenset({"read"})
        ),  # mfrap/api-documentreference.html: documents downloaded through Binary (re-checked)
        # No DetectedIssue, Flag, Task or Subscription: no public source found (anchors review §1 "?"); absent here.
    },
    system_interactions=frozenset(),  # transactions/batch: no public source found (anchors review §1 "?"); not offered here
    system_operations=(),  # Millennium offers Group export (and Patient export), not system-level export (mfbda, not re-checked)
    notes=(
        "Conditional create is not documented: a forum question on If-None-Exist got no documented support "
        "(forums.oracle.com/ords/apexds/post/patient-create-4558, not re-checked).",
        "Observation POST: forum posts show vital-sign writes failing validation (forums.oracle.com ...-1064, not re-checked); the proxy does not model validation.",
    ),
)

# ---------------------------------------------------------------- MEDITECH Expanse (Greenfield)
# Source: a harvest of the live CapabilityStatement https://greenfield-prod-apis.meditech.com/v2/uscore/STU6/metadata
# at https://raw.githubusercontent.com/api-evangelist/meditech/refs/heads/main/conformance/meditech-greenfield-conformance.yml
# (second-hand; the harvest itself was NOT re-checked here: only the base URL was seen again in public code).
MEDITECH = Profile(
    name="meditech",
    title="MEDITECH Expanse (Greenfield, R4 US Core STU6)",
    resources={
        "Patient": ResourceRule(READ),  # CapabilityStatement harvest: read/search (not re-checked)
        "Practitioner": ResourceRule(READ),  # harvest: read/search (not re-checked)
        "Encounter": ResourceRule(READ),  # harvest: read/search (not re-checked)
        "Observation": ResourceRule(READ),  # harvest: read/search only, no create (not re-checked)
        "DocumentReference": ResourceRule(READ),  # harvest: read/search only (not re-checked)
        "Questionnaire": ResourceRule(READ),  # harvest: read/search (not re-checked)
        "QuestionnaireResponse": ResourceRule(
            READ_WRITE
        ),  # harvest: read/search, create and update: one of two writable types (not re-checked)
        "Communication": ResourceRule(
            frozenset({"create"})
        ),  # harvest: create: the other writable type (not re-checked)
        # No DetectedIssue, Flag, Task, Group or Subscription in the harvest (not re-checked).
    },
    system_interactions=frozenset(),  # harvest: no transaction/batch (not re-checked)
    notes=(
        "The harvest notes no idempotency guarantee documented: no conditional writes advertised here (not re-checked).",
        "SMART: authorization code + PKCE; client_credentials advertised but not enabled in the sandbox (meditech-greenfield-oauth.yml harvest, not re-checked).",
    ),
)

# ---------------------------------------------------------------- athenahealth
# Sources: https://github.com/athenahealth/aone-fhir-subscriptions (re-checked: "largely conforms to the FHIR
# Subscriptions R5 Backport STU 1.0.0", rest-hook only, id-only payloads, signed messages to a public HTTPS
# webhook; "the Subscription and SubscriptionTopic endpoints ... are still in development and not yet available
# externally"). The FHIR read scopes come from a second-hand listing (anchors review §1, not re-checked).
ATHENA = Profile(
    name="athena",
    title="athenahealth (athenaOne, R4)",
    resources={
        "Patient": ResourceRule(READ),  # FHIR scopes listed are read (anchors review §1, second-hand, not re-checked)
        "Practitioner": ResourceRule(READ),  # same listing (not re-checked)
        "Encounter": ResourceRule(READ),  # same listing (not re-checked)
        "Observation": ResourceRule(READ),  # same listing: read only (not re-checked)
        "DocumentReference": ResourceRule(READ),  # same listing: read only (not re-checked)
        "QuestionnaireResponse": ResourceRule(
            READ
        ),  # UNVERIFIED: no public source found (anchors review §1 "?"); assumed readable so reads can be exercised
        "Subscription": ResourceRule(
            frozenset(),  # endpoints "not yet available externally" (aone-fhir-subscriptions README, re-checked): events are set up with athenahealth
            supported_profiles=(
                "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription",
            ),
            documentation="Backport-style events: rest-hook channel, id-only payload, signed messages to a public HTTPS webhook "
            "(github.com/athenahealth/aone-fhir-subscriptions).",
        ),
    },
    system_interactions=frozenset(),  # no transaction/batch found (anchors review §1 "?")
    instantiates=(
        "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server",
    ),  # aone-fhir-subscriptions (re-checked)
    notes=("SMART: launch scopes listed (anchors review §1, second-hand, not re-checked).",),
)

# ---------------------------------------------------------------- OpenEMR
# Sources: https://github.com/openemr/openemr/issues/9076 (re-checked: "Currently only Patient, Practitioner, and
# Organization support write operations"), #14197 (re-checked: Observation write still open, 2026-09),
# #8846 (QuestionnaireResponse endpoints added, closed 2025; not re-checked), #4582/#9373 (Bulk export, not re-checked).
OPENEMR = Profile(
    name="openemr",
    title="OpenEMR (R4, US Core)",
    resources={
        "Patient": ResourceRule(READ_WRITE),  # #9076: write-enabled (re-checked)
        "Practitioner": ResourceRule(READ_WRITE),  # #9076: write-enabled (re-checked)
        "Organization": ResourceRule(READ_WRITE),  # #9076: write-enabled (re-checked)
        "Encounter": ResourceRule(READ),  # #9078: write still open (re-checked)
        "Observation": ResourceRule(READ),  # #14197: Observation write is an open issue (re-checked)
        "DocumentReference": ResourceRule(
            READ
        ),  # #9076: "Read-only resources (20+): All other FHIR resources" (re-checked)
        "Questionnaire": ResourceRule(READ),  # #8846 (not re-checked)
        "QuestionnaireResponse": ResourceRule(
            READ
        ),  # #8846 endpoints; writes not in #9076's list (re-checked for the list)
        "Group": ResourceRule(READ, operations=("export",)),  # Bulk export #4582, #9373 (not re-checked)
        # PR #13281 (open) would add POST/PUT for 25 resources; this profile encodes the state #9076 describes.
    },
    system_interactions=frozenset(),  # transactions: no public source found (anchors review §1 "?")
    system_operations=("export",),  # Bulk export #4582, #9373 (not re-checked)
    notes=("SMART: certified (#9373, not re-checked).",),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (OPEN, EPIC, ORACLE, MEDITECH, ATHENA, OPENEMR)}
