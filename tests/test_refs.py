"""The one reader of FHIR literal references (``alliance_fhir._refs``)."""

from __future__ import annotations

import pytest

from alliance_fhir._refs import ONE_SERVER, Reference, References, parse_reference, valid_id


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


# ---- References: how results name the source's resources -----------------------------------------

EHR = "https://ehr.example.org/fhir"
STORE = "https://results.example.org/fhir"
SPLIT = References.between(EHR, STORE)
ONE = References.between(EHR, EHR + "/")  # a trailing slash is the same server


def test_results_beside_the_source_name_its_resources_absolute_on_it():
    assert SPLIT == References(EHR, absolute=True)
    assert SPLIT.text("Patient/123") == "https://ehr.example.org/fhir/Patient/123"
    assert SPLIT.text("QuestionnaireResponse/r1/_history/2") == f"{EHR}/QuestionnaireResponse/r1/_history/2"
    reference = {"reference": "Encounter/e1", "display": "Session 3"}
    assert SPLIT.value(reference) == {"reference": f"{EHR}/Encounter/e1", "display": "Session 3"}
    assert reference == {"reference": "Encounter/e1", "display": "Session 3"}  # the response is never edited


@pytest.mark.parametrize(
    "text",
    [
        "https://other.example.org/fhir/Patient/123",  # already absolute: another server's, kept
        f"{EHR}/Patient/123",  # already absolute on the source
        "#contained",
        "urn:uuid:8b3e1f2a-0000-4000-8000-000000000001",
        "not a reference",
    ],
)
def test_only_relative_references_are_made_absolute(text):
    assert SPLIT.text(text) == text


def test_a_reference_without_a_literal_reference_is_written_as_found():
    by_identifier = {"identifier": {"system": "urn:mrn", "value": "42"}}
    assert SPLIT.value(by_identifier) is by_identifier


def test_one_server_keeps_relative_references_exactly_as_today():
    assert ONE == References(EHR, absolute=False)
    for policy in (ONE, ONE_SERVER):
        assert policy.text("Patient/123") == "Patient/123"
        assert policy.search("Patient/123") == "Patient/123"
        reference = {"reference": "Patient/123"}
        assert policy.value(reference) is reference


@pytest.mark.parametrize("policy", [SPLIT, ONE])
def test_reading_back_an_absolute_reference_on_the_source_is_the_relative_one(policy):
    assert policy.local(f"{EHR}/Patient/123") == "Patient/123"
    assert policy.local(f"{EHR}/QuestionnaireResponse/r1/_history/2") == "QuestionnaireResponse/r1/_history/2"
    assert policy.local("Patient/123") == "Patient/123"  # one server, or results written before
    # another server's Patient/123 is another person: never read as the source's
    assert policy.local("https://other.example.org/fhir/Patient/123") == "https://other.example.org/fhir/Patient/123"
    assert policy.local(None) is None


def test_without_a_known_source_references_are_read_as_found():
    assert ONE_SERVER.local(f"{EHR}/Patient/123") == f"{EHR}/Patient/123"


def test_a_store_is_searched_for_the_absolute_form_and_the_relative_one_of_older_results():
    expected = "https://ehr.example.org/fhir/Patient/123,Patient/123"
    assert SPLIT.search("Patient/123") == expected
    assert SPLIT.search(f"{EHR}/Patient/123") == expected  # the same patient, however it was named
