"""CLI commands that talk to a FHIR server: ``check``, ``publish``, ``sync``.

Registered on the main app by :mod:`.cli`. Secrets never appear as options: they come from
the environment or the config file (see :mod:`.config`). Exit codes: 0 success; 1 some
response or resource failed; 2 configuration, connection or server errors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn
from rich.table import Table

from ..content.questionnaires import content_resources
from ..errors import AllianceFhirError, ConfigError, FhirServerError, FhirTransportError, StateError
from ..instruments.catalog import Catalog, load_catalog
from ..server.client import FhirClient
from ..server.config import ServerConfig, data_dir, load_config
from ..server.demo import DEMO_TAG, cleanup_demo, post_demo_data
from ..server.publish import publish_resources
from ..server.signal_sync import SignalReport, run_signals
from ..server.state import StateStore
from ..server.sync import SyncOptions, SyncReport, run_sync
from ..signals.rules import Signal

__all__ = ["register"]

# Into a pipe or a log file Rich would assume 80 columns and squeeze the tables (the signals
# table lost whole columns in `make demo > demo.log`); a terminal or $COLUMNS still decides.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

ServerOption = Annotated[str | None, typer.Option("--server", help="FHIR R4 base URL (or $ALLIANCE_FHIR_SERVER / config file).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file (default ./alliance-fhir.toml, then the user config dir).")]
CaOption = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle (PEM) to verify the server's TLS certificate.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log one line per HTTP exchange (method, path, status, time).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")]
InstrumentsOption = Annotated[list[Path] | None, typer.Option("--instruments", metavar="DIR", help="Extra instruments folder; repeatable.")]


def register(app: typer.Typer) -> None:
    """Add the server commands to ``app``."""
    app.command("check")(check)
    app.command("publish")(publish)
    app.command("sync")(sync)
    app.command("demo")(demo)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alliance_fhir").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per exchange replaces httpx's (it logs full URLs)


def _config(server: str | None, config: Path | None, **overrides: Any) -> ServerConfig:
    try:
        return load_config(server, file=config, **overrides)
    except ConfigError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


def client_factory(cfg: ServerConfig) -> FhirClient:
    """How commands get a client; tests replace it to plug in an ``httpx.MockTransport``."""
    return FhirClient(cfg)


def _client(cfg: ServerConfig) -> FhirClient:
    try:
        return client_factory(cfg)
    except AllianceFhirError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


def _fatal(exc: AllianceFhirError) -> typer.Exit:
    err.print(f"error: {exc}", markup=False)
    return typer.Exit(2)


def _catalog(ctx: typer.Context, extra: list[Path] | None) -> Catalog:
    catalog = load_catalog(list((ctx.obj or {}).get("instruments", [])) + list(extra or []))
    for problem in catalog.problems:
        err.print(f"warning: instrument not loaded: {problem}", markup=False)
    return catalog


# ---------------------------------------------------------------- check


def check(
    server: ServerOption = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Say whether a server supports what sync needs, which FHIR version it speaks, and whether the credentials work."""
    _setup_logging(verbose)
    cfg = _config(server, config, ca_bundle=ca_bundle)
    with _client(cfg) as client:
        try:
            statement = client.capabilities()
        except (FhirTransportError, FhirServerError) as exc:
            raise _fatal(exc) from None
        findings = _capability_findings(statement)
        findings.append(_credentials_finding(client))
    if as_json:
        out.print_json(json.dumps({"server": cfg.base_url, "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in findings]}))
    else:
        table = Table("check", "result", "detail", title=f"FHIR server {cfg.base_url}")
        for name, ok, detail in findings:
            table.add_row(name, "ok" if ok else "MISSING", detail)
        out.print(table)
    raise typer.Exit(0 if all(ok for _, ok, _ in findings) else 1)


def _capability_findings(statement: dict[str, Any]) -> list[tuple[str, bool, str]]:
    version = str(statement.get("fhirVersion", "?"))
    rest: dict[str, Any] = next((r for r in statement.get("rest", []) if r.get("mode") == "server"), {})
    resources = {r.get("type"): r for r in rest.get("resource", [])}
    interactions = {i.get("code") for i in rest.get("interaction", [])}
    qr = resources.get("QuestionnaireResponse", {})
    qr_params = {p.get("name") for p in qr.get("searchParam", [])}
    obs = resources.get("Observation", {})
    software = statement.get("software", {})
    findings = [
        ("FHIR version", version.startswith("4.0"), f"{version} ({software.get('name', '?')} {software.get('version', '')})".strip()),
        ("transactions", "transaction" in interactions, "system interaction 'transaction'"),
        ("search responses", {"questionnaire", "status"} <= qr_params, "QuestionnaireResponse?questionnaire=&status=&_lastUpdated="),
        ("conditional update", bool(obs.get("conditionalUpdate")), "Observation conditional update (idempotent writes)"),
        ("conditional create", bool(obs.get("conditionalCreate")), "Observation conditional create"),
    ]
    return findings


def _credentials_finding(client: FhirClient) -> tuple[str, bool, str]:
    try:
        client.request("GET", "QuestionnaireResponse", params={"_count": "1", "_summary": "count"})
    except FhirServerError as exc:
        return ("credentials", False, f"search refused: HTTP {exc.status}")
    except AllianceFhirError as exc:
        return ("credentials", False, str(exc))
    return ("credentials", True, f"auth '{client.config.auth.kind}' accepted for a QuestionnaireResponse search")


# ---------------------------------------------------------------- publish


def publish(
    ctx: typer.Context,
    server: ServerOption = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    instruments: InstrumentsOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create or update every Questionnaire and the CodeSystem on the server (by url + version)."""
    _setup_logging(verbose)
    cfg = _config(server, config, ca_bundle=ca_bundle)
    resources = content_resources(_catalog(ctx, instruments))
    with _client(cfg) as client:
        results = publish_resources(client, resources, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps([{s: getattr(r, s) for s in r.__slots__} for r in results]))
    else:
        table = Table("resource", "canonical", "would" if dry_run else "action", "detail", title="Publish" + (" (dry run)" if dry_run else ""))
        for r in results:
            table.add_row(r.resource_type, r.canonical, r.action, r.detail)
        out.print(table)
    raise typer.Exit(1 if any(r.action == "failed" for r in results) else 0)


# ---------------------------------------------------------------- sync


def sync(
    ctx: typer.Context,
    server: ServerOption = None,
    since: Annotated[str | None, typer.Option("--since", help="Only responses updated at or after this instant (overrides the checkpoint).")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Only this subject, e.g. Patient/123.")] = None,
    instrument: Annotated[list[str] | None, typer.Option("--instrument", help="Only this instrument id; repeatable.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Score and count; write nothing, keep the checkpoint.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Forget this server's checkpoint and ledger, then exit.")] = False,
    with_signals: Annotated[bool, typer.Option("--signals", help="Then detect alliance signals and write them as DetectedIssues.")] = False,
    tasks: Annotated[bool, typer.Option("--tasks", help="With --signals: a follow-up Task per active signal.")] = False,
    state: Annotated[Path | None, typer.Option("--state", help="SQLite state file (default: user data dir).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Requests in flight.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Observations per transaction Bundle.")] = None,
    page_size: Annotated[int | None, typer.Option("--page-size", help="Responses per search page.")] = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    instruments: InstrumentsOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score completed/amended responses on the server and write their Observations (incremental, idempotent)."""
    _setup_logging(verbose)
    cfg = _config(server, config, ca_bundle=ca_bundle, concurrency=concurrency, batch_size=batch_size, page_size=page_size,
                  state_db=state)
    state_path = cfg.state_db or data_dir() / "state.sqlite"
    try:
        store = StateStore(state_path)
    except StateError as exc:
        raise _fatal(exc) from None
    with store:
        if reset:
            store.reset(cfg.base_url)
            err.print(f"reset: forgot the checkpoint and ledger of {cfg.base_url} in {state_path}", markup=False)
            raise typer.Exit(0)
        catalog = _catalog(ctx, instruments)
        options = SyncOptions(since=since, patient=patient, instruments=tuple(instrument or ()), dry_run=dry_run)
        report = _run_with_progress(cfg, catalog, store, options)
    _print_report(report, as_json)
    if with_signals and not dry_run:
        with _client(cfg) as client:
            try:
                result = run_signals(client, catalog, patient=patient, tasks=tasks)[0]
            except AllianceFhirError as exc:
                raise _fatal(exc) from None
        err.print(signals_summary(result), markup=False)
    raise typer.Exit(0 if report.ok else 1)


def _run_with_progress(cfg: ServerConfig, catalog: Catalog, store: StateStore, options: SyncOptions) -> SyncReport:
    columns = [TextColumn("{task.description}"), TextColumn("found {task.fields[found]}  scored {task.fields[scored]}  "
               "written {task.fields[written]}  unchanged {task.fields[unchanged]}  failed {task.fields[failed]}")]
    with _client(cfg) as client, Progress(*columns, console=err, disable=not err.is_terminal, transient=True) as progress:
        task = progress.add_task("sync", found=0, scored=0, written=0, unchanged=0, failed=0)

        def update(report: SyncReport) -> None:
            progress.update(task, found=report.found, scored=report.scored, written=report.written,
                            unchanged=report.unchanged, failed=report.failed)

        try:
            return run_sync(client, catalog, store, options, update)
        except AllianceFhirError as exc:  # connection, server, state, or an unknown --instrument
            raise _fatal(exc) from None


def _print_report(report: SyncReport, as_json: bool) -> None:
    for failure in report.failures:
        err.print(f"failed: {failure.resource}: {failure.reason}", markup=False)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        return
    table = Table("found", "scored", "written", "unchanged", "retracted", "failed", "requests", "seconds",
                  title=f"Sync {report.server}" + (" (dry run: nothing written)" if report.dry_run else ""))
    table.add_row(*(str(v) for v in (report.found, report.scored, report.written, report.unchanged, report.retracted,
                                      report.failed, report.requests, report.seconds)))
    out.print(table)


# ---------------------------------------------------------------- demo


def demo(
    ctx: typer.Context,
    server: ServerOption = None,
    cleanup: Annotated[bool, typer.Option("--cleanup", help="Delete everything the demo created (it is tagged), then exit.")] = False,
    state: Annotated[Path | None, typer.Option("--state", help="SQLite state file (default: user data dir).")] = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """The round trip: publish the instruments, post a synthetic caseload, sync, sync again, summarise."""
    _setup_logging(verbose)
    cfg = _config(server, config, ca_bundle=ca_bundle, state_db=state)
    catalog = _catalog(ctx, None)
    with _client(cfg) as client:
        try:
            if cleanup:
                err.print(f"deleted {cleanup_demo(client)} demo resources from {cfg.base_url}", markup=False)
                raise typer.Exit(0)
            published = publish_resources(client, content_resources(catalog))
            err.print(f"published {len(published)} resources: " + ", ".join(
                f"{n} {a}" for a, n in Counter(r.action for r in published).items()), markup=False)
            err.print(f"posted {post_demo_data(client, catalog)} demo resources (patients, practitioners, sessions, responses)",
                      markup=False)
        except AllianceFhirError as exc:
            raise _fatal(exc) from None
    with StateStore(cfg.state_db or data_dir() / "state.sqlite") as store:
        # the demo syncs only its own (tagged) data: on a shared server it never touches anyone else's
        first = _run_with_progress(cfg, catalog, store, SyncOptions(tag=DEMO_TAG))
        second = _run_with_progress(cfg, catalog, store, SyncOptions(tag=DEMO_TAG))
    with _client(cfg) as client:
        try:
            signal_report, found, _ = run_signals(client, catalog, tag=DEMO_TAG)
        except AllianceFhirError as exc:
            raise _fatal(exc) from None
    if as_json:
        runs = {"first": first.as_dict(), "second": second.as_dict(), "signals": signal_report.as_dict()}
        sys.stdout.write(json.dumps(runs, indent=2) + "\n")
    else:
        _print_report(first, False)
        _print_report(second, False)
        if second.written == 0 and second.retracted == 0:
            err.print("The second sync wrote nothing: everything was already in step.", markup=False)
        out.print(signals_table(found))
        err.print(f"signals written as DetectedIssues: {signal_report.written} (unchanged {signal_report.unchanged})", markup=False)
    raise typer.Exit(0 if first.ok and second.ok else 1)


def signals_summary(result: SignalReport) -> str:
    """The one-line count of a signals run (on stderr, after the table)."""
    verb = "would write" if result.dry_run else "written"
    return (f"signals: {result.signals} ({result.active} active); {verb} {result.written}, unchanged {result.unchanged}, "
            f"withdrawn {result.withdrawn}, tasks created {result.tasks_created}" + (" (dry run)" if result.dry_run else ""))


def signals_table(found: list[Signal]) -> Table:
    """One row per signal: who, which instrument, what, how severe, open or resolved, since when."""
    table = Table(title="Alliance signals")
    for name, width in (("subject", 12), ("instrument", 6), ("signal", 12), ("severity", 8), ("status", 8), ("opened", 10)):
        table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=width)
    table.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=70)
    for s in found:
        table.add_row(s.subject, s.instrument, s.kind, s.severity, s.status, s.opened_at.date().isoformat(), s.detail.split(" Rule:")[0])
    return table

