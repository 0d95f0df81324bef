"""The record of what was written back into the EHR: one write-once entry per deterministic identifier.

An EHR without conditional writes and without a search by our identifier cannot tell us whether
a note is already there, so this table is the record (``docs/write-back.md``, "Idempotent without
conditional writes"):

- before a create is sent, an entry is committed as ``pending`` (the intent): a run killed
  between the EHR's 201 and our commit leaves it, and the next run knows a resource may be there;
- once the EHR confirmed it and a read-back (GET by id) showed what we wrote, the entry is
  ``written`` with the id the EHR assigned, its version and the digest of what it says;
- a later write of the same identifier is an update of that id (or a successor that replaces it,
  where the EHR offers no update), never a second create.

Keyed by the pair of servers like the ledger, and by the identifier (one per response and route).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..._time import stamp
from .._statedb import FeatureStore
from .pair import PAIR, ServerPair, pair_key

__all__ = ["EhrWrite", "EhrWrites", "EhrWriteStatus"]

EhrWriteStatus = Literal["pending", "written"]


@dataclass(frozen=True, slots=True)
class EhrWrite:
    """One resource written back into the EHR (or about to be: ``pending``)."""

    identifier: str
    route: str
    resource_type: str
    status: EhrWriteStatus
    resource_id: str | None = None  # the id the EHR assigned (for a pending successor: the one it replaces)
    version_id: str | None = None
    digest: str | None = None
    response_id: str = ""


class EhrWrites(FeatureStore):
    """Table ``ehr_write`` (state schema step 8)."""

    def lookup(self, server: str | ServerPair, identifiers: Sequence[str]) -> dict[str, EhrWrite]:
        """The entries of ``identifiers`` (one query per 500)."""
        found: dict[str, EhrWrite] = {}
        for start in range(0, len(identifiers), 500):
            chunk = list(identifiers[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT identifier, route, resource_type, status, resource_id, version_id, digest, response_id "
                f"FROM ehr_write WHERE {PAIR} AND identifier IN ({marks})",
                [*pair_key(server), *chunk],
            )
            for row in rows:
                found[str(row[0])] = EhrWrite(*row)
        return found

    def put(self, server: str | ServerPair, entry: EhrWrite) -> None:
        """Write ``entry`` (one transaction: committed when this returns)."""
        self.db.write(
            "INSERT INTO ehr_write (server, results_server, identifier, route, resource_type, status, resource_id, "
            "version_id, digest, response_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(server, results_server, identifier) DO UPDATE SET route = excluded.route, "
            "resource_type = excluded.resource_type, status = excluded.status, resource_id = excluded.resource_id, "
            "version_id = excluded.version_id, digest = excluded.digest, response_id = excluded.response_id, "
            "updated_at = excluded.updated_at",
            [
                (
                    *pair_key(server),
                    entry.identifier,
                    entry.route,
                    entry.resource_type,
                    entry.status,
                    entry.resource_id,
                    entry.version_id,
                    entry.digest,
                    entry.response_id,
                    stamp(),
                )
            ],
        )

    def count(self, server: str | ServerPair, status: EhrWriteStatus = "written") -> int:
        rows = self.db.execute(
            f"SELECT COUNT(*) FROM ehr_write WHERE {PAIR} AND status = ?", (*pair_key(server), status)
        )
        return int(rows[0][0])

    def forget(self, server: str | ServerPair) -> None:
        """Inside a transaction: delete the pair's entries (part of ``StateStore.reset``).

        A reset forgets what the EHR holds: the next run writes every note again (see the docs)."""
        self.db.run(f"DELETE FROM ehr_write WHERE {PAIR}", pair_key(server))

    def forget_responses(self, server: str | ServerPair, response_ids: Sequence[str]) -> int:
        """Delete the pair's entries of these responses (one transaction); returns how many.

        For ``demo --cleanup``, which deletes the demo's notes from the EHR: forgetting their entries
        lets the next demo write them again, and leaves every other response's record alone."""
        forgotten = 0
        with self.db.transaction():
            for start in range(0, len(response_ids), 500):
                chunk = list(response_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                forgotten += self.db.run(
                    f"DELETE FROM ehr_write WHERE {PAIR} AND response_id IN ({marks})", [*pair_key(server), *chunk]
                )
        return forgotten
