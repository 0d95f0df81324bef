"""The ``alliance-fhir`` command line (typer). The only module that prints.

Commands parse options, call one library function and render the result: data on stdout
(FHIR JSON, NDJSON or a Rich table), messages and errors on stderr, one line each.
Exit codes: 0 success; 1 some input failed or a check found problems; 2 usage or
configuration error.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from ..content.extraction import extraction_problems
from ..content.package import write_package
from ..content.questionnaires import content_resources, load_text_pack, text_pack_template, write_content
from ..instruments.catalog import Instrument
from ..instruments.schema import form_map_json_schema, mapping_json_schema
from ._common import (
    AllianceGroup,
    ConfidentialityOption,
    ConfigOption,
    InstrumentsOption,
    LogFormat,
    LogFormatOption,
    SensitivityOption,
    TextPackOption,
    command_catalog,
    command_labels,
    emit_json,
    emit_table,
    out,
    say,
    set_log_format,
)

# The commands that talk to a server, by the module whose ``register`` adds them, in the order
# help lists them. They load when one of them runs or help lists them, not at start-up: the
# offline commands (`score` above all) never import the transport (httpx), 6 % of a
# 50,000-response `score` run. tests/test_lazy_imports.py holds this table to the modules.
SERVER_COMMANDS: dict[str, tuple[str, ...]] = {
    ".server": ("check", "publish", "sync", "failures", "demo"),
    ".signals": ("signals", "report"),
    ".serve": ("serve", "subscribe", "cds-token"),
    ".backfill": ("backfill",),
}


def load_server_commands(module: str) -> dict[str, Any]:
    """The click commands that ``module``'s ``register`` adds, built as typer builds the app's own."""
    commands = typer.Typer(rich_markup_mode=None)
    importlib.import_module(module, __package__).register(commands)
    return dict(typer.main.get_group(commands).commands)


class MainGroup(AllianceGroup):
    """The app's group: :class:`AllianceGroup`, with the server commands of :data:`SERVER_COMMANDS`
    loaded on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        lazy = [name for names in SERVER_COMMANDS.values() for name in names]
        return lazy + [name for name in super().list_commands(ctx) if name not in lazy]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        for module, names in SERVER_COMMANDS.items():
            if cmd_name in names and cmd_name not in self.commands:
                self.commands.update(load_server_commands(module))
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="alliance-fhir",
    help="Psychotherapy alliance measures in FHIR: instruments as data, exact scoring, score Observations.",
    cls=MainGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
instruments_app = typer.Typer(help="List, show and check alliance instruments.", no_args_is_help=True)
questionnaires_app = typer.Typer(help="Export instruments as FHIR R4 Questionnaires.", no_args_is_help=True)
package_app = typer.Typer(help="Build a FHIR NPM package of our content.", no_args_is_help=True)
prompts_app = typer.Typer(
    help="Check, show and describe the discussion prompts that cards and Tasks suggest.", no_args_is_help=True
)
app.add_typer(instruments_app, name="instruments")
app.add_typer(questionnaires_app, name="questionnaires")
app.add_typer(package_app, name="package")
app.add_typer(prompts_app, name="prompts")


