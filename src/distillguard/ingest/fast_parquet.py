"""Fast lane for Parquet files already in the canonical schema (the simulator's output, a
store export, a Spark job's output): validate with one DuckDB scan and copy the file as it is.

A file takes this lane only if every rule of the general lane would pass every row unchanged:
exact canonical column names and types, required fields present, no empty text (the general
lane turns it into null), timestamps in range, no negative counts, every IP valid and already
in canonical form, every email_fingerprint 64 lower-case hex digits (an address is hashed by
the general lane), no repeated or already stored exchange_id. Anything else returns None and
the file goes through the general lane, which finds and quarantines the offending rows. A test
checks that both lanes store identical rows for a clean file.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.ingest.normalize import EARLIEST, FINGERPRINTED, LATEST, _canonical_ip
from distillguard.ingest.sources import sha256_file
from distillguard.schema import ARROW_SCHEMA, COLUMNS
from distillguard.store import Store, sql_literal_path, stores_any_of


def _is_canonical(schema: pa.Schema) -> bool:
    """Canonical columns only, each of its canonical type, every required one present. An optional
    column may be missing (a file written before the column was declared): the store reads its
    parts by name, so the column is null there, as the general lane would store it."""
    known = {f.name: f.type for f in ARROW_SCHEMA}
    names = schema.names
    if len(set(names)) != len(names) or any(n not in known for n in names):
        return False
    if any(c.required and c.name not in names for c in COLUMNS):
        return False
    return all(f.type == known[f.name] for f in schema)


def _column_checks() -> dict[str, list[str]]:
    """Per column, SQL predicates that are true on a row the general lane would not take as is."""
    checks: dict[str, list[str]] = {}
    for col in COLUMNS:
        q = f'"{col.name}"'
        mine = checks.setdefault(col.name, [])
        if col.required:
            mine.append(f"{q} IS NULL")
        if col.kind in ("string", "ip") and col.name != "prompt":
            mine.append(f"trim({q}) = ''" if col.required else f"{q} = ''")
        if col.kind == "timestamp":
            mine.append(f"({q} < TIMESTAMPTZ '{EARLIEST}' OR {q} >= TIMESTAMPTZ '{LATEST}')")
        if col.kind == "number":
            mine.append(f"NOT isfinite({q})")
        if col.non_negative:
            mine.append(f"{q} < 0")
        if col.name == FINGERPRINTED:  # an address (or anything but a fingerprint) is hashed by the general lane
            mine.append(f"NOT regexp_full_match({q}, '[0-9a-f]{{64}}')")
    return checks


def _settled_by_statistics(metadata: pq.FileMetaData) -> set[str]:
    """Columns whose checks the row-group statistics already prove, so no scan is needed.

    Null counts prove required fields present; a minimum above ' ' proves no text is empty
    or blank; min/max prove timestamp ranges and non-negative counts. A float column is always
    scanned: NaN is left out of Parquet min/max.
    """
    settled = set()
    index = {metadata.schema.column(i).name: i for i in range(metadata.num_columns)}
    for col in COLUMNS:
        if col.kind == "number" or col.name not in index:
            continue
        ok = True
        for rg in range(metadata.num_row_groups):
            chunk = metadata.row_group(rg).column(index[col.name])
            stats = chunk.statistics
            if chunk.num_values == 0:
                continue
            if stats is None:
                ok = False
                break
            all_null = stats.null_count == chunk.num_values if stats.has_null_count else False
            if col.required and (not stats.has_null_count or stats.null_count):
                ok = False
            elif all_null:
                continue
            elif not stats.has_min_max or col.name == FINGERPRINTED:  # min and max cannot prove every value a fingerprint
                ok = False
            elif col.kind in ("string", "ip") and col.name != "prompt":
                low = stats.min if isinstance(stats.min, str) else None
                ok = low is not None and low[:1] > " "
            elif col.kind == "timestamp":
                ok = str(stats.min)[:4] >= EARLIEST[:4] and str(stats.max)[:4] < LATEST[:4]
            elif col.non_negative:
                ok = stats.min >= 0
            if not ok:
                break
        if ok:
            settled.add(col.name)
    return settled


def try_copy(store: Store, path: Path, target: Path) -> tuple[int, str] | None:
    """Copy ``path`` to ``target`` if it is clean canonical Parquet; returns (rows, sha256)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return None  # the general lane reports the problem
    if not _is_canonical(schema):
        return None
    con = store.con
    src = f"read_parquet('{sql_literal_path(path)}')"
    digest: dict[str, str] = {}
    hasher = threading.Thread(target=lambda: digest.setdefault("sha256", sha256_file(path)))
    hasher.start()
    try:
        settled = _settled_by_statistics(pq.ParquetFile(path).metadata)
        present = set(schema.names)
        pending = [c for name, checks in _column_checks().items() if name in present and name not in settled
                   for c in checks]
        bad_filter = " OR ".join(f"coalesce({c}, false)" for c in pending) or "false"
        rows, bad, distinct = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {bad_filter}), count(DISTINCT exchange_id) FROM {src}"
        ).fetchone()
        if bad or distinct != rows:
            return None
        addresses = (con.execute(f"SELECT DISTINCT client_ip FROM {src} WHERE client_ip IS NOT NULL").fetchall()
                     if "client_ip" in present else [])
        for (ip,) in addresses:
            if _canonical_ip(ip) != ip:
                return None
        if stores_any_of(con, src):
            return None
        shutil.copyfile(path, target)
    finally:
        hasher.join()
    return rows, digest["sha256"]
