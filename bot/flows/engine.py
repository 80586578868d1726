"""The survey engine: (definition, state, input) → (new state, prompts, answers). No I/O inside.

Keeping the engine pure is what lets several processes serve one conversation (state is a JSON
document the caller stores), lets every channel share one behaviour, and lets the tests walk every
branch without a database or a network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.flows.definition import END, Question, SurveyDefinition
from bot.flows.parsing import fold, match_many, match_option
from bot.flows.scrub import scrub
from bot.i18n import N_, gettext, ngettext

SKIP = "-skip"
DONE = "-done"
_SKIP_WORDS = {"0", "bo qua", "skip", "khong", "no", "-"}
_DONE_WORDS = {"0", "xong", "done", "ok", "het"}


@dataclass(frozen=True, slots=True)
class Start:
    """The citizen opened the survey (first invitation, /start, or a re-opened link)."""


@dataclass(frozen=True, slots=True)
class Choice:
    """A tapped button: its payload names the conversation tag, the question and the option."""

    tag: str
    question_id: str
    value: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Typed text, on any channel."""

    text: str


Input = Start | Choice | Reply


@dataclass(frozen=True, slots=True)
class PromptOption:
    payload: str
    label: str
    selected: bool = False


@dataclass(slots=True)
class Prompt:
    """One message to show; adapters render options as buttons or as a numbered list."""

    text: str
    kind: Literal["info", "question"] = "info"
    question_id: str | None = None
    options: list[PromptOption] = field(default_factory=list)
    multi: bool = False
    free_text: bool = False
    #: True when this re-renders the current question (a multiple-choice toggle) in place.
    update: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "question_id": self.question_id,
            "options": [[o.payload, o.label, o.selected] for o in self.options],
            "multi": self.multi,
            "free_text": self.free_text,
            "update": self.update,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prompt:
        return cls(
            text=data["text"],
            kind=data["kind"],
            question_id=data.get("question_id"),
            options=[PromptOption(p, label, bool(sel)) for p, label, sel in data["options"]],
            multi=data.get("multi", False),
            free_text=data.get("free_text", False),
            update=data.get("update", False),
        )


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """An answer to store now: the survey keeps what was answered even if abandoned later."""

    question_id: str
    value: str | list[str] | None
    points: int | None
    text: str | None
    label: str
    criterion: str | None = None
    satisfaction: int | None = None


@dataclass(slots=True)
class Step:
    state: dict[str, Any]
    prompts: list[Prompt] = field(default_factory=list)
    answers: list[AnswerEvent] = field(default_factory=list)
    #: False when the input changed nothing (stale button, unreadable reply).
    accepted: bool = True
    finished: bool = False


def payload(tag: str, question_id: str, value: str) -> str:
    """Compact button data: at most 2+8+1+24+1+16 = 52 bytes, within Telegram's 64."""
    return f"a:{tag}:{question_id}:{value}"


def parse_payload(data: str) -> Choice | None:
    parts = data.split(":")
    if len(parts) != 4 or parts[0] != "a" or not all(parts[1:]):
        return None
    return Choice(tag=parts[1], question_id=parts[2], value=parts[3])


