"""Back-fill through Bulk Data $export against a real HAPI, next to paging ``sync`` on the same data.

Loads N responses (WAI-SR and SRS alternating, as bench_sync), then runs, interleaved so that
both meet the same machine load, each with a fresh state file (an empty ledger, so both write
every Observation):

(s) ``alliance-fhir sync`` (paging search, verified transactions);
(b) ``alliance-fhir backfill`` ($export, streamed NDJSON, the same transactions and ledger).

The first run creates the Observations; later runs rewrite them (HAPI's conditional update of an
identical resource): compare runs of the same kind. Each command runs as its own process and
reports its peak RSS (VmHWM). Also: the in-process scoring rate (score + Observation, one core)
on the same responses, to show where the ceiling is (the server's writes, not our scoring).

Usage: python -m benchmarks.bench_backfill [--n 100000] [--rounds 1] [--server URL] [--db h2|postgres]
Without --server it starts its own local HAPI on $BENCH_HAPI_PORT (default 8092), empty database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from alliance_fhir import build_observation, score_response

from ._report import machine_info, markdown_table, write_json
from .bench_sync import _RSS_PROBE, CATALOG, ROOT, put_all, responses, start_server, stop_server

__all__ = ["main"]


def server_now(base: str) -> str:
    """The server's clock (HAPI stamps searchsets), so --since selects exactly what we load."""
    import httpx

    page = httpx.get(f"{base}/Patient", params={"_summary": "count"}, headers={"Cache-Control": "no-cache"}).json()
    time.sleep(1.0)
    return str(page["meta"]["lastUpdated"])


def run_cli(base: str, command: list[str]) -> dict[str, Any]:
    """One CLI run with a fresh state file: its --json summary, wall seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALLIANCE_FHIR_STATE_DB": str(Path(tmp) / "s.sqlite")}
        load = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, *command, "--server", base, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
    peak_kib = next((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("peak_rss_kib")), 0)
    summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    if proc.returncode != 0:
        print(f"{command[0]} exited {proc.returncode}: {proc.stderr[-800:]}", file=sys.stderr)
    return {
        "command": command[0],
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "load_1min": [round(load, 1), round(os.getloadavg()[0], 1)],
        "summary": summary,
    }


def scoring_rate(resources: list[dict[str, Any]]) -> float:
    """Responses scored and turned into Observations per second, in this process (one core)."""
    qrs = [r for r in resources if r["resourceType"] == "QuestionnaireResponse"]
    started = time.process_time()
    for response in qrs:
        build_observation(score_response(response, CATALOG), response)
    return len(qrs) / (time.process_time() - started)


def row(run: dict[str, Any]) -> list[object]:
    s = run["summary"]
    responses_part = s.get("responses", s)
    written = responses_part.get("written", 0)
    export_s = s.get("export_seconds", 0.0)
    write_s = max(run["wall_s"] - export_s, 1e-9)
    return [
        run["command"],
        run["returncode"],
        written,
        run["wall_s"],
        export_s if run["command"] == "backfill" else "-",
        round(written / write_s, 1),
        round(written / run["wall_s"], 1),
        run["peak_rss_mib"],
        f"{run['load_1min'][0]}-{run['load_1min'][1]}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="how many times to alternate sync and backfill")
    parser.add_argument("--server", help="an existing FHIR server (default: start a local HAPI)")
    parser.add_argument("--db", default="h2", choices=("h2", "postgres"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backfill.json")
    args = parser.parse_args()
    port = os.environ.get("BENCH_HAPI_PORT", "8092")
    base = args.server or start_server(port, args.db)
    try:
        resources = responses(f"bf{uuid.uuid4().hex[:6]}", args.n)
        rate = scoring_rate(resources)
        since = server_now(base)
        print(f"loading {args.n} responses; load {os.getloadavg()[0]:.1f}", flush=True)
        load_s = put_all(base, resources)
        del resources
        print(f"loaded in {load_s:.0f} s ({args.n / load_s:.0f}/s)", flush=True)
        runs = []
        for _ in range(args.rounds):
            runs.append(run_cli(base, ["sync", "--since", since]))
            runs.append(run_cli(base, ["backfill", "--since", since, "--poll-interval", "1", "--max-wait", "7200"]))
            print(markdown_table(HEADERS, [row(r) for r in runs[-2:]]), flush=True)
    finally:
        if not args.server:
            stop_server(port)
    print(f"scoring (in-process, one core): {rate:.0f} responses/s")
    print(markdown_table(HEADERS, [row(r) for r in runs]))
    write_json(
        args.out,
        {
            "machine": machine_info(["alliance-fhir", "httpx"]),
            "n": args.n,
            "db": args.db,
            "load_seconds": round(load_s, 1),
            "scoring_per_s": round(rate, 1),
            "runs": runs,
        },
    )


HEADERS = (
    "command",
    "exit",
    "written",
    "wall s",
    "export s",
    "write rate /s",
    "overall /s",
    "peak RSS MiB",
    "load",
)

if __name__ == "__main__":
    main()
