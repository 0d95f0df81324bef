"""The SQL dialect layer under the state store: one small interface, a SQLite and a PostgreSQL side.

The state store writes its SQL once, in the subset both databases accept (``?`` placeholders,
``INSERT ... ON CONFLICT ... DO UPDATE``, TEXT columns); this module translates the few places
where they differ: placeholders, how a write transaction starts, DDL types, row locks, and
per-response claims (PostgreSQL session advisory locks, so a SIGKILLed worker's claims vanish with
its connection). SQLAlchemy Core would add a dependency and a second abstraction for four
differences; this is the whole of them.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, StateError

__all__ = ["STATE_FORMS", "Database", "is_postgres_url", "open_database", "parse_location", "redact_url"]

Row = tuple[Any, ...]
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# A leading URI scheme (two characters at least, so a drive letter is not one).
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")
STATE_FORMS = "a SQLite file path, or postgresql://USER@HOST:PORT/DB (postgres:// also)"


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(_POSTGRES_SCHEMES)


def parse_location(location: str | Path) -> str | Path:
    """The one reading of a state location: a PostgreSQL URL (kept as text) or a SQLite file path.

    Every command's ``--state``, ``ALLIANCE_FHIR_STATE_DB`` and ``[server] state_db`` come through
    here, and so does :class:`StateStore`'s own argument. Text that looks like a URL is a URL: a
    ``mysql://``, a misspelt ``postgresq://``, ``sqlite:///x``, ``file:x`` or ``postgresql:/x`` is
    refused, since read as a path it would silently become a new, empty SQLite file under ``./``
    (a name with a colon can still be given as ``./name``). Empty text is refused too: an unset
    variable expanded to "" must not quietly mean the default file. The message names the URL's
    scheme only, never the rest (it may hold a password).

    Raises:
        ConfigError: empty, or a URL whose scheme is not postgresql:// or postgres://.
    """
    if isinstance(location, Path):
        return location
    if not location.strip():
        raise ConfigError(f"the state location is empty: give {STATE_FORMS}, or leave it unset for the default file")
    if is_postgres_url(location):
        return location
    scheme = _SCHEME.match(location)
    if scheme or "://" in location:
        named = f"starts with the URL scheme '{scheme.group(1)}:'" if scheme else "is a URL"
        raise ConfigError(
            f"the state location {named}, which is not accepted: give {STATE_FORMS} "
            "(a file name with a colon: write it as ./name)"
        )
    return Path(location).expanduser()


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def claim_key(scope: str, name: str) -> int:
    """A stable signed 64-bit key for one claim (an advisory-lock id on PostgreSQL)."""
    digest = hashlib.blake2b(f"{scope}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Database:
    """One connection to the state database; everything the store needs and nothing more."""

    dialect: str
    name: str  # for messages: the file, or the URL without its password
    for_update = ""  # appended to a SELECT that must lock the rows it reads

    def __init__(self) -> None:
        # claims held by this process: a connection's own advisory locks would be re-entrant
        self._held: set[int] = set()
        self._held_changed = threading.Condition()

    # --- SQL
    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        raise NotImplementedError

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute a statement; the number of rows it changed."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:
        """A write transaction (context manager): committed on success, rolled back on error."""
        raise NotImplementedError

    def value(self, sql: str, params: Sequence[object] = ()) -> str | None:
        """The first column of the first row ``sql`` selects, as text; None when it selects no row."""
        rows = self.execute(sql, params)
        return str(rows[0][0]) if rows else None

    def write(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run ``sql`` once per row, all in one transaction (nothing at all for no rows)."""
        if not rows:
            return
        with self.transaction():
            self.executemany(sql, rows)

    def lock_schema(self) -> None:
        """Inside a transaction: serialise schema migrations between processes."""

    def add_column(self, table: str, column: str, kind: str) -> None:
        """``ALTER TABLE table ADD COLUMN column kind`` unless the column is there already."""
        raise NotImplementedError

    def ddl(self, sql: str) -> str:
        """Portable DDL with ``{id}`` (an auto-numbered primary key) and ``{bytes}`` placeholders."""
        return sql.format(**self._ddl_types)

    _ddl_types: dict[str, str] = {}

    def close(self) -> None:
        raise NotImplementedError

    # --- claims
    def try_claim(self, keys: Sequence[int]) -> set[int]:
        """Claim the keys no other worker holds; the ones claimed."""
        with self._held_changed:
            free = [k for k in dict.fromkeys(keys) if k not in self._held]
            got = self._try_lock(free) if free else set()
            self._held.update(got)
        return got

    def wait_claim(self, key: int, timeout: float) -> None:
        """Claim one key, waiting up to ``timeout`` seconds for its holder to let go."""
        deadline = time.monotonic() + timeout
        with self._held_changed:
            while key in self._held:
                left = deadline - time.monotonic()
                if left <= 0 or not self._held_changed.wait(left):
                    raise StateError(f"state database {self.name}: timed out after {timeout:.0f} s waiting for a claim")
            self._held.add(key)
        try:
            self._wait_lock(key, max(deadline - time.monotonic(), 0.001))
        except BaseException:
            with self._held_changed:
                self._held.discard(key)
                self._held_changed.notify_all()
            raise

    def release(self, keys: Iterable[int]) -> None:
        with self._held_changed:
            mine = [k for k in dict.fromkeys(keys) if k in self._held]
            if mine:
                self._unlock(mine)
                self._held.difference_update(mine)
                self._held_changed.notify_all()

    def _try_lock(self, keys: list[int]) -> set[int]:
        return set(keys)

    def _wait_lock(self, key: int, timeout: float) -> None:
        return None

    def _unlock(self, keys: list[int]) -> None:
        return None


