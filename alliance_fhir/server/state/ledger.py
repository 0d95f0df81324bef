"""Sync's memory: one checkpoint per server and a ledger row per response (what the last run did).

The ledger is what makes a run resumable and a failure outstanding: each page's rows commit in one
transaction, and a response whose last outcome is a failure stays listed (oldest failure first)
until it scores, changes, or an operator dismisses it. Everything is keyed by the source server's
base URL and the results store's (:class:`.pair.ServerPair`; a plain URL is one server), so one
database serves several servers, and a response done for one results store is not done for another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..._refs import valid_id
from ..._time import instant_or_none, stamp
from .._statedb import FeatureStore
from .pair import PAIR, ServerPair, pair_key

__all__ = [
    "FAILURE_OUTCOMES",
    "UNREADABLE",
    "UNREAD_VERSION",
    "Ledger",
    "LedgerEntry",
    "Outcome",
    "OutstandingFailure",
    "failure_reference",
]

# What a run did with one response version. "unreadable": a line of an exported file that could not
# be read as a QuestionnaireResponse (backfill); keyed by the response id when the line shows one,
# else by the file and line (see UNREAD_VERSION).
Outcome = Literal["written", "failed", "write-failed", "retracted", "skipped", "dismissed", "unreadable"]
# A response whose last outcome is one of these is outstanding until it scores, changes, or is dismissed.
FAILURE_OUTCOMES: tuple[Outcome, ...] = ("failed", "write-failed", "unreadable")
UNREADABLE: Outcome = "unreadable"
# The version recorded for an unreadable line: never a real versionId (FHIR ids have no parentheses),
# so the next sync or export that reads the response processes it and clears the failure.
UNREAD_VERSION = "(unread)"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the last run did with one response version."""

    response_id: str
    version_id: str
    outcome: Outcome
    detail: str | None = None
    observation_identifier: str | None = None


@dataclass(frozen=True, slots=True)
class OutstandingFailure:
    """A response that failed (to score or to be written) and has not been fixed or dismissed."""

    response_id: str
    version_id: str
    outcome: str
    reason: str
    since: str

    @property
    def resource(self) -> str:
        """What failed, as the operator names it (and passes to ``failures --dismiss``): a response's
        reference, or for an export line that showed no id, the file and line it was on."""
        return failure_reference(self.response_id)

    def as_dict(self) -> dict[str, str]:
        """The failure as ``failures --json`` and a run's JSON report list it (one shape for both)."""
        return {"response": self.resource, "reason": self.reason, "since": self.since, "outcome": self.outcome}


def failure_reference(key: str) -> str:
    """The reference of a ledger key: ``QuestionnaireResponse/ID`` for a FHIR id, else the key itself
    (an unreadable export line: ``/fhir/Binary/7 line 3``)."""
    return f"QuestionnaireResponse/{key}" if valid_id(key) else key


