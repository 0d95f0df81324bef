"""Our content as a FHIR NPM package: a deterministic ``.tgz`` any FHIR tool can load.

Layout (FHIR NPM package specification)::

    package/package.json      name, version, fhirVersions, dependencies, ...
    package/.index.json       one entry per resource file (index-version 2)
    package/<Type>-<id>.json  the Questionnaires and CodeSystem (:func:`content.content_resources`,
                              the code path of ``questionnaires export``), then the ValueSets
                              and ObservationDefinitions (:func:`content.definition_resources`)
    package/other/ViewDefinition-<id>.json
                              the SQL on FHIR ViewDefinitions (:mod:`.views`): logical-model
                              instances, not R4 resources, so not in the resource index

The resource files are byte-identical to the files ``questionnaires export`` writes. The
archive is reproducible: entries sorted, fixed mtimes, owners and modes, a gzip header
without a name or time, so the same content and version give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._ids import PROJECT_BASE
from ..errors import AllianceFhirError
from ..instruments.catalog import Catalog
from ..instruments.models import TextPack
from .definitions import definition_resources
from .questionnaires import content_resources, resource_filenames, resource_json
from .views import view_definitions

__all__ = [
    "FHIR_VERSION",
    "PACKAGE_NAME",
    "build_package",
    "package_files",
    "package_resources",
    "write_package",
]

PACKAGE_NAME = "alliance-fhir.content"
FHIR_VERSION = "4.0.1"
CANONICAL = PROJECT_BASE
DEPENDENCIES = {"hl7.fhir.r4.core": FHIR_VERSION}
# npm's own fixed timestamp for reproducible tarballs (1985-10-26T08:15:00Z).
_MTIME = 499162500
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$")


def package_resources(catalog: Catalog, packs: Iterable[TextPack] = ()) -> list[dict[str, Any]]:
    """Every resource the package carries, in package order.

    Raises:
        TextPackError: a pack does not fit (as for ``questionnaires export``).
    """
    return content_resources(catalog, packs) + definition_resources(catalog)


def package_files(
    resources: list[dict[str, Any]],
    version: str,
    *,
    name: str = PACKAGE_NAME,
    views: Sequence[dict[str, Any]] | None = None,
) -> dict[str, bytes]:
    """The package's files by archive path (``package/...``), ``package.json`` first.

    ``views`` are the ViewDefinitions for ``package/other/``; None means the shipped ones.

    Raises:
        AllianceFhirError: the name or version does not follow the FHIR package rules, or a
            shipped ViewDefinition file is broken.
    """
    if not _NAME.match(name):
        raise AllianceFhirError(f"package name {name!r} is not a FHIR package name (lowercase, dot-separated parts)")
    if not _VERSION.match(version):
        raise AllianceFhirError(f"package version {version!r} is not a semantic version")
    filenames = resource_filenames(resources)
    files = {"package/package.json": _json_bytes(_manifest(name, version))}
    index = [_index_entry(resource, filename) for resource, filename in zip(resources, filenames, strict=True)]
    files["package/.index.json"] = _json_bytes({"index-version": 2, "files": index})
    for resource, filename in zip(resources, filenames, strict=True):
        files[f"package/{filename}"] = resource_json(resource).encode("utf-8")
    for view in view_definitions() if views is None else views:
        files[f"package/other/ViewDefinition-{view['id']}.json"] = resource_json(view).encode("utf-8")
    return files


def build_package(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``files``: sorted entries, fixed metadata, the same bytes every time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mtime = _MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[path]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_package(catalog: Catalog, out: Path, version: str, packs: Iterable[TextPack] = ()) -> Path:
    """Build the package and write it: to ``out`` if it ends in ``.tgz``, else into the folder ``out``.

    Raises:
        TextPackError: a pack does not fit.
        AllianceFhirError: bad version, or the file cannot be written.
    """
    data = build_package(package_files(package_resources(catalog, packs), version))
    path = out if out.suffix == ".tgz" else out / f"{PACKAGE_NAME}-{version}.tgz"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise AllianceFhirError(f"{path}: cannot write the package ({exc})") from exc
    return path


def _manifest(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "type": "Conformance",
        "canonical": CANONICAL,
        "title": "alliance-fhir content",
        "description": (
            "Psychotherapy alliance measures (WAI-SR, SRS, CSRS, GSRS, HAq-II, ORS, CORS) as FHIR R4 Questionnaires with "
            "SDC scoring and observation-based extraction, the alliance-fhir CodeSystem, answer ValueSets and one "
            "ObservationDefinition per score, and SQL on FHIR ViewDefinitions of the scores and signals (package/other). "
            "Item wording is not included; each Questionnaire states the instrument "
            "owner's terms in its copyright."
        ),
        "author": "alliance-fhir project",
        "license": "Apache-2.0",
        "fhirVersions": [FHIR_VERSION],
        "dependencies": dict(DEPENDENCIES),
    }


def _index_entry(resource: dict[str, Any], filename: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"filename": filename, "resourceType": resource["resourceType"], "id": resource["id"]}
    for key in ("url", "version", "kind", "type", "supplements", "content"):
        if isinstance(resource.get(key), str):
            entry[key] = resource[key]
    return entry


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return resource_json(doc).encode("utf-8")
