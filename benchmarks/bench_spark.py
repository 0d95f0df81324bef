"""Spark local vs the CLI: the same WAI-SR NDJSON scored into Observation NDJSON, as whole processes.

Variants, run in turns (cli, spark, cli, spark, ...) on one generated file so the machine's load
hits both alike, each a fresh process timed from start to exit (what a user waits for):

- ``cli``:   ``alliance-fhir score FILE --format ndjson > out`` (one process, one core);
- ``spark``: a fresh ``SparkSession`` on ``local[N]`` (default 2: this machine's cores), then
  ``score_frame(spark.read.text(FILE))`` written as text, then the session stopped. Session
  start-up (JVM, Python workers) is part of the figure, as it is of every Spark job.

After the runs, the Spark output is checked line for line against the CLI's (same bytes once
both are sorted: Spark writes part files). Figures and the load are printed and optionally
written as JSON; nothing is asserted.

Usage: ``python -m benchmarks.bench_spark [--n N] [--k K] [--cores N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from statistics import median

from alliance_fhir import load_catalog

from ._cli import load_average, run_process
from ._report import machine_info, markdown_table, write_json
from ._responses import write_ndjson

SPARK_CHILD = """
import os, sys
from pyspark.sql import SparkSession
from alliance_fhir.spark import score_frame
src, out, cores = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
spark = (
    SparkSession.builder.master(f"local[{cores}]").appName("bench_spark")
    .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.host", "127.0.0.1").getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
frame = score_frame(spark.read.text(src))
frame.where("observation is not null").select("observation").write.mode("overwrite").text(out)
spark.stop()
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="responses in the file (default 10^5)")
    parser.add_argument("--k", type=int, default=2, help="runs of each variant, in turns (default 2)")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N] (default 2)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog = load_catalog()
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        work = Path(tmp)
        src = work / "wai-sr.ndjson"
        size = write_ndjson(catalog.get("wai-sr"), args.n, src)
        cli = [sys.executable, "-c", "import sys; from alliance_fhir.cli import app; sys.exit(app())"]
        variants = {
            "cli": ["bash", "-c", f'"$@" score {src} --format ndjson > {work / "cli.ndjson"}', "cli", *cli],
            "spark": [sys.executable, "-c", SPARK_CHILD, str(src), str(work / "spark"), str(args.cores)],
        }
        runs: dict[str, list[float]] = {key: [] for key in variants}
        details = []
        for _ in range(args.k):
            for key, command in variants.items():
                run = run_process(key, command, env={**os.environ})
                if run.returncode != 0:
                    print(f"error: {key} exited {run.returncode}", file=sys.stderr)
                    return 1
                runs[key].append(run.wall_s)
                details.append(run.as_json())
        cli_lines = sorted((work / "cli.ndjson").read_bytes().splitlines())
        spark_lines = sorted(
            line for part in (work / "spark").glob("part-*") for line in part.read_bytes().splitlines()
        )
        identical = cli_lines == spark_lines
    cli_s, spark_s = median(runs["cli"]), median(runs["spark"])
    rows = [
        ("cli (1 process)", f"{cli_s:.1f}", f"{args.n / cli_s:,.0f}", "1.00"),
        (f"spark local[{args.cores}]", f"{spark_s:.1f}", f"{args.n / spark_s:,.0f}", f"{spark_s / cli_s:.2f}"),
    ]
    print(f"n = {args.n:,} WAI-SR responses ({size / 2**20:.1f} MiB), k = {args.k} runs each in turns")
    print(markdown_table(("variant", "median wall s", "responses/s", "time vs cli"), rows))
    print(f"Spark output identical to the CLI's (sorted lines): {identical}; load after: {load_average():.2f}")
    if args.out:
        payload = {
            "n": args.n,
            "k": args.k,
            "cores": args.cores,
            "median_wall_s": {"cli": cli_s, "spark": spark_s},
            "spark_over_cli": spark_s / cli_s,
            "identical": identical,
            "runs": details,
            "machine": machine_info(("alliance-fhir", "pyspark", "pandas", "pyarrow")),
        }
        write_json(args.out, payload)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
