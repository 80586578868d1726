"""Property tests (hypothesis): the flow engine, the answer parser, the scrubber, the phone parser.

Each property states what a citizen or an admin relies on: no sequence of taps and texts crashes a
survey or leaves it in a state the next message cannot continue from; a reply is read as one of
the options or as nothing; a comment is scrubbed without error and scrubbing it again changes
nothing; a phone number is either normalised or refused with a reason (ValueError), never with
anything else. Bounded: a fixed number of examples, no deadline (CI machines vary).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.flows.definition import builtin_catalog
from bot.flows.engine import Choice, Reply, Start, SurveyEngine, parse_payload
from bot.flows.parsing import match_many, match_option
from bot.flows.scrub import scrub
from storage.pseudonym import normalise_phone

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CATALOG = builtin_catalog()
SURVEYS = CATALOG.ids()
STATE_KEYS = {"tag", "lang", "q", "answers", "selected", "misses", "started", "done"}

odd_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "2",
            "9",
            "xong",
            "bỏ qua",
            "skip",
            "1, 3",
            "1 và 3",
            "rất hài lòng",
            "Không hài lòng",
            "😡",
            "👍",
            "\x00",
            "a:x:y:z",
            "cmd:stop",
            "💥" * 300,
            "x" * 5000,
        ]
    ),
)


def valid_state(engine: SurveyEngine, state: dict[str, Any]) -> None:
    """What the next message needs to continue: a known question, answers to known questions."""
    assert set(state) == STATE_KEYS
    ids = {q.id for q in engine.definition.questions}
    assert json.loads(json.dumps(state)) == state  # stored as JSON between messages
    assert set(state["answers"]) <= ids
    assert isinstance(state["misses"], int) and state["misses"] >= 0
    if state["started"] and not state["done"]:
        assert state["q"] in ids
        prompt = engine.current_prompt(state)
        assert prompt is not None and prompt.text
    if state["done"]:
        assert engine.current_prompt(state) is None


@st.composite
def conversations(draw: st.DrawFn) -> tuple[str, str, list[Any]]:
    survey = draw(st.sampled_from(SURVEYS))
    lang = draw(st.sampled_from(["vi", "en"]))
    moves = draw(
        st.lists(
            st.one_of(
                st.just("tap"),  # a button of the current question
                st.just("stale"),  # a button of an earlier question
                st.just("start"),
                odd_text.map(Reply),
                st.builds(Choice, st.text(max_size=8), st.text(max_size=24), st.text(max_size=16)),
            ),
            max_size=40,
        )
    )
    picks = draw(st.lists(st.integers(0, 20), min_size=len(moves), max_size=len(moves)))
    return survey, lang, list(zip(moves, picks, strict=True))


@settings(BOUNDED, max_examples=400)
@given(conversations())
def test_no_sequence_of_inputs_crashes_the_engine_or_breaks_its_state(
    conversation: tuple[str, str, list[Any]],
) -> None:
    survey, lang, moves = conversation
    engine = SurveyEngine(CATALOG.latest(survey), max_text_chars=200)
    state = engine.new_state("t1", lang)
    seen_payloads: list[str] = []
    answered: dict[str, Any] = {}
    for move, pick in moves:
        if move == "tap" or move == "stale":
            prompt = engine.current_prompt(state)
            pool = seen_payloads if move == "stale" else [
                o.payload for o in (prompt.options if prompt else [])
            ]  # fmt: skip
            choice = parse_payload(pool[pick % len(pool)]) if pool else None
            event: Any = choice or Start()
        elif move == "start":
            event = Start()
        else:
            event = move
        before = json.dumps(state, sort_keys=True)
        step = engine.step(state, event)
        assert json.dumps(state, sort_keys=True) == before  # the input state is never mutated
        assert step.prompts, "every input gets an answer"
        for prompt in step.prompts:
            for option in prompt.options:
                assert len(option.payload.encode()) <= 64  # Telegram's callback_data limit
                seen_payloads.append(option.payload)
        if not step.accepted:
            assert step.state["answers"] == state["answers"]  # a refused input changes no answer
        if state["done"]:
            assert step.state == state and not step.accepted
        for answer in step.answers:
            answered[answer.question_id] = answer
        state = step.state
        valid_state(engine, state)


@BOUNDED
@given(odd_text, st.lists(st.lists(odd_text, min_size=1, max_size=3), min_size=1, max_size=6))
def test_the_parser_reads_a_reply_as_one_option_or_nothing(
    reply: str, labels: list[list[str]]
) -> None:
    index = match_option(reply, labels)
    assert index is None or 0 <= index < len(labels)
    many = match_many(reply, labels)
    assert many is None or (
        many and len(set(many)) == len(many) and all(0 <= i < len(labels) for i in many)
    )


@BOUNDED
@given(odd_text)
def test_the_parser_finds_each_option_by_its_own_label(reply: str) -> None:
    labels = [["Rất hài lòng"], ["Hài lòng"], ["Bình thường"], ["Không hài lòng"]]
    for index, (label,) in enumerate(labels):
        assert match_option(label, labels) == index
        assert match_option(str(index + 1), labels) == index
    assert match_option(reply, labels) in (None, 0, 1, 2, 3)


comments = st.one_of(
    odd_text,
    st.builds(
        lambda a, b, c: f"{a} gọi 09{b} hoặc email {c}@gmail.com nhé",
        st.text(max_size=30),
        st.integers(10_000_000, 99_999_999),
        st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    ),
    st.builds(
        lambda a, n: f"{a} CCCD {n} ở 12 Nguyễn Trãi",
        st.text(max_size=30),
        st.integers(10**11, 10**12 - 1),
    ),
)


@BOUNDED
@given(comments)
def test_the_scrubber_never_raises_and_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert isinstance(once, str)
    assert scrub(once) == once


phones = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789 +-().\u00a0０１２３４５６７８９", max_size=24),
    st.builds(lambda n: f"09{n}", st.integers(0, 10**9)),
    st.builds(lambda n: f"+84 {n}", st.integers(0, 10**12)),
    st.sampled_from(["", "+", "++84", "0" * 200, "+84" + "9" * 300, "\x00", "\ud800", "(+84)"]),
)


@BOUNDED
@given(phones)
def test_the_phone_parser_normalises_or_refuses_with_valueerror(raw: str) -> None:
    try:
        normalised = normalise_phone(raw)
    except ValueError:
        return
    assert normalised.startswith("84") and normalised.isdigit()
    assert normalise_phone(normalised) == normalised  # one spelling, one pseudonym
    assert normalise_phone("+" + normalised) == normalised
