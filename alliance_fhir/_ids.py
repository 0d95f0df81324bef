"""Every namespace, identifier system and extension URL of the project, and the FHIR media types, defined once.

Scores, signals, content and the FHIR package must agree on these strings byte for byte:
an identifier system that differs by one character makes a conditional update create a
duplicate instead of finding the existing resource. Nothing here imports anything.
"""

from __future__ import annotations

__all__ = [
    "ACT_CODE_SYSTEM",
    "CONFIDENTIALITY_SYSTEM",
    "CDS_CARD_ID_BASE",
    "CDS_REPORT_LINK_SCOPE",
    "DEFINITION_ID_SYSTEM",
    "DEVICE_IDENTIFIER_SYSTEM",
    "FHIR_JSON",
    "FOCUS_EXTENSION",
    "IDENTIFIER_SYSTEM",
    "INSTANTIATES",
    "MEASURE_CATEGORY",
    "NDJSON",
    "PROJECT_BASE",
    "PROJECT_CODESYSTEM",
    "SIGNAL_IDENTIFIER_SYSTEM",
    "SIGNAL_STATUS_EXTENSION",
    "SUBSCRIPTION_TAG",
    "SUBSCRIPTION_TOPIC_URL",
    "SURVEY_CATEGORY",
    "TASK_IDENTIFIER_SYSTEM",
    "UCUM",
]

# The project's namespace (canonical base of our Questionnaires and definitions).
PROJECT_BASE = "http://alliance-fhir.org/fhir"
PROJECT_CODESYSTEM = f"{PROJECT_BASE}/CodeSystem/alliance-fhir"
UCUM = "http://unitsofmeasure.org"

# The categories every score Observation (and its ObservationDefinition) carries.
SURVEY_CATEGORY = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "survey",
    "display": "Survey",
}
MEASURE_CATEGORY = {
    "alliance": {"system": PROJECT_CODESYSTEM, "code": "therapeutic-alliance", "display": "Therapeutic alliance"},
    "outcome": {"system": PROJECT_CODESYSTEM, "code": "treatment-outcome", "display": "Treatment outcome"},
}

# HL7 code systems of security labels (``meta.security``): the confidentiality classification,
# and ActCode for information-sensitivity policies (PSY, MH, ...). See docs/hiding-results.md.
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# Identifier systems: the keys of our idempotent (conditional) writes.
IDENTIFIER_SYSTEM = f"{PROJECT_BASE}/sid/score-observation"
SIGNAL_IDENTIFIER_SYSTEM = f"{PROJECT_BASE}/sid/alliance-signal"
TASK_IDENTIFIER_SYSTEM = f"{PROJECT_BASE}/sid/alliance-signal-task"
DEVICE_IDENTIFIER_SYSTEM = f"{PROJECT_BASE}/sid/device"
DEFINITION_ID_SYSTEM = f"{PROJECT_BASE}/sid/observation-definition"

# Extensions: ours, and the core one that says which Questionnaire an Observation scores.
FOCUS_EXTENSION = f"{PROJECT_BASE}/StructureDefinition/alliance-focus"
SIGNAL_STATUS_EXTENSION = f"{PROJECT_BASE}/StructureDefinition/alliance-signal-status"
INSTANTIATES = "http://hl7.org/fhir/StructureDefinition/workflow-instantiatesCanonical"

# `serve`'s own Subscription is found again by this tag (R4 Subscription has no identifier); its
# Backport topic (an R4 `Basic`) has this canonical.
SUBSCRIPTION_TAG = {"system": PROJECT_CODESYSTEM, "code": "serve-subscription"}
SUBSCRIPTION_TOPIC_URL = f"{PROJECT_BASE}/SubscriptionTopic/questionnaire-response-written"

# CDS Hooks: card uuids are derived (uuid5) under this name; a report link token carries this scope.
CDS_CARD_ID_BASE = f"{PROJECT_BASE}/cds-card"
CDS_REPORT_LINK_SCOPE = f"{PROJECT_BASE}/cds-report-link"

# The FHIR media types: what the client asks for and sends, what the service answers, what $import pulls.
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
