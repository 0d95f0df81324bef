"""Whole processes, as a user runs them: the CLI, the JSON floor and the SDC baseline on one NDJSON file.

Each variant is a fresh Python process reading the same generated file and writing to
``/dev/null``, so start-up, reading, parsing, scoring, serialising and writing all count. Per
run: wall seconds, CPU seconds of the main process (``wait4``: time-slicing on a shared machine
mostly drops out of it; Linux counts the waited-for workers in), and peak RSS: the process's own
high-water mark (VmHWM in ``/proc/<pid>/status``, sampled every 50 ms while it runs; it only
grows, so the last sample is the peak but for the final 50 ms), and the same for its worker
processes under ``--jobs``, reported separately. (``wait4``'s ``ru_maxrss`` is not used: it keeps
the forking parent's RSS across ``exec``, so it overstates small processes.) Variants take turns run by run;
the 1-minute load average is recorded around every run.

Usage (also from ``bench_scoring --cli``): ``python -m benchmarks._cli sdc FILE INSTRUMENT N``
runs the SDC baseline process on the first N lines of FILE.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FLOOR_SCRIPT", "ProcessRun", "load_average", "run_process"]

# The floor: a Python process that only parses each line with orjson and writes it back.
FLOOR_SCRIPT = """\
import sys, orjson
out = sys.stdout.buffer
loads, dumps = orjson.loads, orjson.dumps
with open(sys.argv[1], "rb") as f:
    for line in f:
        out.write(dumps(loads(line)) + b"\\n")
"""


@dataclass(frozen=True)
class ProcessRun:
    """One process: wall and CPU seconds, peak RSS of the main process and of its workers (MiB)."""

    key: str
    wall_s: float
    cpu_s: float
    rss_mib: float
    workers_rss_mib: float | None
    load_before: float
    load_after: float
    returncode: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mib": round(self.rss_mib, 1),
            "workers_peak_rss_mib": None if self.workers_rss_mib is None else round(self.workers_rss_mib, 1),
            "load_1min": [self.load_before, self.load_after],
            "returncode": self.returncode,
            **self.extra,
        }


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_process(
    key: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 3600,
) -> ProcessRun:
    """Run ``argv`` (stdout and stderr to /dev/null) and measure it; a non-zero exit is recorded, not raised."""
    load_before = load_average()
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    sampler = _ChildSampler(proc.pid)
    sampler.start()
    deadline = started + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    return ProcessRun(
        key,
        wall,
        usage.ru_utime + usage.ru_stime,
        sampler.own_mib or usage.ru_maxrss / 1024,
        sampler.peak_mib,
        load_before,
        load_average(),
        proc.returncode,
        {"ru_maxrss_mib": round(usage.ru_maxrss / 1024, 1)},
    )


class _ChildSampler(threading.Thread):
    """VmHWM of ``pid`` and the largest VmHWM among its children (worker processes), sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.peak_mib: float | None = None
        self.own_mib: float | None = None

    def run(self) -> None:
        while not self._done.wait(0.05):
            own = _vm_hwm_mib(self._pid)
            if own is not None:
                self.own_mib = max(self.own_mib or 0.0, own)
            for child in _children(self._pid):
                hwm = _vm_hwm_mib(child)
                if hwm is not None:
                    self.peak_mib = max(self.peak_mib or 0.0, hwm)

    def stop(self) -> None:
        self._done.set()
        self.join(1)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _sdc_main(argv: list[str]) -> int:
    """The SDC baseline as a process: the first N lines of FILE through fhirpathpy, Observations to stdout."""
    import orjson

    from alliance_fhir import load_catalog

    from ._sdc import SdcScorer

    path, instrument_id, limit = argv[0], argv[1], int(argv[2])
    scorer = SdcScorer(load_catalog(include_shipped=True).get(instrument_id))
    out = sys.stdout.buffer
    with open(path, "rb") as lines:
        for number, line in enumerate(lines):
            if number >= limit:
                break
            out.write(orjson.dumps(scorer.observation(orjson.loads(line))) + b"\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["sdc"] or len(sys.argv) != 5:
        sys.exit("usage: python -m benchmarks._cli sdc FILE INSTRUMENT N")
    sys.exit(_sdc_main(sys.argv[2:]))
