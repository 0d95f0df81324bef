"""The patients a per-patient sync reads: a Group's members, a List's entries, or a file of references.

Where a server scopes QuestionnaireResponse search to one patient (Epic's Patient-Entered
Questionnaires), sync cannot ask "every response changed since T"; it asks per patient, and this
module says which patients. The list comes from the source server (``Group/<id>``, ``List/<id>``:
the site keeps it, e.g. the clinic's active caseload) or from a file the site maintains.

Every way in is bounded and nothing is guessed: at most ``MAX_PATIENTS`` patients (a bigger list
is refused, exit 2: split it), a file of at most ``MAX_LINES`` lines of at most ``MAX_LINE``
characters; each entry that is not a Patient reference on the source server is one failure line
naming where it is (``patients.txt line 3``, ``Group/9 member 4``) and the reason, and the rest go
on. Inactive Group members and deleted List entries are not read (the site said so). A Group or
List is one resource (FHIR does not page its members): it is read once, within the client's
``max_response_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._refs import parse_reference, valid_id
from .._text import describe, safe_text
from ..errors import ConfigError, NotFound, UnexpectedResponse
from ..fhirclient.client import FhirClient
from .sync_report import SyncFailure

__all__ = ["MAX_LINE", "MAX_LINES", "MAX_PATIENTS", "PatientList", "patient_source", "read_patients"]

MAX_PATIENTS = 100_000  # a list this long is better read by Group $export (sync --via-export)
MAX_LINES = 200_000  # lines of a patients file, comments and blank lines included
MAX_LINE = 512  # characters of one line of a patients file (a long absolute reference fits)
_LIST_TYPES = ("Group", "List")


@dataclass
class PatientList:
    """The patients to read (``Patient/<id>``, in the order given, each once) and the entries refused."""

    source: str  # as the user named it: Group/9, List/4, or the file's path
    patients: list[str] = field(default_factory=list)
    refused: list[SyncFailure] = field(default_factory=list)
    duplicates: int = 0  # the same patient named again (read once)
    seen: set[str] = field(default_factory=set, repr=False)


def patient_source(text: str) -> tuple[str, str]:
    """``("Group", id)``, ``("List", id)`` or ``("file", path)`` for the ``--patients`` value.

    Raises:
        ConfigError: an empty value, or ``Group/``/``List/`` without a valid id.
    """
    value = text.strip()
    if not value:
        raise ConfigError("--patients needs Group/ID, List/ID or a file of patient references")
    kind, slash, rid = value.partition("/")
    if slash and kind in _LIST_TYPES:
        if not valid_id(rid):
            raise ConfigError(f"--patients {safe_text(value, 80)}: {kind}/ needs a FHIR id ([A-Za-z0-9-.]{{1,64}})")
        return kind, rid
    return "file", value


def read_patients(client: FhirClient, text: str) -> PatientList:
    """The patients named by ``text`` (see :func:`patient_source`), from ``client``'s server or a file.

    Raises:
        ConfigError: the file cannot be read or is too long, the Group or List does not exist,
            or the list holds more than ``MAX_PATIENTS`` patients.
        FhirServerError, FhirTransportError: reading the Group or List failed.
    """
    kind, value = patient_source(text)
    found = PatientList(source=text.strip())
    if kind == "file":
        _from_file(Path(value), client.base_url, found)
    else:
        _from_resource(client, kind, value, found)
    return found


def _from_file(path: Path, base_url: str, found: PatientList) -> None:
    """One reference a line (``Patient/123``, an absolute one on the source server, or a bare id);
    ``#`` starts a comment; blank lines are skipped."""
    try:
        with path.open("r", encoding="utf-8", errors="strict") as lines:
            for number, raw in enumerate(lines, 1):
                if number > MAX_LINES:
                    raise ConfigError(f"--patients {path}: more than {MAX_LINES} lines; split the list")
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                where = f"{path.name} line {number}"
                if len(line) > MAX_LINE:
                    found.refused.append(SyncFailure(where, f"longer than {MAX_LINE} characters: not a reference"))
                    continue
                _add(found, line, base_url, where, bare_ids=True)
    except UnicodeDecodeError:
        raise ConfigError(f"--patients {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"--patients {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def _from_resource(client: FhirClient, kind: str, rid: str, found: PatientList) -> None:
    try:
        resource = client.read(kind, rid)
    except NotFound:
        raise ConfigError(f"--patients {kind}/{rid}: not found on {client.base_url}") from None
    if resource.get("resourceType") != kind:
        raise UnexpectedResponse("GET", f"{kind}/{rid}", 200, f"the answer is not a {kind}")
    part = "member" if kind == "Group" else "entry"
    members = resource.get(part)
    if members is None:
        return
    if not isinstance(members, list):
        raise UnexpectedResponse("GET", f"{kind}/{rid}", 200, f"its {part} is {describe(members)}, not a list")
    for number, member in enumerate(members, 1):
        where = f"{kind}/{rid} {part} {number}"
        if not isinstance(member, dict):
            found.refused.append(SyncFailure(where, f"{describe(member)}, not a {part}"))
            continue
        if member.get("inactive") is True or member.get("deleted") is True:
            continue  # the site took this patient off the list
        holder = member.get("entity" if kind == "Group" else "item")
        reference = holder.get("reference") if isinstance(holder, dict) else None
        if not isinstance(reference, str):
            found.refused.append(SyncFailure(where, "no literal reference (only Patient/ID references are read)"))
            continue
        _add(found, reference, client.base_url, where, bare_ids=False)


def _add(found: PatientList, text: str, base_url: str, where: str, *, bare_ids: bool) -> None:
    """Add one patient, or refuse the entry with its reason; the same patient twice is counted once."""
    ref = parse_reference(text)
    if ref is None and bare_ids and valid_id(text):
        patient = f"Patient/{text}"
    elif ref is None:
        found.refused.append(SyncFailure(where, f"{safe_text(text, 80)!r} is not a Patient reference"))
        return
    elif ref.type != "Patient":
        found.refused.append(SyncFailure(where, f"a {ref.type} reference, not a Patient (only patients are read)"))
        return
    elif not ref.on(base_url):
        found.refused.append(SyncFailure(where, "a Patient on another server (only the source's patients are read)"))
        return
    else:
        patient = ref.relative
    if patient in found.seen:
        found.duplicates += 1
        return
    if len(found.patients) >= MAX_PATIENTS:
        raise ConfigError(
            f"--patients {found.source}: more than {MAX_PATIENTS} patients; split the list or read by "
            "Group $export (sync --via-export)"
        )
    found.patients.append(patient)
    found.seen.add(patient)
