"""Backfill's export job: one Bulk Data export per server, remembered so a back-fill can resume.

The job is stored before anything is downloaded, its manifest once the export completes (so a
resumed back-fill need not poll again), and each file once every response in it was handled.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._time import stamp
from .._statedb import FeatureStore

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

    def job(self, server: str) -> BulkJob | None:
        """The export job a back-fill of ``server`` kicked off and has not finished or cancelled."""
        rows = self.db.execute(
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

    def start(self, server: str, request: str, status_url: str) -> None:
        """Remember a kicked-off export (before anything is downloaded), replacing any finished one's files."""
        with self.db.transaction():
            self.forget(server)
            self.db.run("INSERT INTO bulk_job VALUES (?, ?, ?, ?, NULL, NULL)", (server, request, status_url, stamp()))

    def complete(self, server: str, transaction_time: str, manifest: str) -> None:
        """The export finished: keep its manifest, so a resumed back-fill need not poll again."""
        self.db.write(
            "UPDATE bulk_job SET transaction_time = ?, manifest = ? WHERE server = ?",
            [(transaction_time, manifest, server)],
        )

    def file_done(self, server: str, url: str) -> None:
        """Every response of one exported file was handled (and its writes landed)."""
        self.db.write("INSERT INTO bulk_file VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [(server, url, stamp())])

    def files_done(self, server: str) -> set[str]:
        """The URLs of the job's files already handled (skipped when the back-fill resumes)."""
        return {str(r[0]) for r in self.db.execute("SELECT url FROM bulk_file WHERE server = ?", (server,))}

    def clear(self, server: str) -> None:
        """Forget the export job and its files (done, or cancelled)."""
        with self.db.transaction():
            self.forget(server)

    def forget(self, server: str) -> None:
        """Inside a transaction: delete the server's job and files (also part of ``StateStore.reset``)."""
        self.db.run("DELETE FROM bulk_file WHERE server = ?", (server,))
        self.db.run("DELETE FROM bulk_job WHERE server = ?", (server,))
