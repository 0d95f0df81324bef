"""``backfill --via import``: the Observations of one exported file as NDJSON, pulled by ``$import``.

HAPI's ``$import`` is a pull: the server fetches each input URL itself. So the scored
Observations are spooled to a private temporary file and served on a small HTTP server of our own
(loopback by default; the path carries a random token; the file is deleted afterwards) as
``application/fhir+ndjson`` (HAPI fails the job for ``application/octet-stream``).

Idempotent like the transaction path: an Observation that already exists keeps its server id
(looked up by our identifier before spooling), a new one gets an id derived from the identifier,
and ``$import`` updates by id. Nothing is believed on the job's word alone: after a job that
completed without an error issue, every identifier is searched, and only an Observation found
exactly once counts as written; the ledger records it through sync's own ``settle``.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, NDJSON
from .._json import dumps
from ..errors import AllianceFhirError, ConfigError, summarise_outcome
from ..fhirclient.bulk import kick_off, poll_job
from ..fhirclient.client import FhirClient
from .sync import ExternalWrites
from .writes import PendingWrite, Written

__all__ = ["import_file", "import_parameters", "observation_id", "serve_file"]

logger = logging.getLogger(__name__)
_LOOKUP = 200  # identifiers per search


def observation_id(identifier: str) -> str:
    """A FHIR id for a new Observation, derived from our identifier (the same on every run)."""
    return "af-" + hashlib.blake2b(identifier.encode(), digest_size=16).hexdigest()


def import_parameters(url: str, source: str) -> dict[str, Any]:
    """The ``$import`` kick-off (HAPI 8.8's pull import): one Observation NDJSON input."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": NDJSON},
            {"name": "inputSource", "valueUri": source},
            {"name": "storageDetail", "part": [{"name": "type", "valueCode": "https"}]},
            {"name": "input", "part": [{"name": "type", "valueCode": "Observation"}, {"name": "url", "valueUri": url}]},
        ],
    }


def import_file(
    client: FhirClient,
    writes: ExternalWrites,
    chunks: Iterable[list[dict[str, Any]]],
    *,
    listen: str,
    max_wait: float,
    max_interval: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Score the chunks, ``$import`` their Observations, verify, record; True when every write landed."""
    folder = tempfile.mkdtemp(prefix="alliance-fhir-import-")  # 0700: the scores are patient data
    path = os.path.join(folder, "observations.ndjson")
    staged: list[PendingWrite] = []
    try:
        with open(path, "wb") as spool:
            for chunk in chunks:
                staged += _spool(client, writes.pending(chunk), spool)
        if not staged:
            return True
        waits = {"max_wait": max_wait, "max_interval": max_interval, "sleep": sleep, "clock": clock}
        results = _run_import(client, staged, path, listen=listen, waits=waits)
        for start in range(0, len(results), 500):
            writes.settle(results[start : start + 500])
        return all(error is None for _, error in results)
    finally:
        writes.close()
        shutil.rmtree(folder, ignore_errors=True)


def _spool(client: FhirClient, pending: list[PendingWrite], spool: Any) -> list[PendingWrite]:
    """Write the Observations (with their ids) to the spool; keep only what settling needs."""
    known = _ids_by_identifier(client, [w.identifier for w in pending])
    kept = []
    for write in pending:
        found = known.get(write.identifier, [])
        rid = found[0] if found else str(write.observation.get("id") or observation_id(write.identifier))
        spool.write(dumps({**write.observation, "id": rid}) + b"\n")
        kept.append(PendingWrite(write.response_id, write.version_id, write.identifier, {"id": rid}, write.outcome))
    return kept


def _run_import(
    client: FhirClient,
    staged: list[PendingWrite],
    path: str,
    *,
    listen: str,
    waits: dict[str, Any],
) -> list[Written]:
    try:
        with serve_file(path, listen) as (url, source):
            status_url = kick_off(client, "$import", import_parameters(url, source))
            body = poll_job(client, status_url, **waits)
    except AllianceFhirError as exc:
        return [(write, f"$import failed: {exc}") for write in staged]
    problem = _import_problem(body)
    if problem:
        return [(write, f"$import failed: {problem}") for write in staged]
    landed = _ids_by_identifier(client, [w.identifier for w in staged])
    results: list[Written] = []
    for write in staged:
        ids = landed.get(write.identifier, [])
        if len(ids) == 1:
            results.append((write, None))
        elif not ids:
            results.append((write, "$import completed, but the Observation is not on the server"))
        else:
            results.append((write, f"{len(ids)} Observations carry this identifier after $import"))
    return results


def _import_problem(body: dict[str, Any]) -> str | None:
    if body.get("resourceType") != "OperationOutcome":
        return f"the completed job answered with {str(body.get('resourceType'))[:40]!r}, not an OperationOutcome"
    issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
    if any(i.get("severity") in ("error", "fatal") for i in issues):
        return summarise_outcome(body)
    return None


def _ids_by_identifier(client: FhirClient, identifiers: list[str]) -> dict[str, list[str]]:
    """Server ids of the Observations carrying each of our identifiers (one search per 200)."""
    found: dict[str, list[str]] = {}
    for start in range(0, len(identifiers), _LOOKUP):
        chunk = identifiers[start : start + _LOOKUP]
        values = ",".join(f"{IDENTIFIER_SYSTEM}|{value}" for value in chunk)
        params = {"identifier": values, "_elements": "identifier", "_count": str(2 * len(chunk))}
        for resource in client.search("Observation", params, post=True):
            for ident in resource.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM and "id" in resource:
                    found.setdefault(str(ident.get("value")), []).append(str(resource["id"]))
    return found


@contextmanager
def serve_file(path: str, listen: str) -> Iterator[tuple[str, str]]:
    """Serve one file over HTTP at a random path while the block runs: yields (file URL, base URL).

    Raises:
        ConfigError: ``listen`` is not HOST:PORT or cannot be bound.
    """
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--import-listen must be HOST:PORT, not {listen!r}")
    token = secrets.token_urlsafe(24)
    wanted = f"/{token}/observations.ndjson"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path != wanted:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", NDJSON)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            with open(path, "rb") as body:
                shutil.copyfileobj(body, self.wfile)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log requests (paths carry the token)
            pass

    try:
        server = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    except OSError as exc:
        raise ConfigError(f"--import-listen {listen}: {exc}") from exc
    thread = threading.Thread(target=server.serve_forever, name="import-file-server", daemon=True)
    thread.start()
    base = f"http://{host.strip('[]')}:{server.server_address[1]}"
    try:
        yield base + wanted, base
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
