"""Hand-built score Observations for the signal and report tests.

``score_obs("srs", 35.5, day=3)`` is the score Observation that
``alliance_fhir.scoring.observations.build_observation`` writes for an SRS total of 35.5 authored on
2026-11-03 in Encounter/e3 (one session a day keeps the arithmetic in the tests readable);
``test_signals.py`` proves the shape matches the real builder.
"""

from __future__ import annotations

from typing import Any

BASE = "http://alliance-fhir.org/fhir"
CS = f"{BASE}/CodeSystem/alliance-fhir"
SID = f"{BASE}/sid/score-observation"
INSTANTIATES = "http://hl7.org/fhir/StructureDefinition/workflow-instantiatesCanonical"
CANONICAL = {
    "srs": f"{BASE}/Questionnaire/srs|1.0.0",
    "csrs": f"{BASE}/Questionnaire/csrs|1.0.0",
    "gsrs": f"{BASE}/Questionnaire/gsrs|1.0.0",
    "ors": f"{BASE}/Questionnaire/ors|1.0.0",
    "wai-sr": f"{BASE}/Questionnaire/wai-sr|1.0.0",
    "haq-ii": f"{BASE}/Questionnaire/haq-ii|1.0.0",
    "pair-client": "http://example.org/Questionnaire/pair-client|1.0",
    "pair-therapist": "http://example.org/Questionnaire/pair-therapist|1.0",
}
CLIENT = "Patient/c1"
THERAPIST = "PractitionerRole/t1"


def score_obs(
    instrument: str,
    value: float,
    *,
    day: int,
    subject: str = CLIENT,
    focus: str | None = THERAPIST,
    encounter: str | None = "auto",
    ident: str | None = None,
    status: str = "final",
    subscales: dict[str, float] | None = None,
    performer: str | None = None,
    hour: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    """A score Observation as build_observation writes it (only the elements signals read, plus category)."""
    enc = f"Encounter/{subject.split('/')[-1]}-{day}" if encounter == "auto" else encounter
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": INSTANTIATES, "valueCanonical": CANONICAL[instrument]}],
        "identifier": [{"system": SID, "value": ident or f"{instrument}-{subject.split('/')[-1]}-{day}"}],
        "status": status,
        "code": {"coding": [{"system": CS, "code": f"{instrument}-total"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": f"2026-11-{day:02d}T{hour:02d}:00:00Z",
        "valueQuantity": {"value": value, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
    }
    if enc:
        obs["encounter"] = {"reference": enc}
    if focus:
        obs["focus"] = [{"reference": focus}]
    if performer:
        obs["performer"] = [{"reference": performer}]
    if subscales:
        obs["component"] = [
            {"code": {"coding": [{"system": CS, "code": f"{instrument}-{name}"}]}, "valueQuantity": {"value": v}}
            for name, v in subscales.items()
        ]
    obs.update(extra)
    return obs


def series_obs(instrument: str, values: list[float | None], **kwargs: Any) -> list[dict[str, Any]]:
    """One score per day from 2026-11-01; ``None`` is a session without a score (left out)."""
    return [score_obs(instrument, v, day=i, **kwargs) for i, v in enumerate(values, start=1) if v is not None]


def encounter(
    subject: str,
    day: int,
    *,
    episode: str | None = "EpisodeOfCare/ep1",
    part_of: str | None = None,
    who: str = THERAPIST,
) -> dict[str, Any]:
    """The Encounter of a session (for episode, ordering and missing-session tests)."""
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": f"{subject.split('/')[-1]}-{day}",
        "status": "finished",
        "subject": {"reference": subject},
        "period": {"start": f"2026-11-{day:02d}T09:00:00Z"},
        "participant": [{"individual": {"reference": who}}],
    }
    if episode:
        enc["episodeOfCare"] = [{"reference": episode}]
    if part_of:
        enc["partOf"] = {"reference": part_of}
    return enc
