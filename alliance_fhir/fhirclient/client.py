"""``FhirClient``: one pooled ``httpx.Client`` for one FHIR R4 server.

Small and explicit: read, search (following paging links), conditional update, transaction,
capabilities. Retries come from :mod:`._retry` and apply only to requests declared
idempotent. HTTP failures become errors from :mod:`alliance_fhir.errors` that carry the OperationOutcome.
The client is thread-safe (httpx.Client is), so sync can keep several requests in flight.
Every answer is bounded (``max_response_bytes`` after decompression, read while streaming, and
``request_deadline`` of wall-clock time per exchange on top of httpx's per-read timeout) and
every search page is verified (a searchset Bundle of the right shape, no paging loop).
Logging: one INFO line per exchange, with the path and query *names* only (values may be
patient data) — never bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from .._closing import Closing
from .._ids import FHIR_JSON, NDJSON
from .._json import dumps, loads
from .._text import describe, safe_text
from ..errors import (
    AuthError,
    Conflict,
    FhirServerError,
    FhirTransportError,
    NotFound,
    UnexpectedResponse,
    summarise_outcome,
)
from ._body import ENCODINGS, BodyRefused, bounded_chunks, bounded_lines
from ._deadline import deadline as request_deadline
from ._deadline import deadline_transport
from ._retry import RetryPolicy
from .auth import build_auth
from .config import ClientConfig

__all__ = ["FhirClient", "is_match", "require_r4", "safe_origin", "safe_path", "search_token", "successful"]

logger = logging.getLogger("alliance_fhir.http")
# HAPI replays an identical search's results for 60 s by default; we always want the current state.
_FRESH = {"Cache-Control": "no-cache"}


def require_r4(statement: dict[str, Any], path: str = "/metadata") -> dict[str, Any]:
    """The CapabilityStatement, if it is one and says FHIR 4.0.x; else the reason, as an error.

    Raises:
        UnexpectedResponse: not a CapabilityStatement, or another FHIR version.
    """
    if statement.get("resourceType") != "CapabilityStatement":
        raise UnexpectedResponse(
            "GET", path, 200, f"not a CapabilityStatement (resourceType {statement.get('resourceType')!r})"
        )
    version = statement.get("fhirVersion")
    if not isinstance(version, str) or not (version == "4.0" or version.startswith("4.0.")):
        raise UnexpectedResponse(
            "GET", path, 200, f"the server speaks FHIR {version!r}; alliance-fhir needs FHIR R4 (4.0.x)"
        )
    return statement


def is_match(entry: dict[str, Any]) -> bool:
    """A searchset entry that matched the criteria (not an ``_include``d resource or an OperationOutcome)."""
    return isinstance(entry.get("resource"), dict) and (entry.get("search") or {}).get("mode", "match") == "match"


def search_token(coding: dict[str, str]) -> str:
    """A token search value, ``system|code``, for a tag (or any Coding-shaped dict)."""
    return f"{coding['system']}|{coding['code']}"


def safe_origin(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of a URL, without any user or password in it: error lines name the host."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") if parts.scheme and host else ""


def safe_path(url: str | httpx.URL) -> str:
    """Path plus query parameter names without values: loggable, PHI-free."""
    parts = urlsplit(str(url))
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return parts.path + ("?" + "&".join(f"{n}=" for n in names) if names else "")


class FhirClient(Closing):
    """A FHIR R4 REST client for one server (context manager; close it when done)."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.base_url = config.base_url
        verify: bool | str = str(config.ca_bundle) if config.ca_bundle else config.verify
        limits = httpx.Limits(max_connections=config.concurrency + 2, max_keepalive_connections=config.concurrency + 2)
        common: dict[str, Any] = {"timeout": config.timeout, "verify": verify}
        self._token_http = httpx.Client(**common, transport=transport or deadline_transport(verify, httpx.Limits()))
        self._http = httpx.Client(
            **common,
            transport=transport or deadline_transport(verify, limits),
            limits=limits,
            headers={"Accept": FHIR_JSON, "User-Agent": "alliance-fhir"},
            auth=build_auth(config.auth, self.base_url, self._token_http),
        )
        self.retry = RetryPolicy(
            max_attempts=config.max_attempts,
            max_seconds=config.max_retry_seconds,
            retry_after_cap=config.retry_after_cap,
            sleep=sleep,
        )
        self.requests_sent = 0
        self._capabilities: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()
        self._token_http.close()

    # ------------------------------------------------------------ operations

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET /metadata``), as it is."""
        return self._json(self.request("GET", "metadata"))

    def r4_capabilities(self) -> dict[str, Any]:
        """The CapabilityStatement of a FHIR R4 server (fetched once per client).

        Raises:
            UnexpectedResponse: the server is not FHIR R4 (4.0.x) or /metadata is not a CapabilityStatement.
        """
        if self._capabilities is None:
            self._capabilities = require_r4(self.capabilities(), safe_path(f"{self.base_url}/metadata"))
        return self._capabilities

    def r4_capabilities_and_search(
        self, resource_type: str, params: dict[str, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """The R4 CapabilityStatement and one small search, in one round trip when the server allows.

        Both go in one batch Bundle (``GET metadata`` and ``GET Type?params``), so a run that needs
        both before its first page costs one request, not two. The matches come back only when the
        search fitted in one well-formed searchset page; otherwise (a refused batch, an entry that
        failed, a next link) they are None and the caller runs the search itself. The statement is
        then fetched alone if it did not come: the R4 check is never skipped.

        Raises:
            UnexpectedResponse: the server is not FHIR R4 (4.0.x) or /metadata is not a CapabilityStatement.
        """
        if self._capabilities is not None:
            return self._capabilities, None
        query = urlencode(params, safe=",|:/")
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in ("metadata", f"{resource_type}?{query}")],
        }
        try:
            answer = self._json(self.request("POST", "", json=bundle, idempotent=True, headers=_FRESH))
        except FhirServerError:  # no batch here (or not for reads): plain requests
            return self.r4_capabilities(), None
        statement, page = _batch_answers(answer, 2)
        if statement is None:
            return self.r4_capabilities(), None
        self._capabilities = require_r4(statement, safe_path(f"{self.base_url}/metadata"))
        where = safe_path(f"{self.base_url}/{resource_type}")
        try:
            entries = _check_searchset(page, "GET", where) if page is not None else None
        except UnexpectedResponse:
            entries = None
        if entries is None or _next_link(page or {}, "GET", where) is not None:
            return self._capabilities, None
        return self._capabilities, [e["resource"] for e in entries if is_match(e)]

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Read one resource. Raises NotFound when it does not exist."""
        return self._json(self.request("GET", f"{resource_type}/{resource_id}"))

    def search_pages(
        self, resource_type: str, params: dict[str, str], *, post: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Yield searchset Bundles page by page, following ``next`` links (constant memory).

        Searches are fresh (``Cache-Control: no-cache``) and ask for an accurate total: HAPI 8.8
        otherwise often answers a selective search on a large table with a first page and no
        ``next`` link, silently truncating it. Should a server still stop short of the total it
        announced, this raises instead of returning part of the result. Each page must be a
        searchset Bundle of the right shape (:func:`_check_searchset`), and paging ends by what
        the run can prove (:class:`_Paging`): never a loop, never more pages than ``max_pages``.

        Raises:
            UnexpectedResponse: a page is not a well-formed searchset, or the paging cannot end.
            FhirServerError: the pages ended before the announced total.
        """
        query = {"_total": "accurate", **params} if "_summary" not in params else dict(params)
        method = "POST" if post else "GET"
        where = safe_origin(self.base_url) + safe_path(f"{self.base_url}/{resource_type}")  # names the server
        if post:  # long criteria (e.g. many identifiers) go in a form body: POST Type/_search
            page = self._json(
                self.request("POST", f"{resource_type}/_search", form=query, headers=_FRESH, idempotent=True)
            )
        else:
            page = self._json(self.request("GET", resource_type, params=query, headers=_FRESH))
        paging = _Paging(method, where, _asked_count(query), self.config.max_pages)
        while True:
            entries = _check_searchset(page, method, where)
            paging.count(page, sum(1 for e in entries if is_match(e)))
            yield page
            next_url = _next_link(page, method, where)
            if not next_url:
                break
            paging.follow(next_url)
            page = self._json(self.request("GET", self._same_origin(next_url)))
        paging.finish()

    def search(self, resource_type: str, params: dict[str, str], *, post: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the matching resources (``search.mode`` match) across all pages."""
        for page in self.search_pages(resource_type, params, post=post):
            yield from (entry["resource"] for entry in page.get("entry", []) if is_match(entry))

    def conditional_update(
        self, resource_type: str, criteria: dict[str, str], resource: dict[str, Any]
    ) -> httpx.Response:
        """``PUT Type?criteria``: create or update the one match; idempotent, so retried."""
        return self.request("PUT", resource_type, params=criteria, json=resource)

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST a transaction/batch Bundle. Retried only when every entry is idempotent."""
        return self._json(self.request("POST", "", json=bundle, idempotent=idempotent))

    def download_lines(self, url: str, *, max_bytes: int, seconds: float) -> Iterator[bytes]:
        """GET one exported NDJSON file and yield its lines as they arrive (never the whole file).

        Same rules as every other exchange: only on this server's origin (our credentials go with
        the request, as a Bulk Data manifest with ``requiresAccessToken`` needs), retried until the
        answer starts, at most ``max_bytes`` after decompression (one line at most
        ``max_response_bytes``), and ``seconds`` of wall-clock time for the whole body.

        Raises:
            UnexpectedResponse: another origin, not 200, too large, an undecodable body, too slow.
            FhirServerError: the server refused.
            FhirTransportError: the server could not be reached, or the body broke off while it was
                streaming (connection closed, chunked encoding cut, fewer bytes than Content-Length).
        """
        shown = safe_origin(url) + safe_path(url)
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise UnexpectedResponse(
                "GET",
                shown,
                200,
                f"the file is on another origin than the server ({safe_origin(self.base_url)}); "
                "alliance-fhir sends its credentials only there",
            )
        started = time.perf_counter()

        def send(seconds_left: float) -> httpx.Response:
            self.requests_sent += 1
            per_read = min(self.config.timeout, seconds_left)
            headers = {"Accept": NDJSON, "Accept-Encoding": ENCODINGS}
            request = self._http.build_request("GET", url, headers=headers, timeout=httpx.Timeout(per_read))
            with request_deadline(min(self.config.request_deadline, seconds_left)):  # until the headers are in
                response = self._http.send(request, stream=True)
            logger.info("GET %s %d (streaming)", shown, response.status_code)
            return response

        response = self.retry.call(send, "GET", shown)
        try:
            if response.status_code >= 400:
                raise _status_error("GET", shown, self._bounded(response, started + seconds, shown))
            if response.status_code != 200:
                raise UnexpectedResponse("GET", shown, response.status_code, "expected 200 with the NDJSON file")
            yield from _lines(response, max_bytes, self.config.max_response_bytes, started + seconds, shown)
        except httpx.TransportError as exc:  # the body broke off mid-stream: the one place it is mapped
            raise FhirTransportError("GET", shown, _broken_off(exc)) from None
        finally:
            response.close()

    # ------------------------------------------------------------ plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        form: dict[str, str] | None = None,
        idempotent: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (with retries when idempotent) and map error statuses to errors.

        Raises:
            FhirTransportError: no usable answer (after the retries).
            FhirServerError: an error status (AuthError, NotFound, Conflict for 401/403, 404/410, 409/412).
            UnexpectedResponse: any other answer that is not 2xx (a redirect: see :func:`successful`).
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path}".rstrip("/")
        headers = {
            "Accept-Encoding": ENCODINGS,
            **(headers or {}),
            **({"Content-Type": FHIR_JSON} if json is not None else {}),
        }
        # host and path, never credentials or query values
        shown = safe_origin(url) + safe_path(httpx.URL(url, params=params))

        def send(seconds_left: float) -> httpx.Response:
            self.requests_sent += 1
            started = time.perf_counter()
            deadline = min(self.config.request_deadline, seconds_left)
            per_read = min(self.config.timeout, deadline)
            try:
                body = None if json is None else dumps(json)  # orjson, see _json.py
                request = self._http.build_request(
                    method,
                    url,
                    params=params,
                    content=body,
                    data=form,
                    headers=headers,
                    timeout=httpx.Timeout(per_read),
                )
                with request_deadline(deadline):  # every socket read, write and connect of this exchange
                    response = self._bounded(self._http.send(request, stream=True), started + deadline, shown)
            except httpx.TransportError as exc:
                logger.info(
                    "%s %s failed: %s after %.0f ms",
                    method,
                    shown,
                    type(exc).__name__,
                    (time.perf_counter() - started) * 1000,
                )
                raise
            logger.info("%s %s %d %.0f ms", method, shown, response.status_code, (time.perf_counter() - started) * 1000)
            return response

        retried = idempotent if idempotent is not None else method in ("GET", "HEAD", "PUT", "DELETE")
        response = (self.retry.call if retried else self.retry.once)(send, method, shown)
        return successful(method, shown, response)

    def _bounded(self, response: httpx.Response, deadline: float, shown: str) -> httpx.Response:
        """Read the body within the size limit (decompressed) and the deadline, then close the stream.

        Returns a response holding the decoded body, so callers never touch the network again.

        Raises:
            UnexpectedResponse: too large, an encoding we do not read, an undecodable body.
            httpx.ReadTimeout: the deadline passed while the body was arriving (a transport error: retried).
        """
        limit = self.config.max_response_bytes
        try:
            body = b"".join(bounded_chunks(response, limit, deadline))
        except BodyRefused as exc:
            if exc.reason == "too_slow":
                raise httpx.ReadTimeout(
                    "the request deadline passed while the body was still arriving", request=response.request
                ) from None
            reason = _too_large(limit) if exc.reason == "too_large" else str(exc)
            raise UnexpectedResponse(response.request.method, shown, response.status_code, reason) from None
        finally:
            response.close()
        kept = [
            (k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(response.status_code, headers=kept, content=body, request=response.request)

    def _same_origin(self, url: str) -> str:
        """Paging links must stay on our server: rewrite a foreign origin to ours."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
            return url
        logger.warning("paging link points to %s; following it on %s instead", theirs.netloc, ours.netloc)
        return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, theirs.fragment))

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = loads(response.content)
        except ValueError as exc:
            raise FhirTransportError(
                response.request.method, safe_path(response.request.url), "response is not JSON"
            ) from exc
        if not isinstance(body, dict):
            raise FhirTransportError(
                response.request.method, safe_path(response.request.url), "response is not a JSON object"
            )
        return body


