"""Deterministic synthetic QuestionnaireResponses, as NDJSON bytes, made from a loaded instrument.

The shape follows what a form filler such as LHC-Forms writes for our Questionnaires: coded
answers carry ``system``, ``code`` and ``display`` (no weight extension); visual-analogue lines
are ``valueDecimal`` to one decimal. The mix, fixed by a seed, is:

- 5 % amended (``status: amended``, ``meta.versionId`` 2), the rest completed;
- 5 % with one scored item left unanswered, only where the mapping prorates the total
  (WAI-SR, HAq-II), so the prorating path and its notes are part of the load;
- every response has a focus extension, subject, encounter, author and authored date.

Only flat Questionnaires are generated (all three benchmarked instruments are flat).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from alliance_fhir._ids import FOCUS_EXTENSION
from alliance_fhir.instruments.catalog import Instrument, ItemSpec, walk_items

__all__ = ["AMENDED_SHARE", "MISSING_SHARE", "lines", "ndjson", "write_ndjson"]

AMENDED_SHARE = 0.05
MISSING_SHARE = 0.05
SEED = 2026

AnswerMaker = Callable[[random.Random], dict[str, Any]]


def ndjson(instrument: Instrument, n: int, seed: int = SEED) -> bytes:
    """``n`` responses to ``instrument``, one compact JSON object per line; same seed, same bytes."""
    return b"".join(lines(instrument, n, seed))


def lines(instrument: Instrument, n: int, seed: int = SEED) -> Iterator[bytes]:
    """The lines of :func:`ndjson` one at a time (each ending in a newline), for files larger than memory."""
    rng = random.Random(f"{seed}:{instrument.id}")
    makers = _answer_makers(instrument)
    prorates = instrument.mapping.total.missing.rule == "prorate"
    for i in range(n):
        yield json.dumps(_response(instrument, i, rng, makers, prorates), separators=(",", ":")).encode() + b"\n"


def write_ndjson(instrument: Instrument, n: int, path: Path, seed: int = SEED) -> int:
    """Write :func:`ndjson` to ``path`` without holding it in memory; returns the bytes written."""
    written = 0
    with path.open("wb") as out:
        for line in lines(instrument, n, seed):
            written += out.write(line)
    return written


def _answer_makers(instrument: Instrument) -> list[tuple[str, AnswerMaker]]:
    """One answer maker per scored item, in Questionnaire order."""
    makers = []
    for item in walk_items(instrument.questionnaire["item"]):
        spec = instrument.items.get(item["linkId"])
        if spec is None:
            continue
        if spec.kind == "choice":
            makers.append((spec.link_id, _choice_maker(item)))
        else:
            makers.append((spec.link_id, _vas_maker(spec)))
    return makers


def _choice_maker(item: dict[str, Any]) -> AnswerMaker:
    codings = [dict(option["valueCoding"]) for option in item["answerOption"]]
    return lambda rng: {"valueCoding": rng.choice(codings)}


def _vas_maker(spec: ItemSpec) -> AnswerMaker:
    scale = 10**spec.decimals
    low, high = int(spec.min * scale), int(spec.max * scale)
    return lambda rng: {"valueDecimal": float(Decimal(rng.randint(low, high)) / scale)}


def _response(
    instrument: Instrument, i: int, rng: random.Random, makers: list[tuple[str, AnswerMaker]], prorates: bool
) -> dict[str, Any]:
    amended = rng.random() < AMENDED_SHARE
    items = [{"linkId": link, "answer": [make(rng)]} for link, make in makers]
    if prorates and rng.random() < MISSING_SHARE:
        del items[rng.randrange(len(items))]
    patient = {"reference": f"Patient/bench-{i % 20_000}"}
    authored = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{8 + i % 10:02d}:{i % 60:02d}:00Z"
    return {
        "resourceType": "QuestionnaireResponse",
        "id": f"bench-{instrument.id}-{i}",
        "meta": {"versionId": "2" if amended else "1", "lastUpdated": authored},
        "extension": [{"url": FOCUS_EXTENSION, "valueReference": {"reference": f"PractitionerRole/bench-{i % 300}"}}],
        "questionnaire": instrument.canonical,
        "status": "amended" if amended else "completed",
        "subject": patient,
        "encounter": {"reference": f"Encounter/bench-{i}"},
        "authored": authored,
        "author": dict(patient),
        "item": items,
    }
