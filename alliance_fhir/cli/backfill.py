"""``alliance-fhir backfill``: score a server's history through Bulk Data ``$export``.

Thin like every command: options, one library call (:func:`~alliance_fhir.server.backfill.run_backfill`
or :func:`~alliance_fhir.server.backfill.cancel_backfill`), the rendering. Exit codes as everywhere
(:mod:`._common`): 0 all landed; 1 some file, line or response failed (or failures are outstanding);
2 configuration, connection or server errors (a failed, endless or stalled export, a manifest over
``--max-files``, a download cut short, the download deadline passed).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, TextColumn

from ..server.backfill import VIA, BackfillOptions, BackfillReport, cancel_backfill, run_backfill
from ..server.since import since_value
from ..server.state import StateStore
from ._common import (
    CommonOptions,
    ResultsServerOption,
    ServerOption,
    StateOption,
    common_options,
    emit_json,
    emit_table,
    err,
    follow_up,
    open_servers,
    out,
    say,
    say_run_lines,
    setup_logging,
)

__all__ = ["print_backfill", "register"]


def register(app: typer.Typer) -> None:
    """Add ``backfill`` to ``app``."""
    app.command("backfill")(backfill)


@common_options("config", "ca_bundle", "instruments", "verbose", "as_json")
def backfill(
    ctx: typer.Context,
    server: ServerOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Export only what changed since: ISO date/dateTime or a duration ago (7d); default: sync's checkpoint.",
        ),
    ] = None,
    instrument: Annotated[
        list[str] | None, typer.Option("--instrument", help="Only this instrument id; repeatable.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", metavar="ID", help="Group-level export (Group/ID).")] = None,
    patient: Annotated[
        str | None, typer.Option("--patient", metavar="REF", help="Patient-level export of one patient (Patient/ID).")
    ] = None,
    via: Annotated[
        str,
        typer.Option(
            "--via",
            metavar="|".join(VIA),
            help="Write Observations with sync's verified transactions (default), or serve them as NDJSON and $import.",
        ),
    ] = "transactions",
    cancel: Annotated[
        bool, typer.Option("--cancel", help="DELETE the export job in progress and forget it, then exit.")
    ] = False,
    max_wait: Annotated[
        float, typer.Option("--max-wait", min=1, help="Seconds to wait for the export before giving up (kept).")
    ] = 3600.0,
    poll_interval: Annotated[
        float,
        typer.Option(
            "--poll-interval",
            min=1,
            help="Longest wait between status polls; Retry-After is honoured up to it (HAPI always asks 120 s).",
        ),
    ] = 120.0,
    import_listen: Annotated[
        str,
        typer.Option(
            "--import-listen",
            metavar="HOST:PORT",
            help="--via import: where the Observations NDJSON is served for the server to pull (default loopback).",
        ),
    ] = "127.0.0.1:0",
    max_files: Annotated[
        int,
        typer.Option(
            "--max-files", min=1, help="Refuse an export manifest listing more files (exit 2; the job is kept)."
        ),
    ] = 10_000,
    max_bad_lines: Annotated[
        int,
        typer.Option(
            "--max-bad-lines",
            min=1,
            help="Stop a file after this many unreadable lines (it stays not done; each line is an outstanding failure).",
        ),
    ] = 1000,
    download_deadline: Annotated[
        float,
        typer.Option(
            "--download-deadline",
            min=1,
            help="Seconds for the whole download phase; past it the files not done stay not done (exit 2, resumable).",
        ),
    ] = 12 * 3600.0,
    stalled_polls: Annotated[
        int,
        typer.Option(
            "--stalled-polls",
            min=0,
            help="Give up on a job whose X-Progress has not changed for this many polls, and as many minutes "
            "(exit 2, the job is kept); 0: wait until --max-wait.",
        ),
    ] = 15,
    state: StateOption = None,
    results_server: ResultsServerOption = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Requests in flight.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Observations per transaction Bundle.")] = None,
    *,
    common: CommonOptions,
) -> None:
    """Back-fill score Observations from a Bulk Data $export of QuestionnaireResponses (resumable, idempotent)."""
    setup_logging(common.verbose)
    since = since_value(since) if since is not None else None
    cfg = common.server_config(
        server, concurrency=concurrency, batch_size=batch_size, state=state, results_server=results_server
    )
    with StateStore(cfg.state_location()) as store, open_servers(cfg) as servers:
        client = servers.source  # exported from the source; the Observations go to servers.results
        if cancel:
            cancelled = cancel_backfill(client, store, cfg.results_url)
            if common.as_json:
                emit_json({"server": cfg.base_url, "cancelled": cancelled})
            else:
                say(
                    f"cancelled the export job {cancelled} and forgot it"
                    if cancelled
                    else f"no back-fill in progress on {cfg.base_url}: nothing to cancel"
                )
            raise typer.Exit(0)
        catalog = common.catalog(ctx)
        options = BackfillOptions(
            since=since,
            instruments=tuple(instrument or ()),
            group=group,
            patient=patient,
            via=via,
            max_wait=max_wait,
            poll_interval=poll_interval,
            import_listen=import_listen,
            max_files=max_files,
            max_bad_lines=max_bad_lines,
            download_seconds=download_deadline,
            stalled_polls=stalled_polls,
        )
        with Progress(
            TextColumn("{task.description}"),
            TextColumn(
                "files {task.fields[files]}  lines {task.fields[lines]}  scored {task.fields[scored]}  "
                "written {task.fields[written]}  unchanged {task.fields[unchanged]}  failed {task.fields[failed]}"
            ),
            console=err,
            disable=not err.is_terminal,
            transient=True,
        ) as progress:
            task = progress.add_task("backfill", files="0/0", lines=0, scored=0, written=0, unchanged=0, failed=0)

            def update(what: str, report: BackfillReport) -> None:
                progress.update(
                    task,
                    description=what[:60],
                    files=f"{report.files_done + report.files_done_before}/{report.files}",
                    lines=report.lines,
                    scored=report.sync.scored,
                    written=report.sync.written,
                    unchanged=report.sync.unchanged,
                    failed=report.sync.failed + len(report.failures),
                )

            report = run_backfill(client, catalog, store, options, update, results=servers.results)
    listing = follow_up(
        "failures", report.server, state=state, config=common.config, results=report.sync.results_server
    )
    print_backfill(report, common.as_json, listing)
    if report.stopped is not None:
        raise report.stopped  # one error line and exit 2, from the one place (_common.AllianceGroup)
    raise typer.Exit(0 if report.ok else 1)


def print_backfill(report: BackfillReport, as_json: bool, failures_command: str) -> None:
    """The run's lines and table (``backfill``, and ``sync --via-export``, which runs one)."""
    say_run_lines(report.failures + report.sync.failures, report.sync.warnings, report.sync.unattributed)
    if report.ignored:
        say(f"{report.ignored} exported responses were outside what was asked (the server ignored a filter)", "note")
    say(report.checkpoint_note, "checkpoint")
    if report.sync.outstanding:
        say(f"outstanding failures: {len(report.sync.outstanding)} ({failures_command} lists them)")
    if as_json:
        emit_json(report.as_dict())
        return
    columns = ("files", "lines", "scored", "written", "unchanged", "retracted", "failed", "export s", "seconds")
    row = (
        f"{report.files_done + report.files_done_before}/{report.files}",
        report.lines,
        report.sync.scored,
        report.sync.written,
        report.sync.unchanged,
        report.sync.retracted,
        report.sync.failed + len(report.failures),
        report.export_seconds,
        report.seconds,
    )
    where = report.server + (f" -> results store {report.sync.results_server}" if report.sync.results_server else "")
    title = f"Back-fill {where} via {report.via}" + (" (resumed)" if report.resumed else "")
    emit_table(title, columns, [row], console=out)