class SqliteDatabase(Database):
    """A local file in WAL mode. Claims are this process's only: one host, one worker per file."""

    dialect = "sqlite"
    _ddl_types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "bytes": "BLOB"}

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.name = str(path)
        try:
            _create_private(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"sync state database {path}: {exc}") from exc
        self._lock = threading.RLock()

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock, _errors(self.name, sqlite3.Error):
            return list(self._db.execute(sql, params).fetchall())

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._lock, _errors(self.name, sqlite3.Error):
            return self._db.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._lock, _errors(self.name, sqlite3.Error):
            self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            with _errors(self.name, sqlite3.Error):
                self._db.execute("BEGIN IMMEDIATE")  # the write lock up front: no upgrade deadlocks
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            with _errors(self.name, sqlite3.Error):
                self._db.execute("COMMIT")

    def add_column(self, table: str, column: str, kind: str) -> None:
        if column not in {str(row[1]) for row in self.execute(f"PRAGMA table_info({table})")}:
            self.run(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()


class PostgresDatabase(Database):
    """A PostgreSQL database named by URL (psycopg 3); password from the URL, PGPASSWORD or ~/.pgpass."""

    dialect = "postgresql"
    for_update = " FOR UPDATE"
    _ddl_types = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "bytes": "BYTEA"}
    _SCHEMA_LOCK = claim_key("alliance-fhir", "schema")

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        super().__init__()
        self.name = redact_url(url)
        try:
            import psycopg
        except ImportError as exc:
            raise StateError(
                f"state database {self.name}: PostgreSQL needs psycopg (pip install 'alliance-fhir[postgres]')"
            ) from exc
        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, int(connect_timeout)), application_name="alliance-fhir"
            )
        except psycopg.Error as exc:
            raise StateError(f"state database {self.name}: {_first_line(exc)}") from exc
        self._lock = threading.RLock()

    def _sql(self, sql: str) -> str:
        return _placeholders(sql)

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock, _errors(self.name, self._psycopg.Error):
            cursor = self._db.execute(self._sql(sql), params)
            return list(cursor.fetchall()) if cursor.description else []

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._lock, _errors(self.name, self._psycopg.Error):
            return self._db.execute(self._sql(sql), params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._lock, _errors(self.name, self._psycopg.Error):
            with self._db.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, _errors(self.name, self._psycopg.Error), self._db.transaction():
            yield

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (self._SCHEMA_LOCK,))

    def add_column(self, table: str, column: str, kind: str) -> None:
        self.run(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")

    def _try_lock(self, keys: list[int]) -> set[int]:
        rows = self.execute("SELECT k, pg_try_advisory_lock(k) FROM unnest(?::bigint[]) AS k", (keys,))
        return {int(k) for k, ok in rows if ok}

    def _wait_lock(self, key: int, timeout: float) -> None:
        errors = self._psycopg.errors
        with self._lock:
            try:
                self._db.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout * 1000) + 1}ms",))
                self._db.execute("SELECT pg_advisory_lock(%s)", (key,))
            except errors.LockNotAvailable as exc:
                raise StateError(
                    f"state database {self.name}: timed out after {timeout:.0f} s waiting for another worker's claim"
                ) from exc
            except self._psycopg.Error as exc:
                raise StateError(f"state database {self.name}: {_first_line(exc)}") from exc
            finally:
                if not self._db.closed and not self._db.broken:
                    self._db.execute("SELECT set_config('lock_timeout', '0', false)")

    def _unlock(self, keys: list[int]) -> None:
        self.execute("SELECT pg_advisory_unlock(k) FROM unnest(?::bigint[]) AS k", (keys,))

    def close(self) -> None:
        self._db.close()  # ends the session: PostgreSQL drops its advisory locks with it


def open_database(location: str | Path, connect_timeout: float = 10.0) -> Database:
    """A PostgreSQL URL, or a SQLite file path (read by :func:`parse_location`).

    Raises:
        ConfigError: the location is neither (see :func:`parse_location`).
        StateError: the database cannot be opened.
    """
    parsed = parse_location(location)
    if isinstance(parsed, str):
        return PostgresDatabase(parsed, connect_timeout)
    return SqliteDatabase(parsed)


_QMARK = re.compile(r"%|\?")


def _placeholders(sql: str) -> str:
    """``?`` to psycopg's ``%s`` (and a literal ``%`` doubled)."""
    return _QMARK.sub(lambda m: "%s" if m.group() == "?" else "%%", sql)


@contextmanager
def _errors(name: str, kind: type[Exception]) -> Iterator[None]:
    try:
        yield
    except kind as exc:
        raise StateError(f"state database {name}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _create_private(path: Path) -> None:
    """Create a new database file (and its folder) readable by its owner only: it holds response ids
    and failure reasons. SQLite gives its -wal and -shm files the same mode. An existing file is
    left as it is."""
    if str(path) == ":memory:" or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class FeatureStore:
    """The state of one feature (the ledger, serve's inbox, ...): its own methods over the one
    connection every feature shares (:class:`~alliance_fhir.server.state.StateStore` opens it)."""

    def __init__(self, db: Database) -> None:
        self.db = db
