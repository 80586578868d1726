"""Declarative survey definitions (YAML), validated into typed objects with readable errors.

A definition is data an admin can write and review: questions, options with points, branching and
both languages. Validation rejects what would break a conversation later (a branch to a missing
question, a loop, an option value too long to fit a Telegram button's 64-byte callback data).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.flows.scoring import DECISION_766, SCHEMES, scheme

BUILTIN_DIR = Path(__file__).parent / "surveys"
LANGUAGES = ("vi", "en")
END = "end"
_VALUE = re.compile(r"^[a-z0-9_]{1,16}$")
_QID = re.compile(r"^[a-z0-9_]{1,24}$")


class SurveyDefinitionError(ValueError):
    """A definition that cannot be used; ``str()`` lists every problem with its location."""


class Text(BaseModel):
    """A text in both languages; Vietnamese is required, English falls back to it."""

    model_config = ConfigDict(extra="forbid")
    vi: str = Field(min_length=1)
    en: str | None = None

    def get(self, language: str) -> str:
        return self.en if language == "en" and self.en else self.vi


class Option(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str
    label: Text
    points: int | None = None
    #: Position on the common 1..5 satisfaction scale, for the question that carries it.
    satisfaction: int | None = Field(default=None, ge=1, le=5)
    #: Extra spellings accepted in typed replies (accents optional, matching is tolerant).
    aliases: list[str] = []
    #: Emoji sentiment this option stands for ("positive"/"negative"), for 👍 and 👎.
    sentiment: Literal["positive", "negative"] | None = None

    @field_validator("value")
    @classmethod
    def _compact(cls, value: str) -> str:
        if not _VALUE.match(value):
            raise ValueError("option values are 1-16 characters of a-z, 0-9 and _")
        return value


class Branch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Go to ``goto`` when the answer is (or, for multiple choice, contains) any of these values.
    when: list[str] = Field(min_length=1)
    goto: str


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["single", "scale", "yesno", "multi", "text"]
    text: Text
    help: Text | None = None
    options: list[Option] = []
    #: For ``scale``: the range; options are generated when not listed.
    min: int | None = None
    max: int | None = None
    optional: bool = False
    #: Circular 01/2018 criterion this question answers ("3", "4", "6", "7").
    criterion: str | None = None
    branches: list[Branch] = []
    next: str | None = None

    @field_validator("id")
    @classmethod
    def _qid(cls, value: str) -> str:
        if not _QID.match(value) or value == END:
            raise ValueError("question ids are 1-24 characters of a-z, 0-9 and _ (not 'end')")
        return value

    @model_validator(mode="after")
    def _options_fit_type(self) -> Question:
        if self.type == "yesno" and not self.options:
            self.options = [
                Option(value="yes", label=Text(vi="Có", en="Yes"), sentiment="positive"),
                Option(value="no", label=Text(vi="Không", en="No"), sentiment="negative"),
            ]
        if self.type == "scale" and not self.options:
            if self.min is None or self.max is None or not 0 <= self.min < self.max <= 10:
                raise ValueError("a scale needs min < max within 0..10, or explicit options")
            self.options = [
                Option(value=str(n), label=Text(vi=str(n)), points=n)
                for n in range(self.min, self.max + 1)
            ]
        if self.type == "text":
            if self.options:
                raise ValueError("a free-text question has no options")
        elif len(self.options) < 2:
            raise ValueError(f"a {self.type} question needs at least two options")
        values = [o.value for o in self.options]
        if len(set(values)) != len(values):
            raise ValueError("option values must be unique within a question")
        for branch in self.branches:
            unknown = set(branch.when) - set(values)
            if unknown:
                raise ValueError(f"branch on unknown option value(s) {sorted(unknown)}")
        return self

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)


class SurveyDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: int = Field(ge=1)
    title: Text
    intro: Text
    outro: Text
    #: The scoring scheme applied at completion, an id of ``bot.flows.scoring.SCHEMES``
    #: ("circular-01-2018", "decision-766"); the ids of old definitions ("mot-cua",
    #: "satisfaction") are read as the scheme they always meant.
    scoring: str = DECISION_766.id
    questions: list[Question] = Field(min_length=1)

    @field_validator("scoring")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        try:
            return scheme(value).id
        except KeyError:
            raise ValueError(
                f"unknown scoring scheme {value!r}; use one of {', '.join(sorted(SCHEMES))}"
            ) from None

    @model_validator(mode="after")
    def _graph_is_sound(self) -> SurveyDefinition:
        order = {q.id: i for i, q in enumerate(self.questions)}
        if len(order) != len(self.questions):
            raise ValueError("question ids must be unique")
        for index, question in enumerate(self.questions):
            targets = [b.goto for b in question.branches] + (
                [question.next] if question.next else []
            )
            for target in targets:
                if target == END:
                    continue
                if target not in order:
                    raise ValueError(f"question {question.id!r} goes to unknown {target!r}")
                if order[target] <= index:
                    raise ValueError(
                        f"question {question.id!r} goes back to {target!r}: branches only go forward"
                    )
        if not any(o.satisfaction for q in self.questions for o in q.options):
            raise ValueError("one question's options must carry a 'satisfaction' level (1..5)")
        return self

    def question(self, question_id: str) -> Question:
        return self.questions[self.index(question_id)]

    def index(self, question_id: str) -> int:
        for i, q in enumerate(self.questions):
            if q.id == question_id:
                return i
        raise KeyError(question_id)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid survey definition"]
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def parse_definition(text: str, source: str = "<survey>") -> SurveyDefinition:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SurveyDefinitionError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SurveyDefinitionError(f"{source}: a survey definition is a YAML mapping")
    try:
        return SurveyDefinition.model_validate(raw)
    except ValidationError as exc:
        raise SurveyDefinitionError(_format_errors(source, exc)) from None


def load_definition(path: Path) -> SurveyDefinition:
    return parse_definition(path.read_text(encoding="utf-8"), str(path))


class SurveyCatalog:
    """The surveys this deployment knows, by id and version (old versions stay readable).

    Built at start-up from the package, the surveys folder and every version kept in the
    database (``storage.surveys.load_catalog``), so a version still referred to is never lost.
    """

    def __init__(self, definitions: list[SurveyDefinition]) -> None:
        self._by_key = {(d.id, d.version): d for d in definitions}

    def add(self, definition: SurveyDefinition) -> bool:
        """Learn a version published since start-up (by this process or another); False when it
        was known. Processes share one catalog object, so every part sees it at once."""
        key = (definition.id, definition.version)
        if key in self._by_key:
            return False
        self._by_key[key] = definition
        return True

    def latest(self, survey_id: str) -> SurveyDefinition:
        versions = [d for (sid, _), d in self._by_key.items() if sid == survey_id]
        if not versions:
            raise KeyError(survey_id)
        return max(versions, key=lambda d: d.version)

    def get(self, survey_id: str, version: int) -> SurveyDefinition:
        return self._by_key[(survey_id, version)]

    def ids(self) -> list[str]:
        return sorted({sid for sid, _ in self._by_key})

    def all(self) -> list[SurveyDefinition]:
        """Every version of every survey, by id then version."""
        return [self._by_key[key] for key in sorted(self._by_key)]

    def __contains__(self, survey_id: object) -> bool:
        return any(sid == survey_id for sid, _ in self._by_key)


@dataclass(frozen=True, slots=True)
class DefinitionSource:
    """A validated definition with the text it was read from and where (a file, the database)."""

    definition: SurveyDefinition
    text: str
    source: str

    @property
    def key(self) -> tuple[str, int]:
        return self.definition.id, self.definition.version


def same_definition(a: SurveyDefinition, b: SurveyDefinition) -> bool:
    """Equal once validated: comments, layout and legacy scheme ids do not count as a change."""
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def read_sources(folder: Path, pattern: str = "*.y*ml") -> list[DefinitionSource]:
    """Every definition file in ``folder``, validated; every problem of every file named at once.

    Also refused: one id and version defined by two files with different content.
    """
    problems: list[str] = []
    found: dict[tuple[str, int], DefinitionSource] = {}
    for path in sorted(folder.glob(pattern)):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            definition = parse_definition(text, str(path))
        except SurveyDefinitionError as exc:
            problems.append(str(exc))
            continue
        read = DefinitionSource(definition, text, str(path))
        earlier = found.get(read.key)
        if earlier is not None and not same_definition(earlier.definition, definition):
            problems.append(
                f"{path}: {definition.id} v{definition.version} is also defined, differently, "
                f"by {earlier.source}: give the new one the next version"
            )
            continue
        found.setdefault(read.key, read)
    if problems:
        raise SurveyDefinitionError("\n".join(problems))
    return list(found.values())


def merge_sources(*groups: list[DefinitionSource]) -> list[DefinitionSource]:
    """The union of several groups (the package's, a folder's): a version defined twice must be
    the same definition, or every such clash is named in one error."""
    problems: list[str] = []
    found: dict[tuple[str, int], DefinitionSource] = {}
    for group in groups:
        for read in group:
            earlier = found.get(read.key)
            if earlier is None:
                found[read.key] = read
            elif not same_definition(earlier.definition, read.definition):
                problems.append(
                    f"{read.source}: {read.key[0]} v{read.key[1]} is already defined, differently, "
                    f"by {earlier.source}: give the new one the next version"
                )
    if problems:
        raise SurveyDefinitionError("\n".join(problems))
    return list(found.values())


def file_sources(folder: Path | None = None) -> list[DefinitionSource]:
    """The package's surveys and, when configured, those of the deployment's surveys folder."""
    groups = [read_sources(BUILTIN_DIR)]
    if folder is not None:
        if not folder.is_dir():
            raise SurveyDefinitionError(f"{folder}: the surveys folder does not exist")
        groups.append(read_sources(folder))
    return merge_sources(*groups)


@functools.cache
def builtin_catalog() -> SurveyCatalog:
    return SurveyCatalog([load_definition(p) for p in sorted(BUILTIN_DIR.glob("*.yaml"))])