class OutputFormat(StrEnum):
    bundle = "bundle"
    ndjson = "ndjson"
    table = "table"


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"alliance-fhir {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    instruments: InstrumentsOption = None,
    log_format: LogFormatOption = LogFormat.text,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Psychotherapy alliance measures in FHIR."""
    set_log_format(log_format)
    ctx.obj = {"instruments": list(instruments or [])}


# ---------------------------------------------------------------- instruments


@instruments_app.command("list")
def instruments_list(
    ctx: typer.Context,
    instruments: InstrumentsOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output: one JSON array on one line.")
    ] = False,
) -> None:
    """List the loaded instruments."""
    catalog = command_catalog(ctx, instruments)
    rows = [_summary(i) for i in catalog]
    if as_json:
        emit_json(rows)
        return
    columns = ("id", "name", "version", "items", "scores", "range", "cutoffs", "verification")
    emit_table(
        "Instruments",
        columns,
        [
            (
                r["id"],
                r["name"],
                r["version"],
                r["items"],
                ", ".join(r["scales"]),
                r["range"],
                ", ".join(r["cutoffs"]) or "-",
                r["verification"],
            )
            for r in rows
        ],
        console=out,
    )


def _summary(inst: Instrument) -> dict[str, Any]:
    m = inst.mapping
    total = m.total
    return {
        "id": m.instrument,
        "name": m.name,
        "title": m.title,
        "url": m.url,
        "version": m.version,
        "questionnaire": m.questionnaire,
        "measures": m.measures,
        "items": len(inst.items),
        "scales": [s.id for s in m.scales],
        "range": f"{total.range.min:g}-{total.range.max:g}",
        "cutoffs": [f"{c.operator} {c.threshold:g}" for s in m.scales for c in s.cutoffs],
        "verification": m.verification,
        "source": inst.source,
    }


@instruments_app.command("show")
def instruments_show(
    ctx: typer.Context,
    instrument: Annotated[str, typer.Argument(help="Instrument id, Questionnaire url, or url|version.")],
    instruments: InstrumentsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the mapping as JSON (one line).")] = False,
) -> None:
    """Show one instrument: items, scales, reverse keys, missing-data rules, cutoffs, codes, licence."""
    inst = command_catalog(ctx, instruments).get(instrument)
    if as_json:
        emit_json(inst.mapping.model_dump(mode="json", by_alias=True, exclude_none=True))
        return
    for line in _describe(inst):
        out.print(line, markup=False)


def _describe(inst: Instrument) -> list[str]:
    m = inst.mapping
    q = inst.questionnaire
    lines = [
        f"{m.name}: {q.get('title')}",
        f"  Questionnaire  {m.questionnaire}",
        f"  measures       {m.measures} ({m.respondent}-rated)",
        f"  algorithm      {m.algorithm_version}",
        f"  verification   {m.verification}",
    ]
    if m.verification_note:
        lines.append(f"                 {m.verification_note}")
    scale = m.item_scale
    lines.append(f"  items          {len(inst.items)} {scale.kind} items, {scale.min:g}-{scale.max:g}")
    for s in m.scales:
        lines.append(
            f"  scale {s.id}: {s.aggregation} of items {', '.join(s.items)}; range {s.range.min:g}-{s.range.max:g}"
        )
        if s.reverse_items:
            lines.append(f"      reverse-scored ({scale.min:g} + {scale.max:g} - x): {', '.join(s.reverse_items)}")
        lines.append(f"      missing data ({s.missing.source}): {s.missing.note}")
        lines.append(f"      codes: {', '.join(f'{c.system}|{c.code}' for c in s.codes)}")
        for c in s.cutoffs:
            lines.append(
                f"      cutoff {c.id}: score {c.operator} {c.threshold:g} -> {c.label} [{c.confidence}] source: {c.source}"
            )
            if c.boundary_note:
                lines.append(f"      boundary: {c.boundary_note}")
    if m.aggregation_note:
        lines.append(f"  aggregation    {m.aggregation_note}")
    if m.reliable_change:
        rc = m.reliable_change
        lines.append(f"  reliable change {rc.value:g} points ({rc.population or 'all'}) [{rc.confidence}]")
    lines += [
        f"  key source     {m.key_source}",
        f"  citation       {m.citation}",
        f"  copyright      {q.get('copyright')}",
    ]
    return lines


@instruments_app.command("check")
def instruments_check(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(help="Folder to check (default: every loaded instrument).")
    ] = None,
) -> None:
    """Cross-check Questionnaire + mapping pairs and form maps, and explain every problem (one line each).

    A form map marked ``"example": true`` loads (its ids are invented) but is warned about: a site's
    copy of an example must carry its own EHR's ids. A form map that is ambiguous (a vendor linkId mapped twice, two maps claiming one vendor
    Questionnaire) or partial (one of our scored items unmapped), or whose answers cannot all become
    our answer codes or in-range values, is a problem naming its file, the item and the reason.
    """
    catalog = command_catalog(ctx, [directory] if directory else [], report=False)

    def inside(source: str) -> bool:
        return directory is None or Path(source).resolve().is_relative_to(directory.resolve())

    checked = [i for i in catalog if inside(i.source)]
    maps = [m for m in catalog.forms if inside(m.source)]
    problems = list(catalog.problems)
    if directory is not None and not checked and not maps and not problems:
        problems.append(f"{directory}: no Questionnaire + mapping pair or form map found")
    for inst in checked:
        out.print(f"ok  {inst.id} {inst.canonical}", markup=False)
        for note in extraction_problems(inst):  # advisory: scoring does not depend on SDC extraction rules
            say(f"{inst.id}: SDC extraction: {note}", "note")
    for entry in maps:
        example = " (example: invented ids)" if entry.form_map.example else ""
        out.print(f"ok  form map {entry.id} -> {entry.instrument.canonical}{example}", markup=False)
        if entry.form_map.example:  # a copied example left unfilled would search and score invented ids
            say(f"{entry.source}: example map: its ids are invented; use a copy with your EHR's ids", "warning")
    for problem in problems:
        say(problem, "problem")
    summary = f"{len(checked)} instrument(s) and {len(maps)} form map(s) ok, {len(problems)} problem(s)"
    if problems:
        say(summary)
    else:
        out.print(summary, markup=False)
    raise typer.Exit(1 if problems else 0)


@instruments_app.command("schema")
def instruments_schema() -> None:
    """Print the JSON Schema of mapping files (for editors): ``> mappings/mapping.schema.json``."""
    sys.stdout.write(json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + "\n")


@instruments_app.command("form-map-schema")
def instruments_form_map_schema() -> None:
    """Print the JSON Schema of form-map files (for editors): ``> form-maps/form-map.schema.json``."""
    sys.stdout.write(json.dumps(form_map_json_schema(), indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- prompts
# The prompt module is imported by each command, not at start-up: the other commands never need it.

PromptFileArgument = Annotated[Path, typer.Argument(help="A prompt file (JSON), e.g. a clinic's translation.")]


@prompts_app.command("check")
def prompts_check(file: PromptFileArgument) -> None:
    """Check a prompt file against the rules (every situation and part, sources, length); exit 2 if it breaks one."""
    from ..signals.prompts import load_prompts

    prompts = load_prompts(file)  # a ConfigError is one `error:` line and exit 2 (AllianceGroup)
    out.print(f"ok: {len(prompts.prompts)} prompts ({prompts.language})", markup=False)


@prompts_app.command("show")
def prompts_show(
    file: Annotated[Path | None, typer.Argument(help="A prompt file (default: the packaged English set).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the set as a prompt file (JSON): the start of a clinic's own.")
    ] = False,
) -> None:
    """List the prompts: each situation's and each part's text, with whose it is and its source."""
    from ..signals.prompts import load_prompts

    prompts = load_prompts(file)
    if as_json:  # indented, in the file's own order: for a person to edit
        doc = prompts.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"schema_ref"})
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    out.print(f"{prompts.title} ({prompts.language}); {prompts.source}", markup=False)
    for heading, group in (("Situations", prompts.situations), ("Parts of the alliance", prompts.parts)):
        out.print(f"\n{heading}", markup=False)
        for prompt in group:
            tag = f", {prompt.confidence}" if prompt.confidence else ""
            out.print(f"  {prompt.id}: {prompt.text}", markup=False)
            out.print(f"      {prompt.whose}{tag}: {prompt.source}", markup=False)


@prompts_app.command("schema")
def prompts_schema() -> None:
    """Print the JSON Schema of prompt files (for editors): ``> prompts/prompts.schema.json``."""
    from ..signals.prompts import prompts_json_schema

    sys.stdout.write(json.dumps(prompts_json_schema(), indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- questionnaires


@questionnaires_app.command("export")
def questionnaires_export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the JSON files into.")],
    text_pack: TextPackOption = None,
    bundle: Annotated[
        bool, typer.Option("--bundle", help="Also write bundle.json, one collection Bundle of everything.")
    ] = False,
    for_client: Annotated[
        bool,
        typer.Option(
            "--for-client",
            help="The forms a client portal shows: no answer values (itemWeight/ordinalValue), no calculated "
            "totals, no extraction rules, so the client never sees a score. Each is a Questionnaire of its own "
            "(<id>-for-client, derivedFrom the full form); responses to it score exactly as to the full one.",
        ),
    ] = False,
    instruments: InstrumentsOption = None,
) -> None:
    """Write every Questionnaire (one JSON per form) and the CodeSystem as FHIR R4 JSON."""
    catalog = command_catalog(ctx, instruments)
    packs = [load_text_pack(p) for p in text_pack or []]
    written = write_content(content_resources(catalog, packs, for_client=for_client), out_dir, bundle=bundle)
    for path in written:
        say(f"wrote {path}")


@questionnaires_app.command("template")
def questionnaires_template(
    ctx: typer.Context,
    instrument: Annotated[str, typer.Argument(help="Instrument id, Questionnaire url, or url|version.")],
    language: Annotated[str, typer.Option("--language", help="BCP-47 language of the pack.")] = "en",
    instruments: InstrumentsOption = None,
) -> None:
    """Print a text pack skeleton for an instrument: every linkId, ready for licensed wording."""
    inst = command_catalog(ctx, instruments).get(instrument)
    sys.stdout.write(json.dumps(text_pack_template(inst, language), indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- package


@package_app.command("build")
def package_build(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="The .tgz to write, or a folder (then <name>-<version>.tgz inside it).")],
    text_pack: TextPackOption = None,
    instruments: InstrumentsOption = None,
) -> None:
    """Write a FHIR NPM package (.tgz): Questionnaires, CodeSystem, ValueSets, ObservationDefinitions."""
    catalog = command_catalog(ctx, instruments)
    packs = [load_text_pack(p) for p in text_pack or []]
    path = write_package(catalog, out, __version__, packs)
    say(f"wrote {path}")


# ---------------------------------------------------------------- score


@app.command()
def score(
    ctx: typer.Context,
    paths: Annotated[
        list[str], typer.Argument(help="QuestionnaireResponse JSON, NDJSON, Bundle, folder, or - for stdin.")
    ],
    output: Annotated[
        OutputFormat | None,
        typer.Option("--format", "-f", help="bundle (default when piped), ndjson, or table (default on a terminal)."),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", min=0, help="Worker processes (0 = all cores); output keeps the input's order."),
    ] = 1,
    instruments: InstrumentsOption = None,
    confidentiality: ConfidentialityOption = None,
    sensitivity: SensitivityOption = None,
    config: ConfigOption = None,
) -> None:
    """Score QuestionnaireResponses offline into FHIR Observations (streamed: any input size, flat memory)."""
    from .score import jobs_for, run_score

    labels = command_labels(config, confidentiality, sensitivity)
    catalog = command_catalog(ctx, instruments)
    fmt = output or (OutputFormat.table if sys.stdout.isatty() else OutputFormat.bundle)
    dirs = list((ctx.obj or {}).get("instruments", [])) + list(instruments or [])
    try:
        failed, rows = run_score(paths, catalog, dirs, fmt.value, jobs_for(jobs), labels)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    if fmt is OutputFormat.table:
        emit_table("Scores", ("response", "instrument", "total", "subscales", "flags", "rules"), rows, console=out)
    raise typer.Exit(1 if failed else 0)
