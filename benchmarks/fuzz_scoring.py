"""Random-mutation fuzzing of the scorer's contract, for a set time: figures, not a test.

Takes the example responses, replaces or adds one or two fields anywhere with odd JSON values
(wrong types, huge and non-finite numbers, Decimals, markup, control characters, 100,000-character
strings, nesting) and checks that ``score_response`` + ``build_observation`` + strict JSON output
either succeed or raise an ``AllianceFhirError`` whose message is one safe line. Prints the cases
run, the time, and every distinct failure (exception class and place)::

    .venv/bin/python benchmarks/fuzz_scoring.py --seconds 60 [--seed 1]

The property test ``tests/scoring/test_contract.py`` holds the same contract in CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import time
import traceback
from decimal import Decimal
from pathlib import Path
from typing import Any

from alliance_fhir import AllianceFhirError, build_observation, load_catalog, score_response

ROOT = Path(__file__).resolve().parents[1]
NAMES = [
    "resourceType",
    "id",
    "meta",
    "status",
    "questionnaire",
    "subject",
    "encounter",
    "author",
    "authored",
    "extension",
    "item",
    "answer",
    "linkId",
    "valueCoding",
    "valueInteger",
    "valueDecimal",
    "system",
    "code",
    "url",
    "valueReference",
    "reference",
    "identifier",
    "versionId",
    "value",
]
SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    Decimal("7.5"),
    Decimal("NaN"),
    "",
    "x",
    "completed",
    "[/]",
    "a\nerror: forged",
    "\x1b[31mred",
    "x" * 100_000,
    "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir",
    "1",
]
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    catalog = load_catalog()
    examples = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "examples").rglob("*.json"))]
    rnd = random.Random(args.seed)

    def value(depth: int = 0) -> Any:
        roll = rnd.random()
        if depth > 3 or roll < 0.5:
            return rnd.choice(SCALARS + [10**5000])
        if roll < 0.75:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(NAMES): value(depth + 1) for _ in range(rnd.randint(0, 3))}

    found: dict[str, str] = {}
    cases = ok = refused = 0
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        doc = mutate(copy.deepcopy(rnd.choice(examples)), rnd, value)
        cases += 1
        try:
            result = score_response(doc, catalog)
            json.dumps(build_observation(result, doc), allow_nan=False)
            ok += 1
        except AllianceFhirError as exc:
            refused += 1
            message = str(exc)
            if UNSAFE.search(message) or len(message) > 2000:
                found.setdefault("unsafe message", message[:120])
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            found.setdefault(f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}", str(exc)[:120])
    seconds = time.perf_counter() - started
    print(
        f"cases {cases:,} in {seconds:.1f} s ({cases / seconds:,.0f}/s, load {os.getloadavg()[0]:.2f}); "
        f"scored {ok:,}, refused with a library error {refused:,}; contract breaks: {len(found)}"
    )
    for place, message in sorted(found.items()):
        print(f"  {place}: {message}")


def mutate(doc: dict[str, Any], rnd: random.Random, value: Any) -> dict[str, Any]:
    for _ in range(rnd.randint(1, 2)):
        where = rnd.choice(list(paths(doc))[1:] or [()])
        parent: Any = doc
        for step in where[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rnd.random() < 0.3:
            parent[rnd.choice(NAMES)] = value()
        elif where:
            parent[where[-1]] = value()
    return doc


def paths(value: Any, here: tuple[Any, ...] = ()) -> Any:
    yield here
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*here, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*here, index))


if __name__ == "__main__":
    main()