class Ledger(FeatureStore):
    """Checkpoints and the per-response ledger (tables ``checkpoint`` and ``ledger``)."""

    def checkpoint(self, server: str | ServerPair) -> str | None:
        """The ``_lastUpdated`` instant the last complete run for ``server`` started from."""
        return self.db.value(f"SELECT last_updated FROM checkpoint WHERE {PAIR}", pair_key(server))

    def set_checkpoint(self, server: str | ServerPair, last_updated: str) -> bool:
        """Move the checkpoint forward to ``last_updated``; never back (a slower worker's older run
        finishing last must not undo a newer one). True when it moved."""
        new = instant_or_none(last_updated)
        with self.db.transaction():
            if self.db.run(
                "INSERT INTO checkpoint (server, results_server, last_updated, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(server, results_server) DO NOTHING",
                (*pair_key(server), last_updated, stamp()),
            ):
                return True
            rows = self.db.execute(
                f"SELECT last_updated FROM checkpoint WHERE {PAIR}" + self.db.for_update, pair_key(server)
            )
            if rows and new is not None and (old := instant_or_none(str(rows[0][0]))) is not None and new <= old:
                return False
            self.db.run(
                f"UPDATE checkpoint SET last_updated = ?, updated_at = ? WHERE {PAIR}",
                (last_updated, stamp(), *pair_key(server)),
            )
            return True

    def lookup(self, server: str | ServerPair, response_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """Ledger entries for the given responses (one query per page, not per response)."""
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(response_ids), 500):
            chunk = list(response_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT response_id, version_id, outcome, detail, observation_identifier FROM ledger "
                f"WHERE {PAIR} AND response_id IN ({marks})",
                [*pair_key(server), *chunk],
            )
            found.update({r[0]: LedgerEntry(*r) for r in rows})
        return found

    def record(self, server: str | ServerPair, entries: Iterable[LedgerEntry]) -> None:
        """Upsert ledger entries in one transaction.

        A failure keeps the ``since`` of the failure it follows (the response has been failing
        since then); any other outcome clears it, and clears a dismissal.
        """
        now = stamp()
        rows = [
            (
                *pair_key(server),
                e.response_id,
                e.version_id,
                e.outcome,
                e.detail,
                e.observation_identifier,
                now,
                now if e.outcome in FAILURE_OUTCOMES else None,
            )
            for e in entries
        ]
        failing = ",".join(f"'{o}'" for o in FAILURE_OUTCOMES)
        self.db.write(
            "INSERT INTO ledger (server, results_server, response_id, version_id, outcome, detail, "
            "observation_identifier, updated_at, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(server, results_server, response_id) DO UPDATE SET "
            "version_id = excluded.version_id, outcome = excluded.outcome, detail = excluded.detail, "
            "observation_identifier = excluded.observation_identifier, updated_at = excluded.updated_at, "
            f"since = CASE WHEN ledger.outcome IN ({failing}) AND excluded.outcome IN ({failing}) "
            "THEN COALESCE(ledger.since, excluded.since) ELSE excluded.since END, "
            "dismissed_by = NULL, dismissed_reason = NULL",
            rows,
        )

    def outstanding(self, server: str | ServerPair) -> list[OutstandingFailure]:
        """The responses whose last outcome is a failure, oldest failure first."""
        marks = ",".join("?" * len(FAILURE_OUTCOMES))
        rows = self.db.execute(
            f"SELECT response_id, version_id, outcome, COALESCE(detail, ''), COALESCE(since, updated_at) FROM ledger "
            f"WHERE {PAIR} AND outcome IN ({marks}) ORDER BY COALESCE(since, updated_at), response_id",
            [*pair_key(server), *FAILURE_OUTCOMES],
        )
        return [OutstandingFailure(*(str(v) for v in row)) for row in rows]

    def unreadable_count(self, server: str | ServerPair) -> int:
        """How many unreadable export lines are outstanding: while any is, a back-fill does not move
        the checkpoint past them (the next sync or export must read that window again)."""
        rows = self.db.execute(
            f"SELECT COUNT(*) FROM ledger WHERE {PAIR} AND outcome = ?", (*pair_key(server), UNREADABLE)
        )
        return int(rows[0][0])

    def dismiss(self, server: str | ServerPair, response_id: str, by: str, reason: str) -> OutstandingFailure | None:
        """Mark one outstanding failure as dismissed by an operator (who and why are kept).

        The response is processed again as soon as it changes. Returns the failure dismissed,
        or None when that response has no outstanding failure.
        """
        found = next((f for f in self.outstanding(server) if f.response_id == response_id), None)
        if found is None:
            return None
        self.db.write(
            "UPDATE ledger SET outcome = 'dismissed', dismissed_by = ?, dismissed_reason = ?, updated_at = ? "
            f"WHERE {PAIR} AND response_id = ?",
            [(by, reason, stamp(), *pair_key(server), response_id)],
        )
        return found

    def dismissal(self, server: str | ServerPair, response_id: str) -> tuple[str, str, str] | None:
        """Who dismissed a response's failure, why, and the failure's reason (None if not dismissed)."""
        rows = self.db.execute(
            "SELECT dismissed_by, dismissed_reason, COALESCE(detail, '') FROM ledger "
            f"WHERE {PAIR} AND response_id = ? AND outcome = 'dismissed'",
            (*pair_key(server), response_id),
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def counts(self, server: str | ServerPair) -> dict[str, int]:
        """How many responses each last outcome has (the ``status`` command's figures)."""
        rows = self.db.execute(f"SELECT outcome, COUNT(*) FROM ledger WHERE {PAIR} GROUP BY outcome", pair_key(server))
        return {str(outcome): int(n) for outcome, n in rows}

    def forget(self, server: str | ServerPair) -> None:
        """Inside a transaction: delete the server's checkpoint and ledger (part of ``StateStore.reset``)."""
        self.db.run(f"DELETE FROM checkpoint WHERE {PAIR}", pair_key(server))
        self.db.run(f"DELETE FROM ledger WHERE {PAIR}", pair_key(server))
