"""Sign-up and payment events (``ingest --kind accounts``): what the provider knows of an account
before its first request, so that creation bursts and shared cards count before any traffic.

One record is one event (schema.ACCOUNT_EVENT_COLUMNS): an account created, a card added, a
verification passed or failed, with the address, user agent, e-mail domain, payment fingerprint
and country the provider saw. Files are JSON Lines or CSV (optionally .gz/.zst). Sign-up logs are
small next to exchange logs (one row per account event, not per request), so each record is
checked here, in Python, field by field, with the reasons the exchange ingest gives.

The guarantees are the exchange ingest's: one transaction per file; ``rows in = stored +
duplicates + quarantined``; an event_id seen before with the same content is a duplicate, with
other content a conflict (quarantined, never overwriting); every bad record is quarantined with
its file, line and the field at fault; the file gets its ``ingests`` row and its link in the
store's hash chain (store/chain.py), which holds the digest of the rows it stored.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import json
import math
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from distillguard import __version__
from distillguard.errors import IngestError
from distillguard.ingest.normalize import EARLIEST, LATEST, MAX_OFFSET_MINUTES, email_fingerprint, scrub_addresses
from distillguard.ingest.run import FileResult
from distillguard.ingest.sources import CappedReader, IngestLimits, Source, discover, open_binary
from distillguard.schema import ACCOUNT_EVENT_COLUMNS, Column
from distillguard.store import chain
from distillguard.store.database import Store

#: the name ``FileResult.log_format`` and the ingest table show for these files
LOG_FORMAT = "accounts"
READABLE = ("jsonl", "csv")
#: stored columns: the schema's, then the ingest that stored the row and the record it came from
STORED = tuple(c.name for c in ACCOUNT_EVENT_COLUMNS) + ("ingest_id", "record_number")

_BY_NAME = {c.name: c for c in ACCOUNT_EVENT_COLUMNS}
_ALIASES = {name: c.name for c in ACCOUNT_EVENT_COLUMNS for name in (c.name, *c.aliases)}
_REQUIRED = tuple(c.name for c in ACCOUNT_EVENT_COLUMNS if c.required)
_EARLIEST = datetime.fromisoformat(EARLIEST).replace(tzinfo=timezone.utc)
_LATEST = datetime.fromisoformat(LATEST).replace(tzinfo=timezone.utc)

Event = dict[str, Any]


# --- one record -----------------------------------------------------------------------------------

def parse_event(record: Any) -> Event | str:
    """One input record -> its canonical event (schema.ACCOUNT_EVENT_COLUMNS, every column a key),
    or the reason it cannot be used (``"<code>: <field> ..."``, as the quarantine shows it).

    ``record`` is whatever a JSON line or a CSV row held: untrusted, of any shape. A canonical
    name wins over an alias of it; nested objects are read as dotted names (``email.domain``).
    """
    if not isinstance(record, dict):
        return f"malformed record: a JSON object was expected, not {_type_word(record)}"
    given: dict[str, tuple[int, Any]] = {}
    for name, value in _flat(record):
        column = _ALIASES.get(name)
        if column is None:
            continue
        rank = 0 if name == column else 1
        if column not in given or rank < given[column][0]:
            given[column] = (rank, value)
    event: Event = {}
    reasons = []
    for col in ACCOUNT_EVENT_COLUMNS:
        value = given.get(col.name, (0, None))[1]
        if value is None or (isinstance(value, str) and not value.strip()):
            if col.required:
                reasons.append(f"missing field: {col.name}")
            event[col.name] = None
            continue
        parsed = _convert(col, value)
        if isinstance(parsed, _Bad):
            reasons.append(parsed.reason)
            event[col.name] = None
        else:
            event[col.name] = parsed
    if event["email_fingerprint"] is not None:
        address = str(given["email_fingerprint"][1])
        event["email_fingerprint"] = email_fingerprint(address)
        if event["email_fingerprint"] is None:
            reasons.append("bad value: email_fingerprint is neither an e-mail address nor a sha256 fingerprint")
        elif event["email_domain"] is None and "@" in address:
            event["email_domain"] = address.strip().rsplit("@", 1)[1].lower()
    if reasons:
        return "; ".join(reasons)
    if event["event_id"] is None:
        event["event_id"] = "sha256:" + hashlib.sha256(_canonical_text(event).encode()).hexdigest()
    return event


class _Bad:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _flat(record: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of a record's scalars; an object under a column's own name that holds
    none of the columns (``"account_id": {...}``) is yielded whole, to be refused as an object."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if not isinstance(value, dict):
            yield name, value
            continue
        inner = list(_flat(value, name + "."))
        if name in _ALIASES and not any(n in _ALIASES for n, _ in inner):
            yield name, value
        else:
            yield from inner


def _shown(value: Any) -> str:
    """A value as a quarantine reason shows it: at most 80 characters, ';' written as \\u003b, since a
    record's reasons are joined by '; ' and each must stay one reason."""
    return str(value)[:80].replace(";", "\\u003b")


