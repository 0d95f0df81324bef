"""One timestamp format in the state database, on SQLite and a real PostgreSQL.

Up to schema version 5 the store wrote three formats (seconds with ``+00:00``, microseconds with
``+00:00``, and the fixed-width ``Z`` stamp), one per column. Version 6 rewrites the first two,
and every write since uses the one stamp, so text order is time order in every column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alliance_fhir._time import parse_instant, stamp
from alliance_fhir.server._statedb import Database, open_database
from alliance_fhir.server.state import MIGRATIONS, LedgerEntry, StateStore
from alliance_fhir.server.state.migrations import migrate

SERVER = "https://fhir.example.org/r4"
OTHER = "https://other.example.org/fhir"
ISSUER = "https://ehr.example.org"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# Every column that holds a timestamp of ours (checkpoint.last_updated and bulk_job.transaction_time
# hold the server's own text and are not ours to rewrite).
OUR_STAMPS = (
    ("schema_version", "applied_at"),
    ("checkpoint", "updated_at"),
    ("ledger", "updated_at"),
    ("ledger", "since"),
    ("inbox", "received_at"),
    ("bulk_job", "kicked_off_at"),
    ("bulk_file", "done_at"),
    ("cds_jti", "expires_at"),
    ("cds_summary", "filled_at"),
)


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "state.sqlite"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(location: str | Path) -> Iterator[StateStore]:
    with StateStore(location) as opened:
        yield opened


def stamps_in(db: Database) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-null timestamp of ours."""
    return [
        (table, column, str(value))
        for table, column in OUR_STAMPS
        for (value,) in db.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
    ]


def test_every_feature_writes_the_one_stamp(store: StateStore) -> None:
    store.ledger.set_checkpoint(SERVER, "2026-11-01T10:00:00.000+00:00")
    store.ledger.set_checkpoint(SERVER, "2026-11-01T10:00:01Z")  # an update of the row
    store.ledger.record(SERVER, [LedgerEntry("qr-1", "1", "failed", "x"), LedgerEntry("qr-2", "1", "written")])
    store.ledger.dismiss(SERVER, "qr-1", "ops", "a test form")
    store.ledger.record(SERVER, [LedgerEntry("qr-3", "1", "write-failed", "503")])
    store.inbox.add(SERVER, [("qr-4", "1")])
    store.bulk_jobs.start(SERVER, "{}", "https://fhir.example.org/status/1")
    store.bulk_jobs.file_done(SERVER, "https://fhir.example.org/files/1")
    store.replay.first_use(ISSUER, "j1", datetime.now(UTC) + timedelta(minutes=5))
    store.cds_summaries.store(SERVER, "Patient/p1", ["Patient/p1"], 0, "{}", 60)
    found = stamps_in(store._db)
    assert {(table, column) for table, column, _ in found} == set(OUR_STAMPS)
    assert [f for f in found if not STAMP.fullmatch(f[2])] == []
    assert STAMP.fullmatch(store.outstanding(SERVER)[0].since)
    assert STAMP.fullmatch(store.inbox.batch(SERVER, 1)[0].received_at)


# ---------------------------------------------------------------- a database left by version 5

OLD_SECONDS = "2020-01-01T10:00:0{}+00:00"  # what _now() wrote: schema, checkpoint, ledger, backfill
OLD_MICROS = "2020-01-01T10:00:00.00000{}+00:00"  # what _now_us() wrote: the inbox