def successful(method: str, shown: str, response: httpx.Response) -> httpx.Response:
    """``response`` if its status is 2xx; else the error it is. The one rule of what counts as success.

    4xx and 5xx become the error classes callers tell apart (:func:`_status_error`). Anything
    else that is not 2xx is not an answer either: a redirect is never followed (our credentials
    would go with it, and a POST would be replayed as a GET), so its body, however much it looks
    like a result, must not be used in its place.

    Raises:
        FhirServerError: 4xx or 5xx (AuthError, NotFound, Conflict, ...).
        UnexpectedResponse: 1xx or 3xx.
    """
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status >= 400:
        raise _status_error(method, shown, response)
    reason = f"expected a 2xx answer, got HTTP {status}"
    if 300 <= status < 400:
        target = safe_origin(response.headers.get("Location", ""))
        where = f" to {target}" if target else ""
        reason += f" (a redirect{where}); redirects are not followed: give the server URL they lead to"
    raise UnexpectedResponse(method, shown, status, reason)


def _status_error(method: str, path: str, response: httpx.Response) -> FhirServerError:
    outcome: dict[str, Any] | None = None
    try:
        body = loads(response.content)
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            outcome = body
    except ValueError:
        pass
    status = response.status_code
    cls = (
        AuthError
        if status in (401, 403)
        else NotFound
        if status in (404, 410)
        else Conflict
        if status in (409, 412)
        else FhirServerError
    )
    return cls(method, path, status, outcome)


