"""``alliance-fhir serve``: scores and signals within seconds of a QuestionnaireResponse being written.

Layered above :mod:`..server` (it reuses sync's client, state, per-response path and signal
writer) and below :mod:`..cli`. Modules: ``hints`` (what a notification may say), ``settings``
(the ``[serve]`` config and the webhook secret), ``subscription`` (our Subscription on the FHIR
server), ``worker`` (inbox, catch-up, signals), ``metrics``, ``app`` (Starlette), ``run`` (uvicorn).
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
