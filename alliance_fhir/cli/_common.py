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

import functools
import inspect
import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from typer.core import TyperGroup

from .._config_file import ConfigFile
from .._security import SecurityLabels
from ..errors import AllianceFhirError, ConfigError, FhirValidationError, InputError, ScoringError, TextPackError
from ..instruments.catalog import Catalog, load_catalog
from ..server._statedb import is_postgres_url
from ..server.labels import load_labels
from ..server.settings import ServerConfig, load_config
from ..signals.rules import Signal
from ._output import LogFormat, configure_logging, emit_json, emit_table, say, set_log_format

if TYPE_CHECKING:  # annotations only: `score` must not load the transport (httpx)
    from ..fhirclient.client import FhirClient
    from ..fhirclient.config import ClientConfig
    from ..server.results import Servers
    from ..server.signal_sync import SignalReport
    from ..server.sync_report import SyncFailure

__all__ = [
    "EXIT_CODES",
    "AllianceGroup",
    "CaOption",
    "CommonOptions",
    "ConfidentialityOption",
    "ConfigOption",
    "InstrumentsOption",
    "JsonOption",
    "SensitivityOption",
    "ResultsServerOption",
    "ServerOption",
    "StateOption",
    "TextPackOption",
    "VerboseOption",
    "client_factory",
    "command_catalog",
    "common_options",
    "command_labels",
    "err",
    "emit_json",
    "emit_table",
    "exit_code_for",
    "follow_up",
    "LogFormat",
    "LogFormatOption",
    "open_client",
    "open_servers",
    "out",
    "say",
    "say_run_lines",
    "set_log_format",
    "server_config",
    "setup_logging",
    "signals_summary",
    "signal_listing",
    "signals_table",
    "withdrawn_listing",
]

# Into a pipe or a log file Rich would assume 80 columns and squeeze the tables (the signals
# table lost whole columns in `make demo > demo.log`); a terminal or $COLUMNS still decides.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

# ---------------------------------------------------------------- options (each defined once)

InstrumentsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--instruments",
        metavar="DIR",
        help="Extra instruments folder (Questionnaire + mapping, and form maps in its form-maps/); repeatable. Also $ALLIANCE_FHIR_INSTRUMENTS.",
    ),
]
TextPackOption = Annotated[
    list[Path] | None, typer.Option("--text-pack", help="Text pack JSON (licensed or translated wording); repeatable.")
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", help="FHIR R4 base URL of the source (or $ALLIANCE_FHIR_SERVER / config file [server] url)."
    ),
]
ResultsServerOption = Annotated[
    str | None,
    typer.Option(
        "--results-server",
        metavar="URL",
        help="FHIR R4 base URL of the results store, where Observations, DetectedIssues and Tasks are written and "
        "read (or $ALLIANCE_FHIR_RESULTS_SERVER / config file [results] url; its credentials from "
        "$ALLIANCE_FHIR_RESULTS_TOKEN ... or [results.auth]). Default: the source (--server) itself.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default ./alliance-fhir.toml, then the user config dir)."),
]
CaOption = Annotated[
    Path | None, typer.Option("--ca-bundle", help="CA bundle (PEM) to verify the server's TLS certificate.")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log one line per HTTP exchange (method, path, status, time).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable summary on stdout: one JSON document on one line.")
]
ConfidentialityOption = Annotated[
    str | None,
    typer.Option(
        "--confidentiality",
        "--security-label",
        metavar="CODE",
        help="Label score Observations and DetectedIssues with this v3 Confidentiality code in meta.security "
        "(R restricted is the one for psychotherapy data; '' for none). Also $ALLIANCE_FHIR_CONFIDENTIALITY or "
        "[labels] confidentiality in the config file. Default: no labels.",
    ),
]
SensitivityOption = Annotated[
    list[str] | None,
    typer.Option(
        "--sensitivity",
        metavar="CODE",
        help="Also label with this v3 ActCode sensitivity code (PSY, MH or BH); repeatable; needs --confidentiality "
        "(or [labels] confidentiality). Also $ALLIANCE_FHIR_SENSITIVITY or [labels] sensitivity.",
    ),
]
StateOption = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="FILE|URL",
        help=(
            "Sync state: a SQLite file (default: user data dir) or postgresql://USER@HOST:PORT/DB, shared by several workers "
            "(or $ALLIANCE_FHIR_STATE_DB; a password goes in PGPASSWORD or ~/.pgpass, never on the command line)."
        ),
    ),
]
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="ALLIANCE_FHIR_LOG_FORMAT",
        case_sensitive=False,
        help="stderr format: text, or json (one JSON object per line, with a timestamp). Accepted before or after the command.",
    ),
]

# ---------------------------------------------------------------- the options most commands share, as one value

