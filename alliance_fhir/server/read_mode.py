"""Which way sync reads a server's responses (its read mode), and why; ``check`` prints it.

Three ways in (docs/sync.md):

- ``search``: one server-wide ``QuestionnaireResponse?questionnaire=&_lastUpdated=`` search from the
  checkpoint (HAPI, Medplum, Aidbox, MEDITECH, OpenEMR);
- ``patients``: one search per patient of a Group, a List or a file (:mod:`.sync_patients`), where
  the server scopes the search to a patient (Epic);
- ``export``: a Group ``$export`` with ``_since`` (:mod:`.sync_export`), where Bulk Data is the
  population read (Epic, Oracle).

``sync --patients SOURCE`` and ``sync --via-export Group/ID`` choose for one run; ``[server]
read_mode`` and ``patients`` (``ALLIANCE_FHIR_READ_MODE``, ``ALLIANCE_FHIR_PATIENTS``) for every run.
``check`` probes the server-wide search (one ``_summary=count`` search: a refusal is a finding, not
an error) and says which mode the server gets and what to configure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._text import safe_text
from ..errors import AuthError, ConfigError, FhirServerError, summarise_outcome
from ..fhirclient.client import FhirClient
from .settings import ServerConfig

__all__ = ["READ_MODES", "ReadMode", "chosen_read_mode", "read_mode_finding"]

READ_MODES = ("search", "patients", "export")


@dataclass(frozen=True)
class ReadMode:
    """How a run reads: ``kind`` (one of ``READ_MODES``) and its target (the patient list, the Group)."""

    kind: str
    target: str | None = None


def chosen_read_mode(cfg: ServerConfig, patients: str | None, via_export: str | None) -> ReadMode:
    """The options' read mode, else the configuration's.

    Raises:
        ConfigError: both options given, or a configured mode without ``patients``.
    """
    if patients is not None and via_export is not None:
        raise ConfigError("--patients and --via-export exclude each other (one read mode a run)")
    if patients is not None:
        return ReadMode("patients", patients)
    if via_export is not None:
        return ReadMode("export", via_export)
    if cfg.read_mode != "search" and not cfg.patients:
        raise ConfigError(
            f'[server] read_mode = "{cfg.read_mode}" needs [server] patients '
            '(Group/ID, List/ID or a file; "export" needs Group/ID)'
        )
    return ReadMode(cfg.read_mode, cfg.patients if cfg.read_mode != "search" else None)


def read_mode_finding(client: FhirClient, cfg: ServerConfig, statement: dict[str, Any]) -> tuple[str, bool, str]:
    """``check``'s line: the read mode the source gets, and why (ok False: sync as configured cannot read).

    Raises:
        AuthError: the server refused our credentials (401), as every command stops on.
    """
    group_export = _group_export_offered(statement)
    bulk = "Bulk Data Group $export offered" if group_export else "no Group $export in the CapabilityStatement"
    if cfg.read_mode == "patients":
        return ("read mode", True, f'per patient of {cfg.patients} (configured: [server] read_mode = "patients")')
    if cfg.read_mode == "export":
        if group_export:
            return ("read mode", True, f"Group $export of {cfg.patients} with _since (configured; {bulk})")
        return ("read mode", False, f"Group $export of {cfg.patients} is configured, but the server has {bulk}")
    refusal = _server_wide_refusal(client)
    if refusal is None:
        if _lists_questionnaire_search(statement):
            return ("read mode", True, "server-wide search (QuestionnaireResponse search by questionnaire offered)")
        return (
            "read mode",
            False,
            "server-wide search answers, but the questionnaire search parameter is not listed; give --patients "
            "Group/ID" + (" or --via-export Group/ID" if group_export else ""),
        )
    advice = "give --patients Group/ID (or List/ID, or a file)" + (
        f", or --via-export Group/ID ({bulk})" if group_export else ""
    )
    return ("read mode", False, f"per patient (server-wide QuestionnaireResponse search refused: {refusal}); {advice}")


def _server_wide_refusal(client: FhirClient) -> str | None:
    """Probe the server-wide search with a count (no responses travel); why it was refused, or None."""
    try:
        client.request("GET", "QuestionnaireResponse", params={"_summary": "count", "_count": "1"})
    except AuthError as exc:
        if exc.status == 401:
            raise
        return _refusal(exc)
    except FhirServerError as exc:
        if exc.status < 400 or exc.status >= 500:
            raise  # a server error is not a finding about the read mode
        return _refusal(exc)
    return None


def _refusal(exc: FhirServerError) -> str:
    said = summarise_outcome(exc.outcome) if exc.outcome else ""
    return f"HTTP {exc.status}" + (f": {safe_text(said, 160)}" if said else "")


def _lists_questionnaire_search(statement: dict[str, Any]) -> bool:
    for resource in _resources(statement):
        if resource.get("type") == "QuestionnaireResponse":
            return any(
                isinstance(p, dict) and p.get("name") == "questionnaire" for p in resource.get("searchParam") or []
            )
    return False


def _group_export_offered(statement: dict[str, Any]) -> bool:
    """Group ``$export`` listed on the Group resource (by name or by the Bulk Data IG's definition)."""
    for resource in _resources(statement):
        if resource.get("type") != "Group":
            continue
        for op in resource.get("operation") or []:
            if isinstance(op, dict) and (
                op.get("name") == "export" or str(op.get("definition", "")).rstrip("/").endswith("group-export")
            ):
                return True
    return False


def _resources(statement: dict[str, Any]) -> list[dict[str, Any]]:
    rest = next((r for r in statement.get("rest") or [] if isinstance(r, dict) and r.get("mode") == "server"), {})
    return [r for r in rest.get("resource") or [] if isinstance(r, dict)]
