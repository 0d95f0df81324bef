"""CLI commands that talk to a FHIR server: ``check``, ``publish``, ``sync``, ``failures`` and ``demo``.

Registered on the main app by :mod:`.main` (loaded on first use, see ``SERVER_COMMANDS`` there).
Secrets never appear as options: they come from the environment or the config file (see
:mod:`alliance_fhir.server.settings`). Exit codes: 0 success; 1 some response or resource failed
(for sync: or failures are still outstanding; for check: a capability sync needs is missing); 2
configuration, connection, authentication or server errors (including a server that is not FHIR R4
or answers something we cannot trust).
"""

from __future__ import annotations

import getpass
import re
from collections import Counter
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.progress import Progress, TextColumn

from .._config_file import ConfigFile
from .._refs import parse_reference, valid_id
from ..content.questionnaires import content_resources
from ..errors import AuthError, ConfigError, FhirServerError
from ..fhirclient.client import FhirClient
from ..fhirclient.config import WRITE_MODES
from ..instruments.catalog import Catalog
from ..server.backfill import BackfillOptions, BackfillReport
from ..server.demo import DEMO_TAG, chart_note, cleanup_demo, demo_response_ids, post_demo_data
from ..server.patient_list import read_patients
from ..server.publish import publish_resources
from ..server.read_mode import ReadMode, chosen_read_mode, read_mode_finding
from ..server.results import roles
from ..server.settings import ServerConfig
from ..server.signal_sync import run_signals
from ..server.since import since_value
from ..server.state import ServerPair, StateStore, failure_reference
from ..server.sync import SyncOptions, SyncReport, run_sync
from ..server.sync_export import export_group, run_export_sync
from ..server.sync_patients import run_patient_sync
from ..server.writeback_plan import RoutePlan, ehr_capabilities, load_writeback, plan_routes
from ..server.writes import choose_write_mode
from ._common import (
    CaOption,
    CommonOptions,
    ConfigOption,
    InstrumentsOption,
    JsonOption,
    ResultsServerOption,
    ServerOption,
    StateOption,
    VerboseOption,
    command_catalog,
    common_options,
    emit_json,
    emit_table,
    err,
    follow_up,
    open_client,
    open_servers,
    out,
    say,
    say_run_lines,
    server_config,
    setup_logging,
    signals_summary,
    signals_table,
)
from .backfill import print_backfill

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the server commands to ``app``."""
    app.command("check")(check)
    app.command("publish")(publish)
    app.command("sync")(sync)
    app.command("failures")(failures)
    app.command("demo")(demo)


# ---------------------------------------------------------------- check


@common_options("config", "ca_bundle", "instruments", "verbose", "as_json")
def check(
    ctx: typer.Context,
    server: ServerOption = None,
    results_server: ResultsServerOption = None,
    *,
    common: CommonOptions,
) -> None:
    """Say whether the servers support what sync needs, which FHIR version they speak, whether the credentials
    work, which server does what (the source, the results store), and how each kind of result goes back into
    the EHR (the write-back routes, with the reason)."""
    setup_logging(common.verbose)
    file = ConfigFile.read(common.config)
    cfg = common.server_config(server, file, results_server=results_server)
    writeback = load_writeback(file)
    with open_servers(cfg) as servers:
        statement = servers.source.r4_capabilities()
        read_mode = read_mode_finding(servers.source, cfg, statement)
        routes = plan_routes(statement, writeback, one_server=not servers.split, catalog=common.catalog(ctx))
        if servers.split:
            findings = _source_findings(servers.source, statement) + _results_findings(servers.results, cfg)
        else:
            findings = _source_findings(servers.source, statement, cfg)
        findings.append(read_mode)
    findings += _route_findings(routes)
    plan = roles(cfg)
    if common.as_json:
        emit_json(
            {
                "server": cfg.base_url,
                "results_server": cfg.results_url,
                "roles": [{"role": r, "server": url, "does": why} for r, url, why in plan],
                "routes": [
                    {"kind": c.kind, "route": c.route, "reason": c.reason, "problem": c.problem} for c in routes.choices
                ],
                "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in findings],
            }
        )
    else:
        emit_table("Servers", ("role", "server", "what it is used for"), plan, console=out)
        rows = [
            (name, "ok" if ok else "no" if _is_write_capability(name) else "MISSING", detail)
            for name, ok, detail in findings
        ]
        title = f"FHIR server {cfg.base_url}" if not cfg.two_servers else "FHIR servers (source, results store)"
        emit_table(title, ("check", "result", "detail"), rows, console=out)
        emit_table(
            "Write-back into the EHR",
            ("kind", "route", "why"),
            [(c.kind, c.route, c.reason + (f"; PROBLEM: {c.problem}" if c.problem else "")) for c in routes.choices],
            console=out,
        )
    raise typer.Exit(0 if all(ok or _is_write_capability(name) for name, ok, _ in findings) else 1)


def _route_findings(routes: RoutePlan) -> list[tuple[str, bool, str]]:
    """One line per kind of result: its route and why; a route the EHR does not offer fails (exit 1)."""
    return [
        (f"write-back {c.kind}", c.problem is None, c.reason if c.problem is None else f"{c.route}: {c.problem}")
        for c in routes.choices
    ]


def _source_findings(
    client: FhirClient, statement: dict[str, Any], writes: ServerConfig | None = None
) -> list[tuple[str, bool, str]]:
    """The source's checks; with ``writes`` (one server) its write checks and write mode too."""
    findings = _capability_findings(statement)
    if writes is None:  # two servers: only what reading needs, each line named for the source
        keep = ("FHIR version", "search responses")
        return [(f"source: {n}", ok, d) for n, ok, d in findings if n in keep] + [
            _named("source", _credentials_finding(client, statement))
        ]
    plan = choose_write_mode(statement, writes.write_mode)
    return [
        *findings,
        _observation_create(statement),
        ("write mode", True, f"{plan.mode}: {plan.reason}"),
        _credentials_finding(client, statement),
    ]


