"""The retry policy for HTTP requests: what is transient, how long to wait, when to stop.

Narrow on purpose: timeouts, connection errors, 429, 502, 503 and 504 only, and only for
requests the caller declares idempotent (GET, PUT, conditional writes, transactions made only
of conditional writes). ``Retry-After`` (seconds or an HTTP date) is honoured up to a cap;
otherwise exponential backoff with full jitter. Attempts and total time are both bounded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from ..errors import FhirServerError, FhirTransportError

__all__ = ["RetryPolicy", "TRANSIENT_STATUSES", "parse_retry_after"]

logger = logging.getLogger(__name__)
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
T = TypeVar("T")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class TransientStatus(Exception):
    """Internal: a transient status that may be retried; carries the response for its headers."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and waits for retries; ``sleep`` is injectable so tests never sleep."""

    max_attempts: int = 6
    max_seconds: float = 300.0
    retry_after_cap: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def wait_seconds(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one (capped), else jittered exponential backoff."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, TransientStatus):
            hinted = parse_retry_after(error.response.headers.get("Retry-After"))
            if hinted is not None:
                return min(hinted, self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    def call(self, send: Callable[[], httpx.Response], method: str, path: str) -> httpx.Response:
        """Run ``send`` until it gives a non-transient answer or the bounds are reached.

        Raises:
            FhirTransportError: the last attempt failed without an HTTP answer.
            FhirServerError: the last attempt still had a transient status.
        """
        def attempt() -> httpx.Response:
            try:
                response = send()
            except httpx.TimeoutException as exc:
                raise FhirTransportError(method, path, f"timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise FhirTransportError(method, path, f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in TRANSIENT_STATUSES:
                response.read()
                raise TransientStatus(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, FhirTransportError | TransientStatus)),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_seconds),
            wait=self.wait_seconds,
            sleep=self.sleep,
            before_sleep=lambda s: logger.warning(
                "%s %s: %s; retry %d of %d in %.1fs", method, path, s.outcome.exception() if s.outcome else "?",
                s.attempt_number, self.max_attempts - 1, s.next_action.sleep if s.next_action else 0.0,
            ),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientStatus as exc:
            raise FhirServerError(method, path, exc.response.status_code) from None

    def once(self, send: Callable[[], httpx.Response], method: str, path: str) -> httpx.Response:
        """Send a non-idempotent request exactly once (never retried), mapping transport errors."""
        return RetryPolicy(max_attempts=1, sleep=self.sleep).call(send, method, path)
