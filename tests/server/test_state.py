"""The state store's contract, one suite for both backends: SQLite files and a real PostgreSQL.

Every test here runs twice (``store`` is parametrised): what one backend does, the other must do
too. New StateStore methods get their tests here, and so on both databases.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alliance_fhir.errors import StateError
from alliance_fhir.server._statedb import redact_url
from alliance_fhir.server.state import MIGRATIONS, UNREAD_VERSION, UNREADABLE, LedgerEntry, StateStore

SERVER = "https://fhir.example.org/r4"
OTHER = "https://other.example.org/fhir"

Opener = Callable[[], StateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "state.sqlite"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def open_store(location: str | Path) -> Iterator[Opener]:
    """Open (another connection to) the same state, as a second worker would."""
    opened: list[StateStore] = []

    def opener() -> StateStore:
        store = StateStore(location)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> StateStore:
    return open_store()


def test_tables_are_created_on_first_use_and_versioned(store: StateStore, open_store: Opener) -> None:
    assert store.schema_version() == MIGRATIONS[-1].version
    assert store.checkpoint(SERVER) is None and store.counts(SERVER) == {}
    again = open_store()  # a second open migrates nothing and sees the same version
    assert again.schema_version() == MIGRATIONS[-1].version


def test_ledger_upserts_one_row_per_response_and_server(store: StateStore) -> None:
    store.record(
        SERVER,
        [LedgerEntry("qr-1", "1", "written", None, "obs-a"), LedgerEntry("qr-2", "1", "failed", "too many missing")],
    )
    store.record(SERVER, [LedgerEntry("qr-1", "2", "written", None, "obs-b")])
    store.record(OTHER, [LedgerEntry("qr-1", "7", "skipped")])
    found = store.lookup(SERVER, ["qr-1", "qr-2", "qr-unknown"])
    assert found == {
        "qr-1": LedgerEntry("qr-1", "2", "written", None, "obs-b"),
        "qr-2": LedgerEntry("qr-2", "1", "failed", "too many missing", None),
    }
    assert store.counts(SERVER) == {"written": 1, "failed": 1}
    assert store.lookup(OTHER, ["qr-1"])["qr-1"].version_id == "7"


def test_lookup_of_more_ids_than_one_query_takes(store: StateStore) -> None:
    store.record(SERVER, [LedgerEntry(f"qr-{i}", "1", "written", None, f"o-{i}") for i in range(1234)])
    found = store.lookup(SERVER, [f"qr-{i}" for i in range(0, 1300)])
    assert len(found) == 1234 and found["qr-1233"].observation_identifier == "o-1233"


def test_text_with_percent_and_question_marks_is_stored_verbatim(store: StateStore) -> None:
    detail = "item 3: 120% of the maximum? (50 % max)"
    store.record(SERVER, [LedgerEntry("qr-%?", "1", "failed", detail)])
    assert store.lookup(SERVER, ["qr-%?"])["qr-%?"].detail == detail


def test_checkpoint_only_moves_forward(store: StateStore) -> None:
    assert store.set_checkpoint(SERVER, "2026-11-01T10:00:00.000+00:00")
    assert store.set_checkpoint(SERVER, "2026-11-01T11:00:00+01:00") is False  # the same instant, other offset
    assert store.set_checkpoint(SERVER, "2026-11-01T09:59:59Z") is False  # an older run finishing last
    assert store.checkpoint(SERVER) == "2026-11-01T10:00:00.000+00:00"
    assert store.set_checkpoint(SERVER, "2026-11-01T10:00:00.001Z")
    assert store.checkpoint(SERVER) == "2026-11-01T10:00:00.001Z"
    assert store.checkpoint(OTHER) is None


def test_reset_forgets_one_server_only(store: StateStore) -> None:
    for server in (SERVER, OTHER):
        store.set_checkpoint(server, "2026-11-01T10:00:00Z")
        store.record(server, [LedgerEntry("qr-1", "1", "written", None, "o")])
    store.reset(SERVER)
    assert store.checkpoint(SERVER) is None and store.counts(SERVER) == {}
    assert store.checkpoint(OTHER) == "2026-11-01T10:00:00Z" and store.counts(OTHER) == {"written": 1}


def test_a_claim_is_exclusive_until_released(store: StateStore, open_store: Opener) -> None:
    assert store.claim(SERVER, ["qr-1", "qr-2"]) == {"qr-1", "qr-2"}
    assert store.claim(SERVER, ["qr-1", "qr-3"]) == {"qr-3"}  # the same worker cannot claim twice either
    assert store.claim(OTHER, ["qr-1"]) == {"qr-1"}  # claims are per server
    store.release(SERVER, ["qr-1"])
    assert store.claim(SERVER, ["qr-1"]) == {"qr-1"}


def test_wait_claim_returns_when_the_holder_releases(store: StateStore) -> None:
    assert store.claim(SERVER, ["qr-1"]) == {"qr-1"}
    timer = threading.Timer(0.3, store.release, (SERVER, ["qr-1"]))
    timer.start()
    started = time.monotonic()
    store.wait_claim(SERVER, "qr-1", timeout=10)
    assert 0.2 < time.monotonic() - started < 5
    timer.join()


def test_wait_claim_is_bounded(store: StateStore) -> None:
    store.claim(SERVER, ["qr-1"])
    with pytest.raises(StateError, match="QuestionnaireResponse/qr-1: .*timed out"):
        store.wait_claim(SERVER, "qr-1", timeout=0.3)
    store.release(SERVER, ["qr-1"])
    store.wait_claim(SERVER, "qr-1", timeout=1)  # nothing stuck behind the timeout


def test_a_newer_schema_than_ours_is_refused(store: StateStore, location: str | Path, open_store: Opener) -> None:
    store._db.run(
        "INSERT INTO schema_version VALUES (?, ?, ?)", (MIGRATIONS[-1].version + 1, "from the future", "2030-01-01")
    )
    with pytest.raises(StateError, match="schema version .* is newer"):
        open_store()


# ---------------------------------------------------------------- backend specifics


def test_postgres_claims_are_shared_between_workers_and_die_with_a_connection(postgres_url: str) -> None:
    first, second = StateStore(postgres_url), StateStore(postgres_url)
    try:
        assert first.claim(SERVER, ["qr-1", "qr-2"]) == {"qr-1", "qr-2"}
        assert second.claim(SERVER, ["qr-1", "qr-2", "qr-3"]) == {"qr-3"}
        with pytest.raises(StateError, match="timed out"):
            second.wait_claim(SERVER, "qr-1", timeout=0.3)
        first.close()  # a killed worker: its session ends, and its claims with it
        second.wait_claim(SERVER, "qr-1", timeout=10)
        assert second.claim(SERVER, ["qr-2"]) == {"qr-2"}
    finally:
        first.close()
        second.close()


def test_postgres_two_workers_migrating_an_empty_database_at_once(postgres_url: str) -> None:
    results: list[object] = []

    def open_one() -> None:
        try:
            with StateStore(postgres_url) as s:
                results.append(s.schema_version())
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            results.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [MIGRATIONS[-1].version] * 4


def test_postgres_errors_name_the_database_without_its_password() -> None:
    url = "postgresql://alice:s3cret@127.0.0.1:1/nowhere"
    assert redact_url(url) == "postgresql://alice:***@127.0.0.1:1/nowhere"
    with pytest.raises(StateError) as caught:
        StateStore(url)
    assert "s3cret" not in str(caught.value) and "127.0.0.1:1/nowhere" in str(caught.value)


def test_a_sqlite_file_from_before_versioning_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # the schema as it shipped before migrations were versioned
        old.executescript(
            "CREATE TABLE checkpoint (server TEXT PRIMARY KEY, last_updated TEXT NOT NULL, updated_at TEXT NOT NULL);"
            "CREATE TABLE ledger (server TEXT NOT NULL, response_id TEXT NOT NULL, version_id TEXT NOT NULL, outcome TEXT NOT NULL,"
            " detail TEXT, observation_identifier TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (server, response_id));"
            f"INSERT INTO checkpoint VALUES ('{SERVER}', '2026-11-01T10:00:00Z', 'x');"
        )
    old.close()
    with StateStore(path) as store:
        assert store.checkpoint(SERVER) == "2026-11-01T10:00:00Z" and store.schema_version() == MIGRATIONS[-1].version


def test_outstanding_failures_keep_their_first_since_until_the_response_scores(store: StateStore) -> None:
    store.record(
        SERVER, [LedgerEntry("qr-1", "1", "failed", "too many missing"), LedgerEntry("qr-2", "1", "written", None, "o")]
    )
    first = store.outstanding(SERVER)
    assert [(f.response_id, f.outcome, f.reason) for f in first] == [("qr-1", "failed", "too many missing")]
    store.record(SERVER, [LedgerEntry("qr-1", "2", "write-failed", "write failed: 503")])
    again = store.outstanding(SERVER)
    assert again[0].since == first[0].since and again[0].reason == "write failed: 503"
    store.record(SERVER, [LedgerEntry("qr-1", "3", "written", None, "o1")])
    assert store.outstanding(SERVER) == []


def test_a_dismissal_is_kept_with_who_and_why_until_the_response_changes(store: StateStore) -> None:
    store.record(SERVER, [LedgerEntry("qr-1", "1", "failed", "unknown version '9.0'")])
    dismissed = store.dismiss(SERVER, "qr-1", "dr.who", "test form")
    assert dismissed is not None and dismissed.response_id == "qr-1"
    assert store.outstanding(SERVER) == [] and store.dismiss(SERVER, "qr-1", "x", "y") is None
    assert store.dismissal(SERVER, "qr-1") == ("dr.who", "test form", "unknown version '9.0'")
    store.record(SERVER, [LedgerEntry("qr-1", "2", "failed", "still broken")])
    assert store.dismissal(SERVER, "qr-1") is None and len(store.outstanding(SERVER)) == 1


def test_a_sqlite_file_from_the_first_release_gains_the_later_columns(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    with StateStore(path) as store:
        store._db.run("DROP TABLE ledger")
        store._db.run(
            "CREATE TABLE ledger (server TEXT NOT NULL, response_id TEXT NOT NULL, version_id TEXT NOT NULL, outcome TEXT NOT NULL,"
            " detail TEXT, observation_identifier TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (server, response_id))"
        )
        store._db.run("DELETE FROM schema_version WHERE version > 1")
    with StateStore(path) as store:
        store.record(SERVER, [LedgerEntry("qr-1", "1", "failed", "x")])
        assert store.schema_version() == MIGRATIONS[-1].version and len(store.outstanding(SERVER)) == 1


def test_a_cds_token_id_is_accepted_once_and_kept_only_until_it_expires(store: StateStore) -> None:
    from datetime import UTC, datetime, timedelta

    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert store.first_use_of_jti("https://ehr.example.org", "j1", soon)
    assert not store.first_use_of_jti("https://ehr.example.org", "j1", soon)  # a replay
    assert store.first_use_of_jti("https://other.example.org", "j1", soon)  # per issuer
    assert store.first_use_of_jti("https://ehr.example.org", "j0", datetime.now(UTC) - timedelta(seconds=1))
    assert store.first_use_of_jti("https://ehr.example.org", "j2", soon)
    assert store.jti_count() == 3  # j0 had expired: dropped when j2 was recorded


def test_an_unreadable_export_line_is_outstanding_until_its_response_is_read_or_it_is_dismissed(
    store: StateStore,
) -> None:
    line = "/fhir/Binary/7 line 3"
    store.record(
        SERVER,
        [
            LedgerEntry("qr1", UNREAD_VERSION, UNREADABLE, "an unreadable line of an export (/fhir/Binary/7 line 2)"),
            LedgerEntry(line, UNREAD_VERSION, UNREADABLE, f"{line}: not JSON"),
        ],
    )
    assert store.unreadable_count(SERVER) == 2
    assert {f.resource for f in store.outstanding(SERVER)} == {"QuestionnaireResponse/qr1", line}
    store.record(SERVER, [LedgerEntry("qr1", "4", "written", None, "obs1")])  # a sync read the response
    assert store.unreadable_count(SERVER) == 1
    assert store.dismiss(SERVER, line, "ops", "a glitch") is not None
    assert store.unreadable_count(SERVER) == 0 and store.outstanding(SERVER) == []


def test_each_feature_has_its_own_store_over_the_one_connection(store: StateStore) -> None:
    stores = (store.ledger, store.claims, store.inbox, store.bulk_jobs, store.settings, store.replay)
    assert {id(s.db) for s in stores} == {id(store._db)}
    store.ledger.record(SERVER, [LedgerEntry("qr-1", "1", "failed", "x")])
    store.inbox.add(SERVER, [("qr-1", "1")])
    store.bulk_jobs.start(SERVER, "{}", "https://fhir.example.org/status/1")
    store.settings.set("webhook-secret", "s")
    assert store.counts(SERVER) == {"failed": 1} and store.inbox_depth(SERVER) == 1 and store.bulk_job(SERVER)
    store.reset(SERVER)  # per-server state of every feature, in one transaction; settings are not per server
    assert store.ledger.counts(SERVER) == {} and store.inbox.depth(SERVER) == 0 and store.bulk_jobs.job(SERVER) is None
    assert store.settings.get("webhook-secret") == "s"
