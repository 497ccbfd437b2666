"""JSON Lines: one record per line, read in large chunks.

Fast path: pyarrow's multithreaded JSON parser turns a whole chunk of flat records into an
Arrow table. Any surprise in a chunk (a malformed line, a blank line, a type that changes
between rows, a nested log shape) sends that chunk, and only that chunk, to the slow path,
which parses line by line and quarantines exactly the lines that are bad.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

import orjson
import pyarrow as pa
import pyarrow.json as pajson

from distillguard.ingest.normalize import LINE, RECORD
from distillguard.ingest.records import Batch, Numbering, parsed_batch
from distillguard.ingest.sources import HashingReader

CHUNK_BYTES = 16 << 20
SLOW_BATCH = 50_000
#: top-level keys that mean a record is a nested log shape, handled per record
_SHAPE_KEYS = {"request", "response", "resourceSpans", "attributes"}


def read(stream: BinaryIO, hashing: HashingReader) -> Iterator[Batch]:
    numbering = Numbering()
    line_no = 1
    carry = b""
    while True:
        data = stream.read(CHUNK_BYTES)
        eof = not data
        buf = carry + data
        if not buf:
            break
        if eof:
            chunk, carry = buf, b""
        else:
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            chunk, carry = buf[: cut + 1], buf[cut + 1:]
        lines_in_chunk = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        batch = _fast(chunk, line_no, lines_in_chunk, numbering, hashing.bytes_read)
        if batch is not None:
            yield batch
        else:
            yield from _slow(chunk, line_no, numbering, hashing)
        line_no += lines_in_chunk
        if eof:
            break


def _fast(chunk: bytes, first_line: int, lines: int, numbering: Numbering, position: int) -> Batch | None:
    if b"\n\n" in chunk or chunk.startswith(b"\n") or b"\r" in chunk:
        return None
    try:
        table = pajson.read_json(pa.py_buffer(chunk), read_options=pajson.ReadOptions(block_size=4 << 20))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if table.num_rows != lines or _SHAPE_KEYS & set(table.column_names) or not table.num_columns:
        return None
    if any(pa.types.is_nested(f.type) for f in table.schema):
        try:  # the JSON reader can build invalid nested arrays (e.g. a list of only nulls)
            table.validate(full=True)
        except pa.ArrowInvalid:
            return None
    start = numbering.next
    numbering.next += table.num_rows
    table = table.append_column(RECORD, pa.array(range(start, start + table.num_rows), pa.int64()))
    table = table.append_column(LINE, pa.array(range(first_line, first_line + lines), pa.int64()))
    cache: list[bytes] = []

    def raw(i: int) -> str:
        if not cache:
            cache.extend(chunk.split(b"\n"))
        return cache[i].decode("utf-8", "replace")

    return Batch(table, [], raw, position)


def _slow(chunk: bytes, first_line: int, numbering: Numbering, hashing: HashingReader) -> Iterator[Batch]:
    items: list = []
    errors: dict[int, str] = {}
    for offset, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue  # blank lines are not records
        raw = line.decode("utf-8", "replace").rstrip("\r")
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors[len(items)] = f"malformed record: invalid JSON ({str(exc).split(':')[0]})"
            value = None
        items.append((value, first_line + offset, raw))
        if len(items) >= SLOW_BATCH:
            yield parsed_batch(items, numbering, hashing.bytes_read, errors)
            items, errors = [], {}
    if items:
        yield parsed_batch(items, numbering, hashing.bytes_read, errors)
