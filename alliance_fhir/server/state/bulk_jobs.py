"""Backfill's export job: one Bulk Data export per server, remembered so a back-fill can resume.

The job is stored before anything is downloaded, its manifest once the export completes (so a
resumed back-fill need not poll again), and each file once every response in it was handled.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._time import stamp
from .._statedb import FeatureStore
from .pair import PAIR, ServerPair, pair_key

__all__ = ["BulkJob", "BulkJobs"]


@dataclass(frozen=True, slots=True)
class BulkJob:
    """A back-fill's export job: what was asked (JSON), where to poll, and the manifest once complete."""

    request: str
    status_url: str
    kicked_off_at: str
    transaction_time: str | None = None
    manifest: str | None = None


class BulkJobs(FeatureStore):
    """The export job in progress and its files done, per server (tables ``bulk_job``, ``bulk_file``)."""

    def job(self, server: str | ServerPair) -> BulkJob | None:
        """The export job a back-fill of ``server`` kicked off and has not finished or cancelled."""
        rows = self.db.execute(
            f"SELECT request, status_url, kicked_off_at, transaction_time, manifest FROM bulk_job WHERE {PAIR}",
            pair_key(server),
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

    def start(self, server: str | ServerPair, request: str, status_url: str) -> None:
        """Remember a kicked-off export (before anything is downloaded), replacing any finished one's files."""
        with self.db.transaction():
            self.forget(server)
            self.db.run(
                "INSERT INTO bulk_job (server, results_server, request, status_url, kicked_off_at) VALUES (?, ?, ?, ?, ?)",
                (*pair_key(server), request, status_url, stamp()),
            )

    def complete(self, server: str | ServerPair, transaction_time: str, manifest: str) -> None:
        """The export finished: keep its manifest, so a resumed back-fill need not poll again."""
        self.db.write(
            f"UPDATE bulk_job SET transaction_time = ?, manifest = ? WHERE {PAIR}",
            [(transaction_time, manifest, *pair_key(server))],
        )

    def file_done(self, server: str | ServerPair, url: str) -> None:
        """Every response of one exported file was handled (and its writes landed)."""
        self.db.write(
            "INSERT INTO bulk_file (server, results_server, url, done_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(*pair_key(server), url, stamp())],
        )

    def files_done(self, server: str | ServerPair) -> set[str]:
        """The URLs of the job's files already handled (skipped when the back-fill resumes)."""
        return {str(r[0]) for r in self.db.execute(f"SELECT url FROM bulk_file WHERE {PAIR}", pair_key(server))}

    def clear(self, server: str | ServerPair) -> None:
        """Forget the export job and its files (done, or cancelled)."""
        with self.db.transaction():
            self.forget(server)

    def forget(self, server: str | ServerPair) -> None:
        """Inside a transaction: delete the server's job and files (also part of ``StateStore.reset``)."""
        self.db.run(f"DELETE FROM bulk_file WHERE {PAIR}", pair_key(server))
        self.db.run(f"DELETE FROM bulk_job WHERE {PAIR}", pair_key(server))
