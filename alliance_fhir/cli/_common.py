"""What every CLI command shares: the consoles, the common options, the catalog/config/client
helpers and the ONE place where a library error becomes an exit code.

Commands let :class:`~alliance_fhir.errors.AllianceFhirError` propagate; the app's group
(:class:`AllianceGroup`) catches it once, prints ``error: <message>`` on stderr and exits with
:func:`exit_code_for`. That is the README's contract: 0 success; 1 an input failed (a response, a
file, a text pack) or a check found problems; 2 usage, configuration, connection or server errors.
A command that wants to go on after an error (a batch, a check) catches it itself.

This module is the CLI package's shared module: its names are public *inside* ``alliance_fhir.cli``,
so command modules never import each other's private names.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..errors import AllianceFhirError, FhirValidationError, InputError, ScoringError, TextPackError
from ..instruments.catalog import Catalog, load_catalog
from ..server.client import FhirClient
from ..server.config import ServerConfig, load_config
from ..server.signal_sync import SignalReport
from ..signals.rules import Signal

__all__ = [
    "EXIT_CODES",
    "AllianceGroup",
    "CaOption",
    "ConfigOption",
    "InstrumentsOption",
    "JsonOption",
    "ServerOption",
    "TextPackOption",
    "VerboseOption",
    "client_factory",
    "command_catalog",
    "err",
    "exit_code_for",
    "open_client",
    "out",
    "server_config",
    "setup_logging",
    "signals_summary",
    "signals_table",
]

# Into a pipe or a log file Rich would assume 80 columns and squeeze the tables (the signals
# table lost whole columns in `make demo > demo.log`); a terminal or $COLUMNS still decides.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

# ---------------------------------------------------------------- options (each defined once)

InstrumentsOption = Annotated[
    list[Path] | None,
    typer.Option("--instruments", metavar="DIR",
                 help="Extra instruments folder (Questionnaire + mapping); repeatable. Also $ALLIANCE_FHIR_INSTRUMENTS."),
]
TextPackOption = Annotated[list[Path] | None, typer.Option("--text-pack", help="Text pack JSON (licensed or translated wording); repeatable.")]
ServerOption = Annotated[str | None, typer.Option("--server", help="FHIR R4 base URL (or $ALLIANCE_FHIR_SERVER / config file).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file (default ./alliance-fhir.toml, then the user config dir).")]
CaOption = Annotated[Path | None, typer.Option("--ca-bundle", help="CA bundle (PEM) to verify the server's TLS certificate.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log one line per HTTP exchange (method, path, status, time).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")]

# ---------------------------------------------------------------- the one error-to-exit handler

# Errors about the data a user handed in (exit 1: "an input failed"); every other library error
# is about the set-up (configuration, catalog, connection, server, state: exit 2). Looked up along
# the class's MRO, so a new subclass inherits its parent's code.
EXIT_CODES: dict[type[AllianceFhirError], int] = {
    InputError: 1,
    ScoringError: 1,
    FhirValidationError: 1,
    TextPackError: 1,
    AllianceFhirError: 2,
}


def exit_code_for(exc: AllianceFhirError) -> int:
    """The documented exit code of a library error (1 bad input, 2 set-up or server)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 2  # pragma: no cover - AllianceFhirError itself is in the table


class AllianceGroup(TyperGroup):
    """The app's command group: turns any :class:`AllianceFhirError` a command raises into one
    ``error:`` line on stderr and :func:`exit_code_for`'s exit code (never a traceback)."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's click Context lives in a private module
        try:
            return super().invoke(ctx)
        except AllianceFhirError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(exit_code_for(exc)) from None


# ---------------------------------------------------------------- helpers


def setup_logging(verbose: bool) -> None:
    """Log to stderr; ``--verbose`` shows one INFO line per HTTP exchange (never bodies)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alliance_fhir").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per exchange replaces httpx's (it logs full URLs)


def command_catalog(ctx: typer.Context, extra: list[Path] | None, *, report: bool = True) -> Catalog:
    """The catalog for a command: shipped instruments, ``$ALLIANCE_FHIR_INSTRUMENTS``, the global
    ``--instruments`` and the command's own; files that did not load are warned about (``report``)."""
    catalog = load_catalog(list((ctx.obj or {}).get("instruments", [])) + list(extra or []))
    if report:
        for problem in catalog.problems:
            err.print(f"warning: instrument not loaded: {problem}", markup=False)
    return catalog


def server_config(server: str | None, config: Path | None, **overrides: Any) -> ServerConfig:
    """The server settings: option > environment > config file (see :mod:`alliance_fhir.server.config`)."""
    return load_config(server, file=config, **overrides)


def client_factory(cfg: ServerConfig) -> FhirClient:
    """How commands get a client; tests replace it to plug in an ``httpx.MockTransport``."""
    return FhirClient(cfg)


def open_client(cfg: ServerConfig) -> FhirClient:
    """A client through :func:`client_factory` (looked up at call time, so a test's replacement wins)."""
    return client_factory(cfg)


# ---------------------------------------------------------------- signals rendering (sync, demo, signals)


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
