"""Serve's inbox: the responses a notification named, recorded before the notification is acknowledged.

A hint is durable once it is here, so a crash between the acknowledgement and the scoring loses
nothing: the worker takes the oldest hints (those that failed least first) and deletes them only
once handled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..._time import stamp
from .._statedb import FeatureStore

__all__ = ["Inbox", "InboxItem"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One notified response waiting to be re-read and scored (version "" when the hint had none)."""

    response_id: str
    version_id: str
    attempts: int = 0
    received_at: str = ""


class Inbox(FeatureStore):
    """Notified responses waiting, per server (table ``inbox``)."""

    def add(self, server: str, hints: Iterable[tuple[str, str]]) -> None:
        """Record ``(response_id, version_id)`` hints durably; a hint already waiting is kept once."""
        now = stamp()
        self.db.write(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(server, rid, version, now) for rid, version in hints],
        )

    def batch(self, server: str, limit: int) -> list[InboxItem]:
        """The oldest waiting hints (those that failed least first); they stay until :meth:`done`."""
        rows = self.db.execute(
            "SELECT response_id, version_id, attempts, received_at FROM inbox WHERE server = ? "
            "ORDER BY attempts, received_at, response_id LIMIT ?",
            (server, limit),
        )
        return [InboxItem(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def done(self, server: str, items: Iterable[InboxItem]) -> None:
        """Delete handled hints."""
        self.db.write(
            "DELETE FROM inbox WHERE server = ? AND response_id = ? AND version_id = ?",
            [(server, i.response_id, i.version_id) for i in items],
        )

    def retry(self, server: str, items: Iterable[InboxItem]) -> None:
        """One more failed attempt for each hint."""
        self.db.write(
            "UPDATE inbox SET attempts = attempts + 1 WHERE server = ? AND response_id = ? AND version_id = ?",
            [(server, i.response_id, i.version_id) for i in items],
        )

    def depth(self, server: str) -> int:
        """How many hints are waiting."""
        return int(self.db.execute("SELECT COUNT(*) FROM inbox WHERE server = ?", (server,))[0][0])

    def forget(self, server: str) -> None:
        """Inside a transaction: delete the server's hints (part of ``StateStore.reset``)."""
        self.db.run("DELETE FROM inbox WHERE server = ?", (server,))
