"""Discussion prompts: what a clinician might ask or do when a card says the alliance needs attention.

The prompts are data, not code: ``prompts/en.json`` ships with the package, and a clinic can edit
it or translate it into a file of its own (``[cds] prompts`` in the config file, ``signals
--prompts FILE``). A file holds one prompt per situation fact (why there is concern, or that the
alliance was repaired or is on track) and one per part of the alliance (Bordin's goals, tasks and
bond, plus the overall rating). Each prompt says whose it is (the literature's, with its source,
or a project decision), because a clinician should know what a suggestion rests on.

The file is validated as strictly as a mapping: unknown keys, a missing fact or part, a text over
:data:`MAX_TEXT` characters, an unknown ``whose`` are each refused with one line that names the file,
the prompt and the reason. ``prompts/prompts.schema.json`` is :func:`prompts_json_schema`'s output
(a test keeps the two in step), so editors check a clinic's file by the same rules.

Texts are stored as one plain line (control characters and line breaks become spaces); they are
still data, and whoever renders them (a card's markdown, the report's HTML) escapes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .._text import one_line, safe_text
from ..errors import ConfigError
from ..instruments.catalog import data_root
from ..instruments.models import AlliancePart

__all__ = [
    "MAX_TEXT",
    "PARTS",
    "SCHEMA_ID",
    "SITUATIONS",
    "PartPrompt",
    "Prompt",
    "PromptSet",
    "SituationKey",
    "SituationPrompt",
    "default_prompts_path",
    "load_prompts",
    "prompts_json_schema",
]

MAX_TEXT = 200
"""Longest prompt text, in characters: about three lines of a 560 px CDS card."""
MAX_FILE_BYTES = 256 * 1024
"""A prompt file larger than this is refused unread (a full set is about 5 KB)."""
SCHEMA_ID = "http://alliance-fhir.org/schema/prompts.schema.json"

SituationKey = Literal["fallen", "below", "early", "split", "gap", "repair", "on-track"]
"""The situation facts a prompt answers: the five reasons for concern, a repair, and on track."""
SITUATIONS: tuple[str, ...] = get_args(SituationKey)
PARTS: tuple[str, ...] = get_args(AlliancePart)
Whose = Literal["literature", "project decision"]
SourceConfidence = Literal["C2", "C1", "U"]
_BCP47 = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"


def _plain(value: Any) -> Any:
    """A string as one plain line (see :func:`~alliance_fhir._text.one_line`); other values are left to the type check."""
    return one_line(value) if isinstance(value, str) else value


PlainText = Annotated[str, BeforeValidator(_plain), Field(min_length=1)]


class Prompt(BaseModel):
    """One discussion prompt: a question or an action in plain words, and what it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: Annotated[PlainText, Field(max_length=MAX_TEXT)] = Field(
        description=f"The prompt as the clinician reads it: a question or an action, at most {MAX_TEXT} characters."
    )
    source: PlainText = Field(
        description="Where the idea comes from: a citation (literature), or what the project decided and why."
    )
    whose: Whose = Field(description="'literature' (a published source) or 'project decision'.")
    confidence: SourceConfidence | None = Field(
        default=None,
        description="How well the source is confirmed (C2: two or more independent sources; C1: one; U: unconfirmed). "
        "Literature prompts only.",
    )

    @model_validator(mode="after")
    def _confidence_fits_whose(self) -> Self:
        if self.whose == "literature" and self.confidence is None:
            raise ValueError("a literature prompt needs confidence (C2, C1 or U)")
        if self.whose == "project decision" and self.confidence is not None:
            raise ValueError("a project decision has no confidence tag (it is ours, not a source's)")
        return self


class SituationPrompt(Prompt):
    """The prompt for one situation fact."""

    id: SituationKey


class PartPrompt(Prompt):
    """The prompt for one part of the alliance (the part that fell most)."""

    id: AlliancePart


