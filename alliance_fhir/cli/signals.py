"""CLI commands for alliance signals and reports: ``signals`` and ``report``.

Both work from a FHIR server (``--server``) or from local files of score Observations (and
Encounters); writing DetectedIssues needs a server. matplotlib is imported only by ``report``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..instruments.catalog import Catalog
from ..scoring.inputs import read_inputs
from ..server.signal_sync import fetch_trajectories, run_signals
from ..signals.resources import signal_bundle
from ..signals.rules import detect_signals
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle
from ._common import (
    CaOption,
    ConfigOption,
    JsonOption,
    ServerOption,
    VerboseOption,
    command_catalog,
    err,
    open_client,
    out,
    server_config,
    setup_logging,
    signals_summary,
    signals_table,
)

__all__ = ["register"]

PathsArgument = Annotated[list[str] | None, typer.Argument(help="Local score Observations (JSON, NDJSON, Bundle, folder); instead of --server.")]
PatientOption = Annotated[str | None, typer.Option("--patient", help="Only this client, e.g. Patient/123.")]


def register(app: typer.Typer) -> None:
    """Add ``signals`` and ``report`` to ``app``."""
    app.command("signals")(signals)
    app.command("report")(report)


def _local_trajectories(paths: list[str], catalog: Catalog, patient: str | None) -> Trajectories:
    resources = []
    for _label, doc in read_inputs(paths):
        if isinstance(doc, InputError):
            raise doc
        resources.append(doc)
    observations, encounters = unbundle(resources)
    if patient:
        observations = [o for o in observations if (o.get("subject") or {}).get("reference") == patient]
    return build_trajectories(observations, catalog, context_from_encounters(encounters))


def signals(
    ctx: typer.Context,
    paths: PathsArgument = None,
    server: ServerOption = None,
    patient: PatientOption = None,
    tasks: Annotated[bool, typer.Option("--tasks", help="Also create a follow-up Task per active signal.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Detect and count; write nothing.")] = False,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Detect alliance signals (low alliance, rupture, repair, early warning, gap, split) and write them as DetectedIssues."""
    setup_logging(verbose)
    catalog = command_catalog(ctx, None)
    if paths:
        found = detect_signals(_local_trajectories(paths, catalog, patient))
        sys.stdout.write(json.dumps(signal_bundle(found, tasks=tasks), indent=2) + "\n")
        raise typer.Exit(0)
    cfg = server_config(server, config, ca_bundle=ca_bundle)
    with open_client(cfg) as client:
        result, found, trajectories = run_signals(client, catalog, patient=patient, tasks=tasks, dry_run=dry_run)
    for problem in result.problems:
        err.print(f"note: {problem}", markup=False)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        out.print(signals_table(found))
        err.print(signals_summary(result), markup=False)


def report(
    ctx: typer.Context,
    paths: PathsArgument = None,
    server: ServerOption = None,
    patient: PatientOption = None,
    practitioner: Annotated[str | None, typer.Option("--practitioner", help="Caseload view for this practitioner (Practitioner/.. or PractitionerRole/..).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write FILE.html (self-contained) or FILE.png.")] = None,
    config: ConfigOption = None,
    ca_bundle: CaOption = None,
    verbose: VerboseOption = False,
) -> None:
    """A client's alliance trajectory (plot + signals table), or a practitioner's caseload, as HTML or PNG."""
    setup_logging(verbose)
    if bool(patient) == bool(practitioner):
        err.print("error: give exactly one of --patient or --practitioner", markup=False)
        raise typer.Exit(2)
    catalog = command_catalog(ctx, None)
    if paths:
        trajectories = _local_trajectories(paths, catalog, patient)
    else:
        cfg = server_config(server, config, ca_bundle=ca_bundle)
        with open_client(cfg) as client:
            trajectories = fetch_trajectories(client, catalog, patient)
    found = detect_signals(trajectories)
    from ..signals import report as rendering  # matplotlib: only when a report is asked for

    target = out_file or Path("alliance-report.html")
    if practitioner:
        rows = rendering.practitioner_overview(trajectories, found, practitioner)
        target.write_text(rendering.render_practitioner_html(rows, practitioner), encoding="utf-8")
    elif target.suffix.lower() == ".png":
        target.write_bytes(rendering.render_client_png(trajectories, found, str(patient)))
    else:
        target.write_text(rendering.render_client_html(trajectories, found, str(patient)), encoding="utf-8")
    err.print(f"wrote {target}", markup=False)
