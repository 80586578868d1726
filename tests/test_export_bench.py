"""Smoke test of ``python -m bench export`` on a tiny database (the real run is 1M rows)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path


def test_bench_runs_small_and_ends_with_one_json_line(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "bench",
            "export",
            "--rows",
            "2000",
            "--db",
            str(tmp_path / "b.db"),
            "--no-record",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 2000 and figures["benchmark"] == "export"
    assert {
        "plain_seconds",
        "export_seconds",
        "export_peak_mb",
        "ratio",
        "aggregates_seconds",
    } <= set(figures)
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        report = json.loads(archive.read("report.json"))
        ratings = archive.read("ratings.csv").decode("utf-8-sig").splitlines()
    assert report["ratings"]["rows_read"] == 2000
    assert len(ratings) == report["ratings"]["rows"] + 1 > 1900  # a busy desk loses few rows
    assert ratings[0].startswith("response,agency,procedure,field,official")
