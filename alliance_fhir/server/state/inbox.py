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
from .pair import PAIR, ServerPair, pair_key

__all__ = ["Inbox", "InboxItem"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One notified response waiting to be re-read and scored (version "" when the hint had none)."""

    response_id: str
    version_id: str
    attempts: int = 0
    received_at: str = ""


class Inbox(FeatureStore):
    """Notified responses waiting, per source and results store (table ``inbox``)."""

    def add(self, server: str | ServerPair, hints: Iterable[tuple[str, str]]) -> None:
        """Record ``(response_id, version_id)`` hints durably; a hint already waiting is kept once."""
        now = stamp()
        self.db.write(
            "INSERT INTO inbox (server, results_server, response_id, version_id, received_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(*pair_key(server), rid, version, now) for rid, version in hints],
        )

    def batch(self, server: str | ServerPair, limit: int) -> list[InboxItem]:
        """The oldest waiting hints (those that failed least first); they stay until :meth:`done`."""
        rows = self.db.execute(
            f"SELECT response_id, version_id, attempts, received_at FROM inbox WHERE {PAIR} "
            "ORDER BY attempts, received_at, response_id LIMIT ?",
            (*pair_key(server), limit),
        )
        return [InboxItem(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def done(self, server: str | ServerPair, items: Iterable[InboxItem]) -> None:
        """Delete handled hints."""
        self.db.write(
            f"DELETE FROM inbox WHERE {PAIR} AND response_id = ? AND version_id = ?",
            [(*pair_key(server), i.response_id, i.version_id) for i in items],
        )

    def retry(self, server: str | ServerPair, items: Iterable[InboxItem]) -> None:
        """One more failed attempt for each hint."""
        self.db.write(
            f"UPDATE inbox SET attempts = attempts + 1 WHERE {PAIR} AND response_id = ? AND version_id = ?",
            [(*pair_key(server), i.response_id, i.version_id) for i in items],
        )

    def depth(self, server: str | ServerPair) -> int:
        """How many hints are waiting."""
        return int(self.db.execute(f"SELECT COUNT(*) FROM inbox WHERE {PAIR}", pair_key(server))[0][0])

    def forget(self, server: str | ServerPair) -> None:
        """Inside a transaction: delete the server's hints (part of ``StateStore.reset``)."""
        self.db.run(f"DELETE FROM inbox WHERE {PAIR}", pair_key(server))
