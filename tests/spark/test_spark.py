"""The Spark adapter (``alliance_fhir.spark``) on a real local Spark (``local[2]``): the same Observation
bytes as ``alliance-fhir score --format ndjson``, flat rows equal to the shipped ``alliance_scores``
view, bad rows kept as errors, the catalog loaded once per partition, pyspark never imported early.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from alliance_fhir import load_catalog
from alliance_fhir.content.views import view_definitions
from alliance_fhir.spark import SCORE_ROW_COLUMNS, score_frame, score_rows
from alliance_fhir.spark import frames as spark_frames

from ..conftest import all_items
from ..support.sof import run_view

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in ROOT.glob("examples/*/*.json"))

pytestmark = pytest.mark.slow  # a local Spark JVM: ~30 s to start, ~60 s for the file


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers' Python: this venv, with alliance_fhir installed
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .appName("alliance-fhir-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.files.maxPartitionBytes", "131072")  # the small file still splits into 2-3 partitions
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ndjson(tmp_path_factory) -> Path:
    """Every example (complete, amended, incomplete) 10 times with distinct ids, a broken line and a Patient."""
    lines = []
    for copy in range(10):
        for path in EXAMPLES:
            doc = json.loads(path.read_text())
            doc["id"] = f"{doc['id']}-{copy}"
            lines.append(json.dumps(doc))
    lines.insert(7, "{not json")
    lines.insert(50, json.dumps({"resourceType": "Patient", "id": "p"}))
    path = tmp_path_factory.mktemp("spark") / "responses.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cli(ndjson: Path) -> tuple[list[str], list[str]]:
    """``alliance-fhir score FILE --format ndjson``: the Observation lines and the error lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "score", str(ndjson), "--format", "ndjson"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc.stdout.splitlines(), errors


def test_score_frame_writes_the_clis_observations_byte_for_byte(spark, ndjson, cli):
    df = spark.read.text(str(ndjson))
    assert df.rdd.getNumPartitions() >= 2  # the identity holds across partitions
    rows = score_frame(df).collect()
    assert len(rows) == df.count()  # one output row per input row
    cli_lines, cli_errors = cli
    assert [r.observation for r in rows if r.observation is not None] == cli_lines
    errors = [r.error for r in rows if r.error is not None]
    assert len(errors) == len(cli_errors) > 2  # the broken line, the Patient and the refused incomplete forms
    assert all((r.observation is None) != (r.error is None) for r in rows)
    assert any("Patient" in e for e in errors)


def test_score_rows_equal_the_alliance_scores_view_over_the_same_observations(spark, ndjson, cli, tmp_path):
    rows = score_rows(spark.read.text(str(ndjson))).collect()
    scored = [r for r in rows if r.error is None]
    cli_lines, _ = cli
    folder = tmp_path / "obs"
    folder.mkdir()
    (folder / "Observation.ndjson").write_text(
        "\n".join(json.dumps({**json.loads(line), "id": f"o{n}"}) for n, line in enumerate(cli_lines)) + "\n"
    )
    (view,) = [v for v in view_definitions() if v["id"] == "alliance-scores"]
    from_view = [tuple(r[c] for c in SCORE_ROW_COLUMNS) for r in run_view(folder, view)]
    assert sorted(map(_key, from_view)) == sorted(_key(tuple(r[c] for c in SCORE_ROW_COLUMNS)) for r in scored)
    assert len(scored) == len(from_view) > len(cli_lines)  # WAI-SR adds three subscale rows, the SRS family four lines


def _key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if v is None else str(Decimal(str(v))) if isinstance(v, float) else str(v) for v in row)


def test_score_rows_hand_computed_wai_sr(spark, make_response):
    """WAI-SR, every item "fairly often" (3): each subscale 4 x 3 = 12, total 12 x 3 = 36 (instruments.md)."""
    doc = make_response("wai-sr", all_items(12, 3), rid="w1")
    rows = score_rows(spark.createDataFrame([(json.dumps(doc),)], "value string")).collect()
    got = {(r.scale, r.scale_kind): r.value for r in rows}
    assert got == {
        ("wai-sr-total", "total"): 36.0,
        ("wai-sr-task", "subscale"): 12.0,
        ("wai-sr-bond", "subscale"): 12.0,
        ("wai-sr-goal", "subscale"): 12.0,
    }
    assert {(r.patient, r.questionnaire_response, r.status, r.error) for r in rows} == {
        ("Patient/p1", "QuestionnaireResponse/w1", "final", None)
    }


def test_score_rows_hand_computed_srs_lines(spark, make_response):
    """SRS lines 9.1, 8.4, 6.0, 7.5: total 9.1 + 8.4 + 6.0 + 7.5 = 31.0 (instruments.md 4a), each line a row of its own."""
    doc = make_response("srs", {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}, rid="s2")
    rows = score_rows(spark.createDataFrame([(json.dumps(doc),)], "value string")).collect()
    assert [(r.scale, r.scale_kind, r.value) for r in rows] == [
        ("srs-total", "total", 31.0),
        ("srs-relationship", "subscale", 9.1),
        ("srs-goals", "subscale", 8.4),
        ("srs-approach", "subscale", 6.0),
        ("srs-overall", "subscale", 7.5),
    ]
    assert rows[0].interpretation == "L" and {r.interpretation for r in rows[1:]} == {None}  # 31.0 < 36


def test_a_bad_row_is_one_error_row_and_the_rest_go_on(spark, make_response):
    good = json.dumps(make_response("srs", {1: 9.0, 2: 9.0, 3: 9.0, 4: 9.0}, rid="s1"))  # 36.0
    df = spark.createDataFrame([("[1, 2",), (None,), (good,)], "value string")
    rows = score_rows(df).collect()
    # the good response gives five rows: its total, then its four lines
    assert [r.error is None for r in rows] == [False, False, True, True, True, True, True]
    assert rows[2].value == 36.0 and rows[2].scale == "srs-total"
    assert [r.value for r in rows[3:]] == [9.0, 9.0, 9.0, 9.0]
    assert "null" in rows[1].error and all(r.scale is None for r in rows[:2])


def test_the_catalog_is_loaded_once_per_partition(monkeypatch, make_response):
    """Spark calls the mapInPandas function once per partition with an iterator of Arrow batches."""
    loads: list[tuple[str, ...]] = []
    real = load_catalog

    def counting(dirs):
        loads.append(tuple(dirs))
        return real(dirs)

    monkeypatch.setattr(spark_frames, "load_catalog", counting)
    line = json.dumps(make_response("srs", {1: 9.0, 2: 9.0, 3: 9.0, 4: 9.0}))
    batches = [pd.DataFrame({"value": [line] * 3}) for _ in range(4)]
    out = list(spark_frames._observations(())(iter(batches)))
    assert len(out) == 4 and sum(len(b) for b in out) == 12
    assert loads == [()]


def test_importing_the_adapter_does_not_import_pyspark():
    code = "import sys, alliance_fhir.spark; assert 'pyspark' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**os.environ})
