"""``python -m bench reports [--units N]``: a year's report of N units over 12 monthly releases.

Pure rendering cost (``storage.reports.build``, the XLSX and the PDF) on synthetic release
documents: the maintenance round pays this once per scope and closed period, in a thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from storage import report_pdf, report_xlsx, reports
from storage.releases import ReleaseInfo
from storage.stats import Thresholds


def _unit(key: str, label: str, n: int, satisfied: int) -> dict[str, Any]:
    return {
        "key": key,
        "label": label,
        "parent": "x",
        "responses": n,
        "rated": n,
        "satisfied": satisfied,
        "scored": n,
        "score_sum": 15.0 * n,
        "score_max_sum": 18.0 * n,
        "suppressed": None,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench reports")
    parser.add_argument("--units", type=int, default=300)
    args = parser.parse_args(argv)
    infos = [
        ReleaseInfo(
            f"r{m}",
            f"2026-{m:02d}",
            "month",
            dt.date(2026, m, 1),
            dt.date(2026, m, 28),
            dt.datetime.now(dt.UTC),
            {"k_group": 5, "k_official": 10},
        )
        for m in range(1, 13)
    ]
    for scope, level in (("", "agencies"), ("agency", "officials")):
        units = [
            _unit(f"U{i:04d}", f"Ủy ban nhân dân phường số {i}", 30, 20 + i % 10)
            for i in range(args.units)
        ]
        document = {
            "total": _unit("x", "Sở Nội vụ", 30 * args.units, 25 * args.units),
            level: units,
            "procedures": units[:100] if scope else [],
            "levels": {"5": 20, "4": 5, "3": 0, "2": 3, "1": 2},
            "classes": None,
            "criteria": [],
            "coverage": [],
        }
        source = reports.Source(
            scope, reports.parse_period("2026"), infos, {i.id: document for i in infos}, True
        )
        started = time.perf_counter()
        report = reports.build(source, Thresholds())
        xlsx = report_xlsx.write(report)
        pdf = report_pdf.write(report)
        took = time.perf_counter() - started
        print(
            f"{scope or 'province'}: {args.units} {level} x 12 releases: {took:.2f} s, "
            f"XLSX {len(xlsx) // 1024} KiB, PDF {len(pdf) // 1024} KiB ({len(report.ranking)} ranked)"
        )
