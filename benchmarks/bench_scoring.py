"""Scoring throughput on one core: NDJSON bytes of QuestionnaireResponses in, Observation NDJSON bytes out.

Pipelines, each timed over whole passes (best of k) on the same generated input:

- (a)      alliance_fhir: ``orjson.loads`` -> ``score_response`` -> ``build_observation`` -> ``orjson.dumps``;
- (a_json) the same with the standard library ``json`` (what the CLI does today);
- (b)      the SDC way: our Questionnaires' calculatedExpressions, compiled once and cached, evaluated
           with fhirpathpy (see ``_sdc.py`` for ``weight()``); capped n, as it is hundreds of times slower;
- (c)      full fhir.resources (R4B) models: ``QuestionnaireResponse.model_validate_json``, our scorer
           on the model's JSON dict, ``Observation.model_validate``, ``model_dump_json``; capped n;
- (d)      the floor: ``orjson.loads`` + ``orjson.dumps`` of each response, no scoring.

``--cli`` adds whole processes on one generated WAI-SR file (``_cli.py``), taking turns run by
run, each with its peak RSS: the floor process (orjson loads + dumps of each line), ``score
--format ndjson`` with one job and with all cores, ``score --format bundle``, the SDC/fhirpathpy
baseline process (on the file's first lines), and with ``--baseline-src DIR`` the CLI of another
checkout (``PYTHONPATH=DIR``: "before").

A capped pipeline reports the rate measured on its own n (a per-record pipeline's rate does
not depend on n); the table says which n each row timed and marks times for the full n that
are extrapolated from it with '~'. Targets are reported, never asserted.

Usage: ``python -m benchmarks.bench_scoring [--quick] [--n N] [--k K] [--out FILE] [--profile ID]
[--cli] [--cli-only] [--cli-n N ...] [--cli-k K] [--baseline-src DIR]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from alliance_fhir import AllianceFhirError, Catalog, build_observation, load_catalog, score_response

from ._cli import FLOOR_SCRIPT, ProcessRun, load_average, run_process
from ._report import Measurement, machine_info, markdown_table, pin_to_one_core, time_round_robin, write_json
from ._responses import AMENDED_SHARE, MISSING_SHARE, SEED, ndjson, write_ndjson
from ._sdc import SdcScorer

INSTRUMENTS = ("wai-sr", "srs", "haq-ii")
PACKAGES = ("alliance-fhir", "orjson", "fhirpathpy", "fhir.resources", "fhir-core", "pydantic", "pydantic-core")
TARGET_RATE = 50_000  # (a) for WAI-SR, responses/s per core
TARGET_A_OVER_B = 100.0
TARGET_A_OVER_D = 0.25
TARGET_CLI_OVER_FLOOR = 0.35  # score --format ndjson, one process, over the floor process
TARGET_CLI_OVER_SDC = 100.0
TARGET_RSS_MIB = 150.0 * 1e6 / 2**20  # 150 MB
CLI_SIZES_FULL, CLI_SIZES_QUICK = (300_000, 1_000_000), (10_000,)

Pipeline = Callable[[bytes], Iterator[bytes]]  # NDJSON in, one output line per response out
CHUNK_LINES = 1_000


@dataclass(frozen=True)
class Plan:
    """How much to run: n records for (a), (a_json) and (d); capped n for (b) and (c); k passes each."""

    n: int
    n_sdc: int
    n_models: int
    k: int
    n_check: int


FULL = Plan(n=100_000, n_sdc=300, n_models=3_000, k=3, n_check=200)
QUICK = Plan(n=10_000, n_sdc=20, n_models=300, k=2, n_check=50)


def ours(catalog: Catalog, loads: Callable[[bytes], Any], dumps: Callable[[Any], bytes]) -> Pipeline:
    """(a): the library's own path, as an embedder or the CLI runs it, with a pluggable JSON codec."""

    def run(data: bytes) -> Iterator[bytes]:
        for line in io.BytesIO(data):
            doc = loads(line)
            try:
                result = score_response(doc, catalog)
            except AllianceFhirError as exc:
                yield dumps({"error": str(exc)})
                continue
            yield dumps(build_observation(result, doc))

    return run


