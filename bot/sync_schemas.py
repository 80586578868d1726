"""The sync API's bodies: a unit's officials and procedures as its one-stop system pushes them.

Generated into the OpenAPI document like ``bot/schemas.py`` (whose text rules they share): every
field rule the server applies is in the schema, including the closed vocabulary of fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from bot.schemas import _Strict, _text
from storage import fields

#: A whole list holds at most this many items (a district's staff or catalogue is far smaller).
SYNC_MAX_ITEMS = 5000


def _known_field(value: str | None) -> str | None:
    if value is not None and value not in fields.BY_CODE:
        raise ValueError(f"unknown field {value!r}; one of {', '.join(fields.CODES)}")
    return value


FIELD_TEXT = "The procedure's field (lĩnh vực): " + "; ".join(
    f"{f.code} = {f.vi}" for f in fields.FIELDS
)
FieldCode = Annotated[
    str,
    AfterValidator(_known_field),
    WithJsonSchema(
        {
            "type": "string",
            "enum": list(fields.CODES),
            "description": FIELD_TEXT,
            "examples": ["tu-phap"],
        }
    ),
]
Code = Annotated[
    str,
    Field(min_length=1, max_length=64),
    _text(64, True, "The official's code in this unit", "CB01"),
]
NationalCode = Annotated[
    str,
    Field(min_length=1, max_length=64),
    _text(
        64,
        True,
        "The procedure's national code (mã thủ tục hành chính on the national public service "
        "portal)",
        "1.001234",
    ),
]
Name = Annotated[
    str, Field(min_length=1, max_length=255), _text(255, True, "The name", "Nguyễn Văn A")
]
OfficialStatus = Literal["active", "left"]


class OfficialFields(_Strict):
    """One official, as ``PUT /api/v1/officials/{code}`` sends it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Nguyễn Văn A", "status": "active"}]}
    )

    name: Name
    status: OfficialStatus = Field(
        "active", description="left: no new result may name them; their ratings stay"
    )


class OfficialItem(_Strict):
    """One official of a whole list."""

    code: Code
    name: Name
    status: OfficialStatus = Field(
        "active", description="left: no new result may name them; their ratings stay"
    )


class OfficialList(_Strict):
    """The unit's whole staff: officials absent from it are marked left (never deleted). Each
    code at most once (a repeat is 422, naming it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "officials": [
                        {"code": "CB01", "name": "Nguyễn Văn A"},
                        {"code": "CB02", "name": "Trần Thị B"},
                        {"code": "CB03", "name": "Lê Văn C", "status": "left"},
                    ]
                }
            ]
        }
    )

    officials: list[OfficialItem] = Field(max_length=SYNC_MAX_ITEMS)


class OfficialState(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "CB01",
                    "name": "Nguyễn Văn A",
                    "status": "moved",
                    "ended_on": "2026-11-30",
                    "moved_to": "ubnd-phuong-2",
                }
            ]
        }
    )
    code: str
    name: str
    status: Literal["active", "moved", "left"]
    ended_on: dt.date | None = Field(description="The day they moved or left")
    moved_to: str | None = Field(description="The code of the unit they moved to")


class ProcedureFields(_Strict):
    """One procedure this unit handles, as ``PUT /api/v1/procedures/{code}`` sends it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Đăng ký khai sinh", "field": "tu-phap"}]}
    )

    name: Name
    field: FieldCode | None = None


class ProcedureItem(_Strict):
    """One procedure of a whole list."""

    code: NationalCode
    name: Name
    field: FieldCode | None = None


class ProcedureList(_Strict):
    """The unit's whole catalogue: procedures absent from it are unassigned from the unit. Each
    code at most once (a repeat is 422, naming it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "procedures": [
                        {"code": "1.001234", "name": "Đăng ký khai sinh", "field": "tu-phap"}
                    ]
                }
            ]
        }
    )

    procedures: list[ProcedureItem] = Field(max_length=SYNC_MAX_ITEMS)


class ProcedureState(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "1.001234",
                    "name": "Đăng ký khai sinh",
                    "field": "tu-phap",
                    "assigned": True,
                }
            ]
        }
    )
    code: str
    name: str
    field: str | None
    assigned: bool = Field(description="Assigned to this unit now")


class SyncOutcome(BaseModel):
    """What a push changed, by code."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": ["CB03"],
                    "updated": ["CB01"],
                    "unchanged": ["CB02"],
                    "retired": ["CB04"],
                }
            ]
        }
    )

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    retired: list[str] = Field(
        description="Marked left (officials) or unassigned (procedures): absent from the list"
    )


__all__ = [
    "OfficialFields",
    "OfficialItem",
    "OfficialList",
    "OfficialState",
    "ProcedureFields",
    "ProcedureItem",
    "ProcedureList",
    "ProcedureState",
    "SyncOutcome",
]
