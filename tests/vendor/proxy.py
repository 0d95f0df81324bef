"""The vendor proxy: a Starlette app in front of the real HAPI that answers as a vendor profile says.

What it does per request (``profiles.py`` holds the vendor data):
1. ``GET metadata``: HAPI's CapabilityStatement trimmed to the profile (resources, interactions,
   search parameters, operations; no ``conditional*``, ``updateCreate`` or transaction it does not list).
2. A type the vendor does not offer: 404 with an OperationOutcome, never forwarded.
3. An interaction, conditional write, transaction or operation the vendor does not list, a search the
   vendor scopes by patient without that parameter, or a body a guard refuses: 403 (``REFUSED``) with
   an OperationOutcome, never forwarded. Every refusal is recorded in ``ProxyLog.refused``.
4. Everything else goes to HAPI unchanged (same method, path, query, body; the Host header passes
   through so HAPI's links point back at the proxy) and HAPI's answer is streamed back.

Bodies are bounded (``MAX_BODY``); the upstream client has a timeout; nothing is retried.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .profiles import NO_SUCH_TYPE, REFUSED, Profile, ResourceRule

MAX_BODY = 8 * 1024 * 1024  # larger than any write alliance-fhir makes; a bigger body is refused with 413
PASSED_BACK = ("content-type", "location", "content-location", "etag", "last-modified", "retry-after", "x-progress")
FHIR_JSON = "application/fhir+json"
_CONDITIONAL_KEYS = ("conditionalCreate", "conditionalUpdate", "conditionalDelete", "conditionalRead", "updateCreate")


@dataclass
class ProxyLog:
    """What the proxy did, for tests: refusals (method, path, status, reason) and the forwarded count."""

    refused: list[tuple[str, str, int, str]] = field(default_factory=list)
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, method: str, path: str, status: int, reason: str) -> None:
        with self.lock:
            self.refused.append((method, path, status, reason))

    def forward(self) -> None:
        with self.lock:
            self.forwarded += 1


def outcome(status: int, code: str, diagnostics: str) -> JSONResponse:
    """An OperationOutcome answer, as FHIR servers give for a refused request."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


# ---------------------------------------------------------------- the CapabilityStatement