def stdlib_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sdc(scorer: SdcScorer) -> Pipeline:
    """(b): FHIRPath calculatedExpressions (compiled, cached) evaluated per response."""

    def run(data: bytes) -> Iterator[bytes]:
        for line in io.BytesIO(data):
            yield orjson.dumps(scorer.observation(orjson.loads(line)))

    return run


def models(catalog: Catalog) -> Pipeline:
    """(c): the same scoring wrapped in a full fhir.resources (R4B) round trip."""

    def run(data: bytes) -> Iterator[bytes]:
        for line in io.BytesIO(data):
            doc = QuestionnaireResponse.model_validate_json(line).model_dump(mode="json")
            observation = Observation.model_validate(build_observation(score_response(doc, catalog), doc))
            yield observation.model_dump_json().encode()

    return run


def floor(data: bytes) -> Iterator[bytes]:
    """(d): parse and serialise each response, nothing else."""
    for line in io.BytesIO(data):
        yield orjson.dumps(orjson.loads(line))


def stream(pipeline: Pipeline, data: bytes) -> int:
    """Run a pipeline as a back-fill does: NDJSON out in chunks, each written (here: dropped) in turn.

    Returns the bytes written. Chunking keeps memory flat, so a pass measures the work, not the
    operating system handing a few hundred MB of fresh pages to one output buffer.
    """
    written = 0
    chunk: list[bytes] = []
    for line in pipeline(data):
        chunk.append(line)
        if len(chunk) == CHUNK_LINES:
            written += len(b"\n".join(chunk)) + 1
            chunk = []
    return written + (len(b"\n".join(chunk)) + 1 if chunk else 0)


def head(data: bytes, n: int) -> bytes:
    """The first ``n`` NDJSON lines of ``data``."""
    return b"".join(line + b"\n" for line in data.splitlines()[:n])


def cross_check(catalog: Catalog, scorer: SdcScorer, data: bytes) -> dict[str, Any]:
    """Before timing: (a) with orjson = (a_json) = (c); (b) agrees with (a) on every complete response."""

    def parsed(pipeline: Pipeline) -> list[Any]:
        return [json.loads(line) for line in pipeline(data)]

    reference = parsed(ours(catalog, orjson.loads, orjson.dumps))
    compared = agreed = 0
    for line in data.splitlines():
        result = score_response(json.loads(line), catalog)
        if result.answered < result.item_count:
            continue  # the Questionnaire's expressions do not prorate; ours does
        compared += 1
        agreed += scorer.scores(json.loads(line)) == {s.scale.id: s.value for s in result.scores}
    return {
        "n": len(reference),
        "a_equals_a_stdlib": reference == parsed(ours(catalog, json.loads, stdlib_dumps)),
        "a_equals_c": reference == parsed(models(catalog)),
        "b_compared_complete_responses": compared,
        "b_agreed": agreed,
    }


