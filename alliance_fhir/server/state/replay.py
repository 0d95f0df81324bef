"""CDS Hooks replay protection: the JWT ids (``jti``) of the client tokens already used.

A row lives until its token's own expiry (after which the token is refused anyway), and every new
token first deletes the expired rows, so the table holds at most the tokens of the last few minutes:
retention is bounded by the token lifetime the verifier allows. Expiry is compared as text, which
is time order because every row is written with the one fixed-width stamp.

``serve``'s signed event notifications use the same table (issuer :data:`SIGNED_EVENTS`, the
signature's digest as the id, kept until the notification is too old to be accepted): a
notification replayed byte for byte inside its window is recognised and not queued again.
"""

from __future__ import annotations

from datetime import datetime

from ..._time import stamp
from .._statedb import FeatureStore

__all__ = ["SIGNED_EVENTS", "TokenReplay"]

SIGNED_EVENTS = "serve:signed-event"
"""The issuer under which serve keeps the signatures of accepted event notifications (never a CDS client's iss: no URL)."""


class TokenReplay(FeatureStore):
    """Token ids seen, per issuer (table ``cds_jti``)."""

    def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record a CDS client's token id; False when it was already used (a replay)."""
        now, until = stamp(), stamp(expires_at)
        with self.db.transaction():
            self.db.run("DELETE FROM cds_jti WHERE expires_at < ?", (now,))
            inserted = self.db.run(
                "INSERT INTO cds_jti VALUES (?, ?, ?) ON CONFLICT(issuer, jti) DO NOTHING", (issuer, jti, until)
            )
        return inserted == 1

    def seen(self, issuer: str, jti: str) -> bool:
        """Whether an id is kept and not yet expired (a read: the caller records it with :meth:`first_use` once done)."""
        rows = self.db.execute(
            "SELECT 1 FROM cds_jti WHERE issuer = ? AND jti = ? AND expires_at >= ?", (issuer, jti, stamp())
        )
        return bool(rows)

    def count(self) -> int:
        """How many token ids are kept (for tests and health: bounded by the token lifetime)."""
        return int(self.db.execute("SELECT COUNT(*) FROM cds_jti")[0][0])
