"""Sync by Group ``$export`` with ``_since``: backfill's path as the incremental read mode.

Where the only population read a server offers is Bulk Data (Epic, Oracle: Group export), ``sync
--via-export Group/ID`` runs on a schedule: each run is a back-fill of that Group (:mod:`.backfill`:
the same kick-off, polling, resumable job, file checks and sync pipeline) with ``_since`` = the
transactionTime of the Group's last complete export, minus sync's overlap window. Only when that
export fully landed (every file done, no export error, no unreadable line outstanding) does its
transactionTime become the Group's new mark (:mod:`.state.read_checkpoints`, forward only, not
ahead of our clock); then the next run exports only what changed since. A run killed at any point
resumes the same export (the job and the ``_since`` it asked for are in the state). Responses the
overlap window exports again are ``unchanged`` in the ledger: a re-run with nothing new writes nothing.

The Group's mark is not sync's server-wide checkpoint: a Group is part of the server, so the
server-wide search mode keeps its own.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from .._refs import valid_id
from .._time import parse_instant
from ..errors import ConfigError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from .backfill import BackfillOptions, BackfillReport, ProgressHook, run_backfill
from .state import ServerPair, StateStore

__all__ = ["export_group", "export_reader", "run_export_sync"]


def export_group(text: str) -> str:
    """The Group id of ``--via-export Group/ID``.

    Raises:
        ConfigError: anything but ``Group/`` and a FHIR id.
    """
    kind, slash, gid = text.strip().partition("/")
    if kind != "Group" or not slash or not valid_id(gid):
        raise ConfigError(f"--via-export needs Group/ID (a FHIR id), not {text.strip()[:80]!r}")
    return gid


def export_reader(group: str) -> str:
    """The name the Group's export mark is kept under in the state."""
    return f"export Group/{group}"


def run_export_sync(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    group: str,
    options: BackfillOptions,
    on_progress: ProgressHook | None = None,
    *,
    results: FhirClient | None = None,
) -> BackfillReport:
    """One incremental run: export ``Group/group`` since its last complete export, score, write.

    ``options`` carries the waits and limits (as ``backfill``'s); its group and since are set here
    (an explicit ``options.since`` overrides the Group's mark, as ``sync --since`` does).

    Raises:
        ConfigError: another back-fill with other options is in progress on this state.
        FhirServerError, FhirTransportError: the kick-off or the polling failed (the job is kept
            unless the server no longer knows it).
    """
    key = ServerPair(client.base_url, (results or client).base_url)
    reader = export_reader(group)
    since = options.since
    mark = store.read_checkpoints.get(key, reader)
    if since is None and mark is not None:
        overlap = timedelta(seconds=client.config.overlap_seconds)
        since = (parse_instant(mark.last_updated) - overlap).isoformat().replace("+00:00", "Z")
    report = run_backfill(
        client, catalog, store, replace(options, group=group, patient=None, since=since), on_progress, results=results
    )
    if not report.complete or not report.transaction_time:
        return report  # backfill's note says why (the job is kept, or the export had errors)
    if options.instruments:
        report.checkpoint_note = f"not moved: a partial run (--instrument); Group/{group} keeps its mark"
    elif not _not_ahead(client, report.transaction_time):
        report.checkpoint_note = (
            f"not moved: the server's transactionTime {report.transaction_time} is ahead of our clock"
        )
    else:
        store.read_checkpoints.move(key, reader, report.transaction_time)
        report.checkpoint = report.transaction_time
        report.checkpoint_note = f"the next run exports Group/{group} since this export's transactionTime"
    return report


def _not_ahead(client: FhirClient, stamp: str) -> bool:
    """A transactionTime may be behind our clock, not far ahead of it (sync's clock rule)."""
    ahead = (parse_instant(stamp) - datetime.now(UTC)).total_seconds()
    return ahead <= client.config.clock_tolerance_seconds
