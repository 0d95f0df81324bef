"""The docs hold what they say: the embedding guide's examples run, in order, and the API
reference lists every public name."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import alliance_fhir
from alliance_fhir import FhirClient

from .fake_fhir import FakeFhir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_the_embedding_guide_runs(monkeypatch, tmp_path, make_response):
    fake = FakeFhir()
    for rid, value in (("qr-1", 4), ("qr-2", 2)):
        fake.put(
            make_response("wai-sr", dict.fromkeys(range(1, 13), value), rid=rid, subject={"reference": "Patient/p1"})
        )

    class ToTheFakeServer(FhirClient):
        """The guide's client, with the fake server plugged in as its transport."""

        def __init__(self, config, **kwargs) -> None:  # noqa: ANN001, ANN003
            super().__init__(config, transport=httpx.MockTransport(fake), sleep=lambda s: None, **kwargs)

    monkeypatch.setattr(alliance_fhir, "FhirClient", ToTheFakeServer)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks((DOCS / "embedding.md").read_text())
    assert len(blocks) >= 6
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/embedding.md", "exec"), namespace)  # noqa: S102
    report = namespace["report"]
    assert report.scored == 2 and report.written == 2  # type: ignore[attr-defined]
    assert (tmp_path / "content" / "bundle.json").exists() and list((tmp_path / "dist").glob("*.tgz"))


@pytest.mark.parametrize("name", sorted(set(alliance_fhir.__all__) - {"__version__"}))
def test_the_api_reference_lists_every_public_name(name):
    assert f"::: alliance_fhir.{name}\n" in (DOCS / "api.md").read_text()


def test_the_guide_uses_only_the_public_api():
    imports = re.findall(r"^from (alliance_fhir[.\w]*) import", (DOCS / "embedding.md").read_text(), flags=re.M)
    assert imports and set(imports) == {"alliance_fhir"}
