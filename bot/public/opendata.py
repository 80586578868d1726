"""The open data of the public page: one table (CSV) and one document (JSON), schema in
docs/open-data.md. Both are built from the same ``PublicResults`` the page shows, so a download
never holds a figure the page withholds; every CSV cell goes through ``storage.cells.clean``
(formulas neutralised) like every other export.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from storage.cells import clean
from storage.public_results import PublicFigure, PublicResults

SCHEMA = "surveybot-public-results/1"
COLUMNS = [
    "period",
    "level",
    "agency",
    "kind",
    "parent",
    "code",
    "name",
    "status",
    "responses",
    "rated",
    "satisfied",
    "rate_pct",
    "wilson_low_pct",
    "wilson_high_pct",
    "band",
    "rank",
    "avg_score",
    "avg_maximum",
    "published_in",
    "withheld_in",
]


def _utc(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with its offset, whichever backend stored it (SQLite keeps it naive)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def figure(level: str, f: PublicFigure) -> dict[str, Any]:
    """One figure as the open data writes it; a withheld one keeps its name and status only."""
    c = f.cell
    shown = c.shown
    return {
        "level": level,
        "agency": c.parent if level == "official" else (c.key if level == "unit" else ""),
        "kind": f.kind if level == "unit" else "",
        "parent": c.parent if level == "unit" else "",
        "code": c.key,
        "name": c.label,
        "status": f.status,
        "responses": c.responses if shown else None,
        "rated": c.rated if shown else None,
        "satisfied": c.satisfied if shown else None,
        "rate_pct": _round(c.rate),
        "wilson_low_pct": _round(c.low),
        "wilson_high_pct": _round(c.high),
        "band": c.band if c.rate is not None else None,
        "rank": c.rank,
        "avg_score": c.avg_score,
        "avg_maximum": c.avg_maximum,
        "published_in": list(f.published_in),
        "withheld_in": list(f.withheld_in),
    }


def rows(results: PublicResults) -> list[dict[str, Any]]:
    """The province's total, then every unit, then (when enabled) every official."""
    out = []
    if results.total is not None:
        out.append(figure("province", results.total))
    out += [figure("unit", f) for f in results.units]
    out += [figure("official", f) for f in results.officials]
    return out


def as_json(results: PublicResults, bands: list[dict[str, Any]]) -> bytes:
    period = results.period
    document = {
        "schema": SCHEMA,
        "period": None
        if period is None
        else {
            "kind": period.kind,
            "label": period.label,
            "starts_on": period.starts_on.isoformat(),
            "ends_on": period.ends_on.isoformat(),
        },
        "releases": []
        if period is None
        else [
            {
                "label": r.label,
                "starts_on": r.starts_on.isoformat(),
                "ends_on": r.ends_on.isoformat(),
                "published_at": _utc(r.published_at),
            }
            for r in period.releases
        ],
        "rule": {"k_group": results.k_group, "k_official": results.k_official},
        "bands": bands,
        "figures": rows(results),
    }
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def as_csv(results: PublicResults) -> bytes:
    """UTF-8 with a byte-order mark, so a spreadsheet opens the Vietnamese names right."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    label = results.period.label if results.period else ""
    for row in rows(results):
        values = {**row, "period": label}
        values["published_in"] = ";".join(row["published_in"])
        values["withheld_in"] = ";".join(row["withheld_in"])
        writer.writerow(["" if values[c] is None else clean(values[c]) for c in COLUMNS])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")
