"""``FhirClient``: one pooled ``httpx.Client`` for one FHIR R4 server.

Small and explicit: read, search (following paging links), conditional update, transaction,
capabilities. Retries come from :mod:`._retry` and apply only to requests declared
idempotent. HTTP failures become errors from :mod:`.errors` that carry the OperationOutcome.
The client is thread-safe (httpx.Client is), so sync can keep several requests in flight.
Logging: one INFO line per exchange, with the path and query *names* only (values may be
patient data) — never bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from .._json import dumps, loads
from ..errors import AuthError, Conflict, FhirServerError, FhirTransportError, NotFound
from ._retry import RetryPolicy
from .auth import build_auth
from .config import ServerConfig

__all__ = ["FhirClient", "is_match", "safe_path", "search_token"]

logger = logging.getLogger("alliance_fhir.http")
FHIR_JSON = "application/fhir+json"
# HAPI replays an identical search's results for 60 s by default; we always want the current state.
_FRESH = {"Cache-Control": "no-cache"}


def is_match(entry: dict[str, Any]) -> bool:
    """A searchset entry that matched the criteria (not an ``_include``d resource or an OperationOutcome)."""
    return isinstance(entry.get("resource"), dict) and (entry.get("search") or {}).get("mode", "match") == "match"


def search_token(coding: dict[str, str]) -> str:
    """A token search value, ``system|code``, for a tag (or any Coding-shaped dict)."""
    return f"{coding['system']}|{coding['code']}"


def safe_path(url: str | httpx.URL) -> str:
    """Path plus query parameter names without values: loggable, PHI-free."""
    parts = urlsplit(str(url))
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return parts.path + ("?" + "&".join(f"{n}=" for n in names) if names else "")


class FhirClient:
    """A FHIR R4 REST client for one server (context manager; close it when done)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.base_url = config.base_url
        verify: bool | str = str(config.ca_bundle) if config.ca_bundle else config.verify
        limits = httpx.Limits(max_connections=config.concurrency + 2, max_keepalive_connections=config.concurrency + 2)
        common: dict[str, Any] = {"timeout": config.timeout, "verify": verify, "transport": transport}
        self._token_http = httpx.Client(**common)
        self._http = httpx.Client(
            **common,
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

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._token_http.close()

    # ------------------------------------------------------------ operations

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET /metadata``)."""
        return self._json(self.request("GET", "metadata"))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Read one resource. Raises NotFound when it does not exist."""
        return self._json(self.request("GET", f"{resource_type}/{resource_id}"))

    def search_pages(self, resource_type: str, params: dict[str, str], *, post: bool = False) -> Iterator[dict[str, Any]]:
        """Yield searchset Bundles page by page, following ``next`` links (constant memory).

        Searches are fresh (``Cache-Control: no-cache``) and ask for an accurate total: HAPI 8.8
        otherwise often answers a selective search on a large table with a first page and no
        ``next`` link, silently truncating it. Should a server still stop short of the total it
        announced, this raises instead of returning part of the result.

        Raises:
            FhirServerError: the pages ended before the announced total.
        """
        query = {"_total": "accurate", **params} if "_summary" not in params else dict(params)
        if post:  # long criteria (e.g. many identifiers) go in a form body: POST Type/_search
            page = self._json(self.request("POST", f"{resource_type}/_search", form=query, headers=_FRESH, idempotent=True))
        else:
            page = self._json(self.request("GET", resource_type, params=query, headers=_FRESH))
        total, seen = page.get("total"), 0
        while True:
            seen += sum(1 for e in page.get("entry", []) if is_match(e))
            yield page
            next_url = next((link.get("url") for link in page.get("link", []) if link.get("relation") == "next"), None)
            if not next_url:
                break
            page = self._json(self.request("GET", self._same_origin(next_url)))
        if isinstance(total, int) and seen < total:
            raise FhirServerError("POST" if post else "GET", safe_path(f"{self.base_url}/{resource_type}"), 200, _truncated(seen, total))

    def search(self, resource_type: str, params: dict[str, str], *, post: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the matching resources (``search.mode`` match) across all pages."""
        for page in self.search_pages(resource_type, params, post=post):
            yield from (entry["resource"] for entry in page.get("entry", []) if is_match(entry))

    def conditional_update(self, resource_type: str, criteria: dict[str, str], resource: dict[str, Any]) -> httpx.Response:
        """``PUT Type?criteria``: create or update the one match; idempotent, so retried."""
        return self.request("PUT", resource_type, params=criteria, json=resource)

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST a transaction/batch Bundle. Retried only when every entry is idempotent."""
        return self._json(self.request("POST", "", json=bundle, idempotent=idempotent))

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
            FhirTransportError, FhirServerError (AuthError, NotFound, Conflict).
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path}".rstrip("/")
        headers = {**(headers or {}), **({"Content-Type": FHIR_JSON} if json is not None else {})}
        shown = safe_path(httpx.URL(url, params=params))

        def send() -> httpx.Response:
            self.requests_sent += 1
            started = time.perf_counter()
            try:
                body = None if json is None else dumps(json)  # orjson, see _json.py
                response = self._http.request(method, url, params=params, content=body, data=form, headers=headers)
            except httpx.TransportError as exc:
                logger.info("%s %s failed: %s after %.0f ms", method, shown, type(exc).__name__, (time.perf_counter() - started) * 1000)
                raise
            logger.info("%s %s %d %.0f ms", method, shown, response.status_code, (time.perf_counter() - started) * 1000)
            return response

        retried = idempotent if idempotent is not None else method in ("GET", "HEAD", "PUT", "DELETE")
        response = (self.retry.call if retried else self.retry.once)(send, method, shown)
        if response.status_code >= 400:
            raise _status_error(method, shown, response)
        return response

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
            raise FhirTransportError(response.request.method, safe_path(response.request.url), "response is not JSON") from exc
        if not isinstance(body, dict):
            raise FhirTransportError(response.request.method, safe_path(response.request.url), "response is not a JSON object")
        return body


def _status_error(method: str, path: str, response: httpx.Response) -> FhirServerError:
    outcome: dict[str, Any] | None = None
    try:
        body = loads(response.content)
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            outcome = body
    except ValueError:
        pass
    status = response.status_code
    cls = AuthError if status in (401, 403) else NotFound if status in (404, 410) else Conflict if status in (409, 412) else FhirServerError
    return cls(method, path, status, outcome)


def _truncated(seen: int, total: int) -> dict[str, Any]:
    text = f"search pages ended after {seen} of {total} results (no next link)"
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "incomplete", "diagnostics": text}]}
