"""FHIR Bulk Data: kick-off, status polling, the completion manifest, cancelling; ``$import`` too.

The asynchronous request pattern of the Bulk Data IG (v2): a kick-off answered ``202 Accepted``
with a status URL in ``Content-Location``; polls answered ``202`` (with ``Retry-After`` and
``X-Progress``) until ``200`` and the manifest (or an error status and an OperationOutcome); a
``DELETE`` of the status URL cancels. ``$import`` (HAPI's pull import) follows the same pattern.

Every step is verified and bounded: the status URL must be on the server's origin (our
credentials go there), a poll waits as the server asks but never past ``max_wait`` in total,
the manifest is checked field by field, and a kick-off is never retried (a retried POST could
start two jobs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from .._json import loads
from .._text import safe_text
from .._time import zoned_instant
from ..errors import NotFound, UnexpectedResponse, summarise_outcome
from ._retry import parse_retry_after
from .client import FhirClient, safe_origin, safe_path

__all__ = [
    "ExportFile",
    "ExportRequest",
    "Manifest",
    "STALL_SECONDS_PER_POLL",
    "cancel_job",
    "kick_off",
    "parse_manifest",
    "poll_job",
    "supports_operation",
    "type_filters",
]

_ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
_MIN_POLL = 1.0  # seconds: a Retry-After of 0 must not turn the poll into a busy loop
_MAX_POLL = 120.0
_DEFAULT_POLL = 2.0  # no Retry-After: start here, double up to 30 s
_BACKOFF_MAX = 30.0
STALL_SECONDS_PER_POLL = 60.0  # a stall spans at least this per poll counted, however short the interval

Progress = Callable[[str, float], None]  # (X-Progress text or "", seconds waited so far)


@dataclass(frozen=True)
class ExportRequest:
    """What a back-fill asks the server to export: level, ``_since`` and the ``_typeFilter`` queries."""

    since: str | None = None
    type_filters: tuple[str, ...] = ()
    group: str | None = None
    patient: str | None = None

    @property
    def path(self) -> str:
        """System, Group or Patient level ``$export``."""
        if self.group:
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.patient else "$export"

    def parameters(self) -> dict[str, Any]:
        """The kick-off as a Parameters body (POST: ``_typeFilter`` values need no URL encoding)."""
        params: list[dict[str, Any]] = [
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_type", "valueString": "QuestionnaireResponse"},
        ]
        if self.since:
            params.append({"name": "_since", "valueInstant": self.since})
        params += [{"name": "_typeFilter", "valueString": query} for query in self.type_filters]
        if self.patient:
            params.append({"name": "patient", "valueReference": {"reference": self.patient}})
        return {"resourceType": "Parameters", "parameter": params}


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One file of the manifest: its resource type, URL and (optional) count."""

    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class Manifest:
    """The completion manifest, checked."""

    transaction_time: str
    requires_access_token: bool
    output: list[ExportFile] = field(default_factory=list)
    error: list[ExportFile] = field(default_factory=list)


def supports_operation(statement: dict[str, Any], name: str) -> bool:
    """Whether a CapabilityStatement lists the operation ``name`` (system or any resource level)."""
    for rest in statement.get("rest") or []:
        if not isinstance(rest, dict):
            continue
        operations = list(rest.get("operation") or [])
        for resource in rest.get("resource") or []:
            if isinstance(resource, dict):
                operations += list(resource.get("operation") or [])
        for op in operations:
            if isinstance(op, dict) and (
                op.get("name") == name or str(op.get("definition", "")).rstrip("/").endswith(f"/{name}")
            ):
                return True
    return False


def kick_off(client: FhirClient, path: str, parameters: dict[str, Any]) -> str:
    """POST the kick-off (never retried); the status URL the server answered with.

    Raises:
        UnexpectedResponse: not 202, no Content-Location, or a status URL on another origin.
        FhirServerError, FhirTransportError: the server refused or could not be reached.
    """
    where = safe_path(f"{client.base_url}/{path}")
    response = client.request("POST", path, json=parameters, headers=_ASYNC, idempotent=False)
    if response.status_code != 202:
        raise UnexpectedResponse("POST", where, response.status_code, "expected 202 Accepted" + _outcome(response))
    location = response.headers.get("Content-Location", "").strip()
    if not location:
        raise UnexpectedResponse("POST", where, 202, "202 Accepted without a Content-Location (the status URL)")
    return _our_origin(client, urljoin(client.base_url + "/", location), "POST", where)


