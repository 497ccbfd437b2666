"""JSON documents: a top-level array of records, one object, or objects one after another.

Read incrementally with ``json.JSONDecoder.raw_decode`` so a large array never has to sit in
memory whole. A syntax error inside an array leaves the rest of the file unreadable: the
unreadable tail becomes one quarantined record, with its position, so nothing vanishes.
"""

from __future__ import annotations

import codecs
import json
from typing import BinaryIO, Iterator

from distillguard.ingest.records import Batch, Expander, Numbering, parsed_batch
from distillguard.ingest.sources import HashingReader

READ_CHARS = 4 << 20
BATCH = 20_000
_decoder = json.JSONDecoder()
_WS = " \t\r\n"


def read(stream: BinaryIO, hashing: HashingReader, max_record_bytes: int = 64 << 20,
         mapper: Expander | None = None) -> Iterator[Batch]:
    """Batches of the records of a JSON document; a record over ``max_record_bytes`` (counted
    in characters) ends the reading: it and the rest of the file are one quarantined record."""
    decode = codecs.getincrementaldecoder("utf-8")("replace")
    numbering = Numbering()
    buf = ""
    pos = 0
    line = 1
    eof = False
    in_array = False
    started = False
    items: list = []
    errors: dict[int, str] = {}

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = stream.read(READ_CHARS)
        text = decode.decode(data, final=not data)
        eof = not data
        buf = buf[pos:] + text
        pos = 0
        return bool(text) or not eof

    while True:
        while True:  # skip whitespace and separators
            while pos < len(buf) and buf[pos] in _WS + ("," if in_array else ""):
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf) or not fill():
                break
        if pos >= len(buf):
            break
        if not started:
            started = True
            if buf[pos] == "[":
                in_array = True
                pos += 1
                continue
        if in_array and buf[pos] == "]":
            pos += 1
            in_array = False
            continue
        while True:
            try:
                value, end = _decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as exc:
                too_large = len(buf) - pos > max_record_bytes
                if not too_large and fill():
                    continue
                tail = buf[pos:]
                errors[len(items)] = (f"record too large: over {max_record_bytes:,} characters (max_record_bytes); "
                                      "rest of file not read" if too_large else
                                      f"malformed record: invalid JSON ({exc.msg}); rest of file unreadable")
                items.append((None, line, tail[:1000] if too_large else tail[:100_000]))
                pos = len(buf)
                value = end = None
                break
        if end is None:
            break
        raw = buf[pos:end]
        if end - pos > max_record_bytes:
            errors[len(items)] = f"record too large: over {max_record_bytes:,} characters (max_record_bytes)"
            value, raw = None, raw[:1000]
        items.append((value, line, raw))
        line += buf.count("\n", pos, end)
        pos = end
        if len(items) >= BATCH:
            yield parsed_batch(items, numbering, hashing.bytes_read, errors, mapper)
            items, errors = [], {}
    if items:
        yield parsed_batch(items, numbering, hashing.bytes_read, errors, mapper)
