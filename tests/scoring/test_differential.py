"""The fast path of `score` gives, byte for byte, what the straightforward path gives.

Fast: orjson, Observations serialised from per-instrument templates and per-outcome bytes,
chunks (in one process, and in worker processes with --jobs). Straightforward (the reference):
the standard library's json, then ``score_response`` and ``build_observation`` (a plain dict,
no templates), then ``json.dumps``. Compared on every example and on thousands of generated
responses of every instrument, among them prorated, amended and flagged ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alliance_fhir import AllianceFhirError, Catalog, build_observation, load_catalog, score_response
from alliance_fhir.scoring.observations import observation_json
from benchmarks._responses import lines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/*.json"))
PER_INSTRUMENT = 1_500


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog(include_shipped=True)


def reference_ndjson(text: bytes, catalog: Catalog) -> tuple[bytes, Counter[str]]:
    """The straightforward path, line by line, and what kinds of result it met."""
    out, kinds = [], Counter[str]()
    for line in text.splitlines():
        response = json.loads(line)
        try:
            result = score_response(response, catalog)
        except AllianceFhirError:
            kinds["error"] += 1
            continue
        kinds["amended" if result.status == "amended" else "completed"] += 1
        kinds["prorated"] += any(s.prorated for s in result.scores)
        kinds["flagged"] += any(s.flags for s in result.scores)
        out.append(
            json.dumps(build_observation(result, response), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        )
    return b"".join(out), kinds


def score_cli(path: Path, *options: str) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "score", str(path), "--format", "ndjson", *options],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.stdout


def test_generated_responses_of_every_instrument(shipped, tmp_path):
    text = b"".join(b"".join(lines(instrument, PER_INSTRUMENT)) for instrument in shipped)
    path = tmp_path / "generated.ndjson"
    path.write_bytes(text)
    expected, kinds = reference_ndjson(text, shipped)
    assert kinds["amended"] > 100 and kinds["prorated"] > 100 and kinds["flagged"] > 100, (
        kinds
    )  # every path is in the load
    assert kinds["completed"] + kinds["amended"] == len(list(shipped)) * PER_INSTRUMENT
    assert score_cli(path) == expected
    assert score_cli(path, "--jobs", "2") == expected


def test_every_example(shipped, tmp_path):
    path = tmp_path / "examples.ndjson"
    path.write_bytes(b"".join(json.dumps(json.loads(p.read_text())).encode() + b"\n" for p in EXAMPLES))
    expected, kinds = reference_ndjson(path.read_bytes(), shipped)
    assert (
        kinds["error"] == 5 and kinds["prorated"] >= 2
    )  # the in-progress VAS examples are refused; WAI-SR, HAq-II prorate
    assert score_cli(path) == expected


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_templates_equal_the_plain_dict(shipped, example):
    response = json.loads(example.read_text())
    try:
        result = score_response(response, shipped)
    except AllianceFhirError:
        return
    assert (
        observation_json(result, response)
        == json.dumps(build_observation(result, response), separators=(",", ":")).encode()
    )


def test_non_ascii_text_is_utf8_the_same_json_value(shipped):
    response = json.loads((EXAMPLES[0]).read_text())
    response["subject"] = {"reference": "Patient/1", "display": "Zoë Müller – 田中"}
    result = score_response(response, shipped)
    fast = observation_json(result, response)
    assert fast == json.dumps(build_observation(result, response), separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(fast) == json.loads(
        json.dumps(build_observation(result, response))
    )  # the ASCII-escaped form: same value
    assert "Zoë".encode() in fast
