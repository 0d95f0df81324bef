"""What every benchmark script shares: machine facts, timing whole passes, the table, the JSON file.

A benchmark here measures whole passes over a batch with :func:`time.perf_counter` and keeps
the best of ``k`` (the least disturbed pass), never per-call micro-timings. Scripts print a
Markdown table (so ``docs/benchmarks.md`` can quote it as is) and write every figure, with the
machine and the date, to a JSON file.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Measurement",
    "alternating_order",
    "machine_info",
    "markdown_table",
    "pin_to_one_core",
    "ratio_summary",
    "time_passes",
    "time_round_robin",
    "write_json",
]


@dataclass(frozen=True)
class Measurement:
    """One workload timed over ``n`` records per pass; ``passes`` holds each pass's seconds."""

    key: str
    label: str
    subject: str
    n: int
    passes: tuple[float, ...]
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.passes)

    @property
    def rate(self) -> float:
        """Records per second in the best pass."""
        return self.n / self.best

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "subject": self.subject,
            "n": self.n,
            "passes_s": [round(p, 6) for p in self.passes],
            "best_s": round(self.best, 6),
            "records_per_s": round(self.rate, 1),
            "us_per_record": round(1e6 / self.rate, 2),
            "note": self.note,
        }


def time_passes(run: Callable[[], object], k: int) -> tuple[float, ...]:
    """Wall time of ``k`` whole passes of ``run`` (garbage collected before each, left on during)."""
    times = []
    for _ in range(k):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return tuple(times)


def time_round_robin(runs: Mapping[str, Callable[[], object]], k: int) -> dict[str, tuple[float, ...]]:
    """:func:`time_passes` for several workloads taking turns, pass by pass.

    A disturbance on a shared machine then falls on all of them alike, which keeps the ratios
    between them fair even when the absolute figures move.
    """
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(k):
        for key, run in runs.items():
            times[key] += time_passes(run, 1)
    return {key: tuple(passes) for key, passes in times.items()}


def pin_to_one_core() -> int | None:
    """Pin this process to one CPU (the last one it may use) so figures are per core; None if unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, memory, Python, packages, commit, date."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in packages},
        "git": _git_revision(),
    }


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table with padded columns (readable in a terminal, pasteable into docs)."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in text_rows)])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the result file (parent folders created), indented and key-ordered as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> dict[str, Any] | None:
    """The commit measured, and whether the work tree had changes (read-only git calls)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head.strip(), "dirty": bool(status.strip())}


def alternating_order(sets: int, first: str = "a", second: str = "b") -> list[tuple[str, str]]:
    """The order of two variants over ``sets`` sets: AB, BA, AB, ... so neither always runs on
    the server the other has just warmed or loaded, and both meet the same drift of machine load."""
    return [(first, second) if k % 2 == 0 else (second, first) for k in range(sets)]


def ratio_summary(rates: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Per-set ratios of paired rates (a, b) and their median: only pairs run in turn compare."""
    if not rates:
        raise ValueError("no sets to compare")
    per_set = [round(a / b, 3) for a, b in rates]
    ordered = sorted(per_set)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"per_set": per_set, "median": round(median, 3), "min": ordered[0], "max": ordered[-1]}
