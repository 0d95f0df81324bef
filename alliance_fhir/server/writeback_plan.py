"""Which write-back route each kind of result takes into the EHR, and why (``check`` prints it).

Two kinds of result reach the EHR: the **scores** and the **signals** (the client's open alliance
situation). Each takes one route:

- ``observation``: survey Observations, today's path. The source is its own results store (one
  server), or the site says its EHR accepts survey Observations (``[writeback]
  survey_observations = true``): a CapabilityStatement cannot say which categories a create takes;
- ``note``: one DocumentReference per scored form, with the scores and open signals in words;
- ``flowsheet``: Observations in the EHR's own shape, from the site's flowsheet map;
- ``communication``: a Communication with the note's text (MEDITECH's only writable route);
- ``none``: the results store only.

The default follows the source's CapabilityStatement: ``observation`` where survey Observations
can be written, else ``note`` where DocumentReference create is offered, else ``communication``
where Communication create is, else ``none``. ``[writeback] scores = "note"`` (or
``ALLIANCE_FHIR_WRITEBACK_SCORES``) chooses; a choice the EHR does not offer is a problem
``check`` reports (exit 1), since every write on it would be refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._config_file import ENV_PREFIX, ConfigFile, validate_settings
from ..errors import ConfigError
from ..instruments.catalog import Catalog
from ..instruments.flowsheet_maps import FlowsheetMap, load_flowsheet_map
from ..signals.writeback import NOTE_TYPE

__all__ = [
    "KINDS",
    "ROUTES",
    "EhrCapabilities",
    "Route",
    "RouteChoice",
    "RoutePlan",
    "WritebackSettings",
    "ehr_capabilities",
    "load_writeback",
    "plan_routes",
]

Route = Literal["observation", "note", "flowsheet", "communication", "none"]
ROUTES: tuple[Route, ...] = ("observation", "note", "flowsheet", "communication", "none")
KINDS = ("scores", "signals")
MESSAGE_ROUTES = ("note", "communication")
_ENV = {"scores": f"{ENV_PREFIX}WRITEBACK_SCORES", "signals": f"{ENV_PREFIX}WRITEBACK_SIGNALS"}
# Which resource type each route creates in the EHR.
ROUTE_TYPE: dict[str, str] = {
    "observation": "Observation",
    "flowsheet": "Observation",
    "note": "DocumentReference",
    "communication": "Communication",
}


class WritebackSettings(BaseModel):
    """The ``[writeback]`` table."""

    model_config = ConfigDict(extra="forbid")

    scores: Route | None = Field(
        default=None, description="The route of the scores; None: from the CapabilityStatement."
    )
    signals: Route | None = Field(default=None, description="The route of the open signals; None: as the scores' note.")
    survey_observations: bool = Field(
        default=False, description="The site says its EHR accepts survey Observations (no CapabilityStatement can)."
    )
    flowsheet_map: Path | None = Field(default=None, description="The site's flowsheet map (JSON).")
    note_type: str | None = Field(
        default=None, pattern=r"^\S+\|\S+$", description="The note's type as 'system|code' (default LOINC 11506-3)."
    )


def load_writeback(file: Path | ConfigFile | None = None) -> WritebackSettings:
    """``[writeback]`` from the config file, ``ALLIANCE_FHIR_WRITEBACK_SCORES``/``_SIGNALS`` over it.

    Raises:
        ConfigError: an unknown key or a route that is none of :data:`ROUTES`.
    """
    loaded = ConfigFile.of(file)
    table, sources = loaded.table("writeback"), loaded.sources("writeback")
    for key, env in _ENV.items():
        if env in os.environ:
            table[key], sources[(key,)] = os.environ[env], f"environment {env}"
    return validate_settings(WritebackSettings, table, sources, prefix="writeback")


@dataclass(frozen=True)
class EhrCapabilities:
    """What the source's CapabilityStatement offers that write-back needs, per resource type."""

    interactions: dict[str, frozenset[str]]
    search_params: dict[str, frozenset[str]]
    conditional_update: dict[str, bool]
    versioned_update: dict[str, bool]
    transaction: bool

    def can(self, resource_type: str, interaction: str) -> bool:
        return interaction in self.interactions.get(resource_type, frozenset())

    def searches_by(self, resource_type: str, param: str) -> bool:
        """The parameter is listed, and search-type is too (or the statement lists no interactions for the type)."""
        listed = self.interactions.get(resource_type, frozenset())
        searchable = "search-type" in listed or not listed
        return searchable and param in self.search_params.get(resource_type, frozenset())


def ehr_capabilities(statement: dict[str, Any]) -> EhrCapabilities:
    """Read the interactions, search parameters and conditional writes of each resource (odd shapes tolerated)."""
    rest = next((r for r in _dicts(statement.get("rest")) if r.get("mode") == "server"), {})
    interactions: dict[str, frozenset[str]] = {}
    params: dict[str, frozenset[str]] = {}
    conditional: dict[str, bool] = {}
    versioned: dict[str, bool] = {}
    for resource in _dicts(rest.get("resource")):
        kind = str(resource.get("type", ""))
        interactions[kind] = frozenset(str(i.get("code")) for i in _dicts(resource.get("interaction")))
        params[kind] = frozenset(str(p.get("name")) for p in _dicts(resource.get("searchParam")))
        conditional[kind] = resource.get("conditionalUpdate") is True
        versioned[kind] = resource.get("versioning") == "versioned-update"
    system = {str(i.get("code")) for i in _dicts(rest.get("interaction"))}
    return EhrCapabilities(interactions, params, conditional, versioned, "transaction" in system)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class RouteChoice:
    """One kind of result's route and why; ``problem``: why writes on it would be refused (None: fine)."""

    kind: str
    route: Route
    reason: str
    problem: str | None = None

    def line(self) -> str:
        """As ``check`` prints it: ``scores: note (DocumentReference create offered; ...)``."""
        return f"{self.kind}: {self.route} ({self.reason})"