def _convert(col: Column, value: Any) -> Any:
    if isinstance(value, (dict, list, bool)):
        return _Bad(f"wrong type: {col.name} cannot be {_type_word(value)}")
    if col.kind == "string":
        text = value if isinstance(value, str) else _number_text(value)
        if text is None:
            return _Bad(f"wrong type: {col.name} cannot be {_type_word(value)}")
        text = text.strip()
        if col.values and text.lower() not in col.values:
            return _Bad(f"bad value: {col.name}={_shown(text)!s} is not one of {', '.join(col.values)}")
        return text.lower() if col.values or col.name == "email_domain" else \
            text.upper() if col.name == "country" else text
    if col.kind == "ip":
        try:
            ip = ipaddress.ip_address(str(value).strip())
        except ValueError:
            return _Bad(f"bad IP: {col.name} is not an IPv4 or IPv6 address")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    if col.kind == "integer":
        number = _number(value)
        if number is None or number != math.floor(number) or abs(number) >= 9e15:
            return _Bad(f"wrong type: {col.name} is not an integer: {_shown(value)}")
        if col.non_negative and number < 0:
            return _Bad(f"bad value: {col.name} is negative: {_shown(value)}")
        return int(number)
    if col.kind == "timestamp":
        when = _timestamp(value)
        if when is None or not _EARLIEST <= when < _LATEST:
            return _Bad(f"bad timestamp: {col.name}={_shown(value)}")
        return when
    raise AssertionError(col.kind)  # a kind the account schema does not use


def _number_text(value: Any) -> str | None:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except (ValueError, OverflowError):
            return None
    return number if math.isfinite(number) else None


def _timestamp(value: Any) -> datetime | None:
    """ISO-8601 (no offset: UTC) or epoch seconds, milliseconds, microseconds or nanoseconds,
    the unit told by magnitude as the exchange ingest tells it (normalize._epoch)."""
    number = _number(value)
    if number is not None:
        size = abs(number)
        seconds = number if size < 1e11 else number / 1e3 if size < 1e14 else number / 1e6 if size < 1e17 \
            else number / 1e9
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    offset = when.utcoffset()
    if offset is None or abs(offset.total_seconds()) > MAX_OFFSET_MINUTES * 60:
        return None
    return when.astimezone(timezone.utc)


