"""The docs hold what they say: the embedding guide's examples run, in order, the API reference
lists every public name, the CLI reference every command and option, the site's nav every page,
and every link of the README resolves inside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

import alliance_fhir
from alliance_fhir import FhirClient
from alliance_fhir.cli.main import app as cli_app

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


def test_every_docs_page_is_in_the_site_nav():
    """A page left out of mkdocs.yml's nav is built but found by no reader."""
    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set()
    assert nav - pages == set()


def readme_links() -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())


def test_every_readme_link_resolves_inside_the_repository():
    """The landing page points only at files of the repository (or at the web), and they exist."""
    local = [link.split("#")[0] for link in readme_links() if not re.match(r"[a-z]+://", link)]
    assert local, "the README links to its docs pages"
    for target in local:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT), f"{target} is outside the repository"
        assert path.exists(), f"{target} does not exist"
    assert "../" not in (ROOT / "README.md").read_text()


def cli_commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its path (``sync``, ``instruments list``, ...).

    Groups are told by their ``commands`` (typer carries its own copy of click's classes)."""
    root = typer.main.get_command(cli_app)
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found[path] = command

    walk(root, "")
    return found


@pytest.mark.parametrize("path", sorted(cli_commands()))
def test_the_cli_reference_lists_every_command_and_option(path):
    text = (DOCS / "cli.md").read_text()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    assert path in sections, f"docs/cli.md has no section '## {path}'"
    for param in cli_commands()[path].params:
        names = [o for o in [*param.opts, *param.secondary_opts] if o.startswith("-")]
        if names:  # an option (arguments have no dashes): any of its spellings, as a whole word
            mentioned = [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", sections[path])]
            assert mentioned, f"docs/cli.md '## {path}' does not mention {' or '.join(names)}"