def poll_job(
    client: FhirClient,
    status_url: str,
    *,
    max_wait: float,
    max_interval: float = 120.0,
    on_progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stalled_polls: int = 0,
) -> dict[str, Any]:
    """Poll until the job completes; its completion body (a manifest for ``$export``).

    Waits as ``Retry-After`` says (at least 1 s, at most ``max_interval``: HAPI always asks for
    120 s, however short the job), without it 2 s doubling to 30 s; never past ``max_wait``
    seconds in total. With ``stalled_polls`` (0: off), a job whose ``X-Progress`` stays the same
    text for that many polls in a row, and for at least that many minutes (a short poll interval
    must not make a slow job look stuck), is given up as stalled (HAPI issue 4511: jobs stuck in
    finalize): its progress will not change by waiting until ``max_wait``.

    Raises:
        UnexpectedResponse: still in progress after ``max_wait``, stalled, or an answer that is neither 202 nor 200.
        FhirServerError: the job failed (an error status, usually with an OperationOutcome).
    """
    shown = safe_path(status_url)
    started = clock()
    backoff = _DEFAULT_POLL
    stall = _Stall(stalled_polls, clock)
    while True:
        response = client.request("GET", status_url, headers={"Accept": "application/json"})
        if response.status_code == 200:
            return _body(response, shown)
        if response.status_code != 202:
            raise UnexpectedResponse("GET", shown, response.status_code, "expected 202 (in progress) or 200")
        progress = safe_text(response.headers.get("X-Progress", "").strip())
        hinted = parse_retry_after(response.headers.get("Retry-After"))
        if hinted is None:
            wait, backoff = min(backoff, max_interval), min(backoff * 2, _BACKOFF_MAX)
        else:
            wait = min(max(hinted, _MIN_POLL), max_interval, _MAX_POLL)
        wait = max(wait, _MIN_POLL)
        waited = clock() - started
        if on_progress is not None:
            on_progress(progress, waited)
        if stall.stalled(progress):
            raise UnexpectedResponse(
                "GET",
                shown,
                202,
                f"the job looks stalled: its progress has not changed for {stall.polls} polls "
                f"({stall.seconds():.0f} s; last progress: {progress}); it is kept: run the same back-fill again "
                "to go on waiting, or backfill --cancel",
            )
        if waited + wait > max_wait:
            last = f" (last progress: {progress})" if progress else ""
            raise UnexpectedResponse(
                "GET",
                shown,
                202,
                f"the job did not complete within {max_wait:.0f} s{last}; it is kept: run the same back-fill "
                "again to go on waiting, or backfill --cancel",
            )
        sleep(wait)


class _Stall:
    """Counts the polls in a row that showed the same (non-empty) ``X-Progress``, and since when."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self.last = ""
        self.polls = 0
        self.since = clock()

    def stalled(self, progress: str) -> bool:
        if not progress or progress != self.last:  # no progress shown says nothing; a change resets
            self.last, self.polls, self.since = progress, 0, self.clock()
            return False
        self.polls += 1
        return 0 < self.limit <= self.polls and self.seconds() >= self.limit * STALL_SECONDS_PER_POLL

    def seconds(self) -> float:
        return self.clock() - self.since


def cancel_job(client: FhirClient, status_url: str) -> bool:
    """DELETE the job; True when the server accepted, False when it no longer knew the job (404/410).

    Raises:
        FhirServerError, FhirTransportError: any other refusal, or no answer.
    """
    try:
        client.request("DELETE", status_url)
    except NotFound:
        return False
    return True


def parse_manifest(body: dict[str, Any], where: str) -> Manifest:
    """The completion manifest, checked (types, URLs, the instant); anything else is an error.

    Raises:
        UnexpectedResponse: a field is missing or of the wrong shape.
    """

    def bad(reason: str) -> UnexpectedResponse:
        return UnexpectedResponse("GET", where, 200, f"bad export manifest: {reason}")

    stamp = body.get("transactionTime")
    if not isinstance(stamp, str) or not _is_instant(stamp):
        raise bad(f"transactionTime {str(stamp)[:40]!r} is not an instant")
    token = body.get("requiresAccessToken", False)
    if not isinstance(token, bool):
        raise bad("requiresAccessToken is not a boolean")
    return Manifest(
        stamp, token, _files(body.get("output"), "output", bad), _files(body.get("error", []), "error", bad)
    )


def _files(value: Any, name: str, bad: Callable[[str], UnexpectedResponse]) -> list[ExportFile]:
    if not isinstance(value, list):
        raise bad(f"{name} is not a list")
    files = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"{name}[{index}] is not an object")
        kind, url, count = item.get("type"), item.get("url"), item.get("count")
        if not isinstance(kind, str) or not kind:
            raise bad(f"{name}[{index}].type is missing")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise bad(f"{name}[{index}].url is not an absolute http(s) URL")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise bad(f"{name}[{index}].count is not a count")
        files.append(ExportFile(kind, url, count))
    return files


def _is_instant(stamp: str) -> bool:
    return zoned_instant(stamp) is not None


def _our_origin(client: FhirClient, url: str, method: str, where: str) -> str:
    ours, theirs = urlsplit(client.base_url), urlsplit(url)
    if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
        raise UnexpectedResponse(
            method,
            where,
            202,
            f"the status URL is on another origin ({safe_origin(url)}); our credentials go only to "
            f"{safe_origin(client.base_url)}",
        )
    return url


def _body(response: httpx.Response, shown: str) -> dict[str, Any]:
    try:
        body = loads(response.content)
    except ValueError:
        raise UnexpectedResponse("GET", shown, 200, "the completion answer is not JSON") from None
    if not isinstance(body, dict):
        raise UnexpectedResponse("GET", shown, 200, "the completion answer is not a JSON object")
    return body


def _outcome(response: httpx.Response) -> str:
    try:
        body = loads(response.content)
    except ValueError:
        return ""
    return (
        f": {summarise_outcome(body)}"
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
        else ""
    )


def type_filters(urls: Sequence[str]) -> tuple[str, ...]:
    """One ``_typeFilter`` per Questionnaire canonical (the IG ORs repeated filters)."""
    return tuple(f"QuestionnaireResponse?questionnaire={url}" for url in dict.fromkeys(urls))
