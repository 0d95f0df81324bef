"""What the CDS hook reads about one patient when the EHR sent no prefetch: the one read function.

:func:`read_patient` reads, as the hook always has: from the results store, the patient's score
Observations and alliance DetectedIssues and the other members' scores that an open split issue
cites; from the source (the EHR), the sessions' Encounters (with ``_include`` when the two are one
server) and the people's names. The store is searched for the patient in both forms its results
may name them (relative, or absolute on the source: :class:`~alliance_fhir._refs.References`).
:class:`PatientReader` answers the same from the state's stored reads
(:mod:`..server.state.cds_summaries`, keyed by the source and the results store as the rest of the
state) while they are current, and reads through :func:`read_patient` otherwise. Both give the same
:class:`PatientRead`, so the cards are the same whichever way it came
(``tests/service/test_cds_read.py`` compares them); the stored read only saves the round trips,
which queue behind every other request on the servers (serve's own catch-up sync among them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM
from .._refs import ONE_SERVER, References
from ..errors import AllianceFhirError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from ..server.people import fetch_names
from ..server.signal_sync import fetch_encounters, fetch_scores, references_between
from ..server.state import ServerPair
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

    def trajectories(self, catalog: Catalog, references: References = ONE_SERVER) -> Trajectories:
        """The per-client series, the store's references to the source read as the source names them."""
        return build_trajectories(self.observations, catalog, context_from_encounters(self.encounters), references)

    def patients(self, key: str | ServerPair) -> list[str]:
        """``Patient/id`` (on the source) of every patient whose scores this read holds (the patient,
        joint-session members), whether a score names them relative or absolute on the source."""
        subjects = [
            o.get("subject", {}).get("reference") for o in self.observations if isinstance(o.get("subject"), dict)
        ]
        return patient_keys([s for s in subjects if isinstance(s, str)], key)

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


def read_patient(source: FhirClient, catalog: Catalog, patient: str, results: FhirClient | None = None) -> PatientRead:
    """Read ``patient`` (``Patient/id`` on the source): the scores and issues from the results store
    (``results``, else the source) at once, then any joint-session members' scores, then the names
    (of the patient and the scores' therapists) from the source.

    Raises:
        AllianceFhirError: a server could not be read (names excepted: they fall back to plain words).
    """
    store = source if results is None else results
    references = references_between(store, source)
    # the two reads at once: the latency is the slower of them, not their sum
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_issues, store, patient, references)
        observations, encounters = fetch_scores(store, patient, source=source)
        issues = pending.result()
    observations, encounters = with_joint_sessions(source, store, observations, encounters, issues, patient)
    trajectories = build_trajectories(observations, catalog, context_from_encounters(encounters), references)
    wanted = [patient, *sorted({s.focus for s in trajectories.for_subject(patient) if s.focus})]
    names = fetch_names(source, wanted)
    return PatientRead(observations, encounters, issues, dict(names.by_reference))


def read_issues(store: FhirClient, patient: str, references: References = ONE_SERVER) -> list[dict[str, Any]]:
    """The patient's alliance DetectedIssues (ours, by identifier system) in the results store, naming the
    patient relative or absolute on the source."""
    params = {"patient": references.search(patient), "identifier": f"{SIGNAL_IDENTIFIER_SYSTEM}|", "_count": "100"}
    return list(store.search("DetectedIssue", params))


def with_joint_sessions(
    source: FhirClient,
    store: FhirClient,
    observations: list[dict[str, Any]],
    encounters: list[dict[str, Any]],
    issues: Sequence[dict[str, Any]],
    patient: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The patient's scores plus the other members' scores that our open split issues cite.

    A split alliance compares every member of a joint session, so one client's scores cannot
    show it. Its DetectedIssue is not shown as such (anyone who can write to the server can
    write one): it only says which scores to read. They are read from the results store with our
    credentials (their sessions from the source), and the split is detected again from them; a
    card appears only when that detection finds the same open signal.
    """
    references = references_between(store, source)
    wanted = split_evidence(open_issues(issues, patient, references).values(), store.base_url)
    have = {str(o.get("id")) for o in observations}
    missing = sorted(wanted - have)
    if not missing:
        return observations, encounters
    split = store is not source
    params = {"_id": ",".join(missing), "identifier": f"{IDENTIFIER_SYSTEM}|", "_count": str(len(missing))}
    if not split:  # the sessions are on the same server: one request
        params["_include"] = "Observation:encounter"
    more, their_encounters = unbundle(store.search_pages("Observation", params))
    if split:  # the sessions are on the source (the EHR)
        their_encounters += fetch_encounters(source, more)
    return observations + more, encounters + their_encounters


@dataclass
class PatientReader:
    """:func:`read_patient` through the state's stored reads (``summaries``; None or a maximum age of 0: none).

    ``source`` is the EHR (the hook's ``fhirServer``), ``results`` the results store (the source when
    None); the stored reads are kept per pair of them, as the rest of the state.
    """

    source: FhirClient
    catalog: Catalog
    summaries: CdsSummaries | None = None
    max_age_seconds: float = 300.0
    results: FhirClient | None = None

    @property
    def store(self) -> FhirClient:
        """Where scores and DetectedIssues are read: the results store, else the source."""
        return self.source if self.results is None else self.results

    @property
    def key(self) -> ServerPair:
        """What the stored reads are keyed by: (source URL, results store URL)."""
        return ServerPair(self.source.base_url, self.store.base_url)

    @property
    def references(self) -> References:
        """How the store's results name the source's resources (to read a :class:`PatientRead`'s series)."""
        return references_between(self.store, self.source)

    def read(self, patient: str) -> tuple[PatientRead, str]:
        """``patient``'s results and where they came from ("stored read", "FHIR server" or "results store").

        Raises:
            AllianceFhirError: a server (or the state database) could not be read.
        """
        key = self.key
        if self.summaries is None or self.max_age_seconds <= 0:
            return self._fresh(patient)
        try:
            stored = self.summaries.current(key, patient, self.max_age_seconds)
            before = self.summaries.latest(key) if stored is None else 0
        except AllianceFhirError as exc:  # the state cannot say: the servers can
            logger.warning("patient-view: stored reads unavailable (%s): reading the FHIR server", type(exc).__name__)
            return self._fresh(patient)
        if stored is not None:
            return PatientRead.from_json(stored), "stored read"
        fresh, where = self._fresh(patient)
        try:
            self.summaries.store(key, patient, fresh.patients(key), before, fresh.to_json(), self.max_age_seconds)
        except AllianceFhirError as exc:  # the read stands; the next hook reads the server again
            logger.warning("patient-view: the read could not be stored: %s", type(exc).__name__)
        return fresh, where

    def _fresh(self, patient: str) -> tuple[PatientRead, str]:
        read = read_patient(self.source, self.catalog, patient, self.results)
        return read, "FHIR server" if self.store is self.source else "results store"