def _lines(response: httpx.Response, max_bytes: int, max_line: int, deadline: float, shown: str) -> Iterator[bytes]:
    """The non-blank lines of a streamed body, decoded, within the size, line and time limits."""
    try:
        yield from bounded_lines(bounded_chunks(response, max_bytes, deadline), max_line)
    except BodyRefused as exc:
        raise UnexpectedResponse("GET", shown, 200, _line_refusal(exc, max_bytes, max_line)) from None


def _line_refusal(exc: BodyRefused, max_bytes: int, max_line: int) -> str:
    if exc.reason == "too_large":
        return f"file larger than the limit of {max_bytes} bytes"
    if exc.reason == "too_slow":
        return "the file was still arriving when its time limit passed"
    if exc.reason == "line_too_long":
        return f"a line longer than {max_line} bytes (max_response_bytes)"
    return str(exc)


def _broken_off(exc: httpx.TransportError) -> str:
    """Why a streamed body ended early, on one line (httpx's own text: no header, no body content)."""
    text = str(exc).strip()
    detail = f": {safe_text(text.splitlines()[0], 200)}" if text else ""
    return f"the download broke off before the file was complete ({type(exc).__name__}{detail})"


def _too_large(limit: int) -> str:
    return f"response body larger than the limit of {limit} bytes (max_response_bytes)"


