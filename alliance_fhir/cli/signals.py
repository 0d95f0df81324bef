"""CLI commands for alliance signals and reports: ``signals`` and ``report``.

Both work from a FHIR server (``--server``) or from local files of score Observations (and
Encounters); writing DetectedIssues needs a server. ``report`` writes HTML on the base install;
matplotlib (the ``report`` extra) is imported only for a PNG, SVG or PDF file.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from .._config_file import ConfigFile
from ..errors import InputError
from ..instruments.catalog import Catalog
from ..scoring.inputs import read_inputs
from ..server.people import fetch_names
from ..server.signal_sync import fetch_trajectories, run_signals
from ..signals import MISSING_MATPLOTLIB
from ..signals.names import Names
from ..signals.prompts import load_prompts
from ..signals.report import render_report
from ..signals.resources import signal_bundle
from ..signals.rules import detect_signals
from ..signals.situations import apply_levels, situation_history
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle
from ._common import (
    CommonOptions,
    ResultsServerOption,
    ServerOption,
    command_catalog,
    common_options,
    emit_json,
    open_servers,
    say,
    setup_logging,
    signal_listing,
    signals_summary,
    signals_table,
    withdrawn_listing,
)

__all__ = ["register"]

PathsArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Local score Observations (JSON, NDJSON, Bundle, folder); instead of --server."),
]
PatientOption = Annotated[str | None, typer.Option("--patient", help="Only this client, e.g. Patient/123.")]
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        metavar="FILE",
        help="Discussion prompts for the Tasks (a clinic's edited or translated file; default: the packaged English set).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``signals`` and ``report`` to ``app``."""
    app.command("signals")(signals)
    app.command("report")(report)


def _local_resources(paths: list[str]) -> list[object]:
    resources: list[object] = []
    for _label, doc in read_inputs(paths):
        if isinstance(doc, InputError):
            raise doc
        resources.append(doc)
    return resources


def _local_trajectories(paths: list[str], catalog: Catalog, patient: str | None) -> Trajectories:
    return _trajectories_of(_local_resources(paths), catalog, patient)


def _trajectories_of(resources: list[object], catalog: Catalog, patient: str | None) -> Trajectories:
    observations, encounters = unbundle(resources)
    if patient:
        observations = [o for o in observations if (o.get("subject") or {}).get("reference") == patient]
    return build_trajectories(observations, catalog, context_from_encounters(encounters))


def _local_names(resources: list[object]) -> Names:
    """People's names from the files: Patients and Practitioners, also inside Bundles (one level)."""
    people: list[object] = []
    for resource in resources:
        entries = resource.get("entry") if isinstance(resource, dict) else None
        if isinstance(entries, list):
            people += [e.get("resource") for e in entries if isinstance(e, dict)]
        else:
            people.append(resource)
    return Names.from_resources(people)


def _people_of_report(trajectories: Trajectories, patient: str | None, practitioner: str | None) -> list[str]:
    """Whom the page names: the client and their therapists, or the therapist and their clients.

    Never the other members of a joint session: a client's page shows the split without them.
    """
    if patient:
        return [patient, *sorted({s.focus for s in trajectories.for_subject(patient) if s.focus})]
    return [str(practitioner), *sorted({s.subject for s in trajectories.series if s.focus == practitioner})]


