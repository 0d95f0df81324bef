"""How fast does the CDS Hooks ``patient-view`` hook answer, during serve's start-up catch-up and after it?

Sizes the HAPI at BENCH_HAPI_PORT (default 8101): it must hold ``--responses`` generated SRS
responses (``_responses``; posted once, with their Patients, 10 per patient, no Encounter), plus
the demo caseload (``alliance-fhir demo``). Then starts **two** ``serve --no-subscribe`` processes
at once, each with a fresh state, so each runs a start-up catch-up sync over every response on the
server: **stored** (the default: a hook without prefetch answers from the state's stored read of
the patient while it is current) and **server** (``stored_read_max_age_seconds = 0``: every hook
without prefetch reads HAPI, as before). Four variants take turns call by call (stored/server x
prefetch/no prefetch), first with one caller, then with ``--concurrency`` callers, in two phases:

(a) **during the start-up catch-up**: calls that began and ended while both serves' first sync ran
    (``/healthz`` ``last_sync`` still null, polled every 0.2 s); calls that overlap its end are
    counted but not reported;
(b) **after the catch-up**: once both serves report ``last_sync``.

Patients: the three demo clients and nine generated ones, in turn; the first call of a patient
on a serve ("first view") always reads HAPI and is reported separately as well. Tokens are minted
before the clock starts; no warm-up call is made inside the timed part (the first calls are timed).
Prints p50/p95/max per phase, callers and variant, the goal (p95 < 300 ms), the server size and the
machine's load. Figures, not assertions.

    python -m benchmarks.bench_cds [--responses N] [--calls N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.instruments.catalog import load_catalog
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.transactions import put_by_id_bundles
from alliance_fhir.service.cds import SERVICE_ID, discovery_document
from alliance_fhir.service.cds_demo import DEMO_ISSUER, DEMO_KID, mint_token, write_demo_client

from ._responses import lines
from ._serve_process import free_port, wait_healthy

USER = "Practitioner/afdemo-t1"
DEMO_PATIENTS = ("afdemo-rupture", "afdemo-couple-b", "afdemo-steady")
PER_PATIENT = 10
GOAL_P95_MS = 300.0
SERVES = ("stored", "server")
VARIANTS = tuple(f"{s}/{p}" for s in SERVES for p in ("no prefetch", "prefetch"))


@dataclass
class Call:
    variant: str
    patient: str
    ms: float
    phase: str  # "during", "after" or "overlap"
    first_view: bool
    status: int = 200  # 412 when the hook's deadline passed while it read the server


class CatchUps:
    """Polls both serves' /healthz: when each one's start-up catch-up sync ended (monotonic time)."""

    def __init__(self, bases: dict[str, str]) -> None:
        self.bases, self.ended = bases, {name: float("inf") for name in bases}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        with httpx.Client(timeout=10) as http:
            deadline = time.monotonic() + 1800
            while not self._stop.is_set() and time.monotonic() < deadline:
                for name, base in self.bases.items():
                    try:
                        done = self.ended[name] == float("inf") and http.get(f"{base}/healthz").json().get("last_sync")
                    except httpx.HTTPError:
                        return  # the serve stopped: the bench is ending
                    if done:
                        self.ended[name] = time.monotonic()
                if all(t < float("inf") for t in self.ended.values()):
                    return
                self._stop.wait(0.2)

    def phase(self, started: float, ended: float) -> str:
        first, last = min(self.ended.values()), max(self.ended.values())
        if ended < first:
            return "during"
        return "after" if started > last else "overlap"

    def running(self) -> bool:
        return min(self.ended.values()) == float("inf")

    def wait_all(self, timeout: float) -> None:
        self._thread.join(timeout)
        if any(t == float("inf") for t in self.ended.values()):
            raise SystemExit(f"a serve's start-up catch-up did not end within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=3000, help="generated responses on the server (default 3000)")
    parser.add_argument(
        "--calls", type=int, default=24, help="calls per variant, phase and caller setting (default 24)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="callers at once in the loaded part (default 8)")
    parser.add_argument("--json", type=Path, help="also write every call to this file")
    args = parser.parse_args()
    fhir = f"http://127.0.0.1:{os.environ.get('BENCH_HAPI_PORT', '8101')}/fhir"
    seeded = _seed(fhir, args.responses)
    patients = list(DEMO_PATIENTS) + [f"bench-cds-p{k}" for k in range(0, 9 * 7, 7)]
    with tempfile.TemporaryDirectory(prefix="bench-cds-") as folder:
        env = {
            **os.environ,
            "XDG_DATA_HOME": folder,
            "ALLIANCE_FHIR_WEBHOOK_SECRET": "bench-cds-secret-0123456789abcdef",
        }
        _run([sys.executable, "-m", "alliance_fhir", "demo", "--server", fhir, "--state", f"{folder}/demo.db"], env)
        files = write_demo_client(Path(folder) / "cds", fhir)
        server_config = Path(folder) / "server-only.toml"
        text = files.config.read_text(encoding="utf-8")
        server_config.write_text(
            text.replace("[[cds.clients]]", "[cds]\nstored_read_max_age_seconds = 0\n\n[[cds.clients]]")
        )
        size = _count(fhir, "QuestionnaireResponse"), _count(fhir, "Observation")
        prefetch = {p: _prefetch(fhir, p) for p in patients}  # before the serves start: not in the timed part
        configs = {"stored": files.config, "server": server_config}
        ports = {name: free_port() for name in SERVES}
        procs, logs = {}, {}
        for name in SERVES:
            logs[name] = open(f"{folder}/serve-{name}.log", "wb")  # noqa: SIM115 (closed after the process)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "alliance_fhir", "serve", "--config", str(configs[name]), "--no-subscribe"]
                + ["--port", str(ports[name]), "--state", f"{folder}/serve-{name}.db"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=logs[name],
            )
        bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        try:
            for base in bases.values():
                wait_healthy(base)
            catch_ups = CatchUps(bases)
            started_at = time.monotonic()
            auds = {name: f"{base}/cds-services/{SERVICE_ID}" for name, base in bases.items()}
            minters = {
                name: (lambda aud=aud: mint_token(files.key, issuer=DEMO_ISSUER, kid=DEMO_KID, audience=aud))
                for name, aud in auds.items()
            }
            calls: list[Call] = []
            seen: set[tuple[str, str]] = set()
            loads: dict[str, tuple[float, float]] = {}
            for phase in ("during", "after"):
                if phase == "after":
                    catch_ups.wait_all(1800)
                    catch_up_s = {n: t - started_at for n, t in catch_ups.ended.items()}
                load_before = os.getloadavg()[0]
                for callers in (1, args.concurrency):
                    jobs = _jobs(patients, args.calls, minters, prefetch, seen)
                    calls += _timed(jobs, auds, fhir, callers, catch_ups)
                loads[phase] = (load_before, os.getloadavg()[0])
                if phase == "during" and not catch_ups.running():
                    print("note: a catch-up ended while phase (a) was timed; its later calls are not in (a)")
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for name, proc in procs.items():
                proc.wait(timeout=60)
                logs[name].close()
            stored_reads = _count_in_log(Path(f"{folder}/serve-stored.log"), "from the stored read")
    if args.json:  # first: a figure is never lost to a report that fails
        args.json.write_text(json.dumps([vars(c) for c in calls], indent=1) + "\n", encoding="utf-8")
    print(
        f"CDS Hooks patient-view on {fhir} (HAPI): {size[0]} QuestionnaireResponses, {size[1]} Observations "
        f"({seeded} generated responses posted now); {os.cpu_count()} cores"
    )
    print(
        "start-up catch-up sync of each serve (fresh state, every response on the server): "
        + ", ".join(f"{n} {s:.1f} s" for n, s in catch_up_s.items())
    )
    print(f"stored serve: {stored_reads} hook(s) answered from a stored read")
    for phase, title in (("during", "(a) during the start-up catch-up"), ("after", "(b) after the catch-up")):
        print(f"\n{title}; load average {loads[phase][0]:.1f} -> {loads[phase][1]:.1f} (1 min)")
        _table([c for c in calls if c.phase == phase], args.concurrency)
    overlap = sum(1 for c in calls if c.phase == "overlap")
    print(f"\n{overlap} call(s) overlapped the end of a catch-up: in neither phase")
    return 0


def _jobs(
    patients: list[str], calls: int, minters: dict[str, Any], prefetch: dict[str, Any], seen: set[tuple[str, str]]
) -> list[tuple[str, str, Any, str, bool]]:
    """(variant, patient, prefetch or None, token, first view) in turns: each variant once per round, rotating."""
    jobs = []
    for n in range(calls):
        patient = patients[n % len(patients)]
        order = VARIANTS[n % len(VARIANTS) :] + VARIANTS[: n % len(VARIANTS)]
        for variant in order:
            serve, kind = variant.split("/")
            first = kind == "no prefetch" and (serve, patient) not in seen
            seen.add((serve, patient)) if kind == "no prefetch" else None
            jobs.append((variant, patient, prefetch[patient] if kind == "prefetch" else None, minters[serve](), first))
    return jobs


def _timed(
    jobs: list[tuple[str, str, Any, str, bool]], auds: dict[str, str], fhir: str, callers: int, catch_ups: CatchUps
) -> list[Call]:
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=2 * callers)) as http:

        def one(job: tuple[str, str, Any, str, bool]) -> Call:
            variant, patient, pf, token, first = job
            started = time.monotonic()
            ms, status = _call(http, auds[variant.split("/")[0]], fhir, patient, pf, token)
            phase = catch_ups.phase(started, time.monotonic())
            return Call(f"{variant}, {callers} caller(s)", patient, ms, phase, first, status)

        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(one, jobs))


def _call(
    http: httpx.Client, aud: str, fhir: str, patient: str, prefetch: dict[str, Any] | None, token: str
) -> tuple[float, int]:
    """(ms from request to parsed answer, status): 412 is the hook's deadline passing (counted, not fatal)."""
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir,
        "context": {"userId": USER, "patientId": patient},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    started = time.perf_counter()
    answer = http.post(aud, json=body, headers={"Authorization": f"Bearer {token}"})
    if answer.status_code == 200:
        _ = answer.json()["cards"]  # parsed: part of what is timed
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code not in (200, 412):
        raise SystemExit(f"error: hook answered {answer.status_code} for {patient}")
    return elapsed, answer.status_code