def _results_findings(client: FhirClient, cfg: ServerConfig) -> list[tuple[str, bool, str]]:
    """The results store's checks: R4, how it takes writes (the write mode is chosen here), its credentials."""
    statement = client.r4_capabilities()
    skip = ("search responses",)
    findings = [(f"results store: {n}", ok, d) for n, ok, d in _capability_findings(statement) if n not in skip]
    findings.append(_named("results store", _observation_create(statement)))
    plan = choose_write_mode(statement, cfg.results_settings().write_mode)
    findings.append(("results store: write mode", True, f"{plan.mode}: {plan.reason}"))
    findings.append(_named("results store", _results_credentials(client)))
    return findings


def _observation_create(statement: dict[str, Any]) -> tuple[str, bool, str]:
    """Where results are written, Observation create (or update) must be offered: a server that lists
    neither refuses every score (the fault today's check missed: it read only conditional writes)."""
    caps = ehr_capabilities(statement)
    offered = (
        caps.can("Observation", "create")
        or caps.can("Observation", "update")
        or caps.conditional_update.get("Observation", False)
    )
    detail = "Observation create or update offered (interaction 'create'/'update', or conditional update)"
    if not offered:
        detail = "Observation create and update NOT offered: every score would be refused here (use --results-server)"
    return ("write Observations", offered, detail)


def _named(role: str, finding: tuple[str, bool, str]) -> tuple[str, bool, str]:
    return (f"{role}: {finding[0]}", finding[1], finding[2])


def _is_write_capability(name: str) -> bool:
    return name.rpartition(": ")[2] in _WRITE_CAPABILITIES


def _results_credentials(client: FhirClient) -> tuple[str, bool, str]:
    """Raises AuthError (exit 2) when the results store refuses our credentials (401), like every other command."""
    return _probe(client, "Observation", {"_count": "1", "_summary": "count"}, "an Observation search")


