"""Sync throughput against a real HAPI FHIR server, next to the server's ingest ceiling and a naive client.

(a) ``alliance-fhir sync`` with its defaults (library call: run_sync).
(b) the ingest ceiling: the same, pre-built Observations posted as transaction Bundles of
    conditional updates, at the best batch size x concurrency of a small grid.
(c) the naive client: one search page at a time, one POST per Observation, sequential.
Then a no-op re-sync (requests and seconds), and the peak RSS of ``alliance-fhir sync`` in a
subprocess for N and for a large N (flat memory is the claim).

Usage: python -m benchmarks.bench_sync [--quick] [--n 10000] [--large 100000] [--server URL] [--out FILE]
                                      [--db h2|postgres|h2,postgres] [--rounds K] [--latency-ms 0,20,50,100]
Without --server it starts its own local HAPI (hapi/ctl.sh, port $BENCH_HAPI_PORT or 8092, empty
database) on each database of --db in turn (H2, or PostgreSQL in a local cluster of our own),
alternating them --rounds times so that both meet the same machine load.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any

from alliance_fhir import build_observation, content_resources, load_catalog, score_response
from alliance_fhir._ids import IDENTIFIER_SYSTEM
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.server.transactions import put_by_id_bundles

from ._latency_proxy import LatencyProxy
from ._report import alternating_order, machine_info, markdown_table, ratio_summary, write_json

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
CS = "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir"
WAI = ["seldom", "sometimes", "fairly-often", "very-often", "always"]


def responses(prefix: str, n: int) -> list[dict[str, Any]]:
    """n responses, WAI-SR and SRS alternating, 100 per patient (patients listed first)."""
    out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": f"{prefix}-p{k}"} for k in range((n + 99) // 100)]
    for i in range(n):
        patient = {"reference": f"Patient/{prefix}-p{i // 100}"}
        base = {
            "resourceType": "QuestionnaireResponse",
            "id": f"{prefix}-{i}",
            "status": "completed",
            "subject": patient,
            "authored": "2026-11-01T10:00:00Z",
        }
        if i % 2:
            items = [
                {"linkId": str(k), "answer": [{"valueDecimal": round(5 + (i * k) % 50 / 10, 1)}]} for k in range(1, 5)
            ]
            out.append(
                {**base, "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0", "item": items}
            )
        else:
            items = [
                {"linkId": str(k), "answer": [{"valueCoding": {"system": CS, "code": f"wai-sr-{WAI[(i + k) % 5]}"}}]}
                for k in range(1, 13)
            ]
            out.append(
                {**base, "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr|1.0.0", "item": items}
            )
    return out


def put_all(base: str, resources: list[dict[str, Any]], batch: int = 200, workers: int = 1) -> float:
    """PUT resources by id in transactions; the patients go first so references resolve.

    One transaction at a time: concurrent client-id creates made HAPI 8.8 roll back (HTTP 500, HAPI-2223).
    """
    started = time.perf_counter()
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    rest = [r for r in resources if r["resourceType"] != "Patient"]
    with FhirClient(ServerConfig(url=base, timeout=300)) as c:
        for group in (patients, rest):
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda b: c.transaction(b, idempotent=True), put_by_id_bundles(group, batch)))
    return time.perf_counter() - started


def sync_run(base: str, state: Path, options: SyncOptions | None = None, **settings: Any) -> dict[str, Any]:
    with FhirClient(ServerConfig(url=base, timeout=300, **settings)) as c, StateStore(state) as store:
        report = run_sync(c, CATALOG, store, options or SyncOptions())
    return report.as_dict()


def prebuilt_observations(prefix: str, n: int, salt: str) -> list[dict[str, Any]]:
    """The Observations sync would write for these responses, under fresh identifiers (so each is a create)."""
    out = []
    for r in responses(prefix, n):
        if r["resourceType"] != "QuestionnaireResponse":
            continue
        obs = build_observation(score_response(r, CATALOG), r)
        obs["identifier"][0]["value"] = str(uuid.uuid5(uuid.NAMESPACE_URL, salt + obs["identifier"][0]["value"]))
        out.append(obs)
    return out


def ingest(base: str, observations: list[dict[str, Any]], batch: int, workers: int) -> float:
    entries = [
        {
            "resource": o,
            "request": {
                "method": "PUT",
                "url": f"Observation?identifier={IDENTIFIER_SYSTEM}|{o['identifier'][0]['value']}",
            },
        }
        for o in observations
    ]
    bundles = [
        {"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + batch]}
        for i in range(0, len(entries), batch)
    ]
    with FhirClient(ServerConfig(url=base, timeout=300, concurrency=workers)) as c:
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda b: c.transaction(b, idempotent=True), bundles))
        return time.perf_counter() - started


def naive(base: str, prefix: str, count: int = 20, limit: int | None = None) -> tuple[int, float]:
    """One page at a time, one plain POST per Observation, nothing in parallel (the first ``limit`` responses)."""
    started = time.perf_counter()
    written = 0
    with FhirClient(ServerConfig(url=base, timeout=300)) as c:
        params = {
            "_count": str(count),
            "status": "completed",
            # Plain canonicals, as sync sends them: HAPI pages `url|version` searches ~4x slower.
            "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr,http://alliance-fhir.org/fhir/Questionnaire/srs",
            "_tag": f"urn:bench|{prefix}",
        }
        for r in c.search("QuestionnaireResponse", params):
            obs = build_observation(score_response(r, CATALOG), r)
            obs["identifier"][0]["value"] = "naive-" + obs["identifier"][0]["value"]
            c.request("POST", "Observation", json=obs)
            written += 1
            if limit is not None and written >= limit:
                break
    return written, time.perf_counter() - started


def tagged(resources: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [{**r, "meta": {"tag": [{"system": "urn:bench", "code": tag}]}} for r in resources]


# Peak RSS is the kernel's high-water mark of the probe's own address space (VmHWM, Linux).
# Not ru_maxrss: on Linux it survives the (v)fork + exec that starts the probe, so a benchmark
# parent holding 100,000 generated responses (~1 GiB) was once reported as sync's peak.
_RSS_PROBE = (
    "import os, resource, sys\n"
    "from alliance_fhir.cli.main import app\n"
    "try:\n    app(sys.argv[1:], prog_name='alliance-fhir')\n"
    "except SystemExit:\n    pass\n"
    "status = open('/proc/self/status').read().splitlines() if os.path.exists('/proc/self/status') else []\n"
    "hwm = [int(line.split()[1]) for line in status if line.startswith('VmHWM:')]\n"
    "print('peak_rss_kib', hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def rss_of_sync(base: str, n_label: str) -> dict[str, Any]:
    """Peak RSS (MiB) of a full `alliance-fhir sync` with a fresh state file, reported by the process itself."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALLIANCE_FHIR_STATE_DB": str(Path(tmp) / "s.sqlite")}
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, "sync", "--server", base, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    peak_kib = next((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("peak_rss_kib")), 0)
    summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return {
        "label": n_label,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "found": summary.get("found"),
        "written": summary.get("written"),
        "seconds": summary.get("seconds"),
    }


