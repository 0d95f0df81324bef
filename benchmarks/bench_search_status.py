"""Sync's search with and without ``status=`` on HAPI (H2): search pages and sync end to end, interleaved.

Before issue 11, sync searched ``questionnaire=<urls>&status=completed,amended,entered-in-error``;
on HAPI's H2 database that combination is hundreds of times slower than either filter alone.
Now sync searches ``questionnaire=<urls>`` and filters the statuses itself. This prints both
variants on the same server, alternated (A B A B ...), with the 1-minute load next to each figure.

Usage: python -m benchmarks.bench_search_status --server URL [--n 5000] [--fresh 300] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from alliance_fhir import content_resources
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server import sync as sync_module
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.sync import SyncOptions

from ._report import markdown_table
from .bench_sync import CATALOG, ingest, prebuilt_observations, put_all, responses, sync_run, tagged

OLD_STATUSES = "completed,amended,entered-in-error"
URLS = ",".join(dict.fromkeys(inst.url for inst in CATALOG))


def load() -> float:
    return round(os.getloadavg()[0], 1)


def page_seconds(base: str, params: dict[str, str]) -> tuple[float, float]:
    """Seconds for the first page and for the next page of one fresh search."""
    with FhirClient(ServerConfig(url=base, timeout=600, request_deadline=600, max_retry_seconds=900)) as c:
        started = time.perf_counter()
        pages = c.search_pages("QuestionnaireResponse", params)
        next(pages)
        first = time.perf_counter() - started
        started = time.perf_counter()
        next(pages, None)
        second = time.perf_counter() - started
        pages.close()  # type: ignore[attr-defined]  # a generator
    return round(first, 2), round(second, 2)


def _count(base: str, resource_type: str = "QuestionnaireResponse") -> int:
    with FhirClient(ServerConfig(url=base)) as c:
        body = c.request(
            "GET", resource_type, params={"_summary": "count"}, headers={"Cache-Control": "no-cache"}
        ).json()
    return int(body.get("total", 0))


def with_status(enabled: bool) -> None:
    """Switch sync between the old search (status= sent) and the new one (statuses filtered here)."""
    original = getattr(sync_module._Search, "_bench_original_params", sync_module._Search._params)
    sync_module._Search._bench_original_params = original  # type: ignore[attr-defined]

    def params(self: Any, since: str | None) -> dict[str, str]:
        found = original(self, since)
        return {**found, "status": OLD_STATUSES} if enabled else found

    sync_module._Search._params = params  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--n", type=int, default=5000, help="responses loaded once (the table the searches run on)")
    parser.add_argument("--fresh", type=int, default=300, help="fresh tagged responses per end-to-end sync run")
    parser.add_argument(
        "--observations",
        type=int,
        default=0,
        help="Observations ingested first for the first --n responses (needs --n >= this; the review had ~12,600)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = args.server.rstrip("/")
    with FhirClient(ServerConfig(url=base, timeout=300)) as c:
        publish_resources(c, content_resources(CATALOG))
    prefix = f"bss{uuid.uuid4().hex[:6]}"
    loaded = put_all(base, responses(prefix, args.n)) if args.n else 0.0
    if args.observations:
        ingest(base, prebuilt_observations(prefix, args.observations, prefix), batch=50, workers=2)
    total = _count(base)
    lines = [
        f"loaded {args.n} responses in {loaded:.0f} s, {args.observations} Observations; {total} QuestionnaireResponses "
        f"and {_count(base, 'Observation')} Observations on the server (load {load()})"
    ]
    print(lines[0], flush=True)
    rows: list[list[Any]] = []
    for round_no in range(1, args.rounds + 1):
        for label, params in (
            ("questionnaire= & status=<3> (before)", {"questionnaire": URLS, "status": OLD_STATUSES, "_count": "200"}),
            ("questionnaire= only (after)", {"questionnaire": URLS, "_count": "200"}),
        ):
            first, second = page_seconds(base, params)
            rows.append([round_no, "search page, _total=accurate", label, first, second, load()])
            print(rows[-1], flush=True)
    e2e: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(1, args.rounds + 1):
            for label, status in (("with status= (before)", True), ("without status= (after)", False)):
                tag = f"{prefix}-{round_no}-{int(status)}"
                put_all(base, tagged(responses(f"{tag}", args.fresh), tag))
                with_status(status)
                started = time.perf_counter()
                report = sync_run(
                    base,
                    Path(tmp) / f"{tag}.sqlite",
                    SyncOptions(tag={"system": "urn:bench", "code": tag}),
                    request_deadline=900,
                    max_retry_seconds=1800,
                )
                seconds = time.perf_counter() - started
                assert report["written"] == args.fresh and report["failed"] == 0, report
                e2e.append([round_no, label, args.fresh, round(seconds, 1), round(args.fresh / seconds, 1), load()])
                print(e2e[-1], flush=True)
        with_status(False)
    text = "\n".join(
        [
            *lines,
            "",
            markdown_table(["round", "what", "search", "first page s", "next page s", "load"], rows),
            "",
            markdown_table(["round", "sync end to end (tagged)", "responses", "seconds", "responses/s", "load"], e2e),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