# Missing, these only change the write mode (the "write mode" line says which and why).
_WRITE_CAPABILITIES = frozenset({"transactions", "conditional update", "conditional create"})


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
        (
            "FHIR version",
            version.startswith("4.0"),
            f"{version} ({software.get('name', '?')} {software.get('version', '')})".strip(),
        ),
        ("transactions", "transaction" in interactions, "system interaction 'transaction'"),
        (
            "search responses",
            "questionnaire" in qr_params,
            "QuestionnaireResponse?questionnaire=&_lastUpdated= (statuses are filtered here)",
        ),
        (
            "conditional update",
            bool(obs.get("conditionalUpdate")),
            "Observation conditional update (idempotent writes)",
        ),
        ("conditional create", bool(obs.get("conditionalCreate")), "Observation conditional create"),
    ]
    return findings


def _credentials_finding(client: FhirClient, statement: dict[str, Any]) -> tuple[str, bool, str]:
    """Probe the credentials with a request the server's read mode allows (not one it refuses by design).

    A server that searches QuestionnaireResponses server-wide is probed with that search; one that
    scopes it per patient (Epic) with a count-only Patient search, else /metadata stands alone.
    Raises AuthError (exit 2) on 401, like every other command; a 403 is reported, not a stop.
    """
    caps = ehr_capabilities(statement)
    if caps.searches_by("QuestionnaireResponse", "questionnaire"):
        return _probe(
            client, "QuestionnaireResponse", {"_count": "1", "_summary": "count"}, "a QuestionnaireResponse search"
        )
    if caps.can("Patient", "search-type"):
        return _probe(
            client, "Patient", {"_count": "1", "_summary": "count"}, "a Patient search (responses are read per patient)"
        )
    return ("credentials", True, f"auth '{client.config.auth.kind}': /metadata only (no search offered to probe with)")


def _probe(client: FhirClient, resource_type: str, params: dict[str, str], what: str) -> tuple[str, bool, str]:
    try:
        client.request("GET", resource_type, params=params)
    except AuthError as exc:
        if exc.status == 401 or exc.status is None:
            raise
        return ("credentials", False, f"{what} refused: HTTP {exc.status} (a scope or a rule of the server)")
    except FhirServerError as exc:
        return ("credentials", False, f"{what} refused: HTTP {exc.status}")
    return ("credentials", True, f"auth '{client.config.auth.kind}' accepted for {what}")


# ---------------------------------------------------------------- publish


