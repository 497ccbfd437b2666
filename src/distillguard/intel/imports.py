"""``distillguard intel import``: one entry for a file (STIX bundle, MISP event, keyed-hash file)
or a TAXII 2.1 collection URL, told apart by what it is, never by its name."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from distillguard.intel import hashed, indicators, misp_in, stix_in, taxii_in
from distillguard.intel.indicators import Indicator, IntelError

#: the largest intelligence file read (a bundle of a million indicators is ~500 MB)
MAX_FILE_BYTES = 1 << 30


@dataclass
class Imported:
    """What one import stored: how many indicator rows of each type, and what was skipped why."""

    source: str
    format: str
    stored: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    added_after: str | None = None

    def summary(self) -> dict:
        return {"source": self.source, "format": self.format, "stored": dict(sorted(self.stored.items())),
                "skipped": dict(sorted(self.skipped.items())), "added_after": self.added_after}


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def read_file(path: Path, con: duckdb.DuckDBPyConnection, key: bytes | None) -> tuple[str, list[Indicator], Counter]:
    """(format, indicators, skipped) of an intelligence file."""
    name = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise IntelError(f"{name}: larger than {MAX_FILE_BYTES >> 20} MiB")
        text = path.read_bytes()
    except OSError as exc:
        raise IntelError(f"{name}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntelError(f"{name}: not JSON ({str(exc)[:120]})") from None
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        return ("stix", *stix_in.read_bundle(text, name))
    if hashed.is_hashed(doc):
        if key is None:
            raise IntelError(f"{name}: a keyed-hash file of group {str(doc.get('group'))[:60]!r}: give --key-file")
        return ("keyed-hashes", *hashed.match(con, doc, key, name))
    if isinstance(doc, dict) and isinstance(doc.get("Event", doc), dict) and "info" in doc.get("Event", doc):
        return ("misp", *misp_in.read_event(text, name))
    raise IntelError(f"{name}: type: neither a STIX 2.1 bundle, a MISP event nor a keyed-hash file")


def import_source(con: duckdb.DuckDBPyConnection, source: str, now: datetime, key: bytes | None = None,
                  token: str | None = None, full: bool = False) -> Imported:
    """Read ``source`` and store its indicators (indicators.store), in one transaction with the
    TAXII pull marker; ``full`` pulls a collection from the start instead of after the last pull."""
    if is_url(source):
        since = None if full else indicators.last_pull(con, source)
        found, skipped, newest = taxii_in.pull(source, since, token)
        result = Imported(source, "taxii", added_after=since)
    else:
        fmt, found, skipped = read_file(Path(source), con, key)
        newest, result = None, Imported(source, fmt)
    con.execute("BEGIN TRANSACTION")
    try:
        indicators.store(con, found, now)
        if newest is not None:
            indicators.record_pull(con, source, newest)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    result.stored.update(i.type for i in {i.indicator_id: i for i in found}.values())
    result.skipped.update(skipped)
    return result
