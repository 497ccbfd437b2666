"""CSV with a header row. Every value arrives as text; empty cells are nulls."""

from __future__ import annotations

import csv
import io
from typing import BinaryIO, Iterator

import pyarrow as pa

from distillguard.errors import IngestError
from distillguard.ingest.normalize import LINE, PRE_REASON, RECORD
from distillguard.ingest.records import Batch, Expander, Numbering, parsed_batch
from distillguard.ingest.sources import HashingReader
from distillguard.schema import ALIASES, REQUIRED

BATCH = 100_000
csv.field_size_limit(1 << 30)
#: stands in, for the csv module, for a line longer than the cap: one field, one line
_TOO_LONG = '"\x1f"\n'


def _capped_lines(text: io.TextIOWrapper, limit: int, too_long: dict[int, str]) -> Iterator[str]:
    """The lines of ``text``; one longer than ``limit`` characters is never held whole: it is
    skipped, its head kept in ``too_long`` under its line number, and a one-field marker line
    takes its place so the csv module's line count stays true."""
    number = 0
    while line := text.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            too_long[number] = line[:1000]
            while line and not line.endswith(("\n", "\r")):
                line = text.readline(limit + 1)
            yield _TOO_LONG
            continue
        yield line


def read(stream: BinaryIO, hashing: HashingReader, name: str, max_record_bytes: int = 64 << 20,
         mapper: Expander | None = None) -> Iterator[Batch]:
    """Batches of a CSV file's rows; with ``mapper`` (a named format's) each row, as a dict of
    its header's names, goes through it, and the header need not hold canonical names."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    too_long: dict[int, str] = {}
    reader = csv.reader(_capped_lines(text, max_record_bytes, too_long))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise IngestError(f"{name}: unreadable CSV header: {exc}") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    mapped = {ALIASES.get(h) for h in header}
    missing = [r for r in REQUIRED if r not in mapped]
    if missing and mapper is None:
        raise IngestError(
            f"{name}: unknown column set: header has {header[:12]}; missing required "
            f"{', '.join(missing)} (or an alias of it, see docs/schema.md)")
    width = len(header)
    columns: list[list[str | None]] = [[] for _ in header]
    records: list[int] = []
    lines: list[int] = []
    pre: list[str | None] = []
    raws: list[str] = []
    number = 0
    last_line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row, reason = [], f"malformed record: {exc}"
        else:
            reason = None
        start_line, last_line = last_line + 1, reader.line_num
        head = too_long.pop(start_line, None)
        if head is not None:
            row, reason = [head], (f"line too long: over {max_record_bytes:,} characters (max_record_bytes); "
                                   "only its first 1,000 are kept here")
        if not row and reason is None:
            continue
        if reason is None and len(row) != width:
            reason = f"malformed record: {len(row)} fields, header has {width}"
        number += 1
        cells = row if reason is None else [""] * width
        for i, cell in enumerate(cells):
            columns[i].append(cell if cell != "" else None)
        records.append(number)
        lines.append(start_line)
        pre.append(reason)
        raws.append(_raw(row))
        if len(records) >= BATCH:
            yield _batch(header, columns, records, lines, pre, raws, hashing.bytes_read, mapper)
            columns = [[] for _ in header]
            records, lines, pre, raws = [], [], [], []
    if records:
        yield _batch(header, columns, records, lines, pre, raws, hashing.bytes_read, mapper)


def _raw(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(row)
    return out.getvalue().rstrip("\r\n")


def _batch(header, columns, records, lines, pre, raws, position, mapper: Expander | None = None) -> Batch:
    if mapper is not None:
        return _mapped_batch(header, columns, records, lines, pre, raws, position, mapper)
    arrays = {}
    for name, values in zip(header, columns):
        if name in arrays:
            continue  # a repeated header name: the first column wins
        arrays[name] = pa.array(values, pa.string())
    arrays[RECORD] = pa.array(records, pa.int64())
    arrays[LINE] = pa.array(lines, pa.int64())
    arrays[PRE_REASON] = pa.array(pre, pa.string())
    return Batch(pa.table(arrays), [], raws.__getitem__, position)


def _mapped_batch(header, columns, records, lines, pre, raws, position, mapper: Expander) -> Batch:
    """Rows as dicts (empty cells absent, a repeated name's first column kept) through ``mapper``."""
    names = [(i, name) for i, name in enumerate(header) if name not in header[:i]]
    items, errors = [], {}
    for row, (line, reason, raw) in enumerate(zip(lines, pre, raws)):
        if reason is not None:
            errors[row] = reason
            items.append((None, line, raw))
            continue
        items.append(({name: columns[i][row] for i, name in names if columns[i][row] is not None}, line, raw))
    numbering = Numbering()
    numbering.next = records[0]
    return parsed_batch(items, numbering, position, errors, mapper)