def publish(
    ctx: typer.Context,
    server: ServerOption = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    for_client: Annotated[
        bool,
        typer.Option(
            "--for-client",
            help="Also publish the client-facing forms (questionnaires export --for-client) for a client portal.",
        ),
    ] = False,
    instruments: InstrumentsOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create or update every Questionnaire and the CodeSystem on the server (by url + version)."""
    setup_logging(verbose)
    cfg = server_config(server, config, ca_bundle=ca_bundle)
    catalog = command_catalog(ctx, instruments)
    resources = content_resources(catalog)
    if for_client:
        resources += [r for r in content_resources(catalog, for_client=True) if r["resourceType"] == "Questionnaire"]
    with open_client(cfg) as client:
        results = publish_resources(client, resources, dry_run=dry_run)
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        columns = ("resource", "canonical", "would" if dry_run else "action", "detail")
        emit_table(
            "Publish" + (" (dry run)" if dry_run else ""),
            columns,
            [(r.resource_type, r.canonical, r.action, r.detail) for r in results],
            console=out,
        )
    raise typer.Exit(1 if any(r.action == "failed" for r in results) else 0)


# ---------------------------------------------------------------- sync


@common_options("config", "ca_bundle", "instruments", "confidentiality", "sensitivity", "verbose", "as_json")
def sync(
    ctx: typer.Context,
    server: ServerOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Updated since: ISO date/dateTime, or a duration ago (7d, 12h); overrides the checkpoint."
        ),
    ] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Only this subject, e.g. Patient/123.")] = None,
    patients: Annotated[
        str | None,
        typer.Option(
            "--patients",
            metavar="SOURCE",
            help="Read per patient (servers that scope QuestionnaireResponse search to a patient): Group/ID, "
            "List/ID or a file of patient references; a checkpoint per patient.",
        ),
    ] = None,
    via_export: Annotated[
        str | None,
        typer.Option(
            "--via-export",
            metavar="Group/ID",
            help="Read by a Group $export with _since = the Group's last complete export (Bulk Data servers).",
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=1, help="--via-export: longest wait between status polls.")
    ] = 120.0,
    max_wait: Annotated[
        float, typer.Option("--max-wait", min=1, help="--via-export: seconds to wait for the export (the job is kept).")
    ] = 3600.0,
    instrument: Annotated[
        list[str] | None, typer.Option("--instrument", help="Only this instrument id; repeatable.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Score and count; write nothing, keep the checkpoint.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget this server's checkpoint and ledger, then exit.")
    ] = False,
    with_signals: Annotated[
        bool, typer.Option("--signals", help="Then detect alliance signals and write them as DetectedIssues.")
    ] = False,
    tasks: Annotated[bool, typer.Option("--tasks", help="With --signals: a follow-up Task per active signal.")] = False,
    state: StateOption = None,
    results_server: ResultsServerOption = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Requests in flight.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Observations per transaction Bundle.")] = None,
    page_size: Annotated[int | None, typer.Option("--page-size", help="Responses per search page.")] = None,
    write_mode: Annotated[
        str | None,
        typer.Option(
            "--write-mode",
            metavar="|".join(WRITE_MODES[:4]),
            help="How Observations are written: auto (from the CapabilityStatement), transaction, batch or single "
            "(search: search by identifier, then create or update by id).",
        ),
    ] = None,
    *,
    common: CommonOptions,
) -> None:
    """Score completed/amended responses on the server and write their Observations (incremental, idempotent)."""
    setup_logging(common.verbose)
    since = since_value(since) if since is not None else None  # checked before anything is sent
    file = ConfigFile.read(common.config)  # read once, for the labels and the server
    labels = common.labels(file)
    cfg = common.server_config(
        server,
        file,
        concurrency=concurrency,
        batch_size=batch_size,
        page_size=page_size,
        state=state,
        write_mode=write_mode,
        results_server=results_server,
    )
    with StateStore(cfg.state_location()) as store:
        if reset:
            store.reset(ledger_key(cfg))
            say(f"forgot the checkpoint and ledger of {ledger_key(cfg)} in {store.location}", "reset")
            raise typer.Exit(0)
        mode = chosen_read_mode(cfg, patients, via_export)
        _check_read_options(mode, patient, dry_run)
        catalog = common.catalog(ctx)
        if mode.kind == "export":
            exported = _export_with_progress(
                cfg,
                catalog,
                store,
                mode,
                BackfillOptions(
                    since=since, instruments=tuple(instrument or ()), max_wait=max_wait, poll_interval=poll_interval
                ),
            )
            _finish_export(exported, common.as_json, state, common.config)
        options = SyncOptions(
            since=since,
            patient=patient,
            instruments=tuple(instrument or ()),
            dry_run=dry_run,
            security=labels,
            writeback=load_writeback(file),
        )
        report = _run_with_progress(cfg, catalog, store, options, mode)
    listing = follow_up("failures", report.server, state=state, config=common.config, results=report.results_server)
    _print_report(report, common.as_json, listing)
    if with_signals and not dry_run:
        with open_servers(cfg) as servers:
            result = run_signals(
                servers.results, catalog, patient=patient, tasks=tasks, security=labels, source=servers.source
            )[0]
        say(signals_summary(result))
    raise typer.Exit(0 if report.ok else 1)


def _check_read_options(mode: ReadMode, patient: str | None, dry_run: bool) -> None:
    """Options that do not go with the read mode: one line, exit 2."""
    if mode.kind != "search" and patient is not None:
        raise ConfigError(f"--patient reads one patient; it does not go with the {mode.kind} read mode")
    if mode.kind == "export" and dry_run:
        raise ConfigError("--dry-run does not go with --via-export (an export cannot be undone: run it for real)")
    if mode.kind == "export" and mode.target is not None:
        export_group(mode.target)  # Group/ID, checked before anything is sent


def _export_with_progress(
    cfg: ServerConfig, catalog: Catalog, store: StateStore, mode: ReadMode, options: BackfillOptions
) -> BackfillReport:
    """``sync --via-export``: one incremental Group export (:func:`~alliance_fhir.server.sync_export.run_export_sync`)."""
    group = export_group(mode.target or "")
    with (
        open_servers(cfg) as servers,
        Progress(
            TextColumn("{task.description}"), console=err, disable=not err.is_terminal, transient=True
        ) as progress,
    ):
        task = progress.add_task("export")

        def update(what: str, _report: BackfillReport) -> None:
            progress.update(task, description=what[:60])

        return run_export_sync(servers.source, catalog, store, group, options, update, results=servers.results)


def _finish_export(report: BackfillReport, as_json: bool, state: str | None, config: Any) -> None:
    """Print the export run as ``backfill`` does and exit with its code (2 when the download stopped)."""
    listing = follow_up("failures", report.server, state=state, config=config, results=report.sync.results_server)
    print_backfill(report, as_json, listing)
    if report.stopped is not None:
        raise report.stopped
    raise typer.Exit(0 if report.ok else 1)


def _run_with_progress(
    cfg: ServerConfig, catalog: Catalog, store: StateStore, options: SyncOptions, mode: ReadMode | None = None
) -> SyncReport:
    written = "would write" if options.dry_run else "written"
    columns = [
        TextColumn("{task.description}"),
        TextColumn(
            "found {task.fields[found]}  scored {task.fields[scored]}  "
            f"{written} {{task.fields[written]}}  unchanged {{task.fields[unchanged]}}  failed {{task.fields[failed]}}"
        ),
    ]
    with (
        open_servers(cfg) as servers,
        Progress(*columns, console=err, disable=not err.is_terminal, transient=True) as progress,
    ):
        task = progress.add_task("sync", found=0, scored=0, written=0, unchanged=0, failed=0)

        def update(report: SyncReport) -> None:
            progress.update(
                task,
                found=report.found,
                scored=report.scored,
                written=report.written,
                unchanged=report.unchanged,
                failed=report.failed,
            )

        if mode is not None and mode.kind == "patients":
            listed = read_patients(servers.source, mode.target or "")
            return run_patient_sync(servers.source, catalog, store, listed, options, update, results=servers.results)
        return run_sync(servers.source, catalog, store, options, update, results=servers.results)


def _print_report(report: SyncReport, as_json: bool, failures_command: str) -> None:
    """The run's lines and table; ``failures_command`` is the hint that lists the outstanding failures."""
    say_run_lines(report.failures, report.warnings, report.unattributed)
    if report.write_mode:
        say(f"{report.write_mode} ({report.write_mode_reason})", "write mode")
    if report.patients is not None:
        say(f"per patient: {report.patients_read} of {report.patients} patients read", "read mode")
    for line in report.writeback:
        say(line, "write-back")
    if report.ehr_written:
        say(f"{report.ehr_written} resource(s) created or replaced in the EHR", "write-back")
    if report.outstanding:
        say(f"outstanding failures: {len(report.outstanding)} ({failures_command} lists them)")
    if as_json:
        emit_json(report.as_dict())
        return
    # a dry run writes nothing: its counts are what a real run would write and retract
    columns = (
        "found",
        "scored",
        "would write" if report.dry_run else "written",
        "unchanged",
        "would retract" if report.dry_run else "retracted",
        "failed",
        "outstanding",
        "requests",
        "seconds",
    )
    row = (
        report.found,
        report.scored,
        report.written,
        report.unchanged,
        report.retracted,
        report.failed,
        len(report.outstanding),
        report.requests,
        report.seconds,
    )
    where = (
        f"source {report.server} -> results store {report.results_server}" if report.results_server else report.server
    )
    emit_table(f"Sync {where}" + (" (dry run: nothing written)" if report.dry_run else ""), columns, [row], console=out)


# ---------------------------------------------------------------- failures


def failures(
    server: ServerOption = None,
    results_server: ResultsServerOption = None,
    dismiss: Annotated[
        str | None,
        typer.Option(
            "--dismiss",
            metavar="REF",
            help="Dismiss one outstanding failure (QuestionnaireResponse/ID or ID, or an export line as listed).",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="With --dismiss: why (kept in the ledger).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="With --dismiss: who (default: the login name).")] = None,
    state: StateOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the responses whose last sync failed, and exported lines a back-fill could not read (outstanding until
    fixed, changed, read again or dismissed); exit 1 while any remain."""
    cfg = server_config(server, config, state=state, results_server=results_server)
    key = ledger_key(cfg)
    with StateStore(cfg.state_location()) as store:
        if dismiss is not None:
            _dismiss(store, key, dismiss, reason, by)
        outstanding = store.outstanding(key)
    if as_json:
        rows = [f.as_dict() for f in outstanding]
        extra = {"results_server": key.results} if key.split else {}
        emit_json({"server": cfg.base_url, **extra, "outstanding_count": len(outstanding), "outstanding": rows})
    else:
        emit_table(
            f"Outstanding failures on {key}: {len(outstanding)}",
            ("response", "since", "reason"),
            [(f.resource, f.since, f.reason) for f in outstanding],
            console=out,
        )
    raise typer.Exit(1 if outstanding else 0)


# an exported file as the ledger names it (its path), alone (a file stopped at --max-bad-lines) or with a line
_UNREADABLE_LINE = re.compile(r"/\S{0,4095}(?: line [0-9]{1,12})?")


def _dismiss(store: StateStore, server: ServerPair, ref: str, reason: str | None, by: str | None) -> None:
    if not reason or not reason.strip():
        raise ConfigError("--dismiss needs --reason (why the failure is accepted; it is kept in the ledger)")
    parsed = parse_reference(ref)
    # a response (QuestionnaireResponse/ID or ID), or an unreadable export line as `failures` lists it
    response_id = parsed.id if parsed is not None and parsed.type == "QuestionnaireResponse" else ref.strip()
    if not valid_id(response_id) and not _UNREADABLE_LINE.fullmatch(response_id):
        raise ConfigError(
            "--dismiss takes a QuestionnaireResponse id, QuestionnaireResponse/{id},"
            " or an unreadable export file or line as `failures` lists it (/PATH line N)"
        )
    who = by or _login_name()
    dismissed = store.dismiss(server, response_id, who, reason.strip())
    if dismissed is None:
        raise ConfigError(f"{failure_reference(response_id)} has no outstanding failure on {server}")
    say(f"{dismissed.resource} by {who}: {reason.strip()} (was: {dismissed.reason})", "dismissed")


def ledger_key(cfg: ServerConfig) -> ServerPair:
    """What the state is keyed by for these settings: the source and the results store."""
    return ServerPair(cfg.base_url, cfg.results_url)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# ---------------------------------------------------------------- demo


@common_options("config", "ca_bundle", "verbose", "as_json")
def demo(
    ctx: typer.Context,
    server: ServerOption = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup", help="Delete everything the demo created (it is tagged), on both servers, then exit."
        ),
    ] = False,
    state: StateOption = None,
    results_server: ResultsServerOption = None,
    *,
    common: CommonOptions,
) -> None:
    """The round trip: publish the instruments, post a synthetic caseload, sync, sync again, summarise.

    With --results-server, two servers: --server plays the EHR (people, sessions, responses; it
    receives a note per session), the results store keeps the scores and signals."""
    setup_logging(common.verbose)
    file = ConfigFile.read(common.config)
    cfg = common.server_config(server, file, state=state, results_server=results_server)
    catalog = command_catalog(ctx, None)
    if cleanup:
        _demo_cleanup(cfg, catalog)
        raise typer.Exit(0)
    if cfg.two_servers:
        say(
            f"two servers: {cfg.base_url} plays the EHR (a stand-in: plain FHIR, not a vendor's EHR), "
            f"{cfg.results_url} is the results store"
        )
    with open_servers(cfg) as servers:
        published = publish_resources(servers.source, content_resources(catalog))
        say(
            f"published {len(published)} resources: "
            + ", ".join(f"{n} {a}" for a, n in Counter(r.action for r in published).items())
        )
        posted = post_demo_data(servers.source, catalog)
        say(f"posted {posted} demo resources (patients, practitioners, sessions, responses)")
    # the demo syncs only its own (tagged) data: on a shared server it never touches anyone else's;
    # with two servers, write-back takes the route check plans from the EHR's CapabilityStatement
    options = SyncOptions(tag=DEMO_TAG, writeback=load_writeback(file) if cfg.two_servers else None)
    with StateStore(cfg.state_location()) as store:
        first = _run_with_progress(cfg, catalog, store, options)
        second = _run_with_progress(cfg, catalog, store, options)
    with open_servers(cfg) as servers:
        signal_report, found, _ = run_signals(servers.results, catalog, tag=DEMO_TAG, source=servers.source)
        note = chart_note(servers.source, "afdemo-couple-b") if cfg.two_servers else None
    if common.as_json:
        emit_json({"first": first.as_dict(), "second": second.as_dict(), "signals": signal_report.as_dict()})
    else:
        _demo_summary(cfg, first, second, note, state, common.config)
        signals_table(found)
        say(f"signals written as DetectedIssues: {signal_report.written} (unchanged {signal_report.unchanged})")
        _demo_next_steps(cfg)
    raise typer.Exit(0 if first.ok and second.ok else 1)


def _demo_cleanup(cfg: ServerConfig, catalog: Catalog) -> None:
    """``demo --cleanup``: the demo's resources on both servers, and the record of the notes it wrote back
    (so the next demo writes them again); nobody else's data or state."""
    with open_servers(cfg) as servers:
        deleted = cleanup_demo(servers.source, servers.results if servers.split else None)
    where = f"{cfg.base_url} and {cfg.results_url}" if cfg.two_servers else cfg.base_url
    say(f"deleted {deleted} demo resources from {where}")
    if cfg.two_servers:
        with StateStore(cfg.state_location()) as store:
            forgotten = store.ehr_writes.forget_responses(ledger_key(cfg), demo_response_ids(catalog))
        say(f"forgot {forgotten} write-back records of the demo's notes")


def _demo_summary(
    cfg: ServerConfig, first: SyncReport, second: SyncReport, note: str | None, state: str | None, config: Any
) -> None:
    """The two runs' reports; with two servers, what the EHR received and a note as the chart shows it."""
    listing = follow_up("failures", cfg.base_url, state=state, config=config, results=first.results_server)
    _print_report(first, False, listing)
    _print_report(second, False, listing)
    if second.written == 0 and second.retracted == 0 and second.ehr_written == 0:
        say("The second sync wrote nothing: everything was already in step.")
    if not cfg.two_servers:
        return
    say(
        f"the results store holds the scores; the EHR received {first.ehr_written} resource(s) by write-back "
        f"on the first run and {second.ehr_written} on the second"
    )
    if note is not None:
        say("What the chart receives: the latest note for Kim Couple, as the EHR holds it:")
        for line in note.splitlines():
            say(f"  {line}")


def _demo_next_steps(cfg: ServerConfig) -> None:
    from .serve import cds_demo_lines  # loads the service layer, which only the demo's last lines need here

    for line in cds_demo_lines(cfg.base_url, results_base=cfg.results_url if cfg.two_servers else None):
        say(line)
    if cfg.two_servers:
        say("Remove the demo's data from both servers:")
        say(f"  alliance-fhir demo --server {cfg.base_url} --results-server {cfg.results_url} --cleanup")