def bench_instrument(catalog: Catalog, instrument_id: str, plan: Plan) -> tuple[list[Measurement], dict[str, Any]]:
    """All pipelines on one instrument's generated responses (taking turns, pass by pass), plus the cross-check."""
    instrument = catalog.get(instrument_id)
    data = ndjson(instrument, plan.n)
    scorer = SdcScorer(instrument)
    check = cross_check(catalog, scorer, head(data, min(plan.n_check, plan.n)))
    check["input_bytes_per_response"] = round(len(data) / plan.n, 1)
    print(f"  {instrument_id:7} cross-check {check}", file=sys.stderr, flush=True)
    sdc_data, model_data = head(data, min(plan.n_sdc, plan.n)), head(data, min(plan.n_models, plan.n))
    workloads: list[tuple[str, str, bytes, Pipeline]] = [
        ("a", "alliance_fhir, orjson", data, ours(catalog, orjson.loads, orjson.dumps)),
        ("a_json", "alliance_fhir, stdlib json (as the CLI)", data, ours(catalog, json.loads, stdlib_dumps)),
        ("b", "SDC calculatedExpressions, fhirpathpy compiled", sdc_data, sdc(scorer)),
        ("c", "fhir.resources R4B model round trip", model_data, models(catalog)),
        ("d", "floor: orjson parse + serialise", data, floor),
    ]
    runs = {key: partial(stream, pipeline, payload) for key, _, payload, pipeline in workloads}
    passes = time_round_robin(runs, plan.k)
    rows = [
        Measurement(key, label, instrument_id, payload.count(b"\n"), passes[key])
        for key, label, payload, _ in workloads
    ]
    for m in rows:
        print(f"  {instrument_id:7} {m.key:8} n={m.n:<7} {m.rate:>12,.0f} responses/s", file=sys.stderr, flush=True)
    return rows, check


def ratios(rows: list[Measurement]) -> dict[str, float]:
    rate = {m.key: m.rate for m in rows}
    return {
        "a/b": rate["a"] / rate["b"],
        "a/c": rate["a"] / rate["c"],
        "a/d": rate["a"] / rate["d"],
        "a_json/d": rate["a_json"] / rate["d"],
        "a/a_json": rate["a"] / rate["a_json"],
    }


def targets(by_instrument: dict[str, list[Measurement]]) -> list[dict[str, Any]]:
    """The issue's targets, stated for WAI-SR; reported, never asserted."""
    rows = by_instrument.get("wai-sr")
    if rows is None:
        return []
    rate, ratio = {m.key: m.rate for m in rows}, ratios(rows)
    checks = [
        ("(a) WAI-SR responses/s per core", rate["a"], TARGET_RATE),
        ("(a)/(b) WAI-SR", ratio["a/b"], TARGET_A_OVER_B),
        ("(a)/(d) WAI-SR", ratio["a/d"], TARGET_A_OVER_D),
    ]
    return [
        {"target": name, "value": round(value, 4), "at_least": goal, "met": value >= goal}
        for name, value, goal in checks
    ]


def render(by_instrument: dict[str, list[Measurement]], goals: list[dict[str, Any]], n_full: int) -> str:
    """The figures, ratios and targets as Markdown tables; '~' marks a time extrapolated from a smaller n."""
    rows = [m for ms in by_instrument.values() for m in ms]
    table = markdown_table(
        ["instrument", "pipeline", "n timed", "best pass s", "responses/s", "us/response", f"{n_full:,} would take s"],
        [
            [
                m.subject,
                f"({m.key}) {m.label}",
                f"{m.n:,}",
                f"{m.best:.3f}",
                f"{m.rate:,.0f}",
                f"{1e6 / m.rate:,.1f}",
                f"{'' if m.n == n_full else '~'}{n_full / m.rate:,.1f}",
            ]
            for m in rows
        ],
    )
    ratio_table = markdown_table(
        ["instrument", "a/b", "a/c", "a/d", "a_json/d", "a/a_json"],
        [[name, *(f"{v:.3g}" for v in ratios(ms).values())] for name, ms in by_instrument.items()],
    )
    goal_table = markdown_table(
        ["target", "value", "at least", "met"],
        [[g["target"], _figure(g["value"]), _figure(g["at_least"]), "yes" if g["met"] else "NO"] for g in goals],
    )
    return f"{table}\n\nRatios\n\n{ratio_table}\n\nTargets\n\n{goal_table}"


