"""What a sync is asked to do and what it reports (``SyncOptions``, ``SyncReport``, ``SyncFailure``).

Apart from the run so that every step of it (the server plan, the per-response pipeline, the
search and checkpoint in :mod:`.sync`) writes to one report without importing the others.
Public through :mod:`.sync` and the package (``alliance_fhir.SyncReport``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._security import NO_LABELS, SecurityLabels
from ..fhirclient.config import WriteMode
from .state import OutstandingFailure

__all__ = ["SyncFailure", "SyncOptions", "SyncReport", "warn"]

# Warnings keep the logger name they had when the run was one module (log filters name it).
logger = logging.getLogger("alliance_fhir.server.sync")


@dataclass(frozen=True)
class SyncOptions:
    """What to sync; everything else comes from the client's config (ClientConfig)."""

    since: str | None = None
    patient: str | None = None
    instruments: Sequence[str] = ()
    dry_run: bool = False
    tag: dict[str, str] | None = None  # only responses with this meta.tag; the Observations carry it too
    write_mode: WriteMode | None = None  # None: the config's
    security: SecurityLabels = NO_LABELS  # meta.security of every Observation written (docs/hiding-results.md)


@dataclass(frozen=True, slots=True)
class SyncFailure:
    """One response that could not be scored or written: its reference and the reason."""

    resource: str
    reason: str


@dataclass
class SyncReport:
    """Counts and failures of one run (``--json`` prints this)."""

    server: str  # the source: where the responses were read
    dry_run: bool
    since: str | None = None
    checkpoint: str | None = None
    found: int = 0
    scored: int = 0
    written: int = 0
    unchanged: int = 0
    retracted: int = 0
    failed: int = 0
    skipped: int = 0  # responses returned in another status (in-progress, stopped); other resources are warned about
    requests: int = 0
    seconds: float = 0.0
    write_mode: str = ""
    write_mode_reason: str = ""
    failures: list[SyncFailure] = field(default_factory=list)
    warnings: list[SyncFailure] = field(default_factory=list)
    unattributed: list[SyncFailure] = field(default_factory=list)
    outstanding: list[OutstandingFailure] = field(default_factory=list)
    # subjects whose score Observations changed this run (serve refreshes their signals; not in as_dict)
    subjects: set[str] = field(default_factory=set, repr=False)
    # responses whose Observation did not land: a write failed, or the id was refused (backfill keeps the file open)
    write_failures: int = field(default=0, repr=False)
    # the results store the Observations went to, when that is not ``server`` (in as_dict only then)
    results_server: str | None = None
    # sync --patients: the patients listed and those read to the end (in as_dict only then)
    patients: int | None = None
    patients_read: int = 0

    @property
    def ok(self) -> bool:
        """No failure this run and none outstanding from earlier runs."""
        return self.failed == 0 and not self.outstanding

    def as_dict(self) -> dict[str, Any]:
        lists = ("failures", "warnings", "unattributed", "outstanding")
        hidden = ("subjects", "write_failures") + (() if self.results_server else ("results_server",))
        hidden += () if self.patients is not None else ("patients", "patients_read")
        data = {k: v for k, v in vars(self).items() if k not in lists and k not in hidden}
        for name in lists[:3]:
            data[name] = [{"resource": f.resource, "reason": f.reason} for f in getattr(self, name)]
        data["outstanding_count"] = len(self.outstanding)
        data["outstanding"] = [f.as_dict() for f in self.outstanding]
        return data


def warn(report: SyncReport, resource: str, text: str) -> None:
    """A warning of the run: logged, and listed in the report (which ``--json`` prints)."""
    logger.warning("%s: %s", resource, text)
    report.warnings.append(SyncFailure(resource, text))
