"""FHIR literal references, read one way everywhere: ``Type/id``, ``Type/id/_history/vid``, absolute or not.

A reference reaches us from a server, a notification or an EHR's hook request, and each used
to be split by hand (``split("/")[-2]``, ``partition("/")``): ``Patient/x/_history/1`` then
read as a user of type ``x``, and ``Patient/`` raised an IndexError. :func:`parse_reference`
is the one reader: the whole text must match, the type is a FHIR resource type name, the id
and the version are FHIR ids, and an absolute reference keeps its base so the caller can check
that it names *our* server. Anything else is None, never a half-read guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FHIR_ID_RULE", "MAX_REFERENCE", "Reference", "parse_reference", "valid_id"]

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