def latency_runs(base: str, delays_ms: list[int], n: int) -> list[dict[str, Any]]:
    """(a) and (c) through a proxy that adds each delay to every request, on n fresh responses per run.

    Loopback hides what batching is for: a real EHR is a network round trip away, and the naive
    client pays that round trip once per Observation while sync pays it once per page or batch.
    """
    rows = []
    for delay in delays_ms:
        row: dict[str, Any] = {"delay_ms": delay, "n": n}
        for variant in ("a_sync", "c_naive"):
            prefix = f"t{uuid.uuid4().hex[:6]}"
            put_all(base, tagged(responses(prefix, n), prefix))
            with LatencyProxy(base, delay / 1000) as proxy, tempfile.TemporaryDirectory() as tmp:
                if variant == "a_sync":
                    result = sync_run(
                        proxy.url, Path(tmp) / "s.sqlite", SyncOptions(tag={"system": "urn:bench", "code": prefix})
                    )
                    done, seconds = result["written"], result["seconds"]
                else:
                    # Pages of 200 like sync's, so the difference is the writes alone.
                    done, seconds = naive(proxy.url, prefix, count=200)
                row[variant] = {
                    "written": done,
                    "seconds": round(seconds, 2),
                    "per_s": round(done / seconds, 1),
                    "requests": proxy.requests,
                }
        row["a_over_c"] = round(row["a_sync"]["per_s"] / row["c_naive"]["per_s"], 2)
        rows.append(row)
    return rows


