"""The FHIR NPM package on a real HAPI FHIR server: read by HAPI's own package reader, every resource
loaded, read back unchanged and ``$validate``-clean, the ValueSets usable for code validation.

Our harness exposes no package-install operation (HAPI's installer is a Java service; the JPA
starter wires it to configuration, not to REST), so the resources are loaded the way
``alliance-fhir publish`` loads content: conditional update by ``url`` + ``version``. R4
ObservationDefinition has neither, so those are PUT by their ids. The archive itself is opened with
HAPI's NPM library (``org.hl7.fhir.utilities.npm.NpmPackage``, what the installer uses) through
``jshell`` and the jars the harness runs on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import load_catalog
from alliance_fhir.content.package import PACKAGE_NAME, build_package, package_files, package_resources
from alliance_fhir.fhirtypes import comparable
from alliance_fhir.server.publish import publish_resources

from .helpers import client, errors, validate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HAPI_LIB = ROOT / "hapi" / "target" / "lib"
VERSION = "0.1.0"
TGZ = build_package(package_files(package_resources(load_catalog()), VERSION))


def unpack(data: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: json.loads(tar.extractfile(m).read()) for m in tar.getmembers()}  # type: ignore[union-attr]


FILES = unpack(TGZ)
# package/other/ holds the SQL on FHIR ViewDefinitions: not R4 resources, so not loaded into a server
RESOURCES = [
    doc
    for name, doc in FILES.items()
    if name not in ("package/package.json", "package/.index.json") and not name.startswith("package/other/")
]


def load(c: Any) -> list[str]:
    """Load every package resource; return what happened to each (created/updated/unchanged)."""
    canonical = [r for r in RESOURCES if "url" in r]
    order = {"CodeSystem": 0, "ValueSet": 1, "Questionnaire": 2}  # what is referred to first
    results = publish_resources(c, sorted(canonical, key=lambda r: order[r["resourceType"]]))
    assert [r for r in results if r.action == "failed"] == []
    actions = [r.action for r in results]
    for resource in RESOURCES:
        if "url" not in resource:
            existing = None
            try:
                existing = c.read(resource["resourceType"], resource["id"])
            except Exception:  # noqa: BLE001 (NotFound on the first load)
                pass
            if existing is not None and comparable(existing) == comparable(resource):
                actions.append("unchanged")
                continue
            c.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource)
            actions.append("updated" if existing else "created")
    return actions


@pytest.fixture(scope="module")
def loaded(fhir_server: str) -> str:
    with client(fhir_server) as c:
        load(c)
    return fhir_server


def test_every_resource_is_loaded_and_read_back_unchanged(loaded):
    with client(loaded) as c:
        for resource in RESOURCES:
            if "url" in resource:
                found = list(
                    c.search(resource["resourceType"], {"url": resource["url"], "version": resource["version"]})
                )
                assert len(found) == 1, (resource["resourceType"], resource["url"])
                stored = found[0]
            else:
                stored = c.read(resource["resourceType"], resource["id"])
            assert comparable(stored) == comparable(resource), (
                f"{resource['resourceType']}/{resource['id']} changed on the server"
            )


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r['resourceType']}-{r['id']}")
def test_every_resource_validates(loaded, resource):
    with client(loaded) as c:
        assert errors(validate(c, resource)) == []


def test_loading_twice_changes_nothing(loaded):
    with client(loaded) as c:
        assert set(load(c)) == {"unchanged"}


@pytest.mark.parametrize(
    ("valueset", "foreign"), [("wai-sr-answers", "haq-ii-agree"), ("haq-ii-answers", "wai-sr-always")]
)
def test_valueset_holds_exactly_its_anchors_on_the_server(loaded, valueset, foreign):
    """$validate-code against the loaded ValueSet (HAPI expands it in memory from the loaded CodeSystem).

    ``$expand`` itself answers HTTP 500 on our harness: HAPI 8.8's JPA expansion needs Hibernate
    Search, which the harness turns off.
    """
    doc = FILES[f"package/ValueSet-{valueset}.json"]
    (include,) = doc["compose"]["include"]
    with client(loaded) as c:

        def check(code: str) -> dict[str, Any]:
            params = {"url": doc["url"], "valueSetVersion": doc["version"], "system": include["system"], "code": code}
            out = c.request("GET", "ValueSet/$validate-code", params=params).json()
            return {p["name"]: p.get("valueBoolean", p.get("valueString")) for p in out["parameter"]}

        for concept in include["concept"]:
            found = check(concept["code"])
            assert found["result"] is True and found["display"] == concept["display"], found
        assert check(foreign)["result"] is False  # the other instrument's anchor is not in this scale


def test_hapis_package_reader_reads_the_archive(tmp_path):
    """HAPI's NPM library (the package installer's reader) opens the .tgz and finds what our index lists."""
    jshell = shutil.which("jshell")
    jars = sorted(HAPI_LIB.glob("*.jar"))
    if not (jshell and jars):
        if os.environ.get("ALLIANCE_FHIR_TEST_SERVER"):
            pytest.skip("an external test server: the local HAPI harness (hapi/target/lib) and jshell are not required")
        pytest.fail(f"jshell or the HAPI harness jars ({HAPI_LIB}) are missing; `hapi/ctl.sh start` builds them")
    archive = tmp_path / f"{PACKAGE_NAME}-{VERSION}.tgz"
    archive.write_bytes(TGZ)
    script = tmp_path / "read.jsh"
    script.write_text(
        "import org.hl7.fhir.utilities.npm.*;\n"
        f'var p = NpmPackage.fromPackage(new java.io.FileInputStream("{archive}"));\n'
        'System.out.println("name\\t" + p.name());\n'
        'System.out.println("version\\t" + p.version());\n'
        'System.out.println("fhirVersion\\t" + p.fhirVersion());\n'
        'System.out.println("canonical\\t" + p.canonical());\n'
        'System.out.println("dependencies\\t" + String.join(",", p.dependencies()));\n'
        'for (String t : new String[]{"Questionnaire","CodeSystem","ValueSet","ObservationDefinition"})'
        ' System.out.println("type\\t" + t + "\\t" + String.join(",", p.listResources(t)));\n'
        'var index = p.getFolders().get("package").index();\n'
        'System.out.println("index\\t" + org.hl7.fhir.utilities.json.parser.JsonParser.compose(index, false));\n'
        "/exit\n"
    )
    classpath = os.pathsep.join(str(j) for j in jars)
    proc = subprocess.run(
        [jshell, "--class-path", classpath, str(script)], capture_output=True, text=True, timeout=600, check=False
    )
    lines = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    seen = {parts[0]: parts[1:] for parts in lines if parts[0] != "type"}
    assert seen["name"] == [PACKAGE_NAME] and seen["version"] == [VERSION]
    assert seen["fhirVersion"] == ["4.0.1"] and seen["canonical"] == ["http://alliance-fhir.org/fhir"]
    assert seen["dependencies"] == ["hl7.fhir.r4.core#4.0.1"]
    ours = FILES["package/.index.json"]["files"]
    for parts in (p for p in lines if p[0] == "type"):
        listed = sorted(f for f in parts[2].split(",") if f)
        assert listed == sorted(e["filename"] for e in ours if e["resourceType"] == parts[1]), parts[1]
    # HAPI's reader builds its own index (version 2) from the files: entry for entry, it is ours.
    theirs = json.loads(seen["index"][0])
    assert theirs["index-version"] == FILES["package/.index.json"]["index-version"] == 2
    assert sorted(theirs["files"], key=lambda e: e["filename"]) == sorted(ours, key=lambda e: e["filename"])
