"""Scoring a stream in chunks, each rendered to output bytes: the unit of work of ``score`` (and ``--jobs``).

A chunk is a few hundred raw NDJSON lines or documents (:mod:`.inputs`); its result is the
output for those records (Observation NDJSON, Bundle entries or table rows) plus the error and
warning lines, in input order. Chunks are independent, so they can be scored in worker
processes and written in order by the parent; the parent never holds more than a few chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from .._json import dumps_pretty
from .._security import NO_LABELS, SecurityLabels
from ..errors import AllianceFhirError, InputError
from ..instruments.catalog import Catalog
from .engine import score_response
from .inputs import Raw, parse_raw
from .observations import build_observation, observation_json
from .results import ScoreResult

__all__ = ["BUNDLE_CLOSE", "BUNDLE_CLOSE_EMPTY", "BUNDLE_OPEN", "Chunk", "Format", "chunked", "score_chunk"]

Format = Literal["ndjson", "bundle", "table"]
TableRow = tuple[str, str, str, str, str, str]

CHUNK_ITEMS = 512
CHUNK_BYTES = 4 << 20

# A collection Bundle written entry by entry, byte for byte what json.dumps(bundle, indent=2) gives.
BUNDLE_OPEN = b'{\n  "resourceType": "Bundle",\n  "type": "collection",\n  "entry": ['
BUNDLE_FIRST, BUNDLE_NEXT = b"\n    ", b",\n    "
BUNDLE_CLOSE, BUNDLE_CLOSE_EMPTY = b"\n  ]\n}\n", b"]\n}\n"


@dataclass(slots=True)
class Chunk:
    """What one chunk produced: output (NDJSON bytes, Bundle entries or table rows) and message lines, in order."""

    ndjson: bytes = b""
    entries: list[bytes] = field(default_factory=list)
    rows: list[TableRow] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    scored: int = 0
    failed: int = 0
    bytes_read: int = 0


def chunked(raws: Iterable[Raw]) -> Iterator[list[Raw]]:
    """Raw items in groups of at most CHUNK_ITEMS items or about CHUNK_BYTES bytes."""
    chunk: list[Raw] = []
    size = 0
    for raw in raws:
        chunk.append(raw)
        data = raw[1]
        size += len(data) if isinstance(data, bytes | bytearray) else 0
        if len(chunk) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def score_chunk(raws: list[Raw], catalog: Catalog, fmt: Format, security: SecurityLabels = NO_LABELS) -> Chunk:
    """Parse, score and render one chunk; a failing record becomes an error line, the rest go on.

    ``security``: the meta.security labels of every Observation (the same as sync writes).
    """
    chunk = Chunk(bytes_read=sum(len(data) for _, data, _ in raws if isinstance(data, bytes | bytearray)))
    lines: list[bytes] = []
    messages = chunk.messages
    for label, doc in (record for raw in raws for record in parse_raw(raw)):
        try:
            if isinstance(doc, InputError):
                raise doc
            result = score_response(doc, catalog)
        except AllianceFhirError as exc:
            chunk.failed += 1
            message = str(exc)
            messages.append(f"error: {message}" + ("" if message.startswith(label) else f" ({label})"))
            continue
        chunk.scored += 1
        for warning in result.warnings:
            messages.append(f"warning: {result.response_ref}: {warning}")
        if fmt == "ndjson":
            lines.append(observation_json(result, doc, security=security))
        elif fmt == "bundle":
            observation = build_observation(result, doc, security=security)
            entry = {"fullUrl": f"urn:uuid:{observation['identifier'][0]['value']}", "resource": observation}
            chunk.entries.append(dumps_pretty(entry).replace(b"\n", b"\n    "))
        else:
            chunk.rows.append(table_row(result))
    if lines:
        lines.append(b"")
        chunk.ndjson = b"\n".join(lines)
    return chunk


def table_row(result: ScoreResult) -> TableRow:
    """One line of the scores table: response, instrument, total, subscales, flags, rules."""
    subs = ", ".join(f"{s.scale.id} {s.value}" for s in result.scores[1:]) or "-"
    flags = ", ".join(f.id for s in result.scores for f in s.flags) or "-"
    return (
        result.response_ref,
        result.instrument_id,
        str(result.total.value),
        subs,
        flags,
        "; ".join(result.rules_applied) or "-",
    )


def bundle_separator(first: bool) -> bytes:
    """What goes before an entry of the collection Bundle (after :data:`BUNDLE_OPEN`)."""
    return BUNDLE_FIRST if first else BUNDLE_NEXT