def latency_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        [
            "added delay per request",
            "(a) sync responses/s",
            "(a) requests",
            "(c) naive responses/s",
            "(c) requests",
            "a/c",
        ],
        [
            (
                f"{r['delay_ms']} ms",
                f"{r['a_sync']['per_s']:,.0f}",
                r["a_sync"]["requests"],
                f"{r['c_naive']['per_s']:,.0f}",
                r["c_naive"]["requests"],
                f"{r['a_over_c']:.1f}",
            )
            for r in rows
        ],
    )


def start_server(port: str, db: str = "h2") -> str:
    """A fresh local HAPI with the full JIT (the harness's default C1-only flags favour boot time)."""
    env = {
        **os.environ,
        "HAPI_PORT": port,
        "HAPI_FRESH": "1",
        "HAPI_JAVA_OPTS": os.environ.get("HAPI_JAVA_OPTS", "-Xms512m -Xmx1536m -XX:+UseParallelGC -Xss1m"),
    }
    env["HAPI_DB"] = "postgres" if db == "postgres" else "file"
    stop_server(port)
    # ctl.sh's reason for a failed start goes to stderr: let it through, not captured.
    proc = subprocess.run(
        ["bash", str(ROOT / "hapi" / "ctl.sh"), "start"], env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


def stop_server(port: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "hapi" / "ctl.sh"), "stop"],
        env={**os.environ, "HAPI_PORT": port},
        capture_output=True,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N for a CI smoke run (well under 2 minutes)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000, help="N for the second RSS measurement (0: skip)")
    parser.add_argument(
        "--server", help="an existing FHIR server (default: start a local HAPI on $BENCH_HAPI_PORT, 8092, per --db)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sync.json")
    parser.add_argument(
        "--rss-only", type=int, metavar="N", help="only post N more responses and measure sync's peak RSS"
    )
    parser.add_argument(
        "--latency-ms", help="only compare (a) and (c) through a proxy adding these delays, e.g. 0,20,50,100"
    )
    parser.add_argument("--latency-n", type=int, default=2000, help="responses per --latency-ms run")
    parser.add_argument("--grid-n", type=int, default=1000, help="Observations per cell of the ingest grid")
    parser.add_argument(
        "--naive-n", type=int, help="responses the naive client (c) writes (default: all N; its rate is per request)"
    )
    parser.add_argument(
        "--db", default="h2", help="HAPI's database(s) when we start HAPI: h2, postgres, or h2,postgres (alternated)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with several --db: how many times to alternate them")
    parser.add_argument(
        "--sets", type=int, default=4, help="(a) and (b) each run on this many fresh tagged sets of N/sets, alternating"
    )
    args = parser.parse_args()
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    if not dbs or any(d not in ("h2", "postgres") for d in dbs):
        parser.error("--db takes h2, postgres or h2,postgres")
    if args.sets < 1:
        parser.error("--sets takes a positive count")
    if args.server:
        run_one(args, args.server, args.out)
        return
    port = os.environ.get("BENCH_HAPI_PORT", "8092")
    summary: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        for db in dbs:
            out = (
                args.out
                if len(dbs) == 1 and args.rounds == 1
                else args.out.with_name(f"{args.out.stem}-{db}-{round_no}{args.out.suffix}")
            )
            print(f"== HAPI on {db} (round {round_no}); load {os.getloadavg()[0]:.1f}", flush=True)
            boot = time.perf_counter()
            base = start_server(port, db)
            try:
                print(f"boot {time.perf_counter() - boot:.0f} s", flush=True)
                result = run_one(args, base, out)
                summary.append({"db": db, "round": round_no, **result})
            finally:
                stop_server(port)  # the server this run started, and only that one
    if len(summary) > 1:
        print(summary_table(summary))
        write_json(
            args.out.with_name(f"{args.out.stem}-summary{args.out.suffix}"),
            {"machine": machine_info(["alliance-fhir", "httpx"]), "runs": summary},
        )


