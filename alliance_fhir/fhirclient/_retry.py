"""The retry policy for HTTP requests: what is transient, how long to wait, when to stop.

Narrow on purpose: timeouts, connection errors, 408, 429, 502, 503 and 504 only, and only for
requests the caller declares idempotent (GET, PUT, conditional writes, transactions made only
of conditional writes). Everything else (other 4xx, a bad URL scheme, a body we refuse) fails
at once. ``Retry-After`` (seconds or an HTTP date) is honoured up to a cap; otherwise
exponential backoff with full jitter. Attempts are bounded, and ``max_seconds`` is a true
deadline for the whole call: no wait runs past it (a server asking for more is answered with
the error at once) and each attempt gets only the time that is left.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception

from ..errors import FhirServerError, FhirTransportError

__all__ = ["PermanentTransportError", "RetryPolicy", "TRANSIENT_STATUSES", "parse_retry_after"]

logger = logging.getLogger(__name__)
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
_MIN_ATTEMPT_SECONDS = 0.05
_UNSENDABLE = (
    "LocalProtocolError: the request could not be sent (a header or the request line is not valid HTTP; "
    "not shown, as it may hold a credential)"
)


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


class PermanentTransportError(FhirTransportError):
    """No usable answer, and asking again cannot help (bad URL scheme, invalid URL, an unsendable request)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and waits for retries; ``sleep`` is injectable so tests never sleep."""

    max_attempts: int = 6
    max_seconds: float = 300.0
    retry_after_cap: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def wait_seconds(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one (capped), else jittered exponential backoff."""
        hinted = _retry_after(state)
        if hinted is not None:
            return min(hinted, self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    def call(self, send: Callable[[float], httpx.Response], method: str, path: str) -> httpx.Response:
        """Run ``send(seconds_left)`` until it gives a non-transient answer or the bounds are reached.

        Raises:
            FhirTransportError: the last attempt failed without an HTTP answer.
            FhirServerError: the last attempt still had a transient status (or the server asked
                to wait beyond the deadline).
        """
        started = self.clock()
        waited = [0.0]  # with an injected sleep no real time passes: count the waits as spent

        def spent() -> float:
            return max(self.clock() - started, waited[0])

        def attempt() -> httpx.Response:
            left = self.max_seconds - spent()
            try:
                response = send(max(left, _MIN_ATTEMPT_SECONDS))
            except httpx.TimeoutException as exc:
                raise FhirTransportError(method, path, f"timed out ({type(exc).__name__})") from exc
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise PermanentTransportError(method, path, f"{type(exc).__name__}: {exc}") from exc
            except httpx.LocalProtocolError:
                # our own request could not be put on the wire; the library's text quotes the bad
                # header, which may be the Authorization header: never shown, never retried
                raise PermanentTransportError(method, path, _UNSENDABLE) from None
            except httpx.TransportError as exc:
                raise FhirTransportError(method, path, f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in TRANSIENT_STATUSES:
                response.close()
                raise TransientStatus(response)
            return response

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            hinted = _retry_after(state)  # asked to wait past the deadline: waiting less would only be refused again
            if hinted is not None and spent() + hinted > self.max_seconds:
                return True
            return spent() + state.upcoming_sleep + _MIN_ATTEMPT_SECONDS > self.max_seconds

        def pause(seconds: float) -> None:
            waited[0] += seconds
            self.sleep(seconds)

        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: (
                    isinstance(e, FhirTransportError | TransientStatus) and not isinstance(e, PermanentTransportError)
                )
            ),
            stop=stop,
            wait=self.wait_seconds,
            sleep=pause,
            before_sleep=lambda s: logger.warning(
                "%s %s: %s; retry %d of %d in %.1fs",
                method,
                path,
                s.outcome.exception() if s.outcome else "?",
                s.attempt_number,
                self.max_attempts - 1,
                s.next_action.sleep if s.next_action else 0.0,
            ),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientStatus as exc:
            hinted = parse_retry_after(exc.response.headers.get("Retry-After"))
            beyond = hinted is not None and spent() + hinted > self.max_seconds
            outcome = None
            if beyond:
                text = (
                    f"the server asks to retry in {hinted:.0f} s, beyond the retry budget of {self.max_seconds:.0f} s"
                )
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "throttled", "diagnostics": text}],
                }
            raise FhirServerError(method, path, exc.response.status_code, outcome) from None

    def once(self, send: Callable[[float], httpx.Response], method: str, path: str) -> httpx.Response:
        """Send a non-idempotent request exactly once (never retried), mapping transport errors."""
        single = RetryPolicy(max_attempts=1, max_seconds=self.max_seconds, sleep=self.sleep, clock=self.clock)
        return single.call(send, method, path)


def _retry_after(state: RetryCallState) -> float | None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, TransientStatus):
        return parse_retry_after(error.response.headers.get("Retry-After"))
    return None
