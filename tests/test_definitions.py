"""Survey definitions: the built-ins load, and broken definitions get every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.flows.definition import SurveyDefinitionError, builtin_catalog, parse_definition

VALID = """
id: mini
version: 2
title: {vi: Thử}
intro: {vi: Chào}
outro: {vi: Cảm ơn}
questions:
  - id: ok
    type: yesno
    text: {vi: "Hài lòng?"}
    options:
      - {value: "yes", satisfaction: 4, label: {vi: Có}}
      - {value: "no", satisfaction: 2, label: {vi: Không}}
    branches: [{when: ["yes"], goto: end}]
  - id: why
    type: text
    optional: true
    text: {vi: "Vì sao?"}
"""


def test_builtin_surveys_load_with_versions() -> None:
    catalog = builtin_catalog()
    assert catalog.ids() == ["hanoi-4", "mot-cua", "zns-5-star"]
    mot_cua = catalog.latest("mot-cua")
    assert mot_cua.scoring == "circular-01-2018"
    assert {q.criterion for q in mot_cua.questions if q.criterion} == {"3", "4", "6", "7"}
    assert all(q.text.en for q in mot_cua.questions)


def test_a_valid_definition_parses() -> None:
    definition = parse_definition(VALID)
    assert definition.version == 2 and definition.questions[0].branches[0].goto == "end"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("goto: end", "goto: nowhere"), "goes to unknown 'nowhere'"),
        (("id: why", "id: ok"), "question ids must be unique"),
        (('value: "no"', 'value: "yes"'), "option values must be unique"),
        (('value: "no"', 'value: "Way Too Long Value!"'), "option values are 1-16 characters"),
        (("type: yesno", "type: slider"), "questions.0.type"),
        (("version: 2", "version: 0"), "version"),
        (('when: ["yes"]', 'when: ["maybe"]'), "branch on unknown option value"),
        (("satisfaction: 4, ", ""), None),
    ],
)
def test_broken_definitions_are_explained(change: tuple[str, str], message: str | None) -> None:
    text = VALID.replace(*change)
    if message is None:  # still valid: another option carries satisfaction
        parse_definition(text)
        return
    with pytest.raises(SurveyDefinitionError) as excinfo:
        parse_definition(text, "mini.yaml")
    assert "mini.yaml" in str(excinfo.value) and message in str(excinfo.value)


def test_branches_may_not_go_backwards() -> None:
    text = VALID.replace("    optional: true\n", "    optional: true\n    next: ok\n")
    with pytest.raises(SurveyDefinitionError, match="branches only go forward"):
        parse_definition(text)


def test_not_yaml_is_explained() -> None:
    with pytest.raises(SurveyDefinitionError, match="not valid YAML"):
        parse_definition("id: [unclosed")


def test_survey_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("goto: end", "goto: nowhere"), encoding="utf-8")
    runner = CliRunner()
    ok = runner.invoke(main, ["survey", "check", str(good)])
    assert ok.exit_code == 0 and "mini v2: 2 questions, valid" in ok.output
    failed = runner.invoke(main, ["survey", "check", str(bad)])
    assert failed.exit_code != 0 and "goes to unknown 'nowhere'" in failed.output
    assert "Traceback" not in failed.output