def run_one(args: argparse.Namespace, base: str, out: Path) -> dict[str, Any]:
    """One mode (latency, RSS only, or the full comparison) on one server; the headline figures."""
    load_before = os.getloadavg()[0]
    if args.latency_ms:
        with FhirClient(ServerConfig(url=base)) as c:
            publish_resources(c, content_resources(CATALOG))
        rows = latency_runs(base, [int(d) for d in args.latency_ms.split(",")], args.latency_n)
        write_json(out, {"machine": machine_info(["alliance-fhir", "httpx"]), "latency": rows})
        print(latency_table(rows))
        return {"latency": rows, "load": [load_before, os.getloadavg()[0]]}
    if args.rss_only:
        big = f"L{uuid.uuid4().hex[:6]}"
        posted = put_all(base, tagged(responses(big, args.rss_only), big))
        result = rss_of_sync(base, f"{args.rss_only} new + what the server held")
        write_json(out, {"machine": machine_info(["alliance-fhir"]), "post_seconds": round(posted, 1), "rss": result})
        print(
            markdown_table(
                ["sync of", "peak RSS (MiB)", "found", "seconds"],
                [(result["label"], result["peak_rss_mib"], result["found"], result["seconds"])],
            )
        )
        return {"rss": result, "load": [load_before, os.getloadavg()[0]]}
    results = measure(
        base,
        out,
        n=300 if args.quick else args.n,
        large=0 if args.quick else args.large,
        grid_n=100 if args.quick else args.grid_n,
        naive_n=args.naive_n,
        sets=2 if args.quick else args.sets,
    )
    return {
        "a_per_s": median([s["a_per_s"] for s in results["sets_a_b"]]),
        "b_per_s": median([s["b_per_s"] for s in results["sets_a_b"]]),
        "c_per_s": results["c_naive"]["per_s"],
        **results["ratios"],
        "noop_requests": results["noop_resync"]["requests"],
        "pages": results["noop_resync_all_pages"]["pages"],
        "peak_rss_mib": max(x["peak_rss_mib"] for x in results["rss"]),
        "load": [load_before, os.getloadavg()[0]],
    }


def summary_table(runs: list[dict[str, Any]]) -> str:
    if "a_per_s" not in runs[0]:
        return ""
    return markdown_table(
        [
            "HAPI on",
            "round",
            "(a) sync /s",
            "(b) ceiling /s",
            "(c) naive /s",
            "a/b",
            "a/c",
            "no-op requests (pages)",
            "peak RSS MiB",
            "load 1-min",
        ],
        [
            (
                r["db"],
                r["round"],
                f"{r['a_per_s']:,.0f}",
                f"{r['b_per_s']:,.0f}",
                f"{r['c_per_s']:,.0f}",
                f"{r['a_over_b']:.2f}",
                f"{r['a_over_c']:.1f}",
                f"{r['noop_requests']} ({r['pages']})",
                r["peak_rss_mib"],
                f"{r['load'][0]:.1f}-{r['load'][1]:.1f}",
            )
            for r in runs
        ],
    )


