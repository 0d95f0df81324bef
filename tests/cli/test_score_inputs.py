"""`score` on awkward inputs: one line per bad file (never one per line), no hang, no silent skip.

Each test here failed on the reader that read whole files as text and re-parsed a failed
document as NDJSON (issue 12, finding 5; issue 14).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app
from alliance_fhir.errors import InputError
from alliance_fhir.scoring.inputs import read_inputs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def run(*args: str, input: str | bytes | None = None):  # noqa: A002, ANN201
    return runner.invoke(app, list(args), input=input)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def example(instrument: str = "srs") -> dict:
    return json.loads((EXAMPLES / instrument / "complete.json").read_text())


def cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    return subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "score", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def test_a_pretty_printed_file_with_a_byte_order_mark_is_one_error(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(example(), indent=2).encode())
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 1 and result.stdout == ""
    assert errors(result.stderr) == [
        f"error: {path}: starts with a UTF-8 byte order mark, which JSON does not allow "
        "(RFC 8259 section 8.1): save it without one"
    ]


def test_a_pretty_printed_file_with_trailing_garbage_is_one_error(tmp_path):
    path = tmp_path / "trailing.json"
    text = json.dumps(example(), indent=2)
    path.write_text(text + "\n}\n")
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 1 and result.stdout == ""
    line = text.count("\n") + 2
    assert errors(result.stderr) == [
        f"error: {path}: malformed JSON: unexpected content after the JSON value at line {line} column 1"
    ]


def test_stdin_pretty_printed_and_broken_is_one_error():
    text = json.dumps(example(), indent=2)[:-1]  # the closing brace lost
    result = run("score", "-", "--format", "ndjson", input=text)
    assert result.exit_code == 1
    assert len(errors(result.stderr)) == 1 and errors(result.stderr)[0].startswith("error: <stdin>: malformed JSON")


def test_a_json_file_of_ndjson_lines_is_still_read_line_by_line(tmp_path):
    path = tmp_path / "lines.json"
    line = json.dumps(example())
    path.write_text(f"{line}\n\n{{oops\n{line}\n")
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 2
    assert [e.split(": malformed")[0] for e in errors(result.stderr)] == [f"error: {path}:3"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (
            '{"resourceType": "QuestionnaireResponse", "item": ' + "[" * 3000 + "]" * 3000 + "}",
            "nested deeper than 1024 levels",
        ),
        ('{"resourceType": "QuestionnaireResponse", "x": ' + "9" * 5000 + "}", "a number literal out of range"),
    ],
)
def test_the_readers_limits_are_one_clear_input_error(tmp_path, document, reason):
    path = tmp_path / "limit.json"
    path.write_text(document)
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(errors(result.stderr)) == 1 and errors(result.stderr)[0].startswith(
        f"error: {path}: malformed JSON: {reason}"
    )


def test_a_searchset_honours_search_mode(tmp_path):
    response = example()
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": response, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "warning", "code": "informational"}],
                },
                "search": {"mode": "outcome"},
            },
        ],
    }
    path = tmp_path / "searchset.json"
    path.write_text(json.dumps(bundle))
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 0, result.stderr
    assert errors(result.stderr) == [] and len(result.stdout.splitlines()) == 1


def test_a_collection_bundle_still_reports_what_is_not_a_response(tmp_path):
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}}],
    }
    path = tmp_path / "collection.json"
    path.write_text(json.dumps(bundle))
    result = run("score", str(path), "--format", "ndjson")
    assert result.exit_code == 1 and "Patient/p1: not a QuestionnaireResponse" in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_json_is_refused_not_waited_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(example()))
    os.mkfifo(folder / "pipe.json")
    for target in (folder, folder / "pipe.json"):
        proc = cli(str(target), "--format", "ndjson", timeout=60)  # a hang fails here with TimeoutExpired
        assert proc.returncode == 1
        assert errors(proc.stderr) == [
            f"error: {folder / 'pipe.json'}: not a regular file (a FIFO); refused (use - to read standard input)"
        ]
    assert len(cli(str(folder), "--format", "ndjson").stdout.splitlines()) == 1


def test_an_unreadable_sub_folder_is_an_error_not_skipped():
    folder = Path(
        tempfile.mkdtemp(prefix="alliance-unreadable-")
    )  # not under pytest's private tmp: the child drops root
    folder.chmod(0o755)
    (folder / "a.json").write_text(json.dumps(example()))
    locked = folder / "locked"
    locked.mkdir()
    (locked / "b.json").write_text(json.dumps(example()))
    locked.chmod(0o000)
    try:
        found = _as_unprivileged_user(
            lambda: [
                (label, str(doc) if isinstance(doc, InputError) else "ok") for label, doc in read_inputs([str(folder)])
            ]
        )
    finally:
        locked.chmod(0o755)
        shutil.rmtree(folder)
    assert found == [(str(folder / "a.json"), "ok"), (str(locked), f"{locked}: cannot read folder (Permission denied)")]


def test_an_error_in_the_input_stream_makes_score_exit_non_zero(tmp_path):
    result = run("score", str(tmp_path / "missing"), str(EXAMPLES / "srs" / "complete.json"), "--format", "ndjson")
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 1


def _as_unprivileged_user(work):  # noqa: ANN001, ANN202
    """``work()`` in a forked child that dropped root (root reads any folder); its result comes back by pipe."""
    if os.geteuid() != 0:
        return work()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter's files need not be readable by nobody
        os.close(read)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            payload = json.dumps({"ok": work()})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload, code = json.dumps({"error": repr(exc)}), 1
        os.write(write, payload.encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        payload = json.loads(pipe.read() or b'{"error": "no answer"}')
    os.waitpid(pid, 0)
    assert "error" not in payload, payload
    return [tuple(pair) for pair in payload["ok"]]
