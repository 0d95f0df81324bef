"""CDS Hooks: each patient's last read of the results server, and which patients' results changed since.

The ``patient-view`` hook without prefetch needs a patient's score Observations, their Encounters,
the patient's alliance DetectedIssues and the people's names: four or five searches of the FHIR
server, which queue behind every other request there (serve's own catch-up sync, a burst of
writes). A clinician opens the same chart many times a day while the scores change once per
session, so the service keeps what its last read found (``cds_summary``) and reads the server again
only when that read may be out of date.

When is a read out of date? Every writer of this state says which patients' results it changed
(``cds_change``), *after* the server confirmed the write: sync, and serve's catch-up and rounds
(score Observations written or retracted), and serve's signals (DetectedIssues written or
withdrawn). A change takes the next number of one sequence per server pair (the source and the
results store, :class:`.pair.ServerPair`, as the rest of the state is keyed; a plain URL is one
server). Patients are keyed as the source names them (``Patient/id``), whether the results store
holds the reference relative or absolute on the source (:mod:`alliance_fhir._refs`). Before reading the server
the hook takes the sequence's highest number; after the read it stores what it found with the
numbers of every patient whose scores it holds (the patient, and the other members of a joint
session) only if none of them is higher, i.e. no write landed during the read. A stored read is
used only while all those numbers are unchanged and it is younger than the configured maximum
age. Why that is safe: a change is numbered after its write landed, so a change numbered before
the hook took the highest number was on the server when the hook read it, and a change numbered
after is higher. Changes no writer of this state reports (another installation's writes, an EHR's
edit of an Encounter or a name, a server-wide ``alliance-fhir signals`` run) are seen once the read
is older than the maximum age. Rows older than that are deleted whenever a read is stored, so the
table holds at most the patients viewed within the maximum age; ``cds_change`` holds one small row
per patient ever written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from ..._refs import parse_reference
from ..._time import stamp
from .._statedb import FeatureStore
from .pair import PAIR, ServerPair, pair_key, pair_of

__all__ = ["CdsSummaries", "patient_keys"]

_CHUNK = 500  # patients per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


class CdsSummaries(FeatureStore):
    """Patients' results changes (table ``cds_change``) and the hook's stored reads (table ``cds_summary``)."""

    def changed(self, server: str | ServerPair, patients: Iterable[str]) -> None:
        """Give each patient (``Patient/id`` of the source) the next change number: their stored reads are out of date."""
        keys = sorted(set(patients))
        if not keys:
            return
        with self.db.transaction():
            number = self.latest(server) + 1
            self.db.executemany(
                "INSERT INTO cds_change (server, results_server, patient, generation) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(server, results_server, patient) DO UPDATE SET generation = excluded.generation",
                [(*pair_key(server), key, number) for key in keys],
            )

    def latest(self, server: str | ServerPair) -> int:
        """The highest change number of ``server`` (0 before any change): take it before reading the server."""
        rows = self.db.execute(f"SELECT MAX(generation) FROM cds_change WHERE {PAIR}", pair_key(server))
        return int(rows[0][0] or 0)

    def generations(self, server: str | ServerPair, patients: Sequence[str]) -> dict[str, int]:
        """The change number of each patient (0 for one never changed)."""
        found: dict[str, int] = {p: 0 for p in patients}
        unique = sorted(found)
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = self.db.execute(
                f"SELECT patient, generation FROM cds_change WHERE {PAIR} AND patient IN ({marks})",
                (*pair_key(server), *chunk),
            )
            found.update({str(patient): int(generation) for patient, generation in rows})
        return found

    def current(self, server: str | ServerPair, patient: str, max_age_seconds: float) -> str | None:
        """The stored read of ``patient`` when it is still current (see the module), else None."""
        rows = self.db.execute(
            f"SELECT seen, filled_at, payload FROM cds_summary WHERE {PAIR} AND patient = ?",
            (*pair_key(server), patient),
        )
        if not rows:
            return None
        seen_text, filled_at, payload = rows[0]
        if str(filled_at) < _cutoff(max_age_seconds):
            return None
        seen: dict[str, int] = json.loads(str(seen_text))
        if self.generations(server, sorted(seen)) != seen:
            return None
        return str(payload)

    def store(
        self,
        server: str | ServerPair,
        patient: str,
        holds: Sequence[str],
        before: int,
        payload: str,
        max_age_seconds: float,
    ) -> bool:
        """Keep a read of ``patient`` holding the scores of ``holds``, made after :meth:`latest` gave ``before``;
        False (nothing kept) when one of them changed since. Reads past the maximum age are dropped."""
        with self.db.transaction():
            seen = self.generations(server, sorted(set(holds) | {patient}))
            if any(number > before for number in seen.values()):
                return False
            self.db.run("DELETE FROM cds_summary WHERE filled_at < ?", (_cutoff(max_age_seconds),))
            self.db.run(
                "INSERT INTO cds_summary (server, results_server, patient, seen, filled_at, payload) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(server, results_server, patient) DO UPDATE SET "
                "seen = excluded.seen, filled_at = excluded.filled_at, payload = excluded.payload",
                (*pair_key(server), patient, json.dumps(seen), stamp(), payload),
            )
        return True

    def count(self, server: str | ServerPair) -> int:
        """Stored reads for ``server`` (for tests and health: bounded by the patients viewed within the maximum age)."""
        return int(self.db.execute(f"SELECT COUNT(*) FROM cds_summary WHERE {PAIR}", pair_key(server))[0][0])

    def forget(self, server: str | ServerPair) -> None:
        """Drop every stored read and change counter of ``server`` (``sync --reset``)."""
        self.db.run(f"DELETE FROM cds_summary WHERE {PAIR}", pair_key(server))
        self.db.run(f"DELETE FROM cds_change WHERE {PAIR}", pair_key(server))


def patient_keys(references: Iterable[str], server: str | ServerPair) -> list[str]:
    """``Patient/id`` for each reference to a Patient of the source (``server``'s, or the pair's), the key
    of ``cds_change``: a relative reference and one absolute on the source read the same (as results in a
    store beside the source name it). References to other types or servers are left out (the hook never
    reads them)."""
    source = pair_of(server).source
    keys = set()
    for reference in references:
        ref = parse_reference(reference)
        if ref is not None and ref.type == "Patient" and ref.on(source):
            keys.add(f"Patient/{ref.id}")
    return sorted(keys)


def _cutoff(max_age_seconds: float) -> str:
    return stamp(datetime.now(UTC) - timedelta(seconds=max_age_seconds))