@dataclass(frozen=True)
class RoutePlan:
    """The routes of both kinds, what the EHR offers, and the site's data the routes need."""

    scores: RouteChoice
    signals: RouteChoice
    capabilities: EhrCapabilities
    one_server: bool
    flowsheet: FlowsheetMap | None = None
    note_type: dict[str, str] = field(default_factory=lambda: dict(NOTE_TYPE))

    @property
    def choices(self) -> tuple[RouteChoice, RouteChoice]:
        return (self.scores, self.signals)

    @property
    def message_route(self) -> str | None:
        """The one note or communication per form (carrying the scores, and the signals when they take it)."""
        return next((c.route for c in self.choices if c.route in MESSAGE_ROUTES), None)

    @property
    def signals_in_message(self) -> bool:
        return self.signals.route == self.message_route

    @property
    def writes_to_ehr(self) -> bool:
        """Whether anything beyond the results store goes to the EHR (one server's observations do not)."""
        return (
            self.message_route is not None
            or self.scores.route == "flowsheet"
            or (self.scores.route == "observation" and not self.one_server)
        )

    @property
    def problems(self) -> list[str]:
        return [f"{c.kind}: {c.problem}" for c in self.choices if c.problem]


def plan_routes(
    statement: dict[str, Any],
    settings: WritebackSettings,
    *,
    one_server: bool,
    catalog: Catalog | None = None,
) -> RoutePlan:
    """The route of each kind of result (see the module docstring), with its reason.

    ``catalog``: to check the flowsheet map against (needed when a route is ``flowsheet``).

    Raises:
        ConfigError: the scores and signals name two different message routes, or the flowsheet
        map is missing, unreadable or partial (one line).
    """
    caps = ehr_capabilities(statement)
    scores = _choose("scores", settings.scores, caps, settings, one_server)
    signals = _signals(settings.signals, scores, caps, settings, one_server)
    routes = {c.route for c in (scores, signals) if c.route in MESSAGE_ROUTES}
    if len(routes) > 1:
        raise ConfigError(
            "[writeback]: scores and signals name two message routes (note and communication); choose one"
        )
    flowsheet = None
    if scores.route == "flowsheet":
        if settings.flowsheet_map is None:
            raise ConfigError(
                '[writeback] scores = "flowsheet" needs flowsheet_map, the site\'s map of score codes to rows'
            )
        mappings = [inst.mapping for inst in catalog] if catalog is not None else []
        flowsheet = load_flowsheet_map(settings.flowsheet_map, mappings)
    note_type = dict(NOTE_TYPE)
    if settings.note_type:
        system, _, code = settings.note_type.rpartition("|")
        note_type = {"system": system, "code": code}
    return RoutePlan(scores, signals, caps, one_server, flowsheet, note_type)


def _choose(
    kind: str, configured: Route | None, caps: EhrCapabilities, settings: WritebackSettings, one_server: bool
) -> RouteChoice:
    if configured is not None:
        return RouteChoice(
            kind,
            configured,
            f"configured; {_offered(configured, caps, one_server)}",
            _problem(configured, caps, one_server, settings),
        )
    if one_server:
        return RouteChoice(kind, "observation", "one server: the source is its own results store")
    obs = "Observation create offered" if caps.can("Observation", "create") else "Observation create not offered"
    if settings.survey_observations and caps.can("Observation", "create"):
        return RouteChoice(kind, "observation", f"{obs}; the site says survey Observations are accepted")
    if caps.can("DocumentReference", "create"):
        return RouteChoice(kind, "note", f"DocumentReference create offered; {obs}")
    if caps.can("Communication", "create"):
        return RouteChoice(
            kind, "communication", f"Communication create offered; DocumentReference create not offered; {obs}"
        )
    return RouteChoice(
        kind, "none", "no create of Observation, DocumentReference or Communication offered: results store only"
    )


def _signals(
    configured: Route | None, scores: RouteChoice, caps: EhrCapabilities, settings: WritebackSettings, one_server: bool
) -> RouteChoice:
    if configured in ("observation", "flowsheet") and not one_server:
        return RouteChoice(
            "signals",
            configured,
            "configured",
            "signals go into the EHR as a note or communication only (DetectedIssues stay in the results store)",
        )
    if configured is not None or one_server:
        return _choose("signals", configured, caps, settings, one_server)
    if scores.route in MESSAGE_ROUTES:
        return RouteChoice("signals", scores.route, f"in the scores' {scores.route}")
    chosen = _choose("signals", None, caps, settings.model_copy(update={"survey_observations": False}), one_server)
    return chosen


def _offered(route: Route, caps: EhrCapabilities, one_server: bool) -> str:
    if route == "none":
        return "results store only"
    if route == "observation" and one_server:
        return "one server"
    kind = ROUTE_TYPE[route]
    return f"{kind} create {'offered' if caps.can(kind, 'create') else 'NOT offered'}"


def _problem(route: Route, caps: EhrCapabilities, one_server: bool, settings: WritebackSettings) -> str | None:
    if route == "none" or (route == "observation" and one_server):
        return None
    kind = ROUTE_TYPE[route]
    if not caps.can(kind, "create"):
        return f"the EHR does not offer {kind} create: every write on this route would be refused"
    return None
