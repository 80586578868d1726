"""The pure survey engine: every branch of the built-in surveys, without I/O."""

from __future__ import annotations

from typing import Any

from bot.flows.definition import builtin_catalog
from bot.flows.engine import DONE, Choice, Reply, Start, Step, SurveyEngine, parse_payload


def engine(survey: str = "mot-cua") -> SurveyEngine:
    return SurveyEngine(builtin_catalog().latest(survey), max_text_chars=200)


def start(e: SurveyEngine, language: str = "vi") -> Step:
    return e.step(e.new_state("t1", language), Start())


def tap(e: SurveyEngine, state: dict[str, Any], value: str) -> Step:
    return e.step(state, Choice("t1", state["q"], value))


def test_start_sends_intro_then_first_question_with_buttons() -> None:
    step = start(engine())
    assert [p.kind for p in step.prompts] == ["info", "question"]
    assert "Kính chào" in step.prompts[0].text
    question = step.prompts[1]
    assert question.question_id == "c3"
    assert [o.label for o in question.options] == ["Không lần nào", "Một lần", "Hai lần trở lên"]
    assert all(len(o.payload.encode()) <= 64 for o in question.options)


def test_english_texts_when_asked() -> None:
    step = start(engine(), "en")
    assert step.prompts[1].options[0].label == "Not at all"


def test_full_mot_cua_path_with_branch_to_detail() -> None:
    e = engine()
    step = start(e)
    answers = []
    for value in ["1", "desk", "both", "bad"]:
        step = tap(e, step.state, value)
        answers += step.answers
    assert step.state["q"] == "c7_detail"  # a "bad" attitude asks for a description
    step = e.step(step.state, Reply("Cán bộ hẹn lại nhiều lần, gọi 0987654321"))
    answers += step.answers
    assert answers[-1].text is not None and "0987654321" not in answers[-1].text
    step = tap(e, step.state, "khong_hai_long")
    answers += step.answers
    assert answers[-1].satisfaction == 2 and answers[-1].points == 0
    step = e.step(step.state, Reply("0"))  # skip the optional comment
    assert step.finished and step.state["done"]
    assert [(a.question_id, a.points) for a in answers[:4]] == [
        ("c3", 1),
        ("c4", 1),
        ("c6", 2),
        ("c7", 0),
    ]
    assert [a.criterion for a in answers[:4]] == ["3", "4", "6", "7"]


def test_good_attitude_skips_the_detail_question() -> None:
    e = engine()
    step = start(e)
    for value in ["0", "none", "both", "good"]:
        step = tap(e, step.state, value)
    assert step.state["q"] == "overall"


def test_stale_or_forged_button_changes_nothing() -> None:
    e = engine()
    step = start(e)
    step = tap(e, step.state, "0")
    before = step.state
    stale = e.step(before, Choice("t1", "c3", "1"))  # the previous question's button
    assert not stale.accepted and stale.state == before and not stale.answers
    assert "câu hỏi trước" in stale.prompts[0].text
    forged = e.step(before, Choice("zz", "c4", "none"))  # another conversation's tag
    assert not forged.accepted and not forged.answers
    unknown = e.step(before, Choice("t1", "c4", "nonsense"))
    assert not unknown.accepted


def test_free_text_where_a_choice_is_expected_reasks_once_with_help() -> None:
    e = engine()
    step = start(e)
    first = e.step(step.state, Reply("hôm nay trời đẹp"))
    assert not first.accepted
    assert [p.kind for p in first.prompts] == ["info", "question"]
    second = e.step(first.state, Reply("???"))
    assert [p.kind for p in second.prompts] == ["info"]  # no wall of repeated questions
    assert "1 đến 3" in second.prompts[0].text


def test_typed_replies_are_understood() -> None:
    e = engine()
    step = start(e)
    step = e.step(step.state, Reply("một lần"))  # the label wins over "một" as option number 1
    assert step.answers[0].value == "1"
    step = e.step(step.state, Reply("3"))
    assert step.answers[0].value == "many"
    step = e.step(step.state, Reply("chi mot trong hai"))
    assert step.answers[0].value == "one"
    step = e.step(step.state, Reply("👍"))
    assert step.answers[0].value == "good"
    step = e.step(step.state, Reply("hai long"))
    assert step.answers[0].value == "hai_long"


def test_hanoi_4_branches_to_reasons_only_when_not_satisfied() -> None:
    e = engine("hanoi-4")
    happy = tap(e, start(e).state, "yes")
    assert happy.state["q"] == "comment"
    unhappy = tap(e, start(e).state, "no")
    assert unhappy.state["q"] == "reasons" and unhappy.prompts[0].multi


def test_multiple_choice_toggles_then_commits() -> None:
    e = engine("hanoi-4")
    step = tap(e, start(e).state, "no")
    step = tap(e, step.state, "attitude")
    assert step.prompts[0].update and [o.selected for o in step.prompts[0].options][2]
    step = tap(e, step.state, "info")
    step = tap(e, step.state, "attitude")  # untoggle
    step = tap(e, step.state, DONE)
    assert step.answers[0].value == ["info"]
    assert step.state["q"] == "comment"


def test_multiple_choice_done_with_nothing_selected_is_refused() -> None:
    e = engine("hanoi-4")
    step = tap(e, start(e).state, "no")
    refused = tap(e, step.state, DONE)
    assert not refused.accepted and refused.state["q"] == "reasons"


def test_multiple_choice_by_typed_numbers() -> None:
    e = engine("hanoi-4")
    step = tap(e, start(e).state, "no")
    step = e.step(step.state, Reply("1, 4"))
    assert step.answers[0].value == ["info", "time_cost"]


def test_oversized_comment_is_refused_politely_and_nothing_lost() -> None:
    e = engine("hanoi-4")
    step = tap(e, start(e).state, "yes")
    refused = e.step(step.state, Reply("x" * 500))
    assert not refused.accepted and refused.state["q"] == "comment"
    assert "200" in refused.prompts[0].text


def test_after_completion_more_input_gets_a_thank_you() -> None:
    e = engine("hanoi-4")
    step = tap(e, start(e).state, "yes")
    step = e.step(step.state, Reply("bỏ qua"))
    assert step.finished
    again = e.step(step.state, Reply("1"))
    assert not again.accepted and "đã hoàn thành" in again.prompts[0].text


def test_start_twice_resends_the_current_question() -> None:
    e = engine()
    step = tap(e, start(e).state, "0")
    again = e.step(step.state, Start())
    assert [p.question_id for p in again.prompts] == ["c4"] and again.state == step.state


def test_engine_does_not_mutate_its_input_state() -> None:
    e = engine()
    step = start(e)
    snapshot = repr(step.state)
    tap(e, step.state, "0")
    assert repr(step.state) == snapshot


def test_payload_round_trip_and_garbage() -> None:
    assert parse_payload("a:t1:c3:0") == Choice("t1", "c3", "0")
    for garbage in ["", "a:t1:c3", "b:t1:c3:0", "a::c3:0", "💥" * 40]:
        assert parse_payload(garbage) is None
