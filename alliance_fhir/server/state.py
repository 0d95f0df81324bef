"""Durable sync state in SQLite: one checkpoint and a per-response ledger per server.

SQLite rather than a JSON file so that a run killed at any instant leaves consistent state
(each page's ledger rows commit atomically) and so that a ledger of millions of responses is
looked up by key instead of loaded whole. Everything is keyed by the server's base URL, so one
database serves several servers and ``sync --reset`` clears exactly one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ..errors import StateError

__all__ = ["FAILURE_OUTCOMES", "LedgerEntry", "OutstandingFailure", "StateStore"]

# A response whose last outcome is one of these is outstanding until it scores, changes, or is dismissed.
FAILURE_OUTCOMES = ("failed", "write-failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    server TEXT PRIMARY KEY,
    last_updated TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    server TEXT NOT NULL,
    response_id TEXT NOT NULL,
    version_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    observation_identifier TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (server, response_id)
);
"""
# Columns added after the first release: added in place to an existing database.
_LATER_COLUMNS = {"since": "TEXT", "dismissed_by": "TEXT", "dismissed_reason": "TEXT"}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the last run did with one response version."""

    response_id: str
    version_id: str
    outcome: str  # written | failed | write-failed | retracted | skipped | dismissed
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


class StateStore:
    """Checkpoints and the response ledger in one SQLite file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(ledger)")}
            for column, kind in _LATER_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE ledger ADD COLUMN {column} {kind}")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"sync state database {path}: {exc}") from exc

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def checkpoint(self, server: str) -> str | None:
        """The ``_lastUpdated`` instant the last complete run for ``server`` started from."""
        row = self._db.execute("SELECT last_updated FROM checkpoint WHERE server = ?", (server,)).fetchone()
        return str(row[0]) if row else None

    def set_checkpoint(self, server: str, last_updated: str) -> None:
        self._write(
            "INSERT INTO checkpoint VALUES (?, ?, ?) ON CONFLICT(server) DO UPDATE SET last_updated = excluded.last_updated, "
            "updated_at = excluded.updated_at",
            [(server, last_updated, _now())],
        )

    def lookup(self, server: str, response_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """Ledger entries for the given responses (one query per page, not per response)."""
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(response_ids), 500):
            chunk = list(response_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT response_id, version_id, outcome, detail, observation_identifier FROM ledger "
                f"WHERE server = ? AND response_id IN ({marks})",
                [server, *chunk],
            ).fetchall()
            found.update({r[0]: LedgerEntry(*r) for r in rows})
        return found

    def record(self, server: str, entries: Iterable[LedgerEntry]) -> None:
        """Upsert ledger entries in one transaction.

        A failure keeps the ``since`` of the failure it follows (the response has been failing
        since then); any other outcome clears it, and clears a dismissal.
        """
        now = _now()
        rows = [(server, e.response_id, e.version_id, e.outcome, e.detail, e.observation_identifier, now,
                 now if e.outcome in FAILURE_OUTCOMES else None) for e in entries]
        failing = ",".join(f"'{o}'" for o in FAILURE_OUTCOMES)
        self._write(
            "INSERT INTO ledger (server, response_id, version_id, outcome, detail, observation_identifier, updated_at, since) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(server, response_id) DO UPDATE SET "
            "version_id = excluded.version_id, outcome = excluded.outcome, detail = excluded.detail, "
            "observation_identifier = excluded.observation_identifier, updated_at = excluded.updated_at, "
            f"since = CASE WHEN ledger.outcome IN ({failing}) AND excluded.outcome IN ({failing}) "
            "THEN COALESCE(ledger.since, excluded.since) ELSE excluded.since END, "
            "dismissed_by = NULL, dismissed_reason = NULL",
            rows,
        )

    def outstanding(self, server: str) -> list[OutstandingFailure]:
        """The responses whose last outcome is a failure, oldest failure first."""
        marks = ",".join("?" * len(FAILURE_OUTCOMES))
        rows = self._db.execute(
            f"SELECT response_id, version_id, outcome, COALESCE(detail, ''), COALESCE(since, updated_at) FROM ledger "
            f"WHERE server = ? AND outcome IN ({marks}) ORDER BY COALESCE(since, updated_at), response_id",
            [server, *FAILURE_OUTCOMES],
        ).fetchall()
        return [OutstandingFailure(*(str(v) for v in row)) for row in rows]

    def dismiss(self, server: str, response_id: str, by: str, reason: str) -> OutstandingFailure | None:
        """Mark one outstanding failure as dismissed by an operator (who and why are kept).

        The response is processed again as soon as it changes. Returns the failure dismissed,
        or None when that response has no outstanding failure.
        """
        found = next((f for f in self.outstanding(server) if f.response_id == response_id), None)
        if found is None:
            return None
        self._write(
            "UPDATE ledger SET outcome = 'dismissed', dismissed_by = ?, dismissed_reason = ?, updated_at = ? "
            "WHERE server = ? AND response_id = ?",
            [(by, reason, _now(), server, response_id)],
        )
        return found

    def dismissal(self, server: str, response_id: str) -> tuple[str, str, str] | None:
        """Who dismissed a response's failure, why, and the failure's reason (None if not dismissed)."""
        row = self._db.execute(
            "SELECT dismissed_by, dismissed_reason, COALESCE(detail, '') FROM ledger "
            "WHERE server = ? AND response_id = ? AND outcome = 'dismissed'",
            (server, response_id),
        ).fetchone()
        return (str(row[0]), str(row[1]), str(row[2])) if row else None

    def counts(self, server: str) -> dict[str, int]:
        rows = self._db.execute("SELECT outcome, COUNT(*) FROM ledger WHERE server = ? GROUP BY outcome", (server,)).fetchall()
        return {str(outcome): int(n) for outcome, n in rows}

    def reset(self, server: str) -> None:
        """Forget everything about one server (its checkpoint and ledger)."""
        try:
            with self._transaction():
                self._db.execute("DELETE FROM checkpoint WHERE server = ?", (server,))
                self._db.execute("DELETE FROM ledger WHERE server = ?", (server,))
        except sqlite3.Error as exc:
            raise StateError(f"sync state database {self.path}: {exc}") from exc

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        try:
            with self._transaction():
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StateError(f"sync state database {self.path}: {exc}") from exc

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