def _table(calls: list[Call], concurrency: int) -> None:
    print(
        f"| variant | n | late (412) | p50 ms | p95 ms | max ms | first views: n, max ms | repeat views p95 ms | goal p95 < {GOAL_P95_MS:.0f} ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for callers in (1, concurrency):
        for variant in VARIANTS:
            key = f"{variant}, {callers} caller(s)"
            times = sorted(c.ms for c in calls if c.variant == key)
            if not times:
                print(f"| {key} | 0 | | | | | | | (no call in this phase) |")
                continue
            firsts = [c.ms for c in calls if c.variant == key and c.first_view]
            p95 = _p95(times)
            repeats = sorted(c.ms for c in calls if c.variant == key and not c.first_view)
            met = "met" if p95 < GOAL_P95_MS else f"MISSED by {p95 - GOAL_P95_MS:.0f} ms"
            first = f"{len(firsts)}, {max(firsts):.0f}" if firsts else "0"
            late = sum(1 for c in calls if c.variant == key and c.status != 200)
            print(
                f"| {key} | {len(times)} | {late} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} "
                f"| {first} | {_p95(repeats) if repeats else float('nan'):.1f} | {met} |"
            )


def _p95(ordered: list[float]) -> float:
    """The nearest-rank 95th percentile of sorted values."""
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def _seed(fhir: str, n: int) -> int:
    """Post ``n`` generated SRS responses (ids bench-cds-0..) and their Patients unless the last one is there."""
    if httpx.get(f"{fhir}/QuestionnaireResponse/bench-cds-{n - 1}", timeout=30).status_code == 200:
        return 0
    srs = load_catalog().get("srs")
    responses = []
    for i, line in enumerate(lines(srs, n)):
        qr = json.loads(line)
        patient = {"reference": f"Patient/bench-cds-p{i // PER_PATIENT}"}
        qr.update(id=f"bench-cds-{i}", subject=patient, author=patient)
        qr.pop("encounter"), qr.pop("extension")
        responses.append(qr)
    patients = [{"resourceType": "Patient", "id": f"bench-cds-p{k}"} for k in range(-(-n // PER_PATIENT))]
    with FhirClient(ServerConfig(url=fhir, timeout=300)) as client:
        for group in (patients, responses):
            for bundle in put_by_id_bundles(group, 200):
                client.transaction(bundle, idempotent=True)
    return n


def _count(fhir: str, rtype: str) -> int:
    return int(httpx.get(f"{fhir}/{rtype}", params={"_summary": "count"}, timeout=60).json()["total"])


def _count_in_log(path: Path, text: str) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if text in line)


def _prefetch(fhir: str, patient: str) -> dict[str, Any]:
    """What an EHR would send: the discovery document's templates, filled in and read from HAPI."""
    templates = discovery_document()["services"][0]["prefetch"]
    out = {}
    for key, template in templates.items():
        query = template.replace("{{context.patientId}}", patient).replace("{{context.userId}}", USER)
        page = httpx.get(f"{fhir}/{query}", timeout=30)
        page.raise_for_status()
        out[key] = page.json()
    return out


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[2:4])} failed: {done.stderr[-1000:]}")


if __name__ == "__main__":
    sys.exit(main())