def _database_at_version_5(location: str | Path) -> None:
    """The schema as version 5 left it, with rows written by version 5's statements in its formats."""
    db = open_database(location)
    try:
        migrate(db, [m for m in MIGRATIONS if m.version <= 5])
        db.run("UPDATE schema_version SET applied_at = ?", (OLD_SECONDS.format(0),))
        db.run(
            "INSERT INTO checkpoint VALUES (?, ?, ?)", (SERVER, "2020-03-01T10:00:00.000+00:00", OLD_SECONDS.format(5))
        )
        db.run("INSERT INTO checkpoint VALUES (?, ?, ?)", (OTHER, "2020-03-01T10:00:00Z", "not a stamp"))
        ledger = (
            "INSERT INTO ledger (server, response_id, version_id, outcome, detail, observation_identifier, "
            "updated_at, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        db.executemany(
            ledger,
            [
                (
                    SERVER,
                    "qr-late",
                    "1",
                    "failed",
                    "too many missing",
                    None,
                    OLD_SECONDS.format(2),
                    OLD_SECONDS.format(2),
                ),
                (SERVER, "qr-v1", "1", "failed", "from before 'since'", None, OLD_SECONDS.format(3), None),
                (SERVER, "qr-early", "1", "write-failed", "503", None, OLD_SECONDS.format(1), OLD_SECONDS.format(1)),
                (SERVER, "qr-ok", "1", "written", None, "obs-1", OLD_SECONDS.format(0), None),
            ],
        )
        db.executemany(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(SERVER, "qr-z", "1", OLD_MICROS.format(1)), (SERVER, "qr-a", "", OLD_MICROS.format(2))],
        )
        db.run(
            "INSERT INTO bulk_job VALUES (?, ?, ?, ?, NULL, NULL)",
            (SERVER, "{}", "https://fhir.example.org/status/1", OLD_SECONDS.format(4)),
        )
        db.run(
            "INSERT INTO bulk_file VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (SERVER, "https://fhir.example.org/files/1", OLD_SECONDS.format(6)),
        )
        db.executemany(  # version 4 wrote expiries in the one stamp already
            "INSERT INTO cds_jti VALUES (?, ?, ?) ON CONFLICT(issuer, jti) DO NOTHING",
            [
                (ISSUER, "expired", stamp(datetime(2020, 1, 1, tzinfo=UTC))),
                (ISSUER, "live", stamp(datetime.now(UTC) + timedelta(minutes=5))),
            ],
        )
    finally:
        db.close()


def test_opening_a_version_5_database_rewrites_every_old_stamp(location: str | Path) -> None:
    _database_at_version_5(location)
    with StateStore(location) as store:
        assert store.schema_version() == MIGRATIONS[-1].version == 9
        found = stamps_in(store._db)
        assert [f for f in found if not STAMP.fullmatch(f[2])] == [("checkpoint", "updated_at", "not a stamp")]
        assert len(found) == 9 + 2 + 4 + 2 + 2 + 1 + 1 + 2  # nothing lost (9 steps now, 4 ledger updated_at, 2 since)
        rows = {str(s): str(u) for s, u in store._db.execute("SELECT server, updated_at FROM checkpoint")}
        assert rows == {SERVER: "2020-01-01T10:00:05.000000Z", OTHER: "not a stamp"}  # other text is left alone
        assert store.checkpoint(SERVER) == "2020-03-01T10:00:00.000+00:00"  # the server's own text is kept
        job = store.bulk_job(SERVER)
        assert job is not None and job.kicked_off_at == "2020-01-01T10:00:04.000000Z"


def test_after_the_rewrite_failures_stay_oldest_first_and_keep_their_since(location: str | Path) -> None:
    _database_at_version_5(location)
    with StateStore(location) as store:
        failures = store.outstanding(SERVER)
        assert [(f.response_id, f.since) for f in failures] == [
            ("qr-early", "2020-01-01T10:00:01.000000Z"),
            ("qr-late", "2020-01-01T10:00:02.000000Z"),
            ("qr-v1", "2020-01-01T10:00:03.000000Z"),
        ]
        store.record(
            SERVER, [LedgerEntry("qr-new", "1", "failed", "new"), LedgerEntry("qr-late", "2", "failed", "again")]
        )
        again = store.outstanding(SERVER)
        assert [f.response_id for f in again] == ["qr-early", "qr-late", "qr-v1", "qr-new"]
        assert again[1].since == "2020-01-01T10:00:02.000000Z"  # still failing since the migrated instant
        assert parse_instant(again[0].since) == datetime(2020, 1, 1, 10, 0, 1, tzinfo=UTC)


def test_after_the_rewrite_the_inbox_is_oldest_first(location: str | Path) -> None:
    _database_at_version_5(location)
    with StateStore(location) as store:
        store.inbox.add(SERVER, [("qr-0", "1")])
        batch = store.inbox.batch(SERVER, 10)
        assert [i.response_id for i in batch] == ["qr-z", "qr-a", "qr-0"]
        assert batch[0].received_at == "2020-01-01T10:00:00.000001Z"
        assert parse_instant(batch[1].received_at) == datetime(2020, 1, 1, 10, 0, 0, 2, tzinfo=UTC)


def test_after_the_rewrite_token_ids_expire_and_replays_are_refused(location: str | Path) -> None:
    _database_at_version_5(location)
    with StateStore(location) as store:
        soon = datetime.now(UTC) + timedelta(minutes=5)
        assert store.replay.count() == 2
        assert not store.replay.first_use(ISSUER, "live", soon)  # a replay, and the expired row is dropped
        assert store.replay.count() == 1
        assert store.replay.first_use(ISSUER, "fresh", soon) and store.replay.count() == 2
