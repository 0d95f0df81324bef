"""The state database's schema, as one ordered list of steps, and the code that applies them.

Every feature store's tables are created here, so one version number describes the whole
database, whichever feature added a table. Append a step with the next version; never edit a step
that has shipped (a database may have applied it already).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..._time import stamp
from ...errors import StateError
from .._statedb import Database

__all__ = ["MIGRATIONS", "Migration", "migrate", "schema_version"]


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


# Our own timestamps as versions up to 5 wrote them (each beside the column it was in):
# seconds "2026-11-01T10:00:00+00:00" and microseconds "2026-11-01T10:00:00.123456+00:00".
# Both become the one stamp (alliance_fhir._time.stamp), "2026-11-01T10:00:00.000000Z".
# cds_jti.expires_at was written in that stamp already. Server stamps (checkpoint.last_updated,
# bulk_job.transaction_time) are the server's text and stay as they are.
_OLD_STAMPS = (
    ("schema_version", "applied_at"),
    ("checkpoint", "updated_at"),
    ("ledger", "updated_at"),
    ("ledger", "since"),
    ("inbox", "received_at"),
    ("bulk_job", "kicked_off_at"),
    ("bulk_file", "done_at"),
)


def _restamp(table: str, column: str) -> tuple[str, str]:
    """Rewrite one column's old-format stamps in place (portable SQL; other text is left alone)."""
    return (
        f"UPDATE {table} SET {column} = substr({column}, 1, 19) || '.000000Z' "
        f"WHERE length({column}) = 25 AND substr({column}, 20) = '+00:00'",
        f"UPDATE {table} SET {column} = substr({column}, 1, 26) || 'Z' "
        f"WHERE length({column}) = 32 AND substr({column}, 27) = '+00:00'",
    )


# Step 7's tables: each keyed by the source server and, now, the results store too. Existing rows
# were written when the source was its own results store, so their results server is their server.
# SQLite cannot change a primary key in place, so each table is rebuilt (the same SQL on PostgreSQL).
_PAIRED: tuple[tuple[str, str, str, str], ...] = (
    (
        "checkpoint",
        "last_updated TEXT NOT NULL, updated_at TEXT NOT NULL",
        "server, results_server",
        "last_updated, updated_at",
    ),
    (
        "ledger",
        "response_id TEXT NOT NULL, version_id TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT, "
        "observation_identifier TEXT, updated_at TEXT NOT NULL, since TEXT, dismissed_by TEXT, dismissed_reason TEXT",
        "server, results_server, response_id",
        "response_id, version_id, outcome, detail, observation_identifier, updated_at, since, dismissed_by, "
        "dismissed_reason",
    ),
    (
        "inbox",
        "response_id TEXT NOT NULL, version_id TEXT NOT NULL, received_at TEXT NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0",
        "server, results_server, response_id, version_id",
        "response_id, version_id, received_at, attempts",
    ),
    (
        "bulk_job",
        "request TEXT NOT NULL, status_url TEXT NOT NULL, kicked_off_at TEXT NOT NULL, transaction_time TEXT, "
        "manifest TEXT",
        "server, results_server",
        "request, status_url, kicked_off_at, transaction_time, manifest",
    ),
    (
        "bulk_file",
        "url TEXT NOT NULL, done_at TEXT NOT NULL",
        "server, results_server, url",
        "url, done_at",
    ),
)


def _paired(table: str, columns: str, key: str, copied: str) -> tuple[str, ...]:
    """Rebuild ``table`` with a ``results_server`` column in its key; its rows keep results_server = server."""
    return (
        f"CREATE TABLE {table}_v7 (server TEXT NOT NULL, results_server TEXT NOT NULL, {columns}, PRIMARY KEY ({key}))",
        f"INSERT INTO {table}_v7 (server, results_server, {copied}) SELECT server, server, {copied} FROM {table}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}_v7 RENAME TO {table}",
    )


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
    Migration(
        6,
        "one timestamp format: our stamps rewritten as fixed-width UTC microseconds with Z",
        tuple(sql for table, column in _OLD_STAMPS for sql in _restamp(table, column)),
    ),
    Migration(
        7,
        "two servers: checkpoint, ledger, inbox and export job keyed by the source and the results store",
        tuple(sql for spec in _PAIRED for sql in _paired(*spec)),
    ),
    Migration(
        8,
        "write-back into the EHR: one write-once entry per deterministic identifier (the EHR's id, a digest)",
        (
            """CREATE TABLE IF NOT EXISTS ehr_write (
            server TEXT NOT NULL,
            results_server TEXT NOT NULL,
            identifier TEXT NOT NULL,
            route TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            status TEXT NOT NULL,
            resource_id TEXT,
            version_id TEXT,
            digest TEXT,
            response_id TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (server, results_server, identifier)
        )""",
        ),
    ),
    Migration(
        9,
        "CDS Hooks: patients' results changes and the hook's stored reads, per source and results store",
        (
            """CREATE TABLE IF NOT EXISTS cds_change (
            server TEXT NOT NULL,
            results_server TEXT NOT NULL,
            patient TEXT NOT NULL,
            generation INTEGER NOT NULL,
            PRIMARY KEY (server, results_server, patient)
        )""",
            """CREATE TABLE IF NOT EXISTS cds_summary (
            server TEXT NOT NULL,
            results_server TEXT NOT NULL,
            patient TEXT NOT NULL,
            seen TEXT NOT NULL,
            filled_at TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (server, results_server, patient)
        )""",
            "CREATE INDEX IF NOT EXISTS cds_change_latest ON cds_change (server, results_server, generation)",
            "CREATE INDEX IF NOT EXISTS cds_summary_age ON cds_summary (filled_at)",
        ),
    ),
)


def schema_version(db: Database) -> int:
    """The highest step applied (0 for a database no step has touched)."""
    return int(db.execute("SELECT MAX(version) FROM schema_version")[0][0] or 0)


def migrate(db: Database, steps: Sequence[Migration] = MIGRATIONS) -> None:
    """Apply the steps this database has not had, in one transaction, one process at a time.

    ``steps``: the whole list, except in tests that build a database as an older release left it.

    Raises:
        StateError: the database is at a version newer than ``steps`` know (a newer alliance-fhir wrote it).
    """
    latest = steps[-1].version
    with db.transaction():
        db.lock_schema()  # two workers starting on an empty database: one migrates
        db.run(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = schema_version(db)
        if current > latest:
            raise StateError(
                f"state database {db.name}: schema version {current} is newer than this alliance-fhir knows ({latest}); upgrade alliance-fhir"
            )
        for step in steps:
            if step.version > current:
                _apply(db, step)


def _apply(db: Database, step: Migration) -> None:
    for statement in step.statements:
        db.run(db.ddl(statement))
    for table, column, kind in step.columns:
        db.add_column(table, column, db.ddl(kind))
    db.run("INSERT INTO schema_version VALUES (?, ?, ?)", (step.version, step.description, stamp()))
