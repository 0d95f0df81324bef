"""A cache of values prepared once per frozen object (an instrument, a mapping, a scale).

Scoring and Observation building both prepare per-instrument plans; the cache lives here, below
both, so neither has to import the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["IdentityCache"]

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """Values prepared once from a frozen object (instrument, mapping, scale), found by identity.

    The mapping models hold lists, so they cannot be dict keys. An entry keeps its object
    alive, so the id cannot be reused while the entry exists; at ``limit`` entries the cache
    starts afresh, which bounds memory in a process that reloads catalogs. Internal; not part
    of the public API.
    """

    def __init__(self, build: Callable[[K], V], limit: int = 1024) -> None:
        self._build = build
        self._limit = limit
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self._build(key)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
        return value
