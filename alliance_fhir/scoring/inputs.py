"""Reading QuestionnaireResponses from files, NDJSON, directories, Bundles and stdin.

Every record comes out with a label that says where it came from (``file``, ``file:line``,
``file#entry[3]``), and every unreadable record comes out as an :class:`InputError` in the
stream instead of stopping it, so one broken line never blocks a batch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError

__all__ = ["Record", "read_inputs"]

Record = tuple[str, Any]
"""(label, parsed JSON) or (label, InputError)."""


def read_inputs(paths: Iterable[str], stdin: TextIO | None = None) -> Iterator[Record]:
    """Yield every JSON resource found in ``paths`` (``-`` is stdin), in a stable order."""
    for raw in paths:
        if raw == "-":
            yield from _parse_text((stdin or sys.stdin).read(), "<stdin>", ndjson=None)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and not p.name.startswith("."))
            for file in files:
                yield from _read_file(file)
        elif path.exists():
            yield from _read_file(path)
        else:
            yield str(path), InputError(str(path), "no such file or directory")


def _read_file(path: Path) -> Iterator[Record]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield str(path), InputError(str(path), f"cannot read ({exc})")
        return
    yield from _parse_text(text, str(path), ndjson=path.suffix == ".ndjson" or None)


def _parse_text(text: str, label: str, ndjson: bool | None) -> Iterator[Record]:
    """Parse a whole document; when it is not one JSON value, try NDJSON (unless told)."""
    if not ndjson:
        try:
            yield from _unbundle(json.loads(text), label)
            return
        except json.JSONDecodeError as exc:
            if ndjson is False or "\n" not in text.strip():
                yield label, InputError(label, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
                return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{label}:{number}"
        try:
            yield from _unbundle(json.loads(line), where)
        except json.JSONDecodeError as exc:
            yield where, InputError(where, f"malformed JSON: {exc.msg} at column {exc.colno}")


def _unbundle(doc: Any, label: str) -> Iterator[Record]:
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        for index, entry in enumerate(doc.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            yield f"{label}#entry[{index}]", resource if resource is not None else InputError(
                f"{label}#entry[{index}]", "Bundle entry has no resource"
            )
    else:
        yield label, doc