# The shared options by parameter name: the annotation (flag and help, above) and the default.
_COMMON: dict[str, tuple[object, object]] = {
    "config": (ConfigOption, None),
    "ca_bundle": (CaOption, None),
    "instruments": (InstrumentsOption, None),
    "confidentiality": (ConfidentialityOption, None),
    "sensitivity": (SensitivityOption, None),
    "verbose": (VerboseOption, False),
    "as_json": (JsonOption, False),
}


@dataclass(frozen=True, slots=True)
class CommonOptions:
    """What a command was given of the options many commands share (:func:`common_options`), with
    the set-up steps that read them, so that each command reads them the same way."""

    config: Path | None = None
    ca_bundle: Path | None = None
    instruments: list[Path] | None = None
    confidentiality: str | None = None
    sensitivity: list[str] | None = None
    verbose: bool = False
    as_json: bool = False

    def server_config(
        self,
        server: str | None,
        file: ConfigFile | None = None,
        *,
        state: str | None = None,
        results_server: str | None = None,
        **overrides: Any,
    ) -> ServerConfig:
        """:func:`server_config` with ``--config`` (or ``file``, when the command read it already) and ``--ca-bundle``."""
        return server_config(
            server,
            self.config if file is None else file,
            state=state,
            results_server=results_server,
            ca_bundle=self.ca_bundle,
            **overrides,
        )

    def labels(self, file: ConfigFile) -> SecurityLabels:
        """:func:`command_labels` from ``--confidentiality`` and ``--sensitivity``."""
        return command_labels(file, self.confidentiality, self.sensitivity)

    def catalog(self, ctx: typer.Context) -> Catalog:
        """:func:`command_catalog` with ``--instruments``."""
        return command_catalog(ctx, self.instruments)


def common_options(*names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared options ``names`` (keys of ``_COMMON``) as one :class:`CommonOptions`.

    The command declares a last, keyword-only parameter ``common: CommonOptions``; on the command
    line it stands for the options ``names``, in that order and at its place (so ``--help`` lists
    them where the command puts them). Each option is declared once, in this module.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "common"]
        kind = inspect.Parameter.KEYWORD_ONLY
        params += [inspect.Parameter(n, kind, annotation=_COMMON[n][0], default=_COMMON[n][1]) for n in names]

        @functools.wraps(command)
        def run(**given: Any) -> None:
            common = CommonOptions(**{n: given.pop(n) for n in names})
            command(**given, common=common)

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


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
            say(str(exc), "error")
            raise typer.Exit(exit_code_for(exc)) from None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """``--log-format`` is global: accepted after the command name too (moved to the front)."""
        return super().parse_args(ctx, hoist_option(args, "--log-format"))


def hoist_option(args: list[str], name: str) -> list[str]:
    """``args`` with every ``NAME VALUE`` / ``NAME=VALUE`` before ``--`` moved to the front."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if arg == name and index + 1 < len(args):
            front += args[index : index + 2]
            index += 2
            continue
        (front if arg.startswith(name + "=") else rest).append(arg)
        index += 1
    return front + rest


# ---------------------------------------------------------------- helpers


def setup_logging(verbose: bool) -> None:
    """Log to stderr (timestamped; JSON with ``--log-format json``); ``--verbose`` shows one INFO line
    per HTTP exchange (method, host, path, status, time; never bodies or query values).

    The HTTP logger follows the root level again: ``serve`` gives it a level of its own, and a
    later command in the same process (an embedding app, a test session) must not inherit it.
    """
    configure_logging(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("alliance_fhir.http").setLevel(logging.NOTSET)


def command_catalog(ctx: typer.Context, extra: list[Path] | None, *, report: bool = True) -> Catalog:
    """The catalog for a command: shipped instruments, ``$ALLIANCE_FHIR_INSTRUMENTS``, the global
    ``--instruments`` and the command's own; files that did not load are warned about (``report``)."""
    catalog = load_catalog(list((ctx.obj or {}).get("instruments", [])) + list(extra or []))
    if report:
        for problem in catalog.problems:
            say(f"instrument not loaded: {problem}", "warning")
    return catalog


def server_config(
    server: str | None,
    config: Path | ConfigFile | None,
    *,
    state: str | None = None,
    results_server: str | None = None,
    **overrides: Any,
) -> ServerConfig:
    """The server settings: option > environment > config file (see :mod:`alliance_fhir.server.settings`).

    ``results_server`` is ``--results-server`` (the results store; its settings ride in ``cfg.results``).

    A command that loads more than this from the file reads it once (``ConfigFile.read``) and passes it.
    ``state`` is a command's ``--state``, checked here (:func:`_checked_state`) so that no command
    can pass one on unchecked.
    """
    if state is not None:
        overrides["state_db"] = _checked_state(state)
    return load_config(server, file=config, results_server=results_server, **overrides)


def follow_up(
    command: str, server: str, *, state: str | None = None, config: Path | None = None, results: str | None = None
) -> str:
    """A command to run next, as the operator can paste it: with ``--server`` (and ``--results-server``
    when results go elsewhere) and the ``--state`` and ``--config`` this command was given, so it
    reads the same servers' same state (a hint without them would read the default state and find
    nothing). Shell-quoted."""
    words = ["alliance-fhir", *command.split(), "--server", server]
    if results and results != server:
        words += ["--results-server", results]
    if state:
        words += ["--state", state]
    if config is not None:
        words += ["--config", str(config)]
    return shlex.join(words)


