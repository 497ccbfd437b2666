"""The store's hash chain: an append-only list of links, each holding the hash of the one before,
so that nothing the store holds can be changed afterwards without the change showing.

Why: a report accuses someone, and the provider must be able to show an outsider that the
exchanges it rests on are the ones that came in. Every ingested file (``ingest_file``), every
Parquet segment the store keeps its exchanges in (written by an ingest, or by a compaction:
``segment``), every closed gateway journal segment (``journal_segment``) and every scan (``scan``,
with the head it read) adds one link. A link's hash covers its fields and the previous link's
hash, so changing, removing or reordering any link breaks every hash after it; a signed report
names the head it read (report/manifest.py), so cutting links off the end shows too.

A segment's link records the sha256 of each Parquet part and of each of its row groups (and its
header and footer), so that a changed byte is named by part, rows and byte range. A journal segment's link holds the hash the gateway computed
while writing it (gateway/journal.py, ``<segment>.sha256``) beside the hash of what was loaded.

Table ``chain`` (created by the first link):
``seq`` (1, 2, ...), ``kind``, ``subject`` (ingest id, segment name, journal segment name, scan id),
``sha256`` (of the subject's content), ``detail`` (canonical JSON), ``linked_at`` (ISO-8601 UTC text),
``prev_hash`` (the previous link's ``link_hash``; 64 zeros for the first),
``link_hash`` = sha256 of the canonical JSON array [prev_hash, seq, kind, subject, sha256, detail, linked_at].
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from distillguard.schema import ACCOUNT_EVENT_COLUMNS
from distillguard.store.database import has_table

GENESIS = "0" * 64
#: a file that is not Parquet is hashed in blocks of this many bytes, so that a change is named by its place
BLOCK_BYTES = 1 << 20
#: hex digits kept of a block's sha256: the part's whole sha256 is kept too, the blocks only place a change
BLOCK_HEX = 16
#: lines of a journal segment hashed together (gateway/journal.py), so that a change is named by its lines
JOURNAL_BLOCK_LINES = 1000

_DDL = """
CREATE TABLE IF NOT EXISTS chain (
  seq BIGINT PRIMARY KEY,
  kind VARCHAR NOT NULL,
  subject VARCHAR NOT NULL,
  sha256 VARCHAR NOT NULL,
  detail VARCHAR NOT NULL,
  linked_at VARCHAR NOT NULL,
  prev_hash VARCHAR NOT NULL,
  link_hash VARCHAR NOT NULL
)
"""


@dataclass(frozen=True)
class Link:
    seq: int
    kind: str
    subject: str
    sha256: str
    detail: dict
    at: str
    prev_hash: str
    link_hash: str
    #: ``detail`` as stored: what the link's hash covers
    detail_text: str = "{}"

    @property
    def name(self) -> str:
        return f"chain link {self.seq} ({self.kind} {self.subject})"


@dataclass(frozen=True)
class Difference:
    """The first thing found changed: ``where`` names the file, link, row range or figure."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def canonical(value: Any) -> str:
    """The one JSON text of ``value`` that is hashed: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(prev_hash: str, seq: int, kind: str, subject: str, sha256: str, detail: str, at: str) -> str:
    text = canonical([prev_hash, seq, kind, subject, sha256, detail, at])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def has_chain(con: duckdb.DuckDBPyConnection) -> bool:
    return has_table(con, "chain")


def head(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The last link as ``{"seq", "link_hash"}``, or None when the chain is empty (or absent)."""
    if not has_chain(con):
        return None
    row = con.execute("SELECT seq, link_hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
    return {"seq": row[0], "link_hash": row[1]} if row else None


def append(con: duckdb.DuckDBPyConnection, kind: str, subject: str, sha256: str, detail: dict,
           at: datetime | None = None) -> Link:
    """Add one link, in the caller's transaction when there is one (an ingest's link commits with
    its rows or not at all). ``seq`` is the primary key: two writers racing for the same place
    fail instead of forking the chain."""
    con.execute(_DDL)
    last = head(con)
    seq = 1 if last is None else last["seq"] + 1
    prev = GENESIS if last is None else last["link_hash"]
    text = canonical(detail)
    when = (at or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()
    link = Link(seq, kind, subject, sha256, detail, when, prev,
                link_hash(prev, seq, kind, subject, sha256, text, when), text)
    con.execute("INSERT INTO chain VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, kind, subject, sha256, text, when, prev, link.link_hash])
    return link


def links(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> list[Link]:
    """Every link in order (up to ``seq`` ``upto``). A detail that is not JSON reads as {}: the
    link's hash, which covers its text, then says it was changed."""
    if not has_chain(con):
        return []
    rows = con.execute("SELECT seq, kind, subject, sha256, detail, linked_at, prev_hash, link_hash FROM chain "
                       "WHERE ? IS NULL OR seq <= ? ORDER BY seq", [upto, upto]).fetchall()
    out = []
    for seq, kind, subject, sha256, detail, at, prev, link in rows:
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = {}
        out.append(Link(seq, kind, subject, sha256, parsed if isinstance(parsed, dict) else {}, at, prev, link,
                        detail))
    return out


# --- what the links record ------------------------------------------------------------------------

def file_digest(path: Path, starts: list[int] | None = None) -> dict:
    """sha256 of a file, its size, and ``blocks``: [start byte, short sha256, first row, last row]
    of each block, in one pass. A Parquet file's blocks are its row groups (rows named), its
    header and its footer (rows None); another file's, or one whose footer does not read, are
    ``BLOCK_BYTES`` long. ``starts``: cut at these offsets instead (to compare with a recorded digest)."""
    size = path.stat().st_size
    rows: list[tuple[int | None, int | None]] = []
    if starts is None:
        starts, rows = _row_group_starts(path, size)
    starts = sorted({s for s in starts if 0 <= s < size} | {0}) if size else [0]
    ends = starts[1:] + [size]
    whole = hashlib.sha256()
    blocks = []
    with path.open("rb") as fh:
        for k, (start, end) in enumerate(zip(starts, ends)):
            block = hashlib.sha256()
            left = end - start
            while left > 0 and (chunk := fh.read(min(left, 1 << 22))):
                whole.update(chunk)
                block.update(chunk)
                left -= len(chunk)
            first, last = rows[k] if k < len(rows) else (None, None)
            blocks.append([start, block.hexdigest()[:BLOCK_HEX], first, last])
    return {"sha256": whole.hexdigest(), "bytes": size, "blocks": blocks}


def _row_group_starts(path: Path, size: int) -> tuple[list[int], list[tuple[int | None, int | None]]]:
    """Where a Parquet file's row groups start, and their rows; BLOCK_BYTES cuts when it is not one."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # noqa: BLE001 - not Parquet, or unreadable: fixed blocks name bytes only
        return list(range(0, max(size, 1), BLOCK_BYTES)), []
    starts, rows, first = [0], [(None, None)], 0  # the header ("PAR1")
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        # a column chunk starts at its dictionary page when it has one
        begin = min(min(c.data_page_offset, c.dictionary_page_offset or c.data_page_offset)
                    for c in (group.column(j) for j in range(group.num_columns)))
        starts.append(begin)
        rows.append((first, first + group.num_rows - 1))
        first += group.num_rows
    footer = size - 8 - meta.serialized_size
    starts.append(footer)
    rows.append((None, None))
    return starts, rows


def segment_digest(directory: Path) -> dict:
    """The digest of a segment directory: each Parquet part's file_digest, and one sha256 over
    the parts' names and hashes."""
    parts = {p.name: file_digest(p) for p in sorted(Path(directory).glob("*.parquet"))}
    return {"sha256": _parts_sha256(parts), "parts": parts}


def _parts_sha256(parts: dict) -> str:
    return hashlib.sha256(canonical({name: d.get("sha256") for name, d in parts.items()}).encode()).hexdigest()


def record_ingest(con: duckdb.DuckDBPyConnection, ingest_id: str, path: str, sha256: str, rows_stored: int,
                  segment: str | None, digest: dict | None) -> Link:
    """The link of one ingested file: its bytes' sha256 and the digest of the segment it made."""
    return append(con, "ingest_file", ingest_id, sha256, {
        "path": path, "rows_stored": rows_stored, "segment": segment,
        "segment_sha256": digest["sha256"] if digest else None, "parts": digest["parts"] if digest else {}})


#: the columns of ``account_events`` whose rows an account-event ingest's link digests
ACCOUNT_EVENT_DIGESTED = tuple(c.name for c in ACCOUNT_EVENT_COLUMNS) + ("record_number",)


def account_events_digest(con: duckdb.DuckDBPyConnection, ingest_id: str,
                          columns: tuple[str, ...] | list[str] = ACCOUNT_EVENT_DIGESTED) -> dict:
    """The rows of ``account_events`` one ingest stored: their count and the sha256 of their text, sorted."""
    packed = ", ".join(f'"{c}" := "{c}"' for c in columns)
    rows, digest = con.execute(
        f"SELECT count(*), sha256(coalesce(string_agg(r, chr(10) ORDER BY r), '')) FROM ("
        f"SELECT CAST(struct_pack({packed}) AS VARCHAR) AS r FROM account_events WHERE ingest_id = ?)",
        [ingest_id]).fetchone()
    return {"columns": list(columns), "rows": rows, "sha256": digest}


def record_account_events(con: duckdb.DuckDBPyConnection, ingest_id: str, path: str, sha256: str,
                          rows_stored: int) -> Link:
    """The link of one file of account events (ingest/accounts.py): its bytes' sha256 and the digest
    of the rows it stored in ``account_events`` (they live in the DuckDB file, not in a segment)."""
    return append(con, "ingest_file", ingest_id, sha256, {
        "path": path, "rows_stored": rows_stored, "segment": None, "segment_sha256": None, "parts": {},
        "account_events": account_events_digest(con, ingest_id)})


def record_segment(con: duckdb.DuckDBPyConnection, segment: str, merged: list[str], digest: dict) -> Link:
    """The link of a segment a compaction wrote in place of ``merged``."""
    return append(con, "segment", segment, digest["sha256"], {"merged": merged, "parts": digest["parts"]})


def record_journal_segment(con: duckdb.DuckDBPyConnection, name: str, at_close: dict | None,
                           at_load: dict, file_sha256: str, first_difference: str | None = None) -> Link:
    """The link of a gateway journal segment: the hash of its lines its writer computed as it
    wrote them (``at_close``; None when no writer recorded one: a segment of a writer that died),
    the same hash of the bytes the loader stored (``at_load``, journal_lines_digest) and the
    file's sha256 (its ``ingest_file`` link's); ``first_difference`` names the lines that differ."""
    return append(con, "journal_segment", name, (at_close or at_load)["sha256"], {
        "hashed_at": "close" if at_close else "load", "sha256_at_load": at_load["sha256"],
        "file_sha256": file_sha256, "lines": at_load["lines"], "first_difference": first_difference})


#: the tables a scan stores its results in, one row set per scan_id (detect/scan.py store_result;
#: resellers: store/resellers.py, which the gateway enforces per end user)
SCAN_TABLES = ("scans", "verdicts", "campaigns", "signals", "indicators", "edges", "resellers")


def scan_digest(con: duckdb.DuckDBPyConnection, scan_id: str, columns: dict[str, list[str]] | None = None) -> dict:
    """Per table of SCAN_TABLES: the scan's row count and the sha256 of its rows' text, sorted, over
    ``columns`` (default: the table's columns now; a column a later version adds is left out when
    an older link is checked, so adding it changes nothing)."""
    out = {}
    for table in SCAN_TABLES:
        if not has_table(con, table):
            continue
        cols = (columns or {}).get(table) or [c for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
            "ORDER BY column_index", [table]).fetchall()]
        packed = ", ".join(f'"{c}" := "{c}"' for c in cols)
        rows, digest = con.execute(
            f"SELECT count(*), sha256(coalesce(string_agg(r, chr(10) ORDER BY r), '')) FROM ("
            f"SELECT CAST(struct_pack({packed}) AS VARCHAR) AS r FROM {table} WHERE scan_id = ?)", [scan_id]).fetchone()
        out[table] = {"columns": cols, "rows": rows, "sha256": digest}
    return out


def record_scan(con: duckdb.DuckDBPyConnection, scan_id: str, read_head: dict | None, policy_sha256: str) -> Link:
    """The link of a scan: the head of the chain when it read the store, and the digest of the
    results it stored (scan_digest), so that a verdict, signal or edge changed afterwards shows."""
    return append(con, "scan", scan_id, policy_sha256, {"read_head": read_head, "tables": scan_digest(con, scan_id)})


class JournalLines:
    """The hash of a journal segment's lines, in one pass as they are written: the sha256 of each
    run of ``JOURNAL_BLOCK_LINES`` lines, and ``sha256`` over those block hashes (so a change is
    named by its lines, for the cost of hashing each byte once)."""

    def __init__(self) -> None:
        self.block = hashlib.sha256()
        self.lines = 0
        self.blocks: list[str] = []

    def add(self, line: bytes) -> None:
        self.block.update(line)
        self.lines += 1
        if self.lines % JOURNAL_BLOCK_LINES == 0:
            self.blocks.append(self.block.hexdigest())
            self.block = hashlib.sha256()

    def digest(self) -> dict:
        blocks = self.blocks + ([self.block.hexdigest()] if self.lines % JOURNAL_BLOCK_LINES else [])
        whole = hashlib.sha256(b"".join(bytes.fromhex(b) for b in blocks)).hexdigest()
        return {"sha256": whole, "lines": self.lines, "lines_per_block": JOURNAL_BLOCK_LINES, "blocks": blocks}


def journal_lines_digest(path: Path) -> dict:
    """JournalLines' digest of a file on disk, as its writer would have made it."""
    lines = JournalLines()
    with path.open("rb") as fh:
        for line in fh:
            lines.add(line)
    return lines.digest()


def first_line_difference(at_close: dict, at_load: dict) -> str | None:
    """Which lines differ between two JournalLines digests, in words."""
    per = JOURNAL_BLOCK_LINES
    now, then = list(at_load.get("blocks") or []), list(at_close.get("blocks") or [])
    for i in range(max(len(now), len(then))):
        if i >= len(now) or i >= len(then) or now[i] != then[i]:
            return f"lines {i * per + 1}-{(i + 1) * per}"
    return None


# --- checking --------------------------------------------------------------------------------------

def check_links(chain: list[Link]) -> Iterator[Difference]:
    """Each link in place, pointing at the one before, with the hash of its own fields."""
    prev = GENESIS
    for expected, link in enumerate(chain, start=1):
        if link.seq != expected:
            yield Difference(f"chain link {expected}", f"missing (the links jump from {expected - 1} to {link.seq})")
            return
        if link.prev_hash != prev:
            yield Difference(link.name, f"does not point at link {link.seq - 1} (a link before it was changed "
                             "or removed)")
            return
        if link_hash(prev, link.seq, link.kind, link.subject, link.sha256, link.detail_text, link.at) != link.link_hash:
            yield Difference(link.name, "its fields were changed after it was written (link hash differs)")
            return
        prev = link.link_hash


def live_segments(chain: list[Link]) -> dict[str, dict]:
    """segment name -> the parts digest the chain last recorded for it."""
    out: dict[str, dict] = {}
    for link in chain:
        if link.kind == "ingest_file" and link.detail.get("segment"):
            out[link.detail["segment"]] = link.detail.get("parts") or {}
        elif link.kind == "segment":
            for old in link.detail.get("merged") or []:
                out.pop(old, None)
            out[link.subject] = link.detail.get("parts") or {}
    return out


def check_part(path: Path, recorded: dict) -> str | None:
    """None when the part's bytes are those recorded, else where they first differ, in words:
    the rows of the row group (as the part held them when it was linked) and its bytes."""
    if not path.is_file():
        return "missing"
    then = [b for b in recorded.get("blocks") or [] if isinstance(b, list) and len(b) == 4]
    now = file_digest(path, [b[0] for b in then])
    if now["sha256"] == recorded.get("sha256"):
        return None
    for k, (start, sha, first, last) in enumerate(then):
        end = then[k + 1][0] - 1 if k + 1 < len(then) else int(recorded.get("bytes") or 0) - 1
        mine = next((b for b in now["blocks"] if b[0] == start), None)
        if mine is None or mine[1] != sha:
            where = (f"rows {first}-{last} differ (bytes {start}-{end})" if first is not None
                     else f"bytes {start}-{end} differ")
            parquet = any(b[2] is not None for b in then)
            return where + ("" if first is not None or not parquet
                            else " (the Parquet header)" if k == 0 else " (the Parquet footer)")
    return f"its size is {now['bytes']} bytes, was {recorded.get('bytes')}"


def check_store(con: duckdb.DuckDBPyConnection, segments_dir: Path) -> Iterator[Difference]:
    """Everything the store holds against its chain: the links themselves, every live segment's
    Parquet parts, every ``ingests`` row, every journal segment's hash at close against the hash
    of what was loaded, every scan's stored results and its policy hash. Yields each difference
    found, links first (a broken chain makes the rest meaningless, so it stops there)."""
    chain = links(con)
    broken = next(check_links(chain), None)
    if broken is not None:
        yield broken
        return
    recorded = live_segments(chain)
    live = [s for (s,) in con.execute("SELECT DISTINCT segment FROM ingests WHERE segment IS NOT NULL "
                                      "ORDER BY segment").fetchall()] if has_table(con, "ingests") else []
    for segment in live:
        parts = recorded.get(segment)
        where = f"segment {segment}"
        if parts is None:
            yield Difference(where, "no chain link records its hash (stored without one, or its link was removed)")
            continue
        on_disk = {p.name for p in (segments_dir / segment).glob("*.parquet")}
        for extra in sorted(on_disk - set(parts)):
            yield Difference(f"{where} part {extra}", "is not in the chain (added after the segment was written)")
        for name, digest in sorted(parts.items()):
            found = check_part(segments_dir / segment / name, digest)
            if found:
                yield Difference(f"{where} part {name}", found)
    yield from _check_ingests(con, chain)
    yield from _check_account_events(con, chain)
    for link in chain:
        if link.kind == "journal_segment" and link.sha256 != link.detail.get("sha256_at_load"):
            lines = link.detail.get("first_difference") or "somewhere"
            yield Difference(f"journal segment {link.subject}", f"{lines} changed between its close and its load "
                             f"(sha256 at close {link.sha256[:12]}, at load {str(link.detail.get('sha256_at_load'))[:12]})")
    yield from _check_scans(con, chain)
    if has_table(con, "scans"):
        for scan_id, policy, policy_sha in con.execute("SELECT scan_id, policy, policy_sha256 FROM scans "
                                                       "ORDER BY scan_id").fetchall():
            if hashlib.sha256(str(policy).encode()).hexdigest() != policy_sha:
                yield Difference(f"scans row {scan_id}", "its policy text does not match its policy_sha256")


def _check_scans(con: duckdb.DuckDBPyConnection, chain: list[Link]) -> Iterator[Difference]:
    """Each scan's stored results against its latest link."""
    latest = {link.subject: link for link in chain if link.kind == "scan"}
    for scan_id, link in sorted(latest.items()):
        recorded = link.detail.get("tables") or {}
        if not isinstance(recorded, dict):
            continue
        try:
            now = scan_digest(con, scan_id, {t: list(d.get("columns") or []) for t, d in recorded.items()
                                             if isinstance(d, dict)})
        except duckdb.Error as exc:  # a column the link names was dropped
            yield Difference(f"scan {scan_id}", f"its tables no longer read as its link recorded them "
                             f"({str(exc).splitlines()[0]})")
            continue
        for table, then in sorted(recorded.items()):
            got = now.get(table)
            if not isinstance(then, dict) or got is None or got["sha256"] != then.get("sha256"):
                count = "the table is gone" if got is None else f"{then.get('rows') if isinstance(then, dict) else '?'} " \
                    f"rows then, {got['rows']} now"
                yield Difference(f"scan {scan_id} table {table}", f"its rows changed after the scan ({count})")


def _check_account_events(con: duckdb.DuckDBPyConnection, chain: list[Link]) -> Iterator[Difference]:
    """Each account-event ingest's stored rows against the digest its link recorded."""
    for link in chain:
        then = link.detail.get("account_events") if link.kind == "ingest_file" else None
        if not isinstance(then, dict):
            continue
        where = f"account_events of ingest {link.subject} ({link.detail.get('path')})"
        if not has_table(con, "account_events"):
            yield Difference(where, "the table is gone")
            continue
        try:
            now = account_events_digest(con, link.subject, [str(c) for c in then.get("columns") or []])
        except duckdb.Error as exc:  # a column the link names was dropped
            yield Difference(where, f"no longer read as its link recorded them ({str(exc).splitlines()[0]})")
            continue
        if now["sha256"] != then.get("sha256"):
            yield Difference(where, f"its rows changed after the ingest ({then.get('rows')} rows then, "
                             f"{now['rows']} now)")


def _check_ingests(con: duckdb.DuckDBPyConnection, chain: list[Link]) -> Iterator[Difference]:
    if not has_table(con, "ingests"):
        return
    by_id = {link.subject: link for link in chain if link.kind == "ingest_file"}
    merged_into = {}
    for link in chain:
        if link.kind == "segment":
            for old in link.detail.get("merged") or []:
                merged_into[old] = link.subject
    for ingest_id, path, sha256, rows_stored, segment in con.execute(
            "SELECT ingest_id, path, sha256, rows_stored, segment FROM ingests ORDER BY started_at, ingest_id").fetchall():
        link = by_id.pop(ingest_id, None)
        where = f"ingests row {ingest_id} ({path})"
        if link is None:
            yield Difference(where, "no chain link records it (added after the fact, or its link was removed)")
            continue
        expected_segment = link.detail.get("segment")
        while expected_segment in merged_into:
            expected_segment = merged_into[expected_segment]
        for field, now, then in (("sha256", sha256, link.sha256), ("path", path, link.detail.get("path")),
                                 ("rows_stored", rows_stored, link.detail.get("rows_stored")),
                                 ("segment", segment, expected_segment)):
            if now != then:
                yield Difference(where, f"{field} is {now!r}, {link.name} says {then!r}")
                break
    for ingest_id, link in by_id.items():
        yield Difference(f"ingests row {ingest_id} ({link.detail.get('path')})",
                         f"missing: removed after {link.name} recorded it")

