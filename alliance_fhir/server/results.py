"""The client for results: the one place that says which server results are written to and read from.

alliance-fhir talks to two servers, which are one by default:

- the *source* (``--server``): where QuestionnaireResponses are read, and where Patient,
  Practitioner and Encounter live (usually the EHR);
- the *results store* (``--results-server``, ``[results]``): where Observations, DetectedIssues and
  Tasks are written and read back (a clinic's own HAPI, Medplum, Aidbox, or the source itself).

Commands open both through :func:`open_servers` and hand ``servers.source`` and
``servers.results`` to the use cases; the state is keyed by ``servers.key``. Later write-back
routes into the EHR (a note, a flowsheet row) plug in here, beside :attr:`Servers.results`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._closing import Closing
from ..fhirclient.client import FhirClient
from ..fhirclient.config import ClientConfig
from .settings import ServerConfig
from .state.pair import ServerPair

__all__ = ["Servers", "open_servers", "roles"]

ClientFactory = Callable[[ClientConfig], FhirClient]


@dataclass
class Servers(Closing):
    """The source's client and the results store's (the same client when they are one server)."""

    source: FhirClient
    results: FhirClient

    @property
    def key(self) -> ServerPair:
        """What the state is keyed by: (source URL, results store URL)."""
        return ServerPair(self.source.base_url, self.results.base_url)

    @property
    def split(self) -> bool:
        """Whether results go to a store other than the source."""
        return self.results is not self.source

    def close(self) -> None:
        """Close both clients (the one client once)."""
        try:
            if self.split:
                self.results.close()
        finally:
            self.source.close()


def open_servers(cfg: ServerConfig, factory: ClientFactory = FhirClient) -> Servers:
    """Clients for the source (``cfg``) and the results store (``cfg.results``, else the source again).

    ``factory`` makes one client from one server's settings (tests plug in a fake transport).
    """
    source = factory(cfg)
    if cfg.results is None:
        return Servers(source, source)
    try:
        return Servers(source, factory(cfg.results))
    except BaseException:
        source.close()
        raise


def roles(cfg: ServerConfig) -> list[tuple[str, str, str]]:
    """Which server does what, and why: (role, base URL, what it is used for), as ``check`` prints it."""
    if cfg.results is None:
        return [
            (
                "source and results store",
                cfg.base_url,
                "one server: responses read, Observations, DetectedIssues and Tasks written here "
                "(no --results-server, ALLIANCE_FHIR_RESULTS_SERVER or [results] url)",
            )
        ]
    return [
        (
            "source",
            cfg.base_url,
            "QuestionnaireResponses read; Patient, Practitioner and Encounter looked up (--server)",
        ),
        (
            "results store",
            cfg.results.base_url,
            "Observations, DetectedIssues and Tasks written and read back; CDS cards and reports read here "
            "(--results-server, ALLIANCE_FHIR_RESULTS_SERVER or [results] url)",
        ),
    ]
