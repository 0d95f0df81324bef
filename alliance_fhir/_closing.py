"""One ``with`` protocol for the objects that hold something to let go of (a connection pool, a
database connection, a thread pool and claims): ``with X(...) as x:`` closes ``x`` on the way out,
whatever happened inside, by calling its ``close``. Written once here, so that every such object
closes the same way and a new one cannot forget the exit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing(ABC):
    """A context manager over :meth:`close` (which subclasses define; it may also be called directly)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Let go of what the object holds."""
