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

__all__ = ["LedgerEntry", "StateStore"]

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


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the last run did with one response version."""

    response_id: str
    version_id: str
    outcome: str  # written | failed | retracted | skipped
    detail: str | None = None
    observation_identifier: str | None = None


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
        """Upsert ledger entries in one transaction."""
        rows = [(server, e.response_id, e.version_id, e.outcome, e.detail, e.observation_identifier, _now()) for e in entries]
        self._write(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(server, response_id) DO UPDATE SET "
            "version_id = excluded.version_id, outcome = excluded.outcome, detail = excluded.detail, "
            "observation_identifier = excluded.observation_identifier, updated_at = excluded.updated_at",
            rows,
        )

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
