"""Per-response claims: several workers on one state never write the same response at the same time.

A claim is held from before the response's ledger entry is read until its outcome is recorded. On
PostgreSQL it is a session advisory lock, so a killed worker's claims end with its connection; on
SQLite (one worker per file) it is this process's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ...errors import StateError
from .._statedb import FeatureStore, claim_key
from .pair import ServerPair, pair_of

__all__ = ["Claims"]


class Claims(FeatureStore):
    """Claims on responses, per server (no table: the database's locks)."""

    def claim(self, server: str | ServerPair, response_ids: Sequence[str]) -> set[str]:
        """Claim the responses no other worker is handling (one query); the ids claimed."""
        keys = {claim_key(pair_of(server).scope, rid): rid for rid in response_ids}
        return {keys[k] for k in self.db.try_claim(list(keys))}

    def wait_claim(self, server: str | ServerPair, response_id: str, timeout: float) -> None:
        """Claim one response, waiting (bounded) for the worker that holds it.

        Raises:
            StateError: still held after ``timeout`` seconds.
        """
        try:
            self.db.wait_claim(claim_key(pair_of(server).scope, response_id), timeout)
        except StateError as exc:
            raise StateError(f"QuestionnaireResponse/{response_id}: {exc}") from exc

    def release(self, server: str | ServerPair, response_ids: Iterable[str]) -> None:
        """Let other workers have these responses (those not claimed here are ignored)."""
        self.db.release(claim_key(pair_of(server).scope, rid) for rid in response_ids)
