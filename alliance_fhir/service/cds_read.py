"""What the CDS hook reads about one patient when the EHR sent no prefetch: the one read function.

:func:`read_patient` reads the results server (the patient's score Observations with their
Encounters, the patient's alliance DetectedIssues, the other members' scores that an open split
issue cites, and the people's names). :class:`PatientReader` answers the same from the state's
stored reads (:mod:`..server.state.cds_summaries`) while they are current, and reads through
:func:`read_patient` otherwise. Both give the same :class:`PatientRead`, so the cards are the same
whichever way it came (``tests/service/test_cds_read.py`` compares them); the stored read only
saves the round trips, which queue behind every other request on the server (serve's own
catch-up sync among them). Which server is read is the client's: a separate results store later
is one more client here, nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM
from ..errors import AllianceFhirError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from ..server.people import fetch_names
from ..server.signal_sync import fetch_scores
from ..server.state.cds_summaries import CdsSummaries, patient_keys
from ..signals.cards import open_issues, split_evidence
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle

__all__ = ["PatientRead", "PatientReader", "read_patient", "with_joint_sessions"]

logger = logging.getLogger("alliance_fhir.cds")


@dataclass(frozen=True)
class PatientRead:
    """One patient's results as the hook uses them (all JSON, so a read can be stored as it is)."""

    observations: list[dict[str, Any]]
    encounters: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    names: dict[str, str] = field(default_factory=dict)

    def trajectories(self, catalog: Catalog) -> Trajectories:
        return build_trajectories(self.observations, catalog, context_from_encounters(self.encounters))

    def patients(self, server: str) -> list[str]:
        """``Patient/id`` of every patient whose scores this read holds (the patient, joint-session members)."""
        subjects = [
            o.get("subject", {}).get("reference") for o in self.observations if isinstance(o.get("subject"), dict)
        ]
        return patient_keys([s for s in subjects if isinstance(s, str)], server)

    def to_json(self) -> str:
        return json.dumps(
            {
                "observations": self.observations,
                "encounters": self.encounters,
                "issues": self.issues,
                "names": self.names,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> PatientRead:
        data = json.loads(text)
        return cls(data["observations"], data["encounters"], data["issues"], data["names"])


def read_patient(client: FhirClient, catalog: Catalog, patient: str) -> PatientRead:
    """Read ``patient``'s results from ``client``'s server: the scores and issues at once, then any
    joint-session members' scores, then the names (of the patient and the scores' therapists).

    Raises:
        AllianceFhirError: the server could not be read (names excepted: they fall back to plain words).
    """
    # the two reads at once: the latency is the slower of them, not their sum
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_issues, client, patient)
        observations, encounters = fetch_scores(client, patient)
        issues = pending.result()
    observations, encounters = with_joint_sessions(client, observations, encounters, issues, patient)
    trajectories = build_trajectories(observations, catalog, context_from_encounters(encounters))
    wanted = [patient, *sorted({s.focus for s in trajectories.for_subject(patient) if s.focus})]
    names = fetch_names(client, wanted)
    return PatientRead(observations, encounters, issues, dict(names.by_reference))


def read_issues(client: FhirClient, patient: str) -> list[dict[str, Any]]:
    """The patient's alliance DetectedIssues (ours, by identifier system)."""
    params = {"patient": patient, "identifier": f"{SIGNAL_IDENTIFIER_SYSTEM}|", "_count": "100"}
    return list(client.search("DetectedIssue", params))


def with_joint_sessions(
    client: FhirClient,
    observations: list[dict[str, Any]],
    encounters: list[dict[str, Any]],
    issues: Sequence[dict[str, Any]],
    patient: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The patient's scores plus the other members' scores that our open split issues cite.

    A split alliance compares every member of a joint session, so one client's scores cannot
    show it. Its DetectedIssue is not shown as such (anyone who can write to the server can
    write one): it only says which scores to read. They are read from our server with our
    credentials, and the split is detected again from them; a card appears only when that
    detection finds the same open signal.
    """
    wanted = split_evidence(open_issues(issues, patient).values(), client.base_url)
    have = {str(o.get("id")) for o in observations}
    missing = sorted(wanted - have)
    if not missing:
        return observations, encounters
    params = {
        "_id": ",".join(missing),
        "identifier": f"{IDENTIFIER_SYSTEM}|",
        "_include": "Observation:encounter",
        "_count": str(len(missing)),
    }
    more, their_encounters = unbundle(client.search_pages("Observation", params))
    return observations + more, encounters + their_encounters


@dataclass
class PatientReader:
    """:func:`read_patient` through the state's stored reads (``summaries``; None or a maximum age of 0: none)."""

    client: FhirClient
    catalog: Catalog
    summaries: CdsSummaries | None = None
    max_age_seconds: float = 300.0

    def read(self, patient: str) -> tuple[PatientRead, str]:
        """``patient``'s results and where they came from ("stored read" or "FHIR server").

        Raises:
            AllianceFhirError: the server (or the state database) could not be read.
        """
        server = self.client.base_url
        if self.summaries is None or self.max_age_seconds <= 0:
            return read_patient(self.client, self.catalog, patient), "FHIR server"
        try:
            stored = self.summaries.current(server, patient, self.max_age_seconds)
            before = self.summaries.latest(server) if stored is None else 0
        except AllianceFhirError as exc:  # the state cannot say: the server can
            logger.warning("patient-view: stored reads unavailable (%s): reading the FHIR server", type(exc).__name__)
            return read_patient(self.client, self.catalog, patient), "FHIR server"
        if stored is not None:
            return PatientRead.from_json(stored), "stored read"
        fresh = read_patient(self.client, self.catalog, patient)
        try:
            self.summaries.store(server, patient, fresh.patients(server), before, fresh.to_json(), self.max_age_seconds)
        except AllianceFhirError as exc:  # the read stands; the next hook reads the server again
            logger.warning("patient-view: the read could not be stored: %s", type(exc).__name__)
        return fresh, "FHIR server"