@common_options("config", "ca_bundle", "confidentiality", "sensitivity", "verbose", "as_json")
def signals(
    ctx: typer.Context,
    paths: PathsArgument = None,
    server: ServerOption = None,
    results_server: ResultsServerOption = None,
    patient: PatientOption = None,
    tasks: Annotated[
        bool, typer.Option("--tasks", help="Also create one follow-up Task per open situation (its signals together).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Detect and count; write nothing.")] = False,
    prompts: PromptsOption = None,
    *,
    common: CommonOptions,
) -> None:
    """Detect alliance signals (low alliance, rupture, repair, early warning, gap, split) and write them as DetectedIssues."""
    setup_logging(common.verbose)
    # Checked before any work: a bad prompt file is one `error:` line and exit 2, and nothing is written.
    prompt_set = load_prompts(prompts)  # checked before any work: a bad file is one line and exit 2
    catalog = command_catalog(ctx, None)
    file = ConfigFile.read(common.config)  # read once, for the labels and the server
    labels = common.labels(file)
    if paths:
        trajectories = _local_trajectories(paths, catalog, patient)
        for problem in trajectories.problems:
            say(problem, "note")
        history = situation_history(detect_signals(trajectories), trajectories)
        found = apply_levels(detect_signals(trajectories), history)
        if common.as_json:
            emit_json({"signals": [signal_listing(s) for s in found]})
        else:
            bundle = signal_bundle(
                found,
                situations=history,
                tasks=tasks,
                prompts=prompt_set,
                security=labels,
            )
            sys.stdout.write(json.dumps(bundle, indent=2) + "\n")
        raise typer.Exit(0)
    cfg = common.server_config(server, file, results_server=results_server)
    with open_servers(cfg) as servers:  # scores read from and issues written to the results store
        result, found, trajectories = run_signals(
            servers.results,
            catalog,
            patient=patient,
            tasks=tasks,
            dry_run=dry_run,
            security=labels,
            prompts=prompt_set,
            source=servers.source,
        )
    for problem in result.problems:
        say(problem, "note")
    if common.as_json:
        listing = [signal_listing(s, result.issue_ids.get(s.key)) for s in found]
        withdrawn = [withdrawn_listing(issue) for issue in result.withdrawn_issues]
        emit_json({**result.as_dict(), "signals": listing, "withdrawn_issues": withdrawn})
    else:
        signals_table(found)
        say(signals_summary(result))


@common_options("config", "ca_bundle", "verbose")
def report(
    ctx: typer.Context,
    paths: PathsArgument = None,
    server: ServerOption = None,
    results_server: ResultsServerOption = None,
    patient: PatientOption = None,
    practitioner: Annotated[
        str | None,
        typer.Option(
            "--practitioner", help="Caseload view for this practitioner (Practitioner/.. or PractitionerRole/..)."
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", help="The file to write; its suffix sets the format: .html (self-contained), .png, .svg or .pdf."
        ),
    ] = None,
    *,
    common: CommonOptions,
) -> None:
    """A client's alliance report (charts by session, signals, history), or a practitioner's caseload, as HTML, PNG, SVG or PDF."""
    setup_logging(common.verbose)
    if bool(patient) == bool(practitioner):
        say("give exactly one of --patient or --practitioner", "error")
        raise typer.Exit(2)
    target = out_file or Path("alliance-report.html")
    fmt = _REPORT_SUFFIXES.get(target.suffix.lower())
    if fmt is None:  # refused before any work: a file must be what its name says
        say(f"--out {target}: unknown report format '{target.suffix}'; use .html, .png, .svg or .pdf", "error")
        raise typer.Exit(2)
    catalog = command_catalog(ctx, None)
    names = Names()
    if paths:  # every member's scores: a joint session's split needs the others (the page names none of them)
        resources = _local_resources(paths)
        trajectories, names = _trajectories_of(resources, catalog, None), _local_names(resources)
    else:
        cfg = common.server_config(server, results_server=results_server)
        with open_servers(cfg) as servers:  # scores from the results store, people's names from the source (the EHR)
            trajectories = fetch_trajectories(servers.results, catalog, patient, source=servers.source)
            names = fetch_names(servers.source, _people_of_report(trajectories, patient, practitioner))
    for problem in trajectories.problems:
        say(problem, "note")
    found = detect_signals(trajectories)
    try:  # HTML needs nothing extra; PNG, SVG and PDF need matplotlib
        data = render_report(
            fmt,
            trajectories,
            found,
            subject=patient,
            practitioner=practitioner,
            names=names,
            as_of=datetime.now(UTC),
            prompts=load_prompts(),
        )
    except ModuleNotFoundError:
        say(MISSING_MATPLOTLIB, "error")
        raise typer.Exit(2) from None
    try:
        target.write_bytes(data)
    except OSError as exc:
        say(f"--out {target}: cannot write ({exc.strerror or exc})", "error")
        raise typer.Exit(2) from None
    say(f"wrote {target} ({fmt.upper()}, {len(data)} bytes)")


_REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".png": "png", ".svg": "svg", ".pdf": "pdf"}