_SEARCH_MODES = ("match", "include", "outcome")


def _check_searchset(page: dict[str, Any], method: str, where: str) -> list[dict[str, Any]]:
    """The entries of a well-formed searchset page; else the one-line reason as an error.

    Every element paging or sync reads is checked for its type, so a malformed page is refused
    whole instead of being read in part: ``entry`` (objects, each with a ``resource`` object, a
    string ``fullUrl``, a ``search`` object whose ``mode`` is match, include or outcome), ``link`` (objects, each with a string ``relation`` and ``url``),
    ``total`` (a count) and ``meta`` (an object, ``lastUpdated`` a string).
    """
    if page.get("resourceType") != "Bundle" or page.get("type") != "searchset":
        what = page.get("resourceType")
        detail = f": {summarise_outcome(page)}" if what == "OperationOutcome" else ""
        kind = f"Bundle of type {page.get('type')!r}" if what == "Bundle" else repr(what)
        raise UnexpectedResponse(method, where, 200, f"expected a searchset Bundle, got {kind}{detail}")
    problem = _searchset_problem(page)
    if problem:
        raise UnexpectedResponse(method, where, 200, f"malformed searchset: {problem}")
    entries: list[dict[str, Any]] = page.get("entry", [])
    return entries


def _searchset_problem(page: dict[str, Any]) -> str | None:
    """What is wrong with a searchset Bundle's elements (see :func:`_check_searchset`), or None."""
    entries, links = page.get("entry", []), page.get("link", [])
    if not _list_of_objects(entries):
        return "Bundle.entry is not a list of objects"
    if not _list_of_objects(links):
        return "Bundle.link is not a list of objects"
    for index, link in enumerate(links):
        relation, url = link.get("relation"), link.get("url")
        if not isinstance(relation, str):
            return f"Bundle.link[{index}].relation is {describe(relation)}, not a string"
        if not isinstance(url, str):
            return f"the {safe_text(relation, 40)} link is not an http(s) URL (Bundle.link[{index}].url is {describe(url)})"
    total = page.get("total")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        return f"Bundle.total is not a count ({describe(total)})"
    meta = page.get("meta", {})
    if not isinstance(meta, dict) or not isinstance(meta.get("lastUpdated", ""), str):
        return "Bundle.meta.lastUpdated is not an instant"
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            return f"Bundle.entry[{index}] {problem}"
    return None