def trim_capabilities(statement: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """HAPI's statement cut down to what ``profile`` lists (HAPI's own statement for the open profile)."""
    if profile.resources is None:
        return statement
    trimmed = copy.deepcopy(statement)
    trimmed["software"] = {"name": f"{profile.title}-shaped test proxy (HAPI FHIR behind it)"}
    trimmed["instantiates"] = list(profile.instantiates)
    if not profile.instantiates:
        trimmed.pop("instantiates")
    trimmed.pop("patchFormat", None)
    rest = next((r for r in trimmed.get("rest", []) if r.get("mode") == "server"), None)
    if rest is None:
        return trimmed
    hapi_types = {r.get("type"): r for r in rest.get("resource", [])}
    rest["resource"] = [
        _trim_resource(hapi_types.get(name, {"type": name}), name, rule) for name, rule in profile.resources.items()
    ]
    rest["interaction"] = [{"code": c} for c in sorted(profile.system_interactions)]
    rest["operation"] = [o for o in rest.get("operation", []) if o.get("name") in profile.system_operations]
    return trimmed


def _trim_resource(hapi: dict[str, Any], name: str, rule: ResourceRule) -> dict[str, Any]:
    entry = {
        k: v for k, v in hapi.items() if k not in _CONDITIONAL_KEYS and k not in ("searchInclude", "searchRevInclude")
    }
    entry["type"] = name
    entry["interaction"] = [{"code": c} for c in sorted(rule.interactions)]
    if "search-type" not in rule.interactions:
        entry.pop("searchParam", None)
    elif rule.search_params is not None:
        params = {p.get("name"): p for p in hapi.get("searchParam", [])}
        entry["searchParam"] = [params.get(n, {"name": n, "type": "token"}) for n in rule.search_params]
    entry["operation"] = [o for o in hapi.get("operation", []) if o.get("name") in rule.operations]
    if not entry["operation"]:
        entry.pop("operation")
    if rule.supported_profiles:
        entry["supportedProfile"] = list(rule.supported_profiles)
    if rule.documentation:
        entry["documentation"] = rule.documentation
    return entry


# ---------------------------------------------------------------- deciding on a request


@dataclass(frozen=True)
class Decision:
    status: int  # 0: forward
    code: str = ""
    reason: str = ""


FORWARD = Decision(0)


def decide(
    profile: Profile, method: str, parts: list[str], query: str, headers: dict[str, str], body: bytes
) -> Decision:
    """Whether the vendor would take this request; ``parts`` is the path below the FHIR base."""
    if profile.resources is None:
        return FORWARD
    if not parts:
        if method == "GET" and "_getpages=" in query:
            return FORWARD  # HAPI's paging link for a search the proxy already let through
        return _decide_system(profile, method, body)
    if parts[0].startswith("$"):
        op = parts[0][1:]
        if op in profile.system_operations:
            return FORWARD
        if op == "export-poll-status" and _offers_export(profile):
            # The Bulk Data IG's status request: the kick-off's Content-Location (HAPI's is $export-poll-status).
            # Epic lists it beside the kick-off (Bulk Data Status Request, api 10170, https://open.epic.com/Interface/FHIR).
            return FORWARD
        return Decision(REFUSED, "not-supported", f"operation ${op} is not offered by this server")
    if parts[0] == "metadata":
        return FORWARD
    rule = profile.resources.get(parts[0])
    if rule is None:
        return Decision(NO_SUCH_TYPE, "not-supported", f"resource type {parts[0]} is not supported by this server")
    interaction = _interaction(method, parts, query, headers)
    if interaction.startswith("$"):
        if interaction[1:] in rule.operations:
            return FORWARD
        return Decision(
            REFUSED, "not-supported", f"operation {interaction} on {parts[0]} is not offered by this server"
        )
    if interaction.startswith("conditional-"):
        return Decision(
            REFUSED, "not-supported", f"{interaction.replace('-', ' ')} of {parts[0]} is not supported by this server"
        )
    if interaction not in rule.interactions:
        return Decision(REFUSED, "forbidden", f"{interaction} of {parts[0]} is not permitted by this server")
    if interaction == "search-type" and rule.scoped_by:
        names = {name.split(":")[0] for name, _ in parse_qsl(query, keep_blank_values=True)}
        if method == "POST":
            names |= {name.split(":")[0] for name, _ in parse_qsl(body.decode("utf-8", "replace"))}
        if not names & set(rule.scoped_by):
            wanted = " or ".join(f"{p}=" for p in rule.scoped_by)
            return Decision(REFUSED, "forbidden", f"{parts[0]} search needs {wanted}: this server searches per patient")
    if interaction in ("create", "update") and rule.guard is not None:
        reason = rule.guard(_json_object(body))
        if reason:
            return Decision(REFUSED, "forbidden", reason)
    return FORWARD


def _offers_export(profile: Profile) -> bool:
    """Whether the profile offers Bulk ``$export`` at any level (system, Group or Patient)."""
    rules = (profile.resources or {}).values()
    return "export" in profile.system_operations or any("export" in rule.operations for rule in rules)


def _decide_system(profile: Profile, method: str, body: bytes) -> Decision:
    if method != "POST":
        return Decision(REFUSED, "not-supported", "system-level search and history are not offered by this server")
    kind = str(_json_object(body).get("type", "")) if body else ""
    if kind in profile.system_interactions:
        return FORWARD
    return Decision(REFUSED, "not-supported", f"Bundle {kind or 'POST'} is not supported by this server")


def _interaction(method: str, parts: list[str], query: str, headers: dict[str, str]) -> str:
    """The FHIR interaction (or ``$operation``, or ``conditional-...``) a request asks for."""
    op = next((p for p in parts[1:] if p.startswith("$")), None)
    if op:
        return op
    if method == "GET":
        if len(parts) == 1:
            return "search-type"
        if len(parts) == 2:
            return "read" if parts[1] != "_history" else "history-type"
        return "vread" if len(parts) == 4 else "history-instance"
    if method == "POST":
        if len(parts) == 2 and parts[1] == "_search":
            return "search-type"
        return "conditional-create" if "if-none-exist" in headers else "create"
    if method == "PUT":
        return "update" if len(parts) == 2 else "conditional-update"
    if method == "DELETE":
        return "delete" if len(parts) == 2 else "conditional-delete"
    if method == "PATCH":
        return "patch" if len(parts) == 2 else "conditional-patch"
    return method.lower()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- the app


class VendorProxy:
    """The ASGI app for one profile in front of ``upstream`` (a FHIR base URL such as http://127.0.0.1:8096/fhir)."""

    def __init__(self, profile: Profile, upstream: str, *, timeout: float = 60.0) -> None:
        self.profile = profile
        self.upstream = upstream.rstrip("/")
        self.base_path = urlsplit(self.upstream).path.rstrip("/")
        self.timeout = timeout
        self.log = ProxyLog()
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=32)) as client:
            self._client = client
            yield
        self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the proxy's lifespan has not started"
        return self._client

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if not path.startswith(self.base_path + "/") and path != self.base_path:
            return outcome(404, "not-found", "not a FHIR endpoint of this server")
        parts = [p for p in path[len(self.base_path) :].split("/") if p]
        body = await _bounded_body(request)
        if body is None:
            self.log.refuse(request.method, path, 413, "body too large")
            return outcome(413, "too-costly", f"request body larger than {MAX_BODY} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        decision = decide(self.profile, request.method, parts, request.url.query, headers, body)
        if decision.status:
            self.log.refuse(request.method, path, decision.status, decision.reason)
            return outcome(decision.status, decision.code, decision.reason)
        if parts == ["metadata"] and request.method == "GET" and not self.profile.is_open:
            return await self._metadata(request)
        return await self._forward(request, body)

    async def _metadata(self, request: Request) -> Response:
        answer = await self.client.get(
            f"{self.upstream}/metadata", headers={"Accept": FHIR_JSON, "Host": request.headers.get("host", "")}
        )
        if answer.status_code != 200:
            return Response(
                answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type")
            )
        return JSONResponse(trim_capabilities(answer.json(), self.profile), media_type=FHIR_JSON)

    async def _forward(self, request: Request, body: bytes) -> Response:
        self.log.forward()
        target = self.upstream.removesuffix(self.base_path) + request.url.path
        if request.url.query:
            target += "?" + request.url.query
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("content-length", "connection", "accept-encoding")
        }
        headers["accept-encoding"] = "identity"  # relay the bytes as they are, no re-encoding
        upstream = self.client.build_request(request.method, target, content=body, headers=headers)
        answer = await self.client.send(upstream, stream=True)
        passed = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_BACK}
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code, headers=passed, background=BackgroundTask(answer.aclose)
        )


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or None once it passes ``MAX_BODY`` (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