def measure(
    base: str, out: Path, *, n: int, large: int, grid_n: int, naive_n: int | None = None, sets: int = 4
) -> dict[str, Any]:
    """The full comparison on ``base``: grid, (a) against (b) in alternating sets, no-op re-sync, (c), RSS.

    (a) and (b) compare like with like: each set is n/sets fresh responses under a tag of their
    own, (a) syncs only that tag (so a server that already holds responses adds nothing to it)
    and (b) creates the same set's Observations under fresh identifiers; both write creates.
    The two run in turn, AB BA AB ..., so both meet the same drift of machine and server load.
    """
    with FhirClient(ServerConfig(url=base)) as c:
        publish_resources(c, content_resources(CATALOG))
    results: dict[str, Any] = {
        "machine": machine_info(["alliance-fhir", "httpx"]),
        "server": base,
        "n": n,
        "sets": sets,
    }
    prefix = f"b{uuid.uuid4().hex[:6]}"
    results["post_seconds"] = round(put_all(base, tagged(responses(prefix, n), prefix)), 2)
    # The grid first: it also warms the server's JIT, so (a), (b) and (c) all meet a warm server.
    grid = []
    for batch in (25, 50, 100, 200):
        for workers in (1, 2, 4, 8):
            obs = prebuilt_observations(prefix, grid_n, f"grid-{batch}-{workers}-")
            seconds = ingest(base, obs, batch, workers)
            grid.append({"batch": batch, "concurrency": workers, "per_s": round(len(obs) / seconds, 1)})
    results["grid"] = grid
    best = max(grid, key=lambda g: g["per_s"])
    results["grid_best"] = {"batch": best["batch"], "concurrency": best["concurrency"]}
    with tempfile.TemporaryDirectory() as tmp:
        results["sets_a_b"] = [
            one_set(base, Path(tmp) / f"s{k}.sqlite", max(1, n // sets), order, best)
            for k, order in enumerate(alternating_order(sets))
        ]
        last_state = Path(tmp) / f"s{sets - 1}.sqlite"
        last_tag = {"system": "urn:bench", "code": results["sets_a_b"][-1]["tag"]}
        noop = sync_run(base, last_state, SyncOptions(tag=last_tag))
        # The worst case: an overlap window that reaches back past every response, so each page is
        # read again (the target is 2 requests + 1 per page); a scheduled run reads only new ones.
        full = sync_run(base, last_state, SyncOptions(tag=last_tag), overlap_seconds=10 * 86400)
    results["noop_resync"] = {"requests": noop["requests"], "seconds": noop["seconds"], "written": noop["written"]}
    results["noop_resync_all_pages"] = {
        "requests": full["requests"],
        "seconds": full["seconds"],
        "written": full["written"],
        "read": full["unchanged"],
        "pages": -(-full["unchanged"] // 200),
    }
    naive_n, naive_s = naive(base, prefix, limit=naive_n)
    results["c_naive"] = {"written": naive_n, "seconds": round(naive_s, 3), "per_s": round(naive_n / naive_s, 1)}
    results["rss"] = [rss_of_sync(base, f"{n} (already synced: reads + ledger)")]
    if large:
        big = f"L{uuid.uuid4().hex[:6]}"
        results["post_large_seconds"] = round(put_all(base, tagged(responses(big, large), big)), 2)
        results["rss"].append(rss_of_sync(base, f"{large} new + {n} known"))
    a_over_b = ratio_summary([(s["a_per_s"], s["b_per_s"]) for s in results["sets_a_b"]])
    a_rates = sorted(s["a_per_s"] for s in results["sets_a_b"])
    a_rate = a_rates[len(a_rates) // 2]
    results["ratios"] = {
        "a_over_b": a_over_b["median"],
        "a_over_b_per_set": a_over_b["per_set"],
        "a_over_c": round(a_rate / results["c_naive"]["per_s"], 2),
    }
    write_json(out, results)
    print(report(results, a_rate), flush=True)
    return results


def one_set(base: str, state: Path, size: int, order: tuple[str, str], best: dict[str, Any]) -> dict[str, Any]:
    """One set of fresh responses under its own tag: (a) sync of that tag and (b) the ceiling, in ``order``."""
    tag = f"s{uuid.uuid4().hex[:6]}"
    put_all(base, tagged(responses(tag, size), tag))
    row: dict[str, Any] = {"tag": tag, "size": size, "order": "".join(order)}
    for variant in order:
        if variant == "a":
            a = sync_run(base, state, SyncOptions(tag={"system": "urn:bench", "code": tag}))
            if a["found"] != size or a["written"] != size:
                raise SystemExit(
                    f"error: (a) found {a['found']} and wrote {a['written']} of the set's {size} responses"
                )
            row["a_seconds"], row["a_per_s"] = round(a["seconds"], 3), round(size / a["seconds"], 1)
        else:
            observations = prebuilt_observations(tag, size, "ceiling-")
            seconds = ingest(base, observations, int(best["batch"]), int(best["concurrency"]))
            row["b_seconds"], row["b_per_s"] = round(seconds, 3), round(len(observations) / seconds, 1)
    row["a_over_b"] = round(row["a_per_s"] / row["b_per_s"], 3)
    return row


def report(r: dict[str, Any], a_rate: float) -> str:
    sets = r["sets_a_b"]
    rows = [
        (
            f"(a) alliance-fhir sync, defaults (concurrency 4, batch 50, page 200), median of {len(sets)} sets",
            sets[0]["size"],
            f"{median([s['a_seconds'] for s in sets]):.2f}",
            f"{a_rate:,.0f}",
        ),
        (
            f"(b) ingest ceiling, batch {r['grid_best']['batch']} x {r['grid_best']['concurrency']} in flight, median of {len(sets)} sets",
            sets[0]["size"],
            f"{median([s['b_seconds'] for s in sets]):.2f}",
            f"{median([s['b_per_s'] for s in sets]):,.0f}",
        ),
        (
            "(c) naive: page by page, one POST per Observation",
            r["c_naive"]["written"],
            f"{r['c_naive']['seconds']:.2f}",
            f"{r['c_naive']['per_s']:,.0f}",
        ),
    ]
    text = [markdown_table(["variant", "responses", "seconds", "responses/s"], rows), ""]
    text.append(
        markdown_table(
            ["set", "order", "responses", "(a) /s", "(b) /s", "a/b"],
            [
                (
                    k + 1,
                    s["order"].upper(),
                    s["size"],
                    f"{s['a_per_s']:,.0f}",
                    f"{s['b_per_s']:,.0f}",
                    f"{s['a_over_b']:.2f}",
                )
                for k, s in enumerate(sets)
            ],
        )
    )
    text.append("")
    text.append(
        f"a/b = {r['ratios']['a_over_b']:.2f} median of the sets (target >= 0.80); "
        f"a/c = {r['ratios']['a_over_c']:.1f} (target >= 10)"
    )
    text.append(
        f"no-op re-sync: {r['noop_resync']['requests']} requests, {r['noop_resync']['seconds']:.2f} s, {r['noop_resync']['written']} written"
    )
    full = r["noop_resync_all_pages"]
    text.append(
        f"no-op re-sync reading every page again: {full['requests']} requests for {full['pages']} pages "
        f"(target <= {2 + full['pages']}), {full['seconds']:.2f} s, {full['written']} written"
    )
    text.append("")
    text.append(
        markdown_table(
            ["batch", "in flight", "Observations/s"],
            [(g["batch"], g["concurrency"], f"{g['per_s']:,.0f}") for g in r["grid"]],
        )
    )
    text.append("")
    text.append(
        markdown_table(
            ["sync of", "peak RSS (MiB)", "found", "seconds"],
            [(x["label"], x["peak_rss_mib"], x["found"], x["seconds"]) for x in r["rss"]],
        )
    )
    return "\n".join(text)


if __name__ == "__main__":
    main()
