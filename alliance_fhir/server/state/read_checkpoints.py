"""Checkpoints of the read modes that do not search the whole server: one per patient, one per Group export.

``sync --patients`` searches each patient on its own, so each patient has its own checkpoint (the
server's stamp on that patient's first search page): a patient whose search failed keeps its old
one while the others move, a killed run resumes without re-reading the patients it finished, and a
later run reads per patient only what changed since that patient's own last complete read.
``sync --via-export Group/ID`` keeps the transactionTime of the Group's last complete export here.

Kept in the ``setting`` table under names that start with the server pair's scope, so no schema
change is needed and ``StateStore.reset`` forgets them with the rest of the pair's state. Each value
also names the security labels that read applied (a change of labels re-reads that patient once,
as a change re-reads the whole server in the server-wide mode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..._time import instant_or_none
from .._statedb import FeatureStore
from .pair import ServerPair, pair_of

__all__ = ["ReadCheckpoint", "ReadCheckpoints"]

_PREFIX = "read-checkpoint|"


@dataclass(frozen=True, slots=True)
class ReadCheckpoint:
    """Where one reader (a patient, a Group's export) got to: the server's stamp, and the labels applied."""

    last_updated: str
    labels: str = ""


class ReadCheckpoints(FeatureStore):
    """Per-reader checkpoints of one server pair (rows of table ``setting``)."""

    def get(self, server: str | ServerPair, reader: str) -> ReadCheckpoint | None:
        """The checkpoint of ``reader`` (``Patient/123``, ``export Group/9``), if a complete read set one."""
        raw = self.db.value("SELECT value FROM setting WHERE name = ?", (_name(server, reader),))
        return None if raw is None else _parse(raw)

    def move(self, server: str | ServerPair, reader: str, last_updated: str, labels: str = "") -> bool:
        """Move ``reader``'s checkpoint forward to ``last_updated`` (never back: an older run finishing
        last must not undo a newer one; the labels are replaced with it). True when it moved."""
        name = _name(server, reader)
        value = json.dumps({"last_updated": last_updated, "labels": labels}, sort_keys=True)
        new = instant_or_none(last_updated)
        with self.db.transaction():
            if self.db.run(
                "INSERT INTO setting (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING", (name, value)
            ):
                return True
            rows = self.db.execute("SELECT value FROM setting WHERE name = ?" + self.db.for_update, (name,))
            old = _parse(str(rows[0][0])) if rows else None
            before = instant_or_none(old.last_updated) if old else None
            if old is not None and old.labels == labels and new is not None and before is not None and new <= before:
                return False
            self.db.run("UPDATE setting SET value = ? WHERE name = ?", (value, name))
            return True

    def forget(self, server: str | ServerPair) -> None:
        """Inside a transaction: delete every reader's checkpoint of the pair (part of ``StateStore.reset``)."""
        prefix = _name(server, "")
        self.db.run("DELETE FROM setting WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))


def _name(server: str | ServerPair, reader: str) -> str:
    return f"{_PREFIX}{pair_of(server).scope}|{reader}"


def _parse(raw: str) -> ReadCheckpoint | None:
    """A stored value, or None when it is not ours to trust: the reader then starts over (the ledger
    keeps that from writing anything twice)."""
    try:
        data = json.loads(raw)
        return ReadCheckpoint(str(data["last_updated"]), str(data.get("labels", "")))
    except (ValueError, KeyError, TypeError):
        return None