def _entry_problem(entry: dict[str, Any]) -> str | None:
    resource, search = entry.get("resource"), entry.get("search", {})
    if not isinstance(resource, dict):
        return f"resource is not an object ({describe(resource)}; a searchset entry is a resource)"
    if not isinstance(entry.get("fullUrl", ""), str):
        return f"fullUrl is {describe(entry.get('fullUrl'))}, not a string"
    if not isinstance(search, dict):
        return f"search is {describe(search)}, not an object"
    if search.get("mode", "match") not in _SEARCH_MODES:
        return "search.mode is not match, include or outcome"
    return None


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _batch_answers(answer: dict[str, Any], sent: int) -> list[dict[str, Any] | None]:
    """Each entry's resource of a batch-response, in order; None where that entry did not succeed."""
    entries = answer.get("entry") if answer.get("resourceType") == "Bundle" else None
    if answer.get("type") != "batch-response" or not isinstance(entries, list) or len(entries) != sent:
        return [None] * sent
    out: list[dict[str, Any] | None] = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        response, resource = entry.get("response"), entry.get("resource")
        status = response.get("status") if isinstance(response, dict) else None
        ok = isinstance(status, str) and status.startswith("2") and isinstance(resource, dict)
        out.append(resource if ok else None)
    return out


def _asked_count(query: dict[str, str]) -> int | None:
    """The page size a search asked for (``_count``), if it asked for one: no page may hold more."""
    value = query.get("_count", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class _Paging:
    """What one search's pages may do, checked page by page: the bounds that make paging end.

    Each rule is something the run can prove from what it asked and what the server said, so a
    server that pages correctly never trips one:

    - a page holds at most the ``_count`` asked for (FHIR: a server may return fewer, never more);
    - with a ``total``, the pages may not bring fewer results than it (checked at the end), and
      one empty page past the end is tolerated. More than the total is read, not refused: HAPI
      counts the total when the search starts and pages on through resources written meanwhile
      (seen on HAPI 8.8: a total of 100, 120 results by page 6), so it proves nothing;
    - a ``next`` link already followed is a loop; two empty pages in a row that still point on
      lead nowhere;
    - nothing above bounds a server that keeps sending fresh ``next`` links
      with a few results each, so every search stops at ``max_pages`` (configurable).
    """

    def __init__(self, method: str, where: str, asked: int | None, max_pages: int) -> None:
        self.method, self.where, self.asked, self.max_pages = method, where, asked, max_pages
        self.followed: set[str] = set()
        self.total: int | None = None
        self.pages = self.seen = self.empty_run = self.matched = 0

    def _refuse(self, reason: str) -> UnexpectedResponse:
        return UnexpectedResponse(self.method, self.where, 200, reason)

    def count(self, page: dict[str, Any], matched: int) -> None:
        """Take one page's matches into account; raise when the page breaks a rule."""
        self.pages += 1
        if self.pages == 1 and isinstance(page.get("total"), int):
            self.total = page["total"]
        if self.asked is not None and matched > self.asked:
            raise self._refuse(f"page {self.pages} holds {matched} results, more than the {self.asked} asked for")
        self.seen += matched
        self.matched = matched
        self.empty_run = self.empty_run + 1 if matched == 0 else 0

    def follow(self, next_url: str) -> None:
        """Before fetching ``next_url``: raise when following it cannot lead to the end."""
        pages, total = self.pages, self.total
        if next_url in self.followed:
            raise self._refuse(f"paging loop: the next link of page {pages} was already followed")
        if total is not None and self.seen >= total and self.matched == 0:  # one empty page past the end is tolerated
            raise self._refuse(f"page {pages} points to a next page after all {total} results")
        if self.empty_run >= 2:
            raise self._refuse(f"pages {pages - 1} and {pages} are empty but keep pointing to a next page")
        if pages >= self.max_pages:
            raise self._refuse(
                f"page {pages} still points to a next page; a search stops at max_pages ({self.max_pages}): "
                "raise it (ALLIANCE_FHIR_MAX_PAGES) if the server really holds that many"
            )
        self.followed.add(next_url)

    def finish(self) -> None:
        """After the last page: fewer results than the total announced is an error, not a short result."""
        if self.total is not None and self.seen < self.total:
            raise FhirServerError(self.method, self.where, 200, _truncated(self.seen, self.total))


def _next_link(page: dict[str, Any], method: str, where: str) -> str | None:
    for link in page.get("link", []):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise UnexpectedResponse(method, where, 200, "the next link is not an http(s) URL")
            return url
    return None


def _truncated(seen: int, total: int) -> dict[str, Any]:
    text = f"search pages ended after {seen} of {total} results (no next link)"
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "incomplete", "diagnostics": text}],
    }
