"""``python -m bench reports [--units N]``: a year's report of N units over 12 monthly releases.

Pure rendering cost (``storage.reports.build``, the XLSX and the PDF) on synthetic release
documents: the maintenance round pays this once per scope and closed period, in a thread. The
last case is a district over N/10 wards of 10 officials each (N officials in all, the sub-unit
ranking and a unit column more), printed as a ratio to the agency of N officials before it.
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
        baseline = took
    wards = max(args.units // 10, 1)
    ward_docs: list[dict[str, Any]] = [
        {
            "total": _unit(f"W{w:03d}", f"Ủy ban nhân dân phường số {w}", 300, 250)
            | {"parent": "D"},
            "officials": [
                _unit(f"CB{w:03d}{i}", f"Cán bộ {w}.{i}", 30, 20 + i) | {"parent": f"W{w:03d}"}
                for i in range(10)
            ],
            "procedures": [
                _unit("1.0001", "Đăng ký khai sinh", 300, 250) | {"parent": f"W{w:03d}"}
            ],
            "criteria": [],
            "coverage": [],
        }
        for w in range(wards)
    ]
    district = {
        "total": _unit("D", "Ủy ban nhân dân quận Một", 300 * wards, 250 * wards),
        "units": [d["total"] | {"kind": "commune"} for d in ward_docs],
        "subtree": [f"w{w}" for w in range(wards)],
        "officials": [],
        "procedures": [],
        "levels": None,
        "classes": None,
        "criteria": [],
        "coverage": [],
    }
    source = reports.Source(
        "district",
        reports.parse_period("2026"),
        infos,
        {i.id: district for i in infos},
        True,
        {i.id: ward_docs for i in infos},
    )
    started = time.perf_counter()
    report = reports.build(source, Thresholds())
    xlsx, pdf = report_xlsx.write(report), report_pdf.write(report)
    took = time.perf_counter() - started
    print(
        f"district: {wards} wards x 10 officials x 12 releases: {took:.2f} s "
        f"({took / baseline:.2f}x the agency of {args.units} officials), XLSX {len(xlsx) // 1024} "
        f"KiB, PDF {len(pdf) // 1024} KiB ({len(report.units)} wards, {len(report.ranking)} ranked)"
    )
