"""Prometheus metrics of ``serve`` (``GET /metrics``), in a registry of their own.

A registry per service (not prometheus-client's global one) so that tests and embedders can run
several in one process. Counters only count; no label ever carries an id or patient data.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]


class ServeMetrics:
    """The service's counters, gauges and the notification-to-write latency histogram."""

    def __init__(
        self, inbox_depth: Callable[[], float], outstanding_failures: Callable[[], float] | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "alliance_fhir_notifications_received",
            "Notifications accepted (recorded in the inbox).",
            ["channel"],
            registry=r,
        )
        self.refused = Counter(
            "alliance_fhir_notifications_refused", "Notifications refused, by reason.", ["reason"], registry=r
        )
        self.scored = Counter(
            "alliance_fhir_responses_scored", "Responses scored after a notification or by a sync.", registry=r
        )
        self.written = Counter(
            "alliance_fhir_observations_written", "Score Observations written or retracted.", registry=r
        )
        self.failed = Counter(
            "alliance_fhir_responses_failed", "Responses that could not be scored or written.", registry=r
        )
        self.signals = Counter(
            "alliance_fhir_signal_runs", "Per-patient signal recomputations, by result.", ["result"], registry=r
        )
        self.catch_up = Counter(
            "alliance_fhir_catchup_runs",
            "Incremental syncs run by the service, by reason and result.",
            ["reason", "result"],
            registry=r,
        )
        self.latency = Histogram(
            "alliance_fhir_write_latency_seconds",
            "From recording a notification to its response being handled (written or found unchanged).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.cds_calls = Counter(
            "alliance_fhir_cds_calls",
            "CDS Hooks calls, by outcome (cards, no_cards, hidden_user, other_server, refused, bad_request, error).",
            ["outcome"],
            registry=r,
        )
        self.cds_latency = Histogram(
            "alliance_fhir_cds_seconds",
            "Time to compute a CDS Hooks answer after the JWT check, by where the scores came from.",
            ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        depth = Gauge("alliance_fhir_inbox_depth", "Notifications waiting in the inbox.", registry=r)
        depth.set_function(inbox_depth)
        if outstanding_failures is not None:
            failures = Gauge(
                "alliance_fhir_outstanding_failures",
                "Responses whose last outcome is a failure, not fixed or dismissed (listed by `alliance-fhir failures`).",
                registry=r,
            )
            failures.set_function(outstanding_failures)

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
