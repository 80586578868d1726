"""The agency API's request and response bodies; the OpenAPI document is generated from these.

Every rule the server applies is in the generated schema, so the document tells the whole truth:
dates are ``YYYY-MM-DD`` strings only (a number or a date-time is refused), text is trimmed before
its length is checked (the ``pattern`` says so, character for character), no text may hold NUL,
phones must be Vietnamese mobiles, and ``returned_at`` is never before ``received_at``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from storage.pseudonym import normalise_phone

PHONE_DESCRIPTION = (
    "The citizen's Vietnamese mobile number (0…, 84… or +84…, any spacing or punctuation, e.g. "
    "'0912 345 678'), for the Zalo ZNS rating template when no chat is bound; landlines, foreign "
    "numbers and numbers that cannot exist are refused with 422 (the rule is libphonenumber's "
    "region VN, mobile or fixed-line-or-mobile); normalised to 84…, kept encrypted only until "
    "the template is sent, never returned. Blank means none"
)
#: What ``str_strip_whitespace`` trims (pydantic-core: Unicode White_Space), as a regex class.
TRIMMED = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def trimmed_pattern(max_length: int, required: bool) -> str:
    """A JSON Schema pattern for text trimmed before its length is checked: surrounding
    whitespace is free, the rest is 1..``max_length`` characters (0 allowed unless
    ``required``), and no character is NUL (refused everywhere)."""
    edge, inner = f"[^\\u0000{TRIMMED}]", "[^\\u0000]"
    body = f"{edge}(?:{inner}{{0,{max_length - 2}}}{edge})?"
    return f"^[{TRIMMED}]*{body if required else f'(?:{body})?'}[{TRIMMED}]*$"


def _text(max_length: int, required: bool, description: str, example: str) -> WithJsonSchema:
    """The document's schema of trimmed text (the model keeps the length check itself)."""
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": trimmed_pattern(max_length, required),
            "description": f"{description} (at most {max_length} characters once trimmed)",
            "examples": [example],
        }
    )


