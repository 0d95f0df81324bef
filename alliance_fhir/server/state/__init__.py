"""Durable state in SQLite or PostgreSQL: one database, one schema, a small store per feature.

A database rather than JSON files so that a run killed at any instant leaves consistent state (each
page's ledger rows commit atomically) and so that a ledger of millions of responses is looked up by
key instead of loaded whole. Everything per server is keyed by the server's base URL, so one
database serves several servers and ``sync --reset`` clears exactly one.

SQLite (a file path) serves one worker; PostgreSQL (a ``postgresql://`` URL) is shared by several
``sync`` processes or ``serve`` replicas. The SQL is written once for both (see ``_statedb``).

:class:`StateStore` opens the one connection, applies :mod:`.migrations`, and holds the feature
stores, each with its own tables:

- ``ledger`` (:mod:`.ledger`): sync's checkpoints and per-response ledger;
- ``claims`` (:mod:`.claims`): per-response claims between workers;
- ``inbox`` (:mod:`.inbox`): serve's notified responses;
- ``bulk_jobs`` (:mod:`.bulk_jobs`): backfill's export job and files done;
- ``settings`` (:mod:`.settings_store`): named values (webhook secret, report-link key, labels applied);
- ``read_checkpoints`` (:mod:`.read_checkpoints`): per-patient and per-Group-export checkpoints;
- ``replay`` (:mod:`.replay`): CDS token ids seen, and the signatures of serve's signed notifications;
- ``ehr_writes`` (:mod:`.ehr_writes`): what was written back into the EHR, per identifier;
- ``cds_summaries`` (:mod:`.cds_summaries`): the CDS hook's stored reads and patients' results changes.

Every timestamp of ours is written as :func:`alliance_fhir._time.stamp`. The store's older
method names (``record``, ``inbox_add``, ``bulk_job``, ``setting``, ...) still work and delegate;
new code uses the feature store (``store.ledger.record``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from ..._closing import Closing
from .._statedb import Database, open_database
from .bulk_jobs import BulkJob, BulkJobs
from .cds_summaries import CdsSummaries, patient_keys
from .claims import Claims
from .ehr_writes import EhrWrite, EhrWrites, EhrWriteStatus
from .inbox import Inbox, InboxItem
from .ledger import (
    FAILURE_OUTCOMES,
    UNREAD_VERSION,
    UNREADABLE,
    Ledger,
    LedgerEntry,
    Outcome,
    OutstandingFailure,
    failure_reference,
)
from .migrations import MIGRATIONS, Migration, migrate, schema_version
from .pair import ServerPair, pair_of
from .read_checkpoints import ReadCheckpoint, ReadCheckpoints
from .replay import SIGNED_EVENTS, TokenReplay
from .settings_store import NamedSettings

__all__ = [
    "BulkJob",
    "EhrWrite",
    "EhrWriteStatus",
    "FAILURE_OUTCOMES",
    "InboxItem",
    "LedgerEntry",
    "MIGRATIONS",
    "Migration",
    "Outcome",
    "OutstandingFailure",
    "ReadCheckpoint",
    "ServerPair",
    "StateStore",
    "UNREADABLE",
    "UNREAD_VERSION",
    "failure_reference",
    "pair_of",
    "patient_keys",
]


class StateStore(Closing):
    """The state database: its connection, its schema, and one store per feature (see the module)."""

    def __init__(self, location: Path | str) -> None:
        """``location``: a SQLite file path, or a ``postgresql://`` URL (tables created on first use)."""
        self._db: Database = open_database(location)
        self.location = self._db.name  # never holds a password
        try:
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise
        self.ledger = Ledger(self._db)
        self.claims = Claims(self._db)
        self.inbox = Inbox(self._db)
        self.bulk_jobs = BulkJobs(self._db)
        self.settings = NamedSettings(self._db)
        self.replay = TokenReplay(self._db)
        self.read_checkpoints = ReadCheckpoints(self._db)
        self.ehr_writes = EhrWrites(self._db)
        self.cds_summaries = CdsSummaries(self._db)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return schema_version(self._db)

    def reset(self, server: str | ServerPair) -> None:
        """Forget everything about one server (checkpoint, ledger, inbox, export job, CDS reads) in one transaction."""
        with self._db.transaction():
            self.ledger.forget(server)
            self.cds_summaries.forget(server)
            self.inbox.forget(server)
            self.bulk_jobs.forget(server)
            self.read_checkpoints.forget(server)
            self.ehr_writes.forget(server)

    # ------------------------------------------------------------ the names from before the split
    # Each delegates to its feature store; callers move to the store (``store.ledger.record``).

    def checkpoint(self, server: str | ServerPair) -> str | None:
        return self.ledger.checkpoint(server)

    def set_checkpoint(self, server: str | ServerPair, last_updated: str) -> bool:
        return self.ledger.set_checkpoint(server, last_updated)

    def lookup(self, server: str | ServerPair, response_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        return self.ledger.lookup(server, response_ids)

    def record(self, server: str | ServerPair, entries: Iterable[LedgerEntry]) -> None:
        self.ledger.record(server, entries)

    def outstanding(self, server: str | ServerPair) -> list[OutstandingFailure]:
        return self.ledger.outstanding(server)

    def unreadable_count(self, server: str | ServerPair) -> int:
        return self.ledger.unreadable_count(server)

    def dismiss(self, server: str | ServerPair, response_id: str, by: str, reason: str) -> OutstandingFailure | None:
        return self.ledger.dismiss(server, response_id, by, reason)

    def dismissal(self, server: str | ServerPair, response_id: str) -> tuple[str, str, str] | None:
        return self.ledger.dismissal(server, response_id)

    def counts(self, server: str | ServerPair) -> dict[str, int]:
        return self.ledger.counts(server)

    def claim(self, server: str | ServerPair, response_ids: Sequence[str]) -> set[str]:
        return self.claims.claim(server, response_ids)

    def wait_claim(self, server: str | ServerPair, response_id: str, timeout: float) -> None:
        self.claims.wait_claim(server, response_id, timeout)

    def release(self, server: str | ServerPair, response_ids: Iterable[str]) -> None:
        self.claims.release(server, response_ids)

    def inbox_add(self, server: str | ServerPair, hints: Iterable[tuple[str, str]]) -> None:
        self.inbox.add(server, hints)

    def inbox_batch(self, server: str | ServerPair, limit: int) -> list[InboxItem]:
        return self.inbox.batch(server, limit)

    def inbox_done(self, server: str | ServerPair, items: Iterable[InboxItem]) -> None:
        self.inbox.done(server, items)

    def inbox_retry(self, server: str | ServerPair, items: Iterable[InboxItem]) -> None:
        self.inbox.retry(server, items)

    def inbox_depth(self, server: str | ServerPair) -> int:
        return self.inbox.depth(server)

    def bulk_job(self, server: str | ServerPair) -> BulkJob | None:
        return self.bulk_jobs.job(server)

    def bulk_start(self, server: str | ServerPair, request: str, status_url: str) -> None:
        self.bulk_jobs.start(server, request, status_url)

    def bulk_complete(self, server: str | ServerPair, transaction_time: str, manifest: str) -> None:
        self.bulk_jobs.complete(server, transaction_time, manifest)

    def bulk_file_done(self, server: str | ServerPair, url: str) -> None:
        self.bulk_jobs.file_done(server, url)

    def bulk_files_done(self, server: str | ServerPair) -> set[str]:
        return self.bulk_jobs.files_done(server)

    def bulk_clear(self, server: str | ServerPair) -> None:
        self.bulk_jobs.clear(server)

    def setting(self, name: str) -> str | None:
        return self.settings.get(name)

    def set_setting(self, name: str, value: str) -> None:
        self.settings.set(name, value)

    def setting_once(self, name: str, value: str) -> str:
        return self.settings.once(name, value)

    def first_use_of_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        return self.replay.first_use(issuer, jti, expires_at)

    def signed_event_seen(self, digest: str) -> bool:
        return self.replay.seen(SIGNED_EVENTS, digest)

    def signed_event_accepted(self, digest: str, keep_until: datetime) -> None:
        self.replay.first_use(SIGNED_EVENTS, digest, keep_until)

    def jti_count(self) -> int:
        return self.replay.count()
