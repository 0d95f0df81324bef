"""Durable sync state: one checkpoint and a per-response ledger per server, in SQLite or PostgreSQL.

A database rather than a JSON file so that a run killed at any instant leaves consistent state
(each page's ledger rows commit atomically) and so that a ledger of millions of responses is
looked up by key instead of loaded whole. Everything is keyed by the server's base URL, so one
database serves several servers and ``sync --reset`` clears exactly one.

SQLite (a file path) serves one worker; PostgreSQL (a ``postgresql://`` URL) is shared by several
``sync`` processes or ``serve`` replicas: a response is claimed before it is written (an advisory
lock that dies with a killed worker's connection) and the checkpoint only ever moves forward.
The SQL below is written once for both (see ``_statedb``); the schema is versioned there too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .._refs import valid_id
from ..errors import StateError
from ._statedb import Database, claim_key, open_database

__all__ = [
    "BulkJob",
    "FAILURE_OUTCOMES",
    "InboxItem",
    "LedgerEntry",
    "MIGRATIONS",
    "Migration",
    "OutstandingFailure",
    "StateStore",
    "UNREADABLE",
    "UNREAD_VERSION",
    "failure_reference",
]

# A response whose last outcome is one of these is outstanding until it scores, changes, or is dismissed.
# "unreadable": a line of an exported file that could not be read as a QuestionnaireResponse (backfill);
# keyed by the response id when the line shows one, else by the file and line (see UNREAD_VERSION).
FAILURE_OUTCOMES = ("failed", "write-failed", "unreadable")
UNREADABLE = "unreadable"
# The version recorded for an unreadable line: never a real versionId (FHIR ids have no parentheses),
# so the next sync or export that reads the response processes it and clears the failure.
UNREAD_VERSION = "(unread)"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step. Statements are portable DDL (``Database.ddl`` placeholders allowed).

    Append new steps with the next version; never edit a step that has shipped.
    """

    version: int
    description: str
    statements: tuple[str, ...] = ()
    # (table, column, type) added when missing: databases from before versioning may have them already
    columns: tuple[tuple[str, str, str], ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "checkpoint and response ledger",
        (
            """CREATE TABLE IF NOT EXISTS checkpoint (
            server TEXT PRIMARY KEY,
            last_updated TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
            """CREATE TABLE IF NOT EXISTS ledger (
            server TEXT NOT NULL,
            response_id TEXT NOT NULL,
            version_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT,
            observation_identifier TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (server, response_id)
        )""",
        ),
    ),
    Migration(
        2,
        "outstanding failures: since when, dismissals",
        columns=(
            ("ledger", "since", "TEXT"),
            ("ledger", "dismissed_by", "TEXT"),
            ("ledger", "dismissed_reason", "TEXT"),
        ),
    ),
    Migration(
        3,
        "serve: inbox of notified responses, named settings",
        (
            """CREATE TABLE IF NOT EXISTS inbox (
            server TEXT NOT NULL,
            response_id TEXT NOT NULL,
            version_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (server, response_id, version_id)
        )""",
            """CREATE TABLE IF NOT EXISTS setting (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        ),
    ),
    Migration(
        4,
        "CDS Hooks: JWT ids seen (replay protection), kept until the token expires",
        (
            """CREATE TABLE IF NOT EXISTS cds_jti (
            issuer TEXT NOT NULL,
            jti TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (issuer, jti)
        )""",
            "CREATE INDEX IF NOT EXISTS cds_jti_expiry ON cds_jti (expires_at)",
        ),
    ),
    Migration(
        5,
        "backfill: the Bulk Data export job in progress and its files done",
        (
            """CREATE TABLE IF NOT EXISTS bulk_job (
            server TEXT PRIMARY KEY,
            request TEXT NOT NULL,
            status_url TEXT NOT NULL,
            kicked_off_at TEXT NOT NULL,
            transaction_time TEXT,
            manifest TEXT
        )""",
            """CREATE TABLE IF NOT EXISTS bulk_file (
            server TEXT NOT NULL,
            url TEXT NOT NULL,
            done_at TEXT NOT NULL,
            PRIMARY KEY (server, url)
        )""",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class BulkJob:
    """A back-fill's export job: what was asked (JSON), where to poll, and the manifest once complete."""

    request: str
    status_url: str
    kicked_off_at: str
    transaction_time: str | None = None
    manifest: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One notified response waiting to be re-read and scored (version "" when the hint had none)."""

    response_id: str
    version_id: str
    attempts: int = 0
    received_at: str = ""


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


class StateStore:
    """Checkpoints, the response ledger and per-response claims, in SQLite or PostgreSQL."""

    def __init__(self, location: Path | str) -> None:
        """``location``: a SQLite file path, or a ``postgresql://`` URL (tables created on first use)."""
        self._db: Database = open_database(location)
        self.location = self._db.name  # never holds a password
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return int(self._db.execute("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    def _migrate(self) -> None:
        latest = MIGRATIONS[-1].version
        with self._db.transaction():
            self._db.lock_schema()  # two workers starting on an empty database: one migrates
            self._db.run(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = int(self._db.execute("SELECT MAX(version) FROM schema_version")[0][0] or 0)
            if current > latest:
                raise StateError(
                    f"state database {self.location}: schema version {current} is newer than this alliance-fhir knows ({latest}); upgrade alliance-fhir"
                )
            for step in MIGRATIONS:
                if step.version > current:
                    for statement in step.statements:
                        self._db.run(self._db.ddl(statement))
                    for table, column, kind in step.columns:
                        self._db.add_column(table, column, self._db.ddl(kind))
                    self._db.run(
                        "INSERT INTO schema_version VALUES (?, ?, ?)", (step.version, step.description, _now())
                    )

    def checkpoint(self, server: str) -> str | None:
        """The ``_lastUpdated`` instant the last complete run for ``server`` started from."""
        rows = self._db.execute("SELECT last_updated FROM checkpoint WHERE server = ?", (server,))
        return str(rows[0][0]) if rows else None

    def set_checkpoint(self, server: str, last_updated: str) -> bool:
        """Move the checkpoint forward to ``last_updated``; never back (a slower worker's older run
        finishing last must not undo a newer one). True when it moved."""
        new = _instant(last_updated)
        with self._db.transaction():
            if self._db.run(
                "INSERT INTO checkpoint VALUES (?, ?, ?) ON CONFLICT(server) DO NOTHING", (server, last_updated, _now())
            ):
                return True
            rows = self._db.execute(
                "SELECT last_updated FROM checkpoint WHERE server = ?" + self._db.for_update, (server,)
            )
            if rows and new is not None and (old := _instant(str(rows[0][0]))) is not None and new <= old:
                return False
            self._db.run(
                "UPDATE checkpoint SET last_updated = ?, updated_at = ? WHERE server = ?",
                (last_updated, _now(), server),
            )
            return True

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
            )
            found.update({r[0]: LedgerEntry(*r) for r in rows})
        return found

    def record(self, server: str, entries: Iterable[LedgerEntry]) -> None:
        """Upsert ledger entries in one transaction.

        A failure keeps the ``since`` of the failure it follows (the response has been failing
        since then); any other outcome clears it, and clears a dismissal.
        """
        now = _now()
        rows = [
            (
                server,
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
        )
        return [OutstandingFailure(*(str(v) for v in row)) for row in rows]

    def unreadable_count(self, server: str) -> int:
        """How many unreadable export lines are outstanding: while any is, a back-fill does not move
        the checkpoint past them (the next sync or export must read that window again)."""
        rows = self._db.execute("SELECT COUNT(*) FROM ledger WHERE server = ? AND outcome = ?", (server, UNREADABLE))
        return int(rows[0][0])

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
        rows = self._db.execute(
            "SELECT dismissed_by, dismissed_reason, COALESCE(detail, '') FROM ledger "
            "WHERE server = ? AND response_id = ? AND outcome = 'dismissed'",
            (server, response_id),
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def counts(self, server: str) -> dict[str, int]:
        rows = self._db.execute("SELECT outcome, COUNT(*) FROM ledger WHERE server = ? GROUP BY outcome", (server,))
        return {str(outcome): int(n) for outcome, n in rows}

    def reset(self, server: str) -> None:
        """Forget everything about one server (its checkpoint and ledger)."""
        with self._db.transaction():
            self._db.run("DELETE FROM checkpoint WHERE server = ?", (server,))
            self._db.run("DELETE FROM ledger WHERE server = ?", (server,))
            self._db.run("DELETE FROM inbox WHERE server = ?", (server,))
            self._db.run("DELETE FROM bulk_job WHERE server = ?", (server,))
            self._db.run("DELETE FROM bulk_file WHERE server = ?", (server,))

    # --- claims: several workers on one state never write the same response at the same time
    def claim(self, server: str, response_ids: Sequence[str]) -> set[str]:
        """Claim the responses no other worker is handling (one query); the ids claimed.

        Hold a claim from before the ledger lookup until the outcome is recorded. On PostgreSQL a
        claim is a session advisory lock: a killed worker's claims end with its connection.
        """
        keys = {claim_key(server, rid): rid for rid in response_ids}
        return {keys[k] for k in self._db.try_claim(list(keys))}

    def wait_claim(self, server: str, response_id: str, timeout: float) -> None:
        """Claim one response, waiting (bounded) for the worker that holds it.

        Raises:
            StateError: still held after ``timeout`` seconds.
        """
        try:
            self._db.wait_claim(claim_key(server, response_id), timeout)
        except StateError as exc:
            raise StateError(f"QuestionnaireResponse/{response_id}: {exc}") from exc

    def release(self, server: str, response_ids: Iterable[str]) -> None:
        self._db.release(claim_key(server, rid) for rid in response_ids)

    # ------------------------------------------------------------ serve's inbox (recorded before a notification is acknowledged)

    def inbox_add(self, server: str, hints: Iterable[tuple[str, str]]) -> None:
        """Record ``(response_id, version_id)`` hints durably; a hint already waiting is kept once."""
        now = _now_us()
        self._write(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(server, rid, version, now) for rid, version in hints],
        )

    def inbox_batch(self, server: str, limit: int) -> list[InboxItem]:
        """The oldest waiting hints (those that failed least first); they stay until ``inbox_done``."""
        rows = self._db.execute(
            "SELECT response_id, version_id, attempts, received_at FROM inbox WHERE server = ? "
            "ORDER BY attempts, received_at, response_id LIMIT ?",
            (server, limit),
        )
        return [InboxItem(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def inbox_done(self, server: str, items: Iterable[InboxItem]) -> None:
        self._write(
            "DELETE FROM inbox WHERE server = ? AND response_id = ? AND version_id = ?",
            [(server, i.response_id, i.version_id) for i in items],
        )

    def inbox_retry(self, server: str, items: Iterable[InboxItem]) -> None:
        """One more failed attempt for each hint."""
        self._write(
            "UPDATE inbox SET attempts = attempts + 1 WHERE server = ? AND response_id = ? AND version_id = ?",
            [(server, i.response_id, i.version_id) for i in items],
        )

    def inbox_depth(self, server: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM inbox WHERE server = ?", (server,))[0][0])

    # ------------------------------------------------------------ backfill's export job (one per server)

    def bulk_job(self, server: str) -> BulkJob | None:
        """The export job a back-fill of ``server`` kicked off and has not finished or cancelled."""
        rows = self._db.execute(
            "SELECT request, status_url, kicked_off_at, transaction_time, manifest FROM bulk_job WHERE server = ?",
            (server,),
        )
        if not rows:
            return None
        request, status_url, kicked_off_at, transaction_time, manifest = rows[0]
        return BulkJob(
            str(request),
            str(status_url),
            str(kicked_off_at),
            None if transaction_time is None else str(transaction_time),
            None if manifest is None else str(manifest),
        )

    def bulk_start(self, server: str, request: str, status_url: str) -> None:
        """Remember a kicked-off export (before anything is downloaded), replacing any finished one's files."""
        with self._db.transaction():
            self._db.run("DELETE FROM bulk_file WHERE server = ?", (server,))
            self._db.run("DELETE FROM bulk_job WHERE server = ?", (server,))
            self._db.run("INSERT INTO bulk_job VALUES (?, ?, ?, ?, NULL, NULL)", (server, request, status_url, _now()))

    def bulk_complete(self, server: str, transaction_time: str, manifest: str) -> None:
        """The export finished: keep its manifest, so a resumed back-fill need not poll again."""
        self._write(
            "UPDATE bulk_job SET transaction_time = ?, manifest = ? WHERE server = ?",
            [(transaction_time, manifest, server)],
        )

    def bulk_file_done(self, server: str, url: str) -> None:
        """Every response of one exported file was handled (and its writes landed)."""
        self._write("INSERT INTO bulk_file VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [(server, url, _now())])

    def bulk_files_done(self, server: str) -> set[str]:
        return {str(r[0]) for r in self._db.execute("SELECT url FROM bulk_file WHERE server = ?", (server,))}

    def bulk_clear(self, server: str) -> None:
        """Forget the export job and its files (done, or cancelled)."""
        with self._db.transaction():
            self._db.run("DELETE FROM bulk_file WHERE server = ?", (server,))
            self._db.run("DELETE FROM bulk_job WHERE server = ?", (server,))

    # ------------------------------------------------------------ named settings (serve's webhook secret, sync's labels)

    def setting(self, name: str) -> str | None:
        rows = self._db.execute("SELECT value FROM setting WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_setting(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing what was there (e.g. the labels sync last applied)."""
        self._write(
            "INSERT INTO setting VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", [(name, value)]
        )

    def setting_once(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless one is stored; return the stored one. A SQLite file is made private (0600) first."""
        path = Path(str(self.location))
        if self.dialect == "sqlite" and path.exists():
            try:
                os.chmod(path, 0o600)
            except OSError as exc:
                raise StateError(f"sync state database {self.location}: {exc}") from exc
        self._write("INSERT INTO setting VALUES (?, ?) ON CONFLICT(name) DO NOTHING", [(name, value)])
        stored = self.setting(name)
        if stored is None:
            raise StateError(f"sync state database {self.location}: setting {name} was not stored")
        return stored

    # ------------------------------------------------------------ CDS Hooks: JWT ids seen (replay protection)

    def first_use_of_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record a CDS client's token id; False when it was already used (a replay).

        Rows live until the token's own expiry (after which the token is refused anyway), and every
        call first deletes the expired ones, so the table holds at most the tokens of the last few
        minutes: retention is bounded by the token lifetime the verifier allows.
        """
        now, until = _stamp(datetime.now(UTC)), _stamp(expires_at)
        with self._db.transaction():
            self._db.run("DELETE FROM cds_jti WHERE expires_at < ?", (now,))
            inserted = self._db.run(
                "INSERT INTO cds_jti VALUES (?, ?, ?) ON CONFLICT(issuer, jti) DO NOTHING", (issuer, jti, until)
            )
        return inserted == 1

    def jti_count(self) -> int:
        """How many token ids are kept (for tests and health: bounded by the token lifetime)."""
        return int(self._db.execute("SELECT COUNT(*) FROM cds_jti")[0][0])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._db.transaction():
            self._db.executemany(sql, rows)


def _instant(stamp: str) -> datetime | None:
    try:
        instant = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _stamp(instant: datetime) -> str:
    # fixed width, UTC: text comparison is time order on both databases
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now_us() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