def _iso_date(value: object) -> object:
    """Dates are JSON strings ``YYYY-MM-DD`` (``format: date``): a number (pydantic would read
    it as a Unix time) or a date-time is refused."""
    if isinstance(value, dt.datetime):
        raise ValueError("a date is YYYY-MM-DD, without a time")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("a date is a string YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


def _phone(value: str | None) -> str | None:
    """Normalise to Zalo's 84… form with ``phonenumbers``, so that every spelling of one phone
    gives one pseudonym; the error says why, and never echoes the number."""
    if value is None or not value.strip():
        return None
    try:
        return normalise_phone(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected a Vietnamese mobile: 0…, 84… or +84…)") from None


Phone = Annotated[str, Field(max_length=20), _text(20, False, PHONE_DESCRIPTION, "0912 345 678")]
DossierCode = Annotated[
    str,
    Field(min_length=1, max_length=64),
    _text(64, True, "The agency's dossier code", "000.00.12.H29-261120-0001"),
]
SURVEY = (
    "Survey id (built in: mot-cua, hanoi-4, zns-5-star); the agency's default when absent. "
    "An unknown survey is refused (422 unknown_survey; in a batch, that item is rejected)",
)
SurveyId = Annotated[str, Field(max_length=64), _text(64, False, SURVEY, "mot-cua")]
PROCEDURE = (
    "The procedure's code; it must have been added by an admin (`surveybot procedure`), else "
    "422 unknown_procedure (in a batch, that item is rejected)"
)
OFFICIAL = (
    "The handling official's code in this agency; it must have been added by an admin "
    "(`surveybot official`), else 422 unknown_official (in a batch, that item is rejected)"
)
ProcedureCode = Annotated[str, Field(max_length=64), _text(64, False, PROCEDURE, "1.001234")]
OfficialCode = Annotated[str, Field(max_length=64), _text(64, False, OFFICIAL, "CB01")]
Language = Literal["vi", "en"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DossierRegistration(_Strict):
    """Sent at reception, to print a rating link and QR code on the receipt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dossier_code": "000.00.12.H29-261120-0001",
                    "procedure_code": "1.001234",
                    "official_code": "CB01",
                    "received_at": "2026-11-18",
                    "due_at": "2026-11-25",
                }
            ]
        }
    )

    dossier_code: DossierCode
    procedure_code: ProcedureCode | None = None
    official_code: OfficialCode | None = None
    received_at: IsoDate | None = None
    due_at: IsoDate | None = None
    survey: SurveyId | None = None
    language: Language | None = None
    phone: Phone | None = None

    _normalise_phone = field_validator("phone")(_phone)


class RegistrationResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rating_token": "Yk3d0c1mF8q2r6sT9vW4xZ7aB5eG0hJ1",
                    "rating_url": "https://danhgia.example.gov.vn/r/Yk3d0c1mF8q2r6sT9vW4xZ7aB5eG0hJ1",
                    "qr_svg_url": "https://danhgia.example.gov.vn/r/Yk3d0c1mF8q2r6sT9vW4xZ7aB5eG0hJ1/qr.svg",
                    "telegram_url": None,
                    "expires_at": "2027-01-17T09:00:00Z",
                    "created": True,
                }
            ]
        }
    )

    rating_token: str = Field(description="Single use; print it only as the link or QR code")
    rating_url: str
    qr_svg_url: str
    telegram_url: str | None = None
    expires_at: dt.datetime
    created: bool = Field(description="False when the dossier was already registered (new token)")


class UnitStep(_Strict):
    """One body involved in the dossier, for criterion 2 (each unit's timeliness)."""

    unit: Annotated[
        str, Field(min_length=1, max_length=128), _text(128, True, "The unit", "Phòng Tư pháp")
    ]
    due_at: IsoDate
    done_at: IsoDate


class ResultReport(_Strict):
    """A returned result: this triggers the survey. ``returned_at`` must not be before
    ``received_at`` (else 422 invalid_fields)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dossier_code": "000.00.12.H29-261120-0002",
                    "returned_at": "2026-11-24",
                    "received_at": "2026-11-10",
                    "due_at": "2026-11-20",
                    "official_code": "CB02",
                    "steps": [
                        {"unit": "Phòng Tư pháp", "due_at": "2026-11-15", "done_at": "2026-11-14"}
                    ],
                }
            ]
        }
    )

    dossier_code: DossierCode
    returned_at: IsoDate
    received_at: IsoDate | None = None
    due_at: IsoDate | None = None
    procedure_code: ProcedureCode | None = None
    official_code: OfficialCode | None = None
    survey: SurveyId | None = None
    steps: list[UnitStep] = Field(default_factory=list, max_length=50)
    language: Language | None = None
    phone: Phone | None = None

    _normalise_phone = field_validator("phone")(_phone)

    @model_validator(mode="after")
    def _dates_in_order(self) -> ResultReport:
        if self.received_at and self.returned_at < self.received_at:
            raise ValueError("returned_at is before received_at")
        return self


class ResultBatch(_Strict):
    """Up to ``SURVEYBOT_MAX_BATCH_SIZE`` results (1,000 by default; more is 413
    batch_too_large): a whole day at once."""

    results: list[ResultReport] = Field(min_length=1)


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. results.0.returned_at")
    problem: str


ITEM_ERROR = Literal[
    "unknown_procedure",
    "procedure_unassigned",
    "unknown_official",
    "official_left",
    "official_moved",
    "unknown_survey",
]


class ResultItemOutcome(BaseModel):
    index: int
    status: Literal["survey_created", "duplicate", "rejected"]
    survey_status: Literal["sent", "waiting_for_binding", "opted_out", "capped"] | None = None
    error: str | None = Field(None, description="Why a rejected item was rejected, for a person")
    code: ITEM_ERROR | None = Field(None, description="A rejected item's stable error code")
    fields: list[FieldProblem] | None = Field(
        None, description="A rejected item's fields and what is wrong with each"
    )


class ResultBatchOutcome(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    items: list[ResultItemOutcome]


#: Every ``error`` code the agency API answers, by status (the document lists them as enums).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("malformed_json", "too_deep", "invalid_unicode", "nul_character", "bad_request"),
    401: ("missing_api_key", "invalid_api_key"),
    404: ("not_found",),
    405: ("method_not_allowed",),
    408: ("body_timeout",),
    409: ("already_surveyed", "conflict"),
    413: ("body_too_large", "batch_too_large"),
    415: ("unsupported_media_type",),
    422: (
        "invalid_fields",
        "unknown_procedure",
        "procedure_unassigned",
        "unknown_official",
        "official_left",
        "official_moved",
        "unknown_survey",
    ),
    429: ("rate_limited", "too_many_bad_keys"),
}
ALL_ERROR_CODES = tuple(code for codes in ERROR_CODES.values() for code in codes)


class ErrorBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_fields",
                    "detail": "some fields are missing or invalid",
                    "fields": [{"field": "results.0.returned_at", "problem": "Field required"}],
                }
            ]
        }
    )

    error: str = Field(
        description="A stable code; see the enum", json_schema_extra={"enum": list(ALL_ERROR_CODES)}
    )
    detail: str = Field(description="For a person; may change")
    fields: list[FieldProblem] | None = Field(None, description="With invalid_fields")
    retry_after: int | None = Field(
        None, description="With 429: whole seconds to wait, as in the Retry-After header"
    )
