"""How soon after a write on the server is our Observation searchable, with `serve` running?

Starts `alliance-fhir serve` on a free loopback port against a running HAPI (BENCH_HAPI_PORT,
default 8105), then writes SRS responses (1) one by one at a steady rate and (2) as one
transaction burst, and polls until each response's score Observation is searchable. Prints
p50/p95/max latency from the server's write to the Observation, the burst drain rate, and the
harness's subscription interval next to them. Figures, not assertions.

    python -m benchmarks.bench_serve [--steady N] [--rate PER_S] [--burst N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from alliance_fhir.server.state import StateStore

from ._serve_process import free_port, wait_healthy

IDENT = "http://alliance-fhir.org/fhir/sid/score-observation|"
SECRET = "bench-serve-secret-0123456789abcdef"


def srs(patient: str, rid: str, last: float) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs",
        "subject": {"reference": patient},
        "authored": "2026-11-02T11:00:00Z",
        "item": [{"linkId": str(n), "answer": [{"valueDecimal": v}]} for n, v in enumerate((9.0, 9.0, 9.0, last), 1)],
    }


def transaction(http: httpx.Client, base: str, resources: list[dict]) -> None:
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
    ]
    answer = http.post(
        base,
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers={"Content-Type": "application/fhir+json"},
    )
    answer.raise_for_status()


def scored(http: httpx.Client, base: str, patient: str) -> set[str]:
    found: set[str] = set()
    url: str | None = f"{base}/Observation?subject={patient}&identifier={IDENT}&_elements=derivedFrom&_count=500"
    while url:
        page = http.get(url, headers={"Cache-Control": "no-cache"}).json()
        found |= {e["resource"]["derivedFrom"][0]["reference"].split("/")[1] for e in page.get("entry", [])}
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return found


def metric(serve_url: str, name: str) -> float:
    """The sum of one metric's samples on serve's /metrics (0 when absent)."""
    text = httpx.get(f"{serve_url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steady", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2.0, help="steady writes per second")
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    port = os.environ.get("BENCH_HAPI_PORT", "8105")
    base = f"http://127.0.0.1:{port}/fhir"
    http = httpx.Client(timeout=120)
    http.get(f"{base}/metadata").raise_for_status()
    serve_port = free_port()
    state = Path(tempfile.mkdtemp()) / "state.sqlite"
    serve_log = state.with_name("serve.log")
    # the start catch-up covers only what is new, not earlier runs' responses (sync re-reads 300 s before its checkpoint)
    with StateStore(state) as store:
        store.set_checkpoint(base, (datetime.now(UTC) + timedelta(seconds=300)).isoformat(timespec="seconds"))
    env = {**os.environ, "ALLIANCE_FHIR_WEBHOOK_SECRET": SECRET}
    subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "publish", "--server", base], env=env, capture_output=True, check=True
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alliance_fhir",
            "serve",
            "--server",
            base,
            "--port",
            str(serve_port),
            "--state",
            str(state),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=serve_log.open("wb"),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{serve_port}")
        catch_up_deadline = time.monotonic() + 240
        while (
            time.monotonic() < catch_up_deadline
        ):  # the start catch-up (a fresh state re-reads the server) must end first
            if httpx.get(f"http://127.0.0.1:{serve_port}/healthz", timeout=30).json().get("last_sync"):
                break
            time.sleep(0.5)
        time.sleep(3)  # Subscription activation
        run = uuid.uuid4().hex[:8]
        # steady
        patient = f"Patient/bench-steady-{run}"
        transaction(http, base, [{"resourceType": "Patient", "id": patient.split("/")[1]}])
        latencies: list[float] = []
        for i in range(args.steady):
            rid = f"bs-{run}-{i}"
            started = time.monotonic()
            transaction(http, base, [srs(patient, rid, float(i % 10))])
            while rid not in scored(http, base, patient):
                if time.monotonic() - started > 60:
                    break
                time.sleep(0.05)
            latencies.append(time.monotonic() - started)
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
        # burst
        burst_patient = f"Patient/bench-burst-{run}"
        resources = [{"resourceType": "Patient", "id": burst_patient.split("/")[1]}]
        resources += [srs(burst_patient, f"bb-{run}-{i}", float(i % 10)) for i in range(args.burst)]
        serve_url = f"http://127.0.0.1:{serve_port}"
        received_name = "alliance_fhir_notifications_received_total"
        received_before, delivered_at = metric(serve_url, received_name), float("nan")
        started = time.monotonic()
        transaction(http, base, resources)
        written = time.monotonic()
        first_all: dict[str, float] = {}
        while len(first_all) < args.burst and time.monotonic() - written < 300:
            now = time.monotonic()
            for rid in scored(http, base, burst_patient) - set(first_all):
                first_all[rid] = now - written
            if delivered_at != delivered_at and metric(serve_url, received_name) - received_before >= args.burst:
                delivered_at = time.monotonic() - written  # HAPI's share: the last notification had arrived
            time.sleep(0.2)
        drained = max(first_all.values()) if first_all else float("nan")
        load = os.getloadavg()
        print(
            f"subscription interval (harness): {os.environ.get('HAPI_SUBSCRIPTION_INTERVAL_MS', '1000')} ms; load {load[0]:.2f}"
        )
        print(
            f"steady {args.steady} writes at {args.rate}/s: write -> Observation searchable p50 {statistics.median(latencies):.2f} s, "
            f"p95 {percentile(latencies, 0.95):.2f} s, max {max(latencies):.2f} s"
        )
        burst = list(first_all.values())
        print(
            f"burst: one transaction of {args.burst} (took {written - started:.2f} s): {len(first_all)}/{args.burst} scored; "
            f"p50 {statistics.median(burst):.2f} s, p95 {percentile(burst, 0.95):.2f} s, max {drained:.2f} s; "
            f"drain rate {len(first_all) / drained:.0f} responses/s; HAPI had sent all {args.burst} notifications "
            f"after {delivered_at:.2f} s"
        )
        refused = {
            line.split('"')[1]: float(line.split()[-1])
            for line in httpx.get(f"{serve_url}/metrics", timeout=10).text.splitlines()
            if line.startswith("alliance_fhir_notifications_refused_total{")
        }
        print(
            f"notifications received {metric(serve_url, received_name) - received_before:.0f} during the burst, "
            f"refused {refused or 0} in all; serve's log: {serve_log}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        subprocess.run(
            [sys.executable, "-m", "alliance_fhir", "subscribe", "--server", base, "--remove"],
            env=env,
            capture_output=True,
        )


if __name__ == "__main__":
    main()