def _checked_state(state: str) -> str:
    """``--state`` as given; a PostgreSQL URL with a password in it is refused (other users can read argv)."""
    if state and is_postgres_url(state) and urlsplit(state).password is not None:
        raise ConfigError(
            "--state: no password on the command line (other users can read it); use PGPASSWORD, ~/.pgpass "
            "or ALLIANCE_FHIR_STATE_DB"
        )
    return state


def command_labels(
    config: Path | ConfigFile | None, confidentiality: str | None, sensitivity: list[str] | None
) -> SecurityLabels:
    """The security labels a command writes: its options, else the environment, else ``[labels]``."""
    return load_labels(config, confidentiality=confidentiality, sensitivity=sensitivity or None)


def client_factory(cfg: ClientConfig) -> FhirClient:
    """How commands get a client (for the source or the results store); tests replace it to plug in an
    ``httpx.MockTransport``."""
    from ..fhirclient.client import FhirClient  # imported here so that commands that never talk to a server skip httpx

    return FhirClient(cfg)


def open_client(cfg: ServerConfig) -> FhirClient:
    """A client through :func:`client_factory` (looked up at call time, so a test's replacement wins)."""
    return client_factory(cfg)


def open_servers(cfg: ServerConfig) -> Servers:
    """The source's client and the results store's (:func:`alliance_fhir.server.results.open_servers`),
    each through :func:`client_factory` (so a test's replacement makes both)."""
    from ..server.results import open_servers as _open

    return _open(cfg, lambda one: client_factory(one))


def say_run_lines(failures: list[SyncFailure], warnings: list[SyncFailure], unattributed: list[SyncFailure]) -> None:
    """A run's line per resource on stderr (sync, demo and backfill alike): what failed, what was
    warned about, what was read but is not ours."""
    for failure in failures:
        say(f"{failure.resource}: {failure.reason}", "failed")
    for warning in warnings:
        say(f"{warning.resource}: {warning.reason}", "warning")
    for seen in unattributed:
        say(f"{seen.resource}: {seen.reason}", "unattributed")


# ---------------------------------------------------------------- signals rendering (sync, demo, signals)


def signals_summary(result: SignalReport) -> str:
    """The one-line count of a signals run (on stderr, after the table)."""
    verb = "would write" if result.dry_run else "written"
    return (
        f"signals: {result.signals} ({result.active} active); {verb} {result.written}, unchanged {result.unchanged}, "
        f"withdrawn {result.withdrawn}, tasks created {result.tasks_created}, tasks cancelled {result.tasks_cancelled}, "
        f"tasks noted {result.tasks_noted}" + (" (dry run)" if result.dry_run else "")
    )


def signal_listing(signal: Signal, issue_id: str | None = None) -> dict[str, Any]:
    """One signal for ``signals --json``: who, what, how severe, open or resolved, and its DetectedIssue."""
    return {
        "subject": signal.subject,
        "instrument": signal.instrument,
        "kind": signal.kind,
        "status": signal.status,
        "severity": signal.severity,
        "opened": signal.opened_at.isoformat(),
        "resolved": signal.resolved_at.isoformat() if signal.resolved_at else None,
        "focus": signal.focus,
        "episode": signal.episode,
        "detail": signal.detail,
        "identifier": signal.key,
        "detected_issue": f"DetectedIssue/{issue_id}" if issue_id else None,
    }


def withdrawn_listing(issue: dict[str, Any]) -> dict[str, Any]:
    """A DetectedIssue this run withdrew (its scores were amended or entered in error)."""
    code: Any = next(iter((issue.get("code") or {}).get("coding") or []), {})
    key = next((i.get("value") for i in issue.get("identifier") or [] if isinstance(i, dict)), None)
    return {
        "subject": (issue.get("patient") or {}).get("reference"),
        "kind": code.get("code") if isinstance(code, dict) else None,
        "status": "withdrawn",
        "severity": issue.get("severity"),
        "opened": (issue.get("identifiedPeriod") or {}).get("start"),
        "detail": issue.get("detail"),
        "identifier": key,
        "detected_issue": f"DetectedIssue/{issue['id']}" if issue.get("id") else None,
    }


def signals_table(found: list[Signal]) -> None:
    """One row per signal on stdout: who, which instrument, what, how severe, open or resolved, since when."""
    columns = ("subject", "instrument", "signal", "severity", "status", "opened", "detail")
    rows = [
        (
            s.subject,
            s.instrument,
            s.kind,
            s.severity,
            s.status,
            s.opened_at.date().isoformat(),
            s.finding,
        )
        for s in found
    ]
    emit_table("Alliance signals", columns, rows, console=out)
