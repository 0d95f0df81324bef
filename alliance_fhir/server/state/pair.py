"""What the state is keyed by: the source a response was read from and the results store it went to.

A response synced to one results store is not done for another (its Observation is not there), so
the ledger, checkpoint, serve's inbox and backfill's export job are all per pair. With one server
the two are the same URL, and a plain URL string still means that pair: callers from before the
results store keep working, and a database from before it is migrated to exactly that
(:mod:`.migrations`, step 7).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAIR", "ServerPair", "pair_key", "pair_of"]


@dataclass(frozen=True, slots=True)
class ServerPair:
    """The source server's base URL and the results store's (the same URL for one server)."""

    source: str
    results: str

    @property
    def split(self) -> bool:
        """Whether results go to a store other than the source."""
        return self.source != self.results

    @property
    def scope(self) -> str:
        """One text for the pair (a claim's scope, a setting's name): the source's URL for one server,
        as before the results store existed."""
        return f"{self.source} -> {self.results}" if self.split else self.source

    def __str__(self) -> str:
        """As messages name it: the source, and the results store when it is another server."""
        return f"source {self.source}, results store {self.results}" if self.split else self.source


def pair_of(server: str | ServerPair) -> ServerPair:
    """``server`` as a pair: a plain URL is one server (the source is its own results store)."""
    return server if isinstance(server, ServerPair) else ServerPair(server, server)


# The condition every per-pair query has, with :func:`pair_key`'s two values for its placeholders.
PAIR = "server = ? AND results_server = ?"


def pair_key(server: str | ServerPair) -> tuple[str, str]:
    """(source, results store) for a query's ``PAIR`` placeholders."""
    pair = pair_of(server)
    return pair.source, pair.results