class PromptSet(BaseModel):
    """A prompt file: one prompt per situation fact and one per part of the alliance, in one language."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    schema_version: Literal[1] = Field(
        default=1, description="The prompt file format; a clinic's file of another version is refused, not guessed at."
    )
    language: str = Field(pattern=_BCP47, description="BCP-47 language of the texts, e.g. 'en' or 'de-CH'.")
    title: PlainText
    source: PlainText = Field(description="Who wrote or translated this set, and when.")
    situations: list[SituationPrompt] = Field(description="One prompt for each of: " + ", ".join(SITUATIONS) + ".")
    parts: list[PartPrompt] = Field(description="One prompt for each of: " + ", ".join(PARTS) + ".")

    @model_validator(mode="after")
    def _each_once(self) -> Self:
        for kind, prompts, keys in (("situation", self.situations, SITUATIONS), ("part", self.parts, PARTS)):
            ids = [p.id for p in prompts]
            twice = sorted({i for i in ids if ids.count(i) > 1})
            if twice:
                raise ValueError(f"prompt '{twice[0]}': given twice")
            missing = [k for k in keys if k not in ids]
            if missing:
                raise ValueError(f"prompt '{missing[0]}': missing (every {kind} needs a prompt)")
        return self

    def situation(self, fact: str) -> Prompt | None:
        """The prompt for a situation fact (``fallen``, ``below``, ..., ``repair``, ``on-track``); None if unknown."""
        return next((p for p in self.situations if p.id == fact), None)

    def part(self, part: str) -> Prompt | None:
        """The prompt for a part of the alliance (``goals``, ``tasks``, ``bond``, ``overall``); None if unknown."""
        return next((p for p in self.parts if p.id == part), None)

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        """Every prompt: the situations', then the parts'."""
        return (*self.situations, *self.parts)


def default_prompts_path() -> Path:
    """The packaged English set (the checkout's ``prompts/en.json``, or the wheel's copy)."""
    return data_root() / "prompts" / "en.json"


def load_prompts(path: Path | None = None) -> PromptSet:
    """Load and check a prompt file; ``None``: the packaged English set.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or breaks a rule; one line naming the
            file, the prompt and the reason (``prompts/de.json: prompt 'fallen': text is longer
            than 200 characters``).
    """
    where = path if path is not None else default_prompts_path()
    data = _read_json(where)
    try:
        return PromptSet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_summarise_errors(exc, data)}") from None


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the prompt file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KB; not a prompt file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object with language, title, source, situations and parts")
    return data


def _summarise_errors(exc: ValidationError, data: Any, limit: int = 3) -> str:
    """One line from the validation errors of a prompt file: each names its prompt and the reason."""
    errors = exc.errors()
    lines = [_describe(dict(e), data) for e in errors[:limit]]
    more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
    return "; ".join(lines) + more


def _describe(error: dict[str, Any], data: Any) -> str:
    loc = tuple(error["loc"])
    kind, message = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] in ("situations", "parts") and isinstance(loc[1], int):
        prompt = _prompt_name(data, str(loc[0]), loc[1])
        field = ".".join(map(str, loc[2:]))
        if field == "id" and kind == "literal_error":
            known = SITUATIONS if loc[0] == "situations" else PARTS
            return f"{prompt}: not a {str(loc[0])[:-1]} (known: {', '.join(known)})"
        return f"{prompt}: {_reason(field, kind, message, error.get('ctx') or {})}"
    return _reason(".".join(map(str, loc)), kind, message, error.get("ctx") or {})


def _prompt_name(data: Any, group: str, index: int) -> str:
    """``prompt 'fallen'`` by the prompt's own id where it has one, else its place in the file."""
    try:
        ident = data[group][index]["id"]
    except (KeyError, IndexError, TypeError):
        ident = None
    return f"prompt '{safe_text(ident, 40)}'" if isinstance(ident, str) else f"{group}[{index}]"


def _reason(field: str, kind: str, message: str, ctx: dict[str, Any]) -> str:
    if kind in ("string_too_long", "too_long"):
        return f"{field} is longer than {ctx.get('max_length')} characters"
    if kind in ("string_too_short", "too_short"):
        return f"{field} is empty"
    if kind == "missing":
        return f"{field} is missing"
    if kind == "extra_forbidden":
        return f"unknown key '{safe_text(field, 40)}'"
    if kind == "literal_error":
        return f"{field} must be {ctx.get('expected')}"
    return f"{field}: {message}" if field else message


def prompts_json_schema() -> dict[str, Any]:
    """The prompt files' JSON Schema (draft 2020-12, as pydantic writes it)."""
    schema = PromptSet.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    schema["title"] = "alliance-fhir discussion prompts"
    return schema
