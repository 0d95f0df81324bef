"""The one reader of FHIR literal references (``alliance_fhir._refs``)."""

from __future__ import annotations

import pytest

from alliance_fhir._refs import Reference, parse_reference, valid_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient/x", Reference("Patient", "x")),
        ("Patient/x/_history/1", Reference("Patient", "x", "1")),
        ("Practitioner/a.b-C9", Reference("Practitioner", "a.b-C9")),
        ("http://h.test/fhir/Patient/x", Reference("Patient", "x", None, "http://h.test/fhir")),
        ("https://h.test/Patient/x/_history/v2", Reference("Patient", "x", "v2", "https://h.test")),
        ("https://h.test:8443/a/b/RelatedPerson/r", Reference("RelatedPerson", "r", None, "https://h.test:8443/a/b")),
    ],
)
def test_references_that_parse(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Patient/",
        "Patient",
        "/x",
        "patient/x",
        "P/x",
        "Patient/x/",
        "Patient/x/_history/",
        "Patient/x/_history",
        "Patient/x/y",
        "Patient/..",
        "Patient/.",
        "Patient/x y",
        "Patient/x\n",
        "Patient/" + "a" * 65,
        "#contained",
        "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
        "Patient?name=x",
        "ftp://h/Patient/x",
        "http://h.test/fhir/Patient/x?y=1",
        "",
        None,
        7,
        ["Patient/x"],
        "http://h/" + "a/" * 3000 + "Patient/x",
    ],
)
def test_everything_else_is_none(text):
    assert parse_reference(text) is None


def test_relative_and_on():
    ref = parse_reference("http://h.test/fhir/Patient/x/_history/3")
    assert ref is not None and ref.relative == "Patient/x"
    assert ref.on("http://h.test/fhir/") and not ref.on("http://other.test/fhir")
    assert parse_reference("Patient/x").on("http://anything")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("A-1.b", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("..", False),
        ("a/b", False),
        (1, False),
        (None, False),
    ],
)
def test_valid_id(value, ok):
    assert valid_id(value) is ok
