"""FHIR literal references, read one way everywhere: ``Type/id``, ``Type/id/_history/vid``, absolute or not.

A reference reaches us from a server, a notification or an EHR's hook request, and each used
to be split by hand (``split("/")[-2]``, ``partition("/")``): ``Patient/x/_history/1`` then
read as a user of type ``x``, and ``Patient/`` raised an IndexError. :func:`parse_reference`
is the one reader: the whole text must match, the type is a FHIR resource type name, the id
and the version are FHIR ids, and an absolute reference keeps its base so the caller can check
that it names *our* server. Anything else is None, never a half-read guess.

:class:`References` is the one rule for how our results name the source's resources (the client,
the session, the response, the therapist): relative (``Patient/123``) when the results live on
the source, absolute on the source's base URL (``https://ehr.example.org/fhir/Patient/123``) when
they live in a results store beside it, where a relative reference would name the store's own
resource of that id, or nothing. Reading goes the other way: a reference on the source, absolute
or relative, reads as ``Patient/123``, so older relative results and new absolute ones are the
same client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FHIR_ID_RULE",
    "MAX_REFERENCE",
    "ONE_SERVER",
    "Reference",
    "References",
    "parse_reference",
    "valid_id",
]

MAX_REFERENCE = 4096
"""Longest reference text read at all (a server URL plus a type, an id and a version fit easily)."""

FHIR_ID_RULE = "[A-Za-z0-9-.]{1,64}"
"""FHIR R4's logical id (the ``id`` datatype), as error messages name it."""

# FHIR's id pattern; ids made only of dots are refused too, as they would be path steps ("..") in a URL
_ID = r"(?!\.+(?:/|$))[A-Za-z0-9\-.]{1,64}"
_REFERENCE = re.compile(
    rf"(?:(?P<base>https?://[^\s/?#]+(?:/[^\s?#]*)?)/)?"
    rf"(?P<type>[A-Z][A-Za-z]{{1,63}})/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?"
)
_ID_ONLY = re.compile(_ID)


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed literal reference; ``base`` is the server URL of an absolute one (no trailing slash)."""

    type: str
    id: str
    version: str | None = None
    base: str | None = None

    @property
    def relative(self) -> str:
        """``Type/id``, without version or base: the form a resource's own reference takes."""
        return f"{self.type}/{self.id}"

    def on(self, base_url: str) -> bool:
        """Whether the reference names a resource of the server at ``base_url`` (relative ones do)."""
        return self.base is None or self.base == base_url.rstrip("/")


def valid_id(value: object) -> bool:
    """A FHIR logical id (``[A-Za-z0-9\\-\\.]{1,64}``, not only dots).

    A server's ids become ledger keys, references and message text: one without an id cannot be
    told apart from another, and one with a newline, a ``/`` or ten million characters would
    forge log lines, break references or fill the ledger. Checked on length first, so a huge
    value costs nothing.
    """
    return isinstance(value, str) and len(value) <= 64 and _ID_ONLY.fullmatch(value) is not None


def parse_reference(text: object) -> Reference | None:
    """``text`` as a literal reference, or None when it is not one (not a string, malformed, too long).

    Accepted: ``Type/id``, ``Type/id/_history/vid``, and either after an ``http(s)://`` base.
    Not accepted: contained (``#x``), ``urn:uuid:``, search (``Type?x=y``), a missing or
    malformed type, id or version, anything around the reference (spaces, a query, a fragment).
    """
    if not isinstance(text, str) or len(text) > MAX_REFERENCE:
        return None
    match = _REFERENCE.fullmatch(text)
    if match is None:
        return None
    base = match["base"]
    return Reference(match["type"], match["id"], match["version"], base.rstrip("/") if base else None)


@dataclass(frozen=True, slots=True)
class References:
    """How our results name resources of the source: the one place that decides relative or absolute.

    ``source``: the source's base URL (None when unknown, as in offline scoring: references are
    then written as found and read as found). ``absolute``: the results are stored on another
    server than the source, so a reference to the source is written on its base URL. Only
    references that name the source are changed: a reference that is already absolute, contained
    (``#x``), a ``urn:``, or only an identifier or a display is written exactly as found.
    """

    source: str | None = None
    absolute: bool = False

    @classmethod
    def between(cls, source: str, results: str) -> References:
        """The rule for results read from ``source`` and stored on ``results`` (the same URL: one server)."""
        source, results = source.rstrip("/"), results.rstrip("/")
        return cls(source, absolute=source != results)

    def text(self, reference: str) -> str:
        """A reference text as written into a result: ``Patient/1`` -> ``<source>/Patient/1`` when split."""
        if not self.absolute or self.source is None:
            return reference
        ref = parse_reference(reference)
        return f"{self.source}/{reference}" if ref is not None and ref.base is None else reference

    def value(self, reference: dict[str, Any]) -> dict[str, Any]:
        """A Reference datatype as written into a result; the same object when nothing changes, else a copy."""
        text = reference.get("reference")
        if not isinstance(text, str):
            return reference
        written = self.text(text)
        return reference if written == text else {**reference, "reference": written}

    def local(self, reference: object) -> str | None:
        """A stored reference as the source names it: absolute on the source -> ``Type/id`` (and its version).

        Relative references and references to other servers are returned as found; anything that
        is not a string is None. So ``Patient/1`` and ``<source>/Patient/1`` read the same.
        """
        if not isinstance(reference, str):
            return None
        if self.source is None:
            return reference
        ref = parse_reference(reference)
        if ref is None or ref.base is None or not ref.on(self.source):
            return reference
        return ref.relative + (f"/_history/{ref.version}" if ref.version else "")

    def search(self, reference: str) -> str:
        """A reference search value for the results store that finds the results about ``reference``.

        Split: the absolute form (what we write) or the relative one (results written before
        references were absolute), as one OR'd value. One server: the reference as given.
        """
        relative = self.local(reference) or reference
        written = self.text(relative)
        return relative if written == relative else f"{written},{relative}"


ONE_SERVER = References()
"""References as found: results stored beside what they name (the default of every builder)."""