def _figure(value: float) -> str:
    """A rate as a whole number with separators, a ratio to three significant digits."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def profile(catalog: Catalog, instrument_id: str, n: int) -> str:
    """cProfile of one pass of (a): the top functions by own time."""
    data = ndjson(catalog.get(instrument_id), n)
    pipeline = ours(catalog, orjson.loads, orjson.dumps)
    profiler = cProfile.Profile()
    profiler.runcall(stream, pipeline, data)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


# ---------------------------------------------------------------- whole processes (--cli)


@dataclass(frozen=True)
class CliPlan:
    """Sizes of the generated WAI-SR file, runs per variant, lines for the SDC process, the "before" checkout."""

    sizes: tuple[int, ...]
    k: int
    n_sdc: int
    baseline: Path | None


Variant = tuple[str, list[str], dict[str, str] | None, int | None, Path | None]


def cli_variants(path: Path, plan: CliPlan) -> dict[str, Variant]:
    """key -> (label, argv, environment, responses counted when not the whole file, working folder).

    "before" runs in its own checkout: ``python -m`` puts the working folder first on sys.path.
    """
    py = sys.executable
    score = [py, "-m", "alliance_fhir", "score", str(path)]
    here = Path(__file__).resolve().parents[1]
    variants: dict[str, Variant] = {
        "floor": (
            "floor process: orjson loads + dumps per line",
            [py, "-c", FLOOR_SCRIPT, str(path)],
            None,
            None,
            here,
        ),
        "ndjson_j1": ("score --format ndjson (--jobs 1)", [*score, "--format", "ndjson"], None, None, here),
        "ndjson_jall": (
            f"score --format ndjson --jobs 0 ({_cores()} cores)",
            [*score, "--format", "ndjson", "--jobs", "0"],
            None,
            None,
            here,
        ),
        "bundle": ("score --format bundle (--jobs 1)", [*score, "--format", "bundle"], None, None, here),
        "sdc": (
            f"SDC baseline process (fhirpathpy), first {plan.n_sdc:,} lines",
            [py, "-m", "benchmarks._cli", "sdc", str(path), "wai-sr", str(plan.n_sdc)],
            None,
            plan.n_sdc,
            here,
        ),
    }
    if plan.baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(plan.baseline)}
        variants["before"] = (
            f"before: score --format ndjson at {plan.baseline.name}",
            [*score, "--format", "ndjson"],
            env,
            None,
            plan.baseline,
        )
    return variants


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bench_cli(catalog: Catalog, plan: CliPlan, workdir: Path) -> dict[int, dict[str, Any]]:
    """Every variant on each file size, taking turns run by run; the best wall-clock run of k is kept (with its CPU and RSS)."""
    results: dict[int, dict[str, Any]] = {}
    for n in plan.sizes:
        path = workdir / f"wai-sr-{n}.ndjson"
        size = write_ndjson(catalog.get("wai-sr"), n, path)
        print(
            f"  cli: {n:,} WAI-SR responses, {size / 1e6:,.0f} MB, load {load_average()}", file=sys.stderr, flush=True
        )
        variants = cli_variants(path, plan)
        runs: dict[str, list[ProcessRun]] = {key: [] for key in variants}
        for _ in range(plan.k):
            for key, (_, argv, env, _, cwd) in variants.items():
                run = run_process(key, argv, env, cwd)
                runs[key].append(run)
                print(
                    f"  cli {n:>9,} {key:12} wall {run.wall_s:8.2f} s  cpu {run.cpu_s:8.2f} s  rss {run.rss_mib:7.1f} MiB  rc {run.returncode}"
                    f"  load {run.load_before}->{run.load_after}",
                    file=sys.stderr,
                    flush=True,
                )
        rows = {}
        for key, (label, _, _, counted, _) in variants.items():
            best = min(runs[key], key=lambda r: r.wall_s)
            responses = counted or n
            rows[key] = {
                "label": label,
                "responses": responses,
                "rate": responses / best.wall_s,
                "cpu_us": 1e6 * best.cpu_s / responses,
                "best": best.as_json(),
                "runs": [r.as_json() for r in runs[key]],
                "max_rss_mib": max(r.rss_mib for r in runs[key]),
                "max_workers_rss_mib": max((r.workers_rss_mib or 0) for r in runs[key]),
            }
        results[n] = {"bytes": size, "rows": rows, "ratios": cli_ratios(rows)}
        path.unlink()
    return results


def cli_ratios(rows: dict[str, Any]) -> dict[str, float]:
    rate, cpu = {k: r["rate"] for k, r in rows.items()}, {k: r["cpu_us"] for k, r in rows.items()}
    ratios = {
        "ndjson_j1/floor (wall)": rate["ndjson_j1"] / rate["floor"],
        "ndjson_j1/floor (cpu)": cpu["floor"] / cpu["ndjson_j1"],
        "ndjson_jall/ndjson_j1 (wall)": rate["ndjson_jall"] / rate["ndjson_j1"],
        "bundle/ndjson_j1 (wall)": rate["bundle"] / rate["ndjson_j1"],
        "ndjson_j1/sdc (wall)": rate["ndjson_j1"] / rate["sdc"],
    }
    if "before" in rows:
        ratios["ndjson_j1/before (wall)"] = rate["ndjson_j1"] / rate["before"]
        ratios["ndjson_j1/before (cpu)"] = cpu["before"] / cpu["ndjson_j1"]
        ratios["before/floor (wall)"] = rate["before"] / rate["floor"]
    return ratios


def cli_targets(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []
    for n, result in results.items():
        rows, ratio = result["rows"], result["ratios"]
        goals.append(
            {
                "target": f"score ndjson one process / floor process, {n:,}",
                "value": round(ratio["ndjson_j1/floor (wall)"], 3),
                "at_least": TARGET_CLI_OVER_FLOOR,
                "met": ratio["ndjson_j1/floor (wall)"] >= TARGET_CLI_OVER_FLOOR,
            }
        )
        goals.append(
            {
                "target": f"score ndjson one process / SDC process, {n:,}",
                "value": round(ratio["ndjson_j1/sdc (wall)"], 1),
                "at_least": TARGET_CLI_OVER_SDC,
                "met": ratio["ndjson_j1/sdc (wall)"] >= TARGET_CLI_OVER_SDC,
            }
        )
        for key in ("ndjson_j1", "ndjson_jall", "bundle"):
            peak = max(rows[key]["max_rss_mib"], rows[key]["max_workers_rss_mib"])
            goals.append(
                {
                    "target": f"peak RSS MiB of {key} (main or any worker), {n:,}",
                    "value": round(peak, 1),
                    "at_most": round(TARGET_RSS_MIB, 1),
                    "met": peak <= TARGET_RSS_MIB,
                }
            )
    return goals


def render_cli(results: dict[int, dict[str, Any]], goals: list[dict[str, Any]]) -> str:
    table = markdown_table(
        [
            "responses",
            "process",
            "best wall s",
            "responses/s",
            "CPU us/response (incl. workers)",
            "peak RSS MiB",
            "workers' peak MiB",
            "load (1 min)",
        ],
        [
            [
                f"{n:,}" if row["responses"] == n else f"{row['responses']:,} of {n:,}",
                f"({key}) {row['label']}",
                f"{row['best']['wall_s']:.2f}",
                f"{row['rate']:,.0f}",
                f"{row['cpu_us']:,.1f}",
                f"{row['max_rss_mib']:.1f}",
                f"{row['max_workers_rss_mib']:.1f}" if row["max_workers_rss_mib"] else "-",
                "{}-{}".format(*row["best"]["load_1min"]),
            ]
            for n, result in results.items()
            for key, row in result["rows"].items()
        ],
    )
    ratio_table = markdown_table(
        ["responses", *next(iter(results.values()))["ratios"]],
        [[f"{n:,}", *(f"{v:.3g}" for v in r["ratios"].values())] for n, r in results.items()],
    )
    goal_table = markdown_table(
        ["target", "value", "bound", "met"],
        [
            [
                g["target"],
                g["value"],
                (">= " if "at_least" in g else "<= ") + str(g.get("at_least", g.get("at_most"))),
                "yes" if g["met"] else "NO",
            ]
            for g in goals
        ],
    )
    return f"{table}\n\nRatios\n\n{ratio_table}\n\nTargets\n\n{goal_table}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke size (well under 2 minutes); figures are indicative only"
    )
    parser.add_argument(
        "--n", type=int, help="responses per instrument for (a), (a_json) and (d) (default 100,000; quick 10,000)"
    )
    parser.add_argument("--k", type=int, help="passes per pipeline; the best is kept (default 3; quick 2)")
    parser.add_argument("--instrument", action="append", choices=INSTRUMENTS, help="only this instrument (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring.json"), help="JSON result file")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument(
        "--cli", action="store_true", help="also measure whole processes: the CLI, the floor process, the SDC process"
    )
    parser.add_argument("--cli-only", action="store_true", help="only the whole-process measurement")
    parser.add_argument(
        "--cli-n",
        type=int,
        action="append",
        help="responses in the generated file (repeatable; default 300,000 and 1,000,000; quick 10,000)",
    )
    parser.add_argument("--cli-k", type=int, help="runs per process (default 2; quick 1)")
    parser.add_argument(
        "--baseline-src", type=Path, help="a checkout (e.g. from git archive) whose CLI is run as 'before'"
    )
    parser.add_argument(
        "--profile", metavar="INSTRUMENT", choices=INSTRUMENTS, help="print a cProfile of (a) instead of benchmarking"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    plan = Plan(args.n or plan.n, plan.n_sdc, plan.n_models, args.k or plan.k, plan.n_check)
    catalog = load_catalog(include_shipped=True)
    if args.profile:
        print(profile(catalog, args.profile, min(plan.n, 20_000)))
        return 0
    cli_results: dict[int, dict[str, Any]] = {}
    cli_goals: list[dict[str, Any]] = []
    cli_plan = None
    if args.cli or args.cli_only:  # before pinning: --jobs 0 must see every core
        cli_plan = CliPlan(
            tuple(args.cli_n or (CLI_SIZES_QUICK if args.quick else CLI_SIZES_FULL)),
            args.cli_k or (1 if args.quick else 2),
            20 if args.quick else 300,
            args.baseline_src.resolve() if args.baseline_src else None,
        )
        with tempfile.TemporaryDirectory(prefix="bench-cli-") as workdir:
            cli_results = bench_cli(catalog, cli_plan, Path(workdir))
        cli_goals = cli_targets(cli_results)
        print(render_cli(cli_results, cli_goals) + "\n")
    cpu = None if args.no_pin else pin_to_one_core()
    by_instrument: dict[str, list[Measurement]] = {}
    checks: dict[str, Any] = {}
    for instrument_id in [] if args.cli_only else args.instrument or INSTRUMENTS:
        by_instrument[instrument_id], checks[instrument_id] = bench_instrument(catalog, instrument_id, plan)
    goals = targets(by_instrument)
    if by_instrument:
        print(render(by_instrument, goals, plan.n))
    payload = {
        "benchmark": "scoring",
        "mode": "quick" if args.quick else "full",
        "machine": {**machine_info(PACKAGES), "pinned_cpu": cpu},
        "plan": {**asdict(plan), "seed": SEED, "amended_share": AMENDED_SHARE, "missing_share": MISSING_SHARE},
        "measurements": [m.as_json() for ms in by_instrument.values() for m in ms],
        "ratios": {name: {k: round(v, 3) for k, v in ratios(ms).items()} for name, ms in by_instrument.items()},
        "targets": goals,
        "cross_check": checks,
        "cli": {
            "plan": {**asdict(cli_plan), "baseline": str(cli_plan.baseline) if cli_plan.baseline else None}
            if cli_plan
            else None,
            "results": {str(n): r for n, r in cli_results.items()},
            "targets": cli_goals,
        },
    }
    write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
