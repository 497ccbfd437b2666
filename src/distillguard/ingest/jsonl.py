"""JSON Lines: one record per line, read in large chunks.

Fast path: pyarrow's multithreaded JSON parser turns a whole chunk of flat records into an
Arrow table. Any surprise in a chunk (a malformed line, a blank line, a type that changes
between rows, a nested log shape) sends that chunk, and only that chunk, to the slow path,
which parses line by line and quarantines exactly the lines that are bad.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator

import orjson
import pyarrow as pa
import pyarrow.json as pajson

from distillguard.ingest.normalize import LINE, RECORD
from distillguard.ingest.records import Batch, Expander, Numbering, Rejected, parsed_batch
from distillguard.ingest.sources import HashingReader

CHUNK_BYTES = 16 << 20
SLOW_BATCH = 50_000
_OBJECT_FIRST = re.compile(rb"[ \t]*\{")
#: top-level keys that mean a record is a nested log shape, handled per record
_SHAPE_KEYS = {"request", "response", "resourceSpans", "attributes"}


def read(stream: BinaryIO, hashing: HashingReader, max_record_bytes: int = 64 << 20,
         mapper: Expander | None = None) -> Iterator[Batch]:
    """Batches of the records of a JSON Lines stream; a line over ``max_record_bytes`` is one
    quarantined record (its first kilobyte kept), never held whole in memory. With ``mapper``
    (a named format's) every line goes through it, never through the flat-table fast path."""
    numbering = Numbering()
    line_no = 1
    carry = b""
    too_long: Rejected | None = None  # an over-long line being skipped until its newline
    while True:
        data = stream.read(CHUNK_BYTES)
        eof = not data
        if too_long is not None:
            cut = data.find(b"\n")
            if cut < 0 and not eof:
                continue
            yield Batch(None, [too_long], None, hashing.bytes_read)
            too_long = None
            line_no += 1
            data = data[cut + 1:] if cut >= 0 else b""
        buf = carry + data
        if not buf:
            if eof:
                break
            continue
        if eof:
            chunk, carry = buf, b""
        else:
            cut = buf.rfind(b"\n")
            if cut < 0:
                if len(buf) > max_record_bytes:
                    too_long, carry = _too_long(buf, line_no, numbering, max_record_bytes), b""
                else:
                    carry = buf
                continue
            chunk, carry = buf[: cut + 1], buf[cut + 1:]
        lines_in_chunk = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        batch = None if len(chunk) > max_record_bytes or mapper is not None else _fast(chunk, line_no, lines_in_chunk, numbering,
                                                                   hashing.bytes_read)
        if batch is not None:
            yield batch
        else:
            yield from _slow(chunk, line_no, numbering, hashing, max_record_bytes, mapper)
        line_no += lines_in_chunk
        if eof:
            break


def _too_long(head: bytes, line: int, numbering: Numbering, limit: int) -> Rejected:
    return Rejected(numbering.take(), line, f"line too long: over {limit:,} bytes (max_record_bytes); "
                    "only its first 1,000 bytes are kept here", head[:1000].decode("utf-8", "replace"))


def _fast(chunk: bytes, first_line: int, lines: int, numbering: Numbering, position: int) -> Batch | None:
    if b"\n\n" in chunk or chunk.startswith(b"\n") or b"\r" in chunk:
        return None
    if not _OBJECT_FIRST.match(chunk):  # pyarrow 26 crashes (SIGSEGV) on a chunk that opens with null
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


#: from the first non-blank byte of a line to its end: blank lines are not records, and a file
#: of millions of them must cost next to nothing (a character-class search runs in C, about
#: 6 ms per MB of newlines; a Python loop over the lines took 75 ms per MB)
_RECORD_REST = re.compile(rb"[^\s][^\n]*")
_BLANK = b" \t\r\n\x0b\x0c"


def _slow(chunk: bytes, first_line: int, numbering: Numbering, hashing: HashingReader,
          max_record_bytes: int, mapper: Expander | None = None) -> Iterator[Batch]:
    items: list = []
    errors: dict[int, str] = {}
    if not chunk.translate(None, _BLANK):
        return
    line_no, counted_to = first_line, 0
    for match in _RECORD_REST.finditer(chunk):
        start = chunk.rfind(b"\n", counted_to, match.start()) + 1 or counted_to
        line_no += chunk.count(b"\n", counted_to, start)
        counted_to = start
        line = chunk[start:match.end()]
        if len(line) > max_record_bytes:
            if items:  # keep record numbers in file order
                yield parsed_batch(items, numbering, hashing.bytes_read, errors, mapper)
                items, errors = [], {}
            yield Batch(None, [_too_long(line, line_no, numbering, max_record_bytes)], None, hashing.bytes_read)
            continue
        raw = line.decode("utf-8", "replace").rstrip("\r")
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors[len(items)] = f"malformed record: invalid JSON ({str(exc).split(':')[0]})"
            value = None
        items.append((value, line_no, raw))
        if len(items) >= SLOW_BATCH:
            yield parsed_batch(items, numbering, hashing.bytes_read, errors, mapper)
            items, errors = [], {}
    if items:
        yield parsed_batch(items, numbering, hashing.bytes_read, errors, mapper)
