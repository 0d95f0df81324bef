"""Named settings: small values a command keeps between runs.

Serve's webhook secret and the report-link key are created once and then read (``once``: two
replicas starting together agree on one); sync keeps the labels it last applied (``set``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import StateError
from .._statedb import FeatureStore

__all__ = ["NamedSettings"]


class NamedSettings(FeatureStore):
    """Values by name (table ``setting``)."""

    def get(self, name: str) -> str | None:
        """The value stored under ``name``, if any."""
        return self.db.value("SELECT value FROM setting WHERE name = ?", (name,))

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing what was there (e.g. the labels sync last applied)."""
        self.db.write(
            "INSERT INTO setting VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", [(name, value)]
        )

    def once(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless one is stored; return the stored one.

        A secret may be among them, so a SQLite file is made private (0600) first.
        """
        path = Path(self.db.name)
        if self.db.dialect == "sqlite" and path.exists():
            try:
                os.chmod(path, 0o600)
            except OSError as exc:
                raise StateError(f"sync state database {self.db.name}: {exc}") from exc
        self.db.write("INSERT INTO setting VALUES (?, ?) ON CONFLICT(name) DO NOTHING", [(name, value)])
        stored = self.get(name)
        if stored is None:
            raise StateError(f"sync state database {self.db.name}: setting {name} was not stored")
        return stored
