"""``alliance-fhir serve``: scores and signals within seconds of a QuestionnaireResponse being written.

Layered above :mod:`..server` (it reuses sync's state, per-response path and signal writer) and
the transport :mod:`..fhirclient` (the client), and below :mod:`..cli`. Modules: ``hints`` (what a
notification may say), ``settings`` (the ``[serve]`` config and the webhook secret),
``subscription`` (our Subscription on the FHIR server), ``worker`` (inbox, catch-up, signals),
``body`` (bounded request bodies), ``deadlines``, ``metrics``, ``app`` (Starlette), ``run``
(uvicorn); the CDS Hooks service: ``cds`` (discovery, the hook, the report page), ``cds_auth`` (who
may call the hook), ``report_links`` (who may open the report a card links to), ``cds_demo``.
"""

from __future__ import annotations

from .hints import Hint
from .settings import ServeSettings, load_serve_settings, webhook_secret
from .subscription import ensure_subscription, remove_subscriptions
from .worker import Worker

__all__ = [
    "Hint",
    "ServeSettings",
    "Worker",
    "ensure_subscription",
    "load_serve_settings",
    "remove_subscriptions",
    "webhook_secret",
]
