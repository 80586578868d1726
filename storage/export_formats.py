"""The three file formats every export is written in: CSV, JSON Lines, XLSX.

Each writer takes a header and rows as batches (an async iterator whose first batch is the
header alone) and streams: memory stays bounded at any size. Cells arrive cleaned
(``storage.cells.clean``); the XLSX writer cleans once more, because a cell that reached it
uncleaned could otherwise become a formula there and nowhere else.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import IO, Any

from storage.cells import clean

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
}
XLSX_SHEET_ROWS = 1_000_000  # Excel's hard limit is 1,048,576 rows a sheet

Batches = AsyncIterator[list[list[Any]]]


def csv_header(header: list[Any]) -> str:
    """The BOM (so Excel reads UTF-8 Vietnamese) and the header line every CSV starts with."""
    line = io.StringIO()
    line.write("\ufeff")
    csv.writer(line).writerow(header)
    return line.getvalue()


async def first_row(batches: Batches) -> list[Any]:
    first = await anext(batches)
    return first[0]


async def text_chunks(batches: Batches, fmt: str) -> AsyncIterator[bytes]:
    """CSV (with BOM, so Excel reads UTF-8 Vietnamese) or JSON Lines, one chunk a batch."""
    header = await first_row(batches)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        buffer.write(csv_header(header))
    async for batch in batches:
        if fmt == "csv":
            writer.writerows(batch)
        else:
            for row in batch:
                buffer.write(json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False))
                buffer.write("\n")
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


async def write_xlsx(batches: Batches, out: IO[bytes]) -> int:
    """openpyxl's write-only mode streams rows to disk; a new sheet every million rows."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    header = [clean(v) for v in await first_row(batches)]
    sheet: Any = None
    count = 0
    async for batch in batches:
        for row in batch:
            if count % XLSX_SHEET_ROWS == 0:
                sheet = workbook.create_sheet(f"data{count // XLSX_SHEET_ROWS + 1}")
                sheet.append(header)
            sheet.append([clean(v) for v in row])
            count += 1
    if sheet is None:
        workbook.create_sheet("data1").append(header)
    workbook.save(out)
    return count


async def write_file(batches: Batches, fmt: str, out: IO[bytes]) -> None:
    """Any of the three formats into a binary stream (XLSX needs it seekable)."""
    if fmt == "xlsx":
        await write_xlsx(batches, out)
        return
    async for chunk in text_chunks(batches, fmt):
        out.write(chunk)
