"""The agency API's request and response bodies; the OpenAPI document is generated from these."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.pseudonym import normalise_phone

Code = str
PHONE_DESCRIPTION = (
    "The citizen's Vietnamese mobile number (0…, 84… or +84…, any spacing or punctuation), for "
    "the Zalo ZNS rating template when no chat is bound; landlines and foreign numbers are "
    "refused; normalised to 84…, kept encrypted only until the template is sent, never returned"
)


def _phone(value: str | None) -> str | None:
    """Normalise to Zalo's 84… form with ``phonenumbers``, so that every spelling of one phone
    gives one pseudonym; the error says why, and never echoes the number."""
    if value is None or not value.strip():
        return None
    try:
        return normalise_phone(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected a Vietnamese mobile: 0…, 84… or +84…)") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DossierRegistration(_Strict):
    """Sent at reception, to print a rating link and QR code on the receipt."""

    dossier_code: Code = Field(min_length=1, max_length=64, description="The agency's dossier code")
    procedure_code: Code | None = Field(None, max_length=64)
    official_code: Code | None = Field(None, max_length=64)
    received_at: dt.date | None = None
    due_at: dt.date | None = None
    survey: str | None = Field(
        None, max_length=64, description="Survey id; agency default if absent"
    )
    language: Literal["vi", "en"] | None = None
    phone: str | None = Field(None, max_length=20, description=PHONE_DESCRIPTION)

    _normalise_phone = field_validator("phone")(_phone)


class RegistrationResult(BaseModel):
    rating_token: str
    rating_url: str
    qr_svg_url: str
    telegram_url: str | None = None
    expires_at: dt.datetime
    created: bool = Field(description="False when the dossier was already registered (new token)")


class UnitStep(_Strict):
    """One body involved in the dossier, for criterion 2 (each unit's timeliness)."""

    unit: str = Field(min_length=1, max_length=128)
    due_at: dt.date
    done_at: dt.date


class ResultReport(_Strict):
    """A returned result: this triggers the survey."""

    dossier_code: Code = Field(min_length=1, max_length=64)
    returned_at: dt.date
    received_at: dt.date | None = None
    due_at: dt.date | None = None
    procedure_code: Code | None = Field(None, max_length=64)
    official_code: Code | None = Field(None, max_length=64)
    survey: str | None = Field(None, max_length=64)
    steps: list[UnitStep] = Field(default_factory=list, max_length=50)
    language: Literal["vi", "en"] | None = None
    phone: str | None = Field(None, max_length=20, description=PHONE_DESCRIPTION)

    _normalise_phone = field_validator("phone")(_phone)

    @model_validator(mode="after")
    def _dates_in_order(self) -> ResultReport:
        if self.received_at and self.returned_at < self.received_at:
            raise ValueError("returned_at is before received_at")
        return self


class ResultBatch(_Strict):
    results: list[ResultReport] = Field(min_length=1)


class ResultItemOutcome(BaseModel):
    index: int
    status: Literal["survey_created", "duplicate", "rejected"]
    survey_status: Literal["sent", "waiting_for_binding", "opted_out"] | None = None
    error: str | None = None


class ResultBatchOutcome(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    items: list[ResultItemOutcome]


class ErrorBody(BaseModel):
    error: str
    detail: str
    fields: list[dict[str, str]] | None = None
