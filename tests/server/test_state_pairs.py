"""Step 7 of the state schema: every entry is kept for a source AND a results store.

A state written before it (one server, its own results store) is upgraded in place: each row's
results store is its server. A response done for one store is then not done for another. Run on
SQLite and on PostgreSQL: the step is the same SQL for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance_fhir.server._statedb import open_database
from alliance_fhir.server.state import MIGRATIONS, LedgerEntry, ServerPair, StateStore
from alliance_fhir.server.state.migrations import migrate

EHR = "https://ehr.example.org/fhir"
STORE_A = "https://results-a.example.org/fhir"
STORE_B = "https://results-b.example.org/fhir"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "state.sqlite"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(location: str | Path) -> Iterator[StateStore]:
    with StateStore(location) as opened:
        yield opened


def _at_version_6(location: str | Path) -> None:
    """A state as version 6 left it: one server's checkpoint, ledger rows, an inbox hint and an export job."""
    db = open_database(location)
    try:
        migrate(db, [m for m in MIGRATIONS if m.version <= 6])
        stamp = "2026-11-01T10:00:00.000000Z"
        db.run("INSERT INTO checkpoint VALUES (?, ?, ?)", (EHR, "2026-11-01T09:00:00Z", stamp))
        db.executemany(
            "INSERT INTO ledger (server, response_id, version_id, outcome, detail, observation_identifier, "
            "updated_at, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (EHR, "qr-ok", "1", "written", None, "obs-1", stamp, None),
                (EHR, "qr-bad", "2", "failed", "too many missing", None, stamp, stamp),
            ],
        )
        db.run("INSERT INTO inbox VALUES (?, ?, ?, ?, 0)", (EHR, "qr-new", "1", stamp))
        db.run("INSERT INTO bulk_job VALUES (?, ?, ?, ?, NULL, NULL)", (EHR, "{}", "https://ehr/status/1", stamp))
        db.run("INSERT INTO bulk_file VALUES (?, ?, ?)", (EHR, "https://ehr/files/1", stamp))
    finally:
        db.close()


def test_a_version_6_state_is_upgraded_in_place_each_row_its_own_results_store(location):
    _at_version_6(location)
    with StateStore(location) as store:
        assert store.schema_version() == 9 == MIGRATIONS[-1].version  # 7 keys by the pair, 8 write-back, 9 CDS reads
        one = ServerPair(EHR, EHR)
        assert store.checkpoint(one) == store.checkpoint(EHR) == "2026-11-01T09:00:00Z"
        assert store.lookup(EHR, ["qr-ok"])["qr-ok"].observation_identifier == "obs-1"
        assert [f.response_id for f in store.outstanding(one)] == ["qr-bad"]
        assert [i.response_id for i in store.inbox_batch(one, 10)] == ["qr-new"]
        assert store.bulk_files_done(one) == {"https://ehr/files/1"}
        job = store.bulk_job(one)
        assert job is not None and job.status_url == "https://ehr/status/1"
        # nothing of it belongs to the same source with a results store of its own
        split = ServerPair(EHR, STORE_A)
        assert store.checkpoint(split) is None and store.lookup(split, ["qr-ok"]) == {}
        assert store.outstanding(split) == [] and store.inbox_depth(split) == 0 and store.bulk_job(split) is None


def test_a_response_done_for_one_store_is_not_done_for_another(store):
    a, b = ServerPair(EHR, STORE_A), ServerPair(EHR, STORE_B)
    store.record(a, [LedgerEntry("qr-1", "1", "written", None, "obs-1")])
    assert store.set_checkpoint(a, "2026-11-01T10:00:00Z")
    assert store.lookup(b, ["qr-1"]) == {} and store.checkpoint(b) is None
    store.record(b, [LedgerEntry("qr-1", "1", "write-failed", "write failed: 503")])
    assert store.outstanding(a) == [] and [f.reason for f in store.outstanding(b)] == ["write failed: 503"]
    store.reset(b)  # forgets one pair only
    assert store.lookup(a, ["qr-1"])["qr-1"].outcome == "written" and store.checkpoint(a) == "2026-11-01T10:00:00Z"


def test_a_plain_url_is_the_one_server_pair(store):
    store.record(EHR, [LedgerEntry("qr-1", "1", "failed", "x")])
    assert [f.response_id for f in store.outstanding(ServerPair(EHR, EHR))] == ["qr-1"]
    assert str(ServerPair(EHR, EHR)) == EHR
    assert str(ServerPair(EHR, STORE_A)) == f"source {EHR}, results store {STORE_A}"


def test_the_cds_hooks_stored_reads_and_changes_are_kept_per_pair(store):
    a, b = ServerPair(EHR, STORE_A), ServerPair(EHR, STORE_B)
    reads = store.cds_summaries
    assert reads.store(a, "Patient/p1", ["Patient/p1"], 0, '{"from": "a"}', 300)
    assert reads.current(b, "Patient/p1", 300) is None  # b's results were never read
    reads.changed(b, ["Patient/p1"])  # a score written to b: the read of a's results still holds
    assert reads.current(a, "Patient/p1", 300) == '{"from": "a"}'
    assert reads.latest(a) == 0 and reads.latest(b) == 1
    store.reset(b)  # forgets b's changes only
    assert reads.latest(b) == 0 and reads.count(a) == 1
