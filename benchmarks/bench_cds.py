"""How fast does the CDS Hooks ``patient-view`` hook answer, with and without prefetch?

Posts the demo caseload to a running HAPI (BENCH_HAPI_PORT, default 8101) and syncs it
(``alliance-fhir demo``), starts ``alliance-fhir serve --no-subscribe`` on a free loopback port
with a demo CDS client, then times signed hook calls from request to parsed answer for three
demo clients (rupture: 5 WAI-SR sessions; couple member: 3 SRS sessions; steady: 6 SRS + 6 ORS).
The two variants alternate call by call (interleaved, so the shared machine's noise falls on
both): **prefetch** (the EHR sends the scores; no FHIR round trip) and **fetch** (the service
reads HAPI with its own client). Tokens are minted before the clock starts (signing is the
EHR's cost). Then the same under load: ``--concurrency`` callers at once. Prints p50/p95/max
per variant, their ratio, the goal (p95 < 300 ms) and the machine's load average. Figures, not
assertions.

    python -m benchmarks.bench_cds [--calls N] [--concurrency C]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from alliance_fhir.service.cds import SERVICE_ID
from alliance_fhir.service.cds_demo import DEMO_ISSUER, DEMO_KID, mint_token, write_demo_client

from ._serve_process import free_port, wait_healthy

PATIENTS = ("afdemo-rupture", "afdemo-couple-b", "afdemo-steady")
GOAL_P95_MS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="calls per variant, one caller (default 150)")
    parser.add_argument("--concurrency", type=int, default=8, help="callers at once in the loaded phase (default 8)")
    args = parser.parse_args()
    fhir = f"http://127.0.0.1:{os.environ.get('BENCH_HAPI_PORT', '8101')}/fhir"
    with tempfile.TemporaryDirectory(prefix="bench-cds-") as folder:
        env = {
            **os.environ,
            "XDG_DATA_HOME": folder,
            "ALLIANCE_FHIR_WEBHOOK_SECRET": "bench-cds-secret-0123456789abcdef",
        }
        _run([sys.executable, "-m", "alliance_fhir", "demo", "--server", fhir, "--state", f"{folder}/demo.db"], env)
        files = write_demo_client(Path(folder) / "cds", fhir)
        port = free_port()
        log = open(f"{folder}/serve.log", "wb")  # noqa: SIM115 (closed after the process)
        serve = subprocess.Popen(
            [sys.executable, "-m", "alliance_fhir", "serve", "--config", str(files.config), "--no-subscribe"]
            + ["--port", str(port), "--state", f"{folder}/serve.db"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base)
            aud = f"{base}/cds-services/{SERVICE_ID}"
            prefetch = {p: _prefetch(base, fhir, p) for p in PATIENTS}
            mint = lambda: mint_token(files.key, issuer=DEMO_ISSUER, kid=DEMO_KID, audience=aud)  # noqa: E731
            with httpx.Client(timeout=30) as http:
                for patient in PATIENTS:  # warm-up: first calls import and connect
                    for pf in (prefetch[patient], None):
                        _call(http, aud, fhir, patient, pf, mint())
                load_before = os.getloadavg()
                sequential = _interleaved(http, aud, fhir, prefetch, mint, args.calls)
            loaded = _loaded(aud, fhir, prefetch, mint, args.calls, args.concurrency)
            load_after = os.getloadavg()
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)
            log.close()
    print(f"CDS Hooks patient-view on {fhir} (HAPI), {args.calls} calls per variant, patients {', '.join(PATIENTS)}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min; {os.cpu_count()} cores)")
    _report("one caller", sequential)
    _report(f"{args.concurrency} callers at once", loaded)
    return 0


def _interleaved(
    http: httpx.Client, aud: str, fhir: str, prefetch: dict[str, Any], mint: Any, calls: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"prefetch": [], "fetch": []}
    tokens = [mint() for _ in range(2 * calls)]
    for n in range(calls):
        patient = PATIENTS[n % len(PATIENTS)]
        order = ("prefetch", "fetch") if n % 2 == 0 else ("fetch", "prefetch")
        for variant in order:
            pf = prefetch[patient] if variant == "prefetch" else None
            times[variant].append(_call(http, aud, fhir, patient, pf, tokens.pop()))
    return times


def _loaded(
    aud: str, fhir: str, prefetch: dict[str, Any], mint: Any, calls: int, concurrency: int
) -> dict[str, list[float]]:
    jobs = [(PATIENTS[n % len(PATIENTS)], v, mint()) for n in range(calls) for v in ("prefetch", "fetch")]
    times: dict[str, list[float]] = {"prefetch": [], "fetch": []}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:

        def one(job: tuple[str, str, str]) -> tuple[str, float]:
            patient, variant, token = job
            pf = prefetch[patient] if variant == "prefetch" else None
            return variant, _call(http, aud, fhir, patient, pf, token)

        with ThreadPoolExecutor(concurrency) as pool:
            for variant, ms in pool.map(one, jobs):
                times[variant].append(ms)
    return times


def _call(http: httpx.Client, aud: str, fhir: str, patient: str, prefetch: dict[str, Any] | None, token: str) -> float:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir,
        "context": {"userId": "Practitioner/afdemo-t1", "patientId": patient},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    started = time.perf_counter()
    answer = http.post(aud, json=body, headers={"Authorization": f"Bearer {token}"})
    cards = answer.json()["cards"] if answer.status_code == 200 else None
    elapsed = (time.perf_counter() - started) * 1000
    if cards is None:
        raise SystemExit(f"hook answered {answer.status_code} for {patient}")
    return elapsed


def _prefetch(base: str, fhir: str, patient: str) -> dict[str, Any]:
    templates = httpx.get(f"{base}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    out = {}
    for key, template in templates.items():
        page = httpx.get(f"{fhir}/{template.replace('{{context.patientId}}', patient)}", timeout=30)
        page.raise_for_status()
        out[key] = page.json()
    return out


def _report(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}:")
    print(f"  {'variant':<10} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  goal p95 < {GOAL_P95_MS:.0f} ms")
    p95: dict[str, float] = {}
    for variant, values in times.items():
        values = sorted(values)
        p50, p95[variant] = statistics.median(values), values[max(0, int(0.95 * len(values)) - 1)]
        met = "met" if p95[variant] < GOAL_P95_MS else "MISSED"
        print(f"  {variant:<10} {len(values):>5} {p50:>8.1f} {p95[variant]:>8.1f} {values[-1]:>8.1f}  {met}")
    print(f"  fetch / prefetch p95: {p95['fetch'] / p95['prefetch']:.1f}x")


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:4])} failed: {done.stderr[-1000:]}")


if __name__ == "__main__":
    sys.exit(main())
