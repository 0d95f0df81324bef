"""The one JSON codec (alliance_fhir._json): the standard library's bytes for ASCII data, one clear line per parse failure."""

from __future__ import annotations

import json

import pytest

from alliance_fhir import _json

ASCII_VALUES = [
    {
        "resourceType": "Observation",
        "a": [],
        "b": {},
        "c": [1, {"d": [], "e": None}],
        "f": True,
        "g": 46.0,
        "h": 4.5,
        "i": -0.0,
    },
    {"text": 'quote " backslash \\ slash / tab \t newline \n control \x01 \x1f '},
    [0, -1, 2**63 - 1, -(2**63), 0.1, 1e16, 1.5e300],
]


@pytest.mark.parametrize("value", ASCII_VALUES)
def test_ascii_output_is_the_standard_librarys(value):
    assert _json.dumps(value) == json.dumps(value, separators=(",", ":")).encode()
    assert _json.dumps_pretty(value) == json.dumps(value, indent=2).encode()


def test_non_ascii_text_is_written_as_utf8_not_escaped():
    value = {"display": "Arbeitsbündnis \u2013 é"}
    assert _json.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(_json.dumps(value)) == value


def test_delete_character_is_written_raw_where_the_standard_library_escapes_it():
    assert _json.dumps({"t": "\x7f"}) == b'{"t":"\x7f"}'
    assert json.dumps({"t": "\x7f"}, separators=(",", ":")) == '{"t":"\\u007f"}'


def test_integers_beyond_64_bits_are_still_written():
    value = {"n": 2**70, "m": [-(2**80)]}
    assert _json.dumps(value) == json.dumps(value, separators=(",", ":")).encode()
    assert _json.dumps_pretty(value) == json.dumps(value, indent=2).encode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 1024 levels"),
        (b'{"valueInteger": ' + b"9" * 5000 + b"}", "number literal out of range"),
        (b"{}\n}", "unexpected content after the JSON value at line 2 column 1"),
        (b'{"a": }', "malformed JSON"),
    ],
)
def test_each_parse_failure_is_one_line_naming_the_reason(text, reason):
    with pytest.raises(_json.JSONDecodeError) as caught:
        _json.loads(text)
    message = _json.describe_error(caught.value, text)
    assert reason in message and "\n" not in message
