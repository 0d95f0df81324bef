"""``alliance-fhir score``: QuestionnaireResponses in, score Observations out, streamed.

Input is read lazily (:mod:`..scoring.inputs`), scored in chunks (:mod:`..scoring.batch`),
in this process or in ``--jobs`` worker processes, and each chunk's output is written as soon
as it is its turn, so memory stays flat however large the input and the output keeps the
input's order. Messages (one line per error or warning) go to stderr as plain lines; on a
terminal a progress bar shows for inputs that take more than a moment.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

from .._security import NO_LABELS, SecurityLabels
from .._text import safe_text
from ..errors import AllianceFhirError
from ..instruments.catalog import Catalog, load_catalog
from ..scoring.batch import (
    BUNDLE_CLOSE,
    BUNDLE_CLOSE_EMPTY,
    BUNDLE_OPEN,
    Chunk,
    Format,
    TableRow,
    bundle_separator,
    chunked,
    score_chunk,
)
from ..scoring.inputs import read_raw
from ._output import MAX_LINE, say

__all__ = ["jobs_for", "run_score"]

PROGRESS_AFTER_S = 1.0  # inputs scored faster than this never show a bar


def jobs_for(requested: int) -> int:
    """``--jobs``: 0 means every core this process may use."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_score(
    paths: list[str],
    catalog: Catalog,
    instrument_dirs: list[Path],
    fmt: Format,
    jobs: int,
    security: SecurityLabels = NO_LABELS,
) -> tuple[int, list[TableRow]]:
    """Score ``paths`` and write the output to stdout; returns (failed records, table rows for ``table``).

    ``security``: the meta.security labels every Observation carries (as sync writes them).
    """
    out = sys.stdout.buffer
    progress = _Progress(_known_size(paths)) if sys.stderr.isatty() else None
    say = progress.say if progress is not None else _say
    rows: list[TableRow] = []
    failed = 0
    first = True
    if fmt == "bundle":
        out.write(BUNDLE_OPEN)
    try:
        for chunk in _chunks(read_raw(paths), catalog, instrument_dirs, fmt, jobs, security):
            for message in chunk.messages:
                say(message)
            failed += chunk.failed
            if chunk.ndjson:
                out.write(chunk.ndjson)
            for entry in chunk.entries:
                out.write(bundle_separator(first))
                out.write(entry)
                first = False
            rows += chunk.rows
            if progress is not None:
                progress.advance(chunk)
        if fmt == "bundle":
            out.write(BUNDLE_CLOSE_EMPTY if first else BUNDLE_CLOSE)
        out.flush()
    finally:
        if progress is not None:
            progress.stop()
    return failed, rows


def _chunks(
    raws: Iterable[Any], catalog: Catalog, dirs: list[Path], fmt: Format, jobs: int, security: SecurityLabels
) -> Iterator[Chunk]:
    """Each chunk's result in input order: scored here (one job) or by a pool with a bounded window of chunks in flight."""
    if jobs <= 1:
        for chunk in chunked(raws):
            yield score_chunk(chunk, catalog, fmt, security)
        return
    global _worker_catalog
    _worker_catalog = catalog  # inherited by forked workers; others load it in _init_worker
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=([str(d) for d in dirs],)) as pool:
        window: deque[Future[Chunk]] = deque()
        for chunk in chunked(raws):
            window.append(pool.submit(_score_in_worker, chunk, fmt, security))
            if len(window) >= 2 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


_worker_catalog: Catalog | None = None


def _init_worker(dirs: list[str]) -> None:
    global _worker_catalog
    if _worker_catalog is None:
        _worker_catalog = load_catalog([Path(d) for d in dirs])


def _score_in_worker(raws: list[Any], fmt: Format, security: SecurityLabels) -> Chunk:
    if _worker_catalog is None:  # pragma: no cover - the initializer always runs first
        raise AllianceFhirError("worker started without a catalog")
    return score_chunk(raws, _worker_catalog, fmt, security)


def _say(line: str, stream: IO[str] | None = None) -> None:
    """One message line on stderr, plain (no markup, no wrapping), in the chosen ``--log-format``."""
    kind, _, text = line.partition(": ")
    if kind in ("error", "warning"):
        say(text, kind, stream=stream)
    else:
        say(line, stream=stream)


def _known_size(paths: list[str]) -> int | None:
    """Total bytes of the input when it is all plain files (for the progress bar); None for folders and stdin."""
    total = 0
    for raw in paths:
        try:
            info = Path(raw).stat() if raw != "-" else None
        except OSError:
            continue
        if info is None or not os.path.isfile(raw):
            return None
        total += info.st_size
    return total


class _Progress:
    """A Rich progress bar on stderr, shown only once scoring has run for :data:`PROGRESS_AFTER_S`."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._scored = 0
        self._bytes = 0
        self._say: Callable[[str], None] = _say

    def say(self, line: str) -> None:
        self._say(line)

    def advance(self, chunk: Chunk) -> None:
        self._scored += chunk.scored + chunk.failed
        self._bytes += chunk.bytes_read
        if self._bar is None:
            if time.monotonic() - self._started < PROGRESS_AFTER_S:
                return
            self._start()
        self._bar.update(self._task, completed=self._bytes, records=self._scored)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        columns: list[Any] = [
            TextColumn("scoring"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[records]:,} records"),
            TimeElapsedColumn(),
        ]
        if self._total:
            columns.append(TimeRemainingColumn())
        self._bar = Progress(*columns, console=console, transient=True)
        self._task = self._bar.add_task("score", total=self._total, records=0)
        self._bar.start()
        self._say = lambda line: console.print(safe_text(line, MAX_LINE), markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