def _type_word(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    return "text"


def _canonical_text(event: Event) -> str:
    return json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in event.items()
                       if k in _BY_NAME and k != "event_id"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


# --- one file -------------------------------------------------------------------------------------

#: (record number, line, raw text, the parsed record or the reason it could not be read)
Item = tuple[int, int | None, str, Any]


def read_records(source: Source, limits: IngestLimits, digest: dict[str, str]) -> Iterator[Item]:
    """The records of one JSON Lines or CSV file, in order; ``digest["sha256"]`` is the file's
    sha256 once the last record has been read. A line over ``max_record_bytes`` is one record
    that cannot be read (its first kilobyte kept), never held whole."""
    if source.format not in READABLE:
        raise IngestError(f"{source.path}: account events are read from JSON Lines or CSV, not {source.format}")
    stream, hashing = open_binary(source, limits)
    last = 0
    try:
        items = _jsonl(stream, limits.max_record_bytes) if source.format == "jsonl" \
            else _csv(source, stream, limits.max_record_bytes)
        for item in items:
            last = item[0]
            yield item
        while stream.read(1 << 20):  # to the end, so that the hash covers the whole file
            pass
        capped = getattr(stream, "raw", None)
        if isinstance(capped, CappedReader) and capped.exceeded:
            yield last + 1, None, "", _Bad(f"too large: decompressed past {limits.max_decompressed_bytes:,} bytes "
                                     "(max_decompressed_bytes); the rest of the file is not read")
    except (OSError, EOFError) as exc:
        raise IngestError(f"{source.path}: cannot read ({source.compression or 'file'}): {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            raise IngestError(f"{source.path}: cannot read (zstd): {exc}") from None
        raise
    finally:
        stream.close()
    digest["sha256"] = hashing.finish()


def _lines(stream: Any, limit: int) -> Iterator[tuple[int, bytes | None, bytes]]:
    """(line number, the line or None when over ``limit``, its first bytes)."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            head = line[:1000]
            while line and not line.endswith(b"\n"):
                line = stream.readline(limit + 1)
            yield number, None, head
            continue
        yield number, line, line


def _too_long(limit: int) -> str:
    return f"line too long: over {limit:,} bytes (max_record_bytes); only its first 1,000 bytes are kept here"


def _jsonl(stream: Any, limit: int) -> Iterator[Item]:
    record = 0
    for number, line, head in _lines(stream, limit):
        if line is not None and not line.strip():
            continue
        record += 1
        raw = head.decode("utf-8", "replace").rstrip("\r\n")
        if line is None:
            yield record, number, raw, _Bad(_too_long(limit))
            continue
        try:
            yield record, number, raw, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield record, number, raw, _Bad(f"malformed record: invalid JSON ({str(exc).split(':')[0]})")


def _csv(source: Source, stream: Any, limit: int) -> Iterator[Item]:
    lines = _lines(stream, limit)
    header: list[str] | None = None
    record = 0
    for number, line, head in lines:
        text = (line or head).decode("utf-8", "replace")
        if header is None:
            try:
                header = [h.strip().lstrip("\ufeff") for h in next(csv.reader([text]), [])]
            except csv.Error as exc:
                raise IngestError(f"{source.path}: unreadable CSV header: {exc}") from None
            missing = [r for r in _REQUIRED if r not in {_ALIASES.get(h) for h in header}]
            if missing:
                raise IngestError(f"{source.path}: not an account event file: header has {header[:12]}; missing "
                                  f"required {', '.join(missing)} (or an alias of it, see docs/schema.md)")
            continue
        if line is not None and not line.strip():
            continue
        record += 1
        raw = text.rstrip("\r\n")
        if line is None:
            yield record, number, raw, _Bad(_too_long(limit))
            continue
        try:
            rows = list(csv.reader([raw]))
        except csv.Error as exc:
            yield record, number, raw, _Bad(f"malformed record: {exc}")
            continue
        row = rows[0] if rows else []
        if len(row) != len(header):
            yield record, number, raw, _Bad(f"malformed record: {len(row)} fields, header has {len(header)}")
            continue
        values: dict[str, str] = {}
        for name, cell in zip(header, row):
            values.setdefault(name, cell)
        yield record, number, raw, values


def ingest_account_file(store: Store, source: Source, limits: IngestLimits | None = None) -> FileResult:
    """Ingest one file of account events as one unit: all of it becomes visible at once, or none."""
    limits = limits or IngestLimits()
    started = datetime.now(timezone.utc)
    ingest_id = uuid.uuid4().hex
    digest: dict[str, str] = {}
    good: dict[str, tuple[int, int | None, str, Event]] = {}  # event_id -> its first record
    rejected: list[tuple[int | None, int, str | None, str, str]] = []  # line, record, event_id, reason, raw
    rows_in = duplicates = 0
    any_required = False
    for record, line, raw, value in read_records(source, limits, digest):
        rows_in += 1
        if isinstance(value, _Bad):
            rejected.append((line, record, None, value.reason, raw))
            continue
        any_required = any_required or _holds_required(value)
        parsed = parse_event(value)
        if isinstance(parsed, str):
            rejected.append((line, record, None, parsed, raw))
            continue
        first = good.get(parsed["event_id"])
        if first is None:
            good[parsed["event_id"]] = (record, line, raw, parsed)
        elif _canonical_text(first[3]) == _canonical_text(parsed):
            duplicates += 1
        else:
            rejected.append((line, record, parsed["event_id"], _conflict(parsed["event_id"]), raw))
    if rows_in and not any_required:
        raise IngestError(f"{source.path}: not an account event file: no record has all of "
                          f"{', '.join(_REQUIRED)} (or an alias, see docs/schema.md)")
    con = store.con
    stored_before = _stored(con, list(good))
    for event_id, content in stored_before.items():
        record, line, raw, event = good.pop(event_id)
        if content == _canonical_text(event):
            duplicates += 1
        else:
            rejected.append((line, record, event_id, _conflict(event_id), raw))
    first = min(rejected, key=lambda r: r[1], default=None)
    warnings = [f"{len(rejected):,} record(s) quarantined; the first, record {first[1]}"
                f"{'' if first[0] is None else f' at line {first[0]}'}: {first[3]}"] if first else []
    result = FileResult(str(source.path), source.format, source.size, digest.get("sha256", ""), rows_in, len(good),
                        duplicates, len(rejected), LOG_FORMAT, warnings)
    if not result.balanced:  # an invariant, so a bug if it fails: keep the traceback
        raise AssertionError(f"row accounting broken for {source.path}: {result}")
    _commit(store, ingest_id, result, started, list(good.values()), rejected)
    return result


def _holds_required(value: Any) -> bool:
    """Whether a record names any required field: a file none of whose records does is not an
    account event file at all (an exchange log given the wrong --kind, say)."""
    return isinstance(value, dict) and any(_ALIASES.get(name) in _REQUIRED for name, _ in _flat(value))


def _conflict(event_id: str) -> str:
    return f"conflict: event_id {event_id} already seen with different content"


def _stored(con, event_ids: list[str]) -> dict[str, str]:
    """event_id -> the canonical text of the stored event, for those of ``event_ids`` stored before."""
    if not event_ids:
        return {}
    names = [c.name for c in ACCOUNT_EVENT_COLUMNS]
    rows = con.execute(f"SELECT {', '.join(names)} FROM account_events WHERE list_contains(?, event_id)",
                       [event_ids]).fetchall()
    return {row[0]: _canonical_text(dict(zip(names, row))) for row in rows}


def _commit(store: Store, ingest_id: str, result: FileResult, started: datetime,
            events: list[tuple[int, int | None, str, Event]], rejected: list) -> None:
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        # the same bytes ingested again quarantine the same records: each is kept once, by its first ingest
        for line, record, _event_id, reason, raw in rejected:
            # the quarantine keeps no e-mail address either
            raw, reason = scrub_addresses(raw), scrub_addresses(reason)
            con.execute("INSERT INTO quarantine SELECT ?, ?, ?, ?, NULL, ?, ?, ? WHERE NOT EXISTS ("
                        "SELECT 1 FROM quarantine q JOIN ingests i USING (ingest_id) WHERE i.sha256 = ? "
                        "AND q.record_number = ?)",
                        [ingest_id, result.path, line, record, reason.split(":")[0], reason, raw, result.sha256,
                         record])
        if events:
            columns = STORED
            con.executemany(f"INSERT INTO account_events ({', '.join(columns)}) VALUES "
                            f"({', '.join('?' for _ in columns)})",
                            [[event[c] for c in columns[:-2]] + [ingest_id, record]
                             for record, _line, _raw, event in sorted(events, key=lambda e: e[0])])
        con.execute("INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [ingest_id, result.path, result.format, result.size_bytes, result.sha256, result.rows_in,
                     result.rows_stored, result.rows_duplicate, result.rows_quarantined, started,
                     datetime.now(timezone.utc), __version__, None])
        chain.record_account_events(con, ingest_id, result.path, result.sha256, result.rows_stored)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def ingest_account_paths(store: Store, paths: list[str | Path],
                         on_error: Callable[[IngestError], None] | None = None,
                         limits: IngestLimits | None = None) -> list[FileResult]:
    """Ingest every file under ``paths`` as account events. File-level errors go to ``on_error``
    (or raise)."""
    results = []
    for source in discover(paths):
        try:
            results.append(ingest_account_file(store, replace(source, log_format=LOG_FORMAT), limits))
        except IngestError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return results