class SurveyEngine:
    """Runs one survey definition; holds no conversation state of its own."""

    def __init__(self, definition: SurveyDefinition, max_text_chars: int = 1000) -> None:
        self.definition = definition
        self.max_text_chars = max_text_chars

    def new_state(self, tag: str, language: str) -> dict[str, Any]:
        return {
            "tag": tag,
            "lang": language,
            "q": None,
            "answers": {},
            "selected": [],
            "misses": 0,
            "started": False,
            "done": False,
        }

    # -- the step function ---------------------------------------------------------------------
    def step(self, state: dict[str, Any], event: Input) -> Step:
        state = copy.deepcopy(state)
        language = state["lang"]
        if state["done"]:
            text = gettext(language, "This survey has already been completed. Thank you!")
            return Step(state, [Prompt(text)], accepted=False)
        if isinstance(event, Start) or not state["started"]:
            return self._start(state)
        question = self.definition.question(state["q"])
        if isinstance(event, Choice):
            return self._choice(state, question, event)
        return self._reply(state, question, event.text)

    def current_prompt(self, state: dict[str, Any]) -> Prompt | None:
        if state["done"] or not state["started"]:
            return None
        return self._question_prompt(state, self.definition.question(state["q"]))

    def _start(self, state: dict[str, Any]) -> Step:
        language = state["lang"]
        if state["started"]:
            return Step(state, [self._question_prompt(state, self.definition.question(state["q"]))])
        state["started"] = True
        first = self.definition.questions[0]
        state["q"] = first.id
        intro = Prompt(self.definition.intro.get(language))
        return Step(state, [intro, self._question_prompt(state, first)])

    def _choice(self, state: dict[str, Any], question: Question, event: Choice) -> Step:
        language = state["lang"]
        if event.tag != state["tag"] or event.question_id != question.id:
            return self._stale(state)
        if question.type == "multi":
            if event.value == DONE:
                return self._commit_multi(state, question, list(state["selected"]))
            if question.option(event.value) is None:
                return self._stale(state)
            selected: list[str] = state["selected"]
            if event.value in selected:
                selected.remove(event.value)
            else:
                selected.append(event.value)
            prompt = self._question_prompt(state, question)
            prompt.update = True
            return Step(state, [prompt])
        if event.value == SKIP and question.optional:
            return self._commit(state, question, None, None, gettext(language, "(skipped)"))
        option = question.option(event.value)
        if option is None:
            return self._stale(state)
        return self._commit(state, question, option.value, None, option.label.get(language))

    def _reply(self, state: dict[str, Any], question: Question, text: str) -> Step:
        language = state["lang"]
        folded = fold(text)
        if question.type == "text":
            if question.optional and folded in _SKIP_WORDS:
                return self._commit(state, question, None, None, gettext(language, "(skipped)"))
            cleaned = text.strip()
            if not cleaned:
                return self._miss(state, question)
            if len(cleaned) > self.max_text_chars:
                note = ngettext(
                    language,
                    "Your comment is too long. Please keep it under {n} character.",
                    "Your comment is too long. Please keep it under {n} characters.",
                    self.max_text_chars,
                )
                return Step(state, [Prompt(note)], accepted=False)
            return self._commit(state, question, None, scrub(cleaned), scrub(cleaned))
        spellings = [self._spellings(o.label.vi, o.label.en, o.aliases) for o in question.options]
        if question.type == "multi":
            if folded in _DONE_WORDS and state["selected"]:
                return self._commit_multi(state, question, list(state["selected"]))
            if question.optional and folded in _SKIP_WORDS:
                return self._commit_multi(state, question, [])
            indexes = match_many(text, spellings)
            if indexes is None:
                return self._miss(state, question)
            values = [question.options[i].value for i in indexes]
            return self._commit_multi(state, question, values)
        sentiments = [o.sentiment for o in question.options]
        index = match_option(text, spellings, sentiments)
        if index is None:
            return self._miss(state, question)
        option = question.options[index]
        return self._commit(state, question, option.value, None, option.label.get(language))

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _spellings(vi: str, en: str | None, aliases: list[str]) -> list[str]:
        return [vi, *([en] if en else []), *aliases]

    def _stale(self, state: dict[str, Any]) -> Step:
        language = state["lang"]
        message = N_(
            "That button belongs to an earlier question. Please answer the current question."
        )
        note = Prompt(gettext(language, message))
        question = self._question_prompt(state, self.definition.question(state["q"]))
        return Step(state, [note, question], accepted=False)

    def _miss(self, state: dict[str, Any], question: Question) -> Step:
        """Re-ask once with help; after that, a short reminder only (no wall of repeats)."""
        language = state["lang"]
        state["misses"] += 1
        if question.help is not None:
            help_text = question.help.get(language)
        elif question.type == "multi":
            help_text = gettext(
                language, "Type the numbers of your choices, for example: 1, 3. Then tap Done."
            )
        else:
            help_text = gettext(
                language,
                "Sorry, I did not understand. Please tap one of the buttons, "
                "or type the number of your choice.",
            )
        if state["misses"] == 1:
            return Step(
                state, [Prompt(help_text), self._question_prompt(state, question)], accepted=False
            )
        short = gettext(
            language, "Please tap a button or type a number from 1 to {n}.", n=len(question.options)
        )
        return Step(state, [Prompt(short if question.options else help_text)], accepted=False)

    def _commit_multi(self, state: dict[str, Any], question: Question, values: list[str]) -> Step:
        language = state["lang"]
        if not values and not question.optional:
            note = gettext(language, "Please choose at least one option, then tap Done.")
            return Step(state, [Prompt(note)], accepted=False)
        ordered = [o.value for o in question.options if o.value in values]
        labels = [o.label.get(language) for o in question.options if o.value in values]
        label = ", ".join(labels) if labels else gettext(language, "(skipped)")
        return self._commit(state, question, ordered, None, label)

    def _commit(
        self,
        state: dict[str, Any],
        question: Question,
        value: str | list[str] | None,
        text: str | None,
        label: str,
    ) -> Step:
        option = question.option(value) if isinstance(value, str) else None
        event = AnswerEvent(
            question_id=question.id,
            value=value,
            points=option.points if option else None,
            text=text,
            label=label,
            criterion=question.criterion,
            satisfaction=option.satisfaction if option else None,
        )
        state["answers"][question.id] = value if text is None else {"text": True}
        state["selected"] = []
        state["misses"] = 0
        target = self._next(question, value)
        if target == END:
            state["done"] = True
            state["q"] = None
            outro = Prompt(self.definition.outro.get(state["lang"]))
            return Step(state, [outro], [event], finished=True)
        state["q"] = target
        prompt = self._question_prompt(state, self.definition.question(target))
        return Step(state, [prompt], [event])

    def _next(self, question: Question, value: str | list[str] | None) -> str:
        chosen = set(value if isinstance(value, list) else [value] if value else [])
        for branch in question.branches:
            if chosen & set(branch.when):
                return branch.goto
        if question.next:
            return question.next
        index = self.definition.index(question.id)
        if index + 1 < len(self.definition.questions):
            return self.definition.questions[index + 1].id
        return END

    def _question_prompt(self, state: dict[str, Any], question: Question) -> Prompt:
        language = state["lang"]
        tag = state["tag"]
        selected = set(state["selected"])
        options = [
            PromptOption(
                payload(tag, question.id, o.value), o.label.get(language), o.value in selected
            )
            for o in question.options
        ]
        if question.type == "multi":
            options.append(PromptOption(payload(tag, question.id, DONE), gettext(language, "Done")))
        if question.type == "text" and question.optional:
            options.append(PromptOption(payload(tag, question.id, SKIP), gettext(language, "Skip")))
        return Prompt(
            text=question.text.get(language),
            kind="question",
            question_id=question.id,
            options=options,
            multi=question.type == "multi",
            free_text=question.type == "text",
        )
