"""`score` streams: an input larger than the process's memory limit is scored under it, the Bundle
written entry by entry is one valid Bundle (byte for byte json.dumps(..., indent=2)), and --jobs
keeps the input's order."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from alliance_fhir import build_observation, collection_bundle, load_catalog, score_response
from benchmarks._responses import lines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MEMORY_LIMIT = 200 << 20  # address space; the CLI itself needs about 80 MiB of it
PADDING = 50_000  # bytes of narrative per response, so a few thousand lines make a file larger than the limit


def score(*args: str, limit: int | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "score", *args],
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=300,
        preexec_fn=cap,
        input=stdin,
    )


def big_file(path: Path, n: int) -> int:
    """n SRS responses, each with a large narrative: a file of n * ~51 kB."""
    srs = load_catalog(include_shipped=True).get("srs")
    narrative = (
        b',"text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">'
        + b"x" * PADDING
        + b'</div>"}}'
    )
    with path.open("wb") as out:
        for line in lines(srs, n):
            out.write(line.rstrip(b"\n")[:-1] + narrative + b"\n")
    return path.stat().st_size


def test_a_file_larger_than_the_memory_limit_is_scored_under_it(tmp_path):
    path = tmp_path / "big.ndjson"
    n = 5_000
    assert big_file(path, n) > 1.2 * MEMORY_LIMIT
    for fmt in ("ndjson", "bundle"):
        proc = score(str(path), "--format", fmt, limit=MEMORY_LIMIT)
        assert proc.returncode == 0, proc.stderr[-1000:]
        if fmt == "ndjson":
            assert proc.stdout.count(b"\n") == n
        else:
            assert len(json.loads(proc.stdout)["entry"]) == n


def test_the_bundle_is_one_valid_bundle_byte_for_byte_the_indented_dump(tmp_path):
    catalog = load_catalog(include_shipped=True)
    paths = sorted(EXAMPLES.glob("*/complete.json")) + sorted(EXAMPLES.glob("*/amended.json"))
    observations = []
    for p in paths:
        response = json.loads(p.read_text())
        observations.append(build_observation(score_response(response, catalog), response))
    proc = score(*map(str, paths), "--format", "bundle")
    assert proc.returncode == 0, proc.stderr
    bundle = json.loads(proc.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection" and len(bundle["entry"]) == len(paths)
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(paths)
    assert proc.stdout == (json.dumps(collection_bundle(observations), indent=2) + "\n").encode()


def test_a_bundle_of_nothing_is_still_one_valid_bundle():
    proc = score("-", "--format", "bundle", stdin=b'{"resourceType": "Patient", "id": "p"}\n')
    assert proc.returncode == 1
    assert proc.stdout == (json.dumps(collection_bundle([]), indent=2) + "\n").encode()


def test_jobs_keep_the_input_order(tmp_path):
    catalog = load_catalog(include_shipped=True)
    text = b"".join(b"".join(lines(catalog.get(i), 800)) for i in ("wai-sr", "srs", "haq-ii", "ors"))
    numbered = text.splitlines(keepends=True)
    numbered.insert(1234, b"{oops\n")  # a bad line in the middle: its error keeps its place too
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"".join(numbered))
    one = score(str(path), "--format", "ndjson")
    for jobs in ("2", "3", "0"):
        many = score(str(path), "--format", "ndjson", "--jobs", jobs)
        assert many.returncode == one.returncode == 1
        assert many.stdout == one.stdout and many.stderr == one.stderr
    ids = [json.loads(line)["derivedFrom"][0]["reference"].split("/_history/")[0] for line in one.stdout.splitlines()]
    assert ids == [f"QuestionnaireResponse/{json.loads(line)['id']}" for line in text.splitlines()]
    assert b":1235: malformed JSON" in one.stderr
