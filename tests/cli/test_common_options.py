"""The options most commands share, declared once: ``common_options`` puts them on a command's
command line where the command's ``common`` parameter stands, in the order named, and hands the
command what was given as one ``CommonOptions``."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from alliance_fhir.cli._common import CommonOptions, common_options

runner = CliRunner()


def one_command(seen: list[object]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @common_options("config", "verbose", "as_json")
    def probe(first: str = "a", *, common: CommonOptions) -> None:
        """A command with one option of its own, then three shared ones."""
        seen.append((first, common))

    @app.command()
    def other() -> None:  # a second command keeps typer from folding the app into `probe`
        """Unused."""

    return app


def test_the_shared_options_stand_at_the_commands_place_in_the_order_named():
    command = typer.main.get_command(one_command([])).commands["probe"]  # type: ignore[attr-defined]
    assert [p.name for p in command.params] == ["first", "config", "verbose", "as_json"]
    assert command.params[1].opts == ["--config"]
    assert command.params[3].opts == ["--json"]


def test_the_command_receives_what_was_given_as_one_value(tmp_path):
    seen: list[object] = []
    given = tmp_path / "x.toml"
    result = runner.invoke(one_command(seen), ["probe", "--first", "b", "--json", "--config", str(given)])
    assert result.exit_code == 0, result.output
    assert seen == [("b", CommonOptions(config=Path(given), as_json=True))]


def test_options_not_named_keep_their_defaults():
    seen: list[object] = []
    assert runner.invoke(one_command(seen), ["probe"]).exit_code == 0
    assert seen == [("a", CommonOptions())]


def test_an_option_not_named_is_not_on_the_command_line():
    result = runner.invoke(one_command([]), ["probe", "--ca-bundle", "ca.pem"])
    assert result.exit_code == 2
    assert "--ca-bundle" in result.output
