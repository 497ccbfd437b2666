"""Fast lane for flat JSON Lines: DuckDB's own multithreaded JSON reader over the whole file.

Taken only when the file parses cleanly as one table of flat records, one per line, and every
record passes the general lane's rules (the same SQL from normalize.py) as a new exchange. Then
no line numbers are needed, which is what makes it fast. Otherwise (a malformed or blank line,
a rejected row, a duplicate, a nested log shape, anything DuckDB refuses) None is returned and
the general lane reads the file chunk by chunk, quarantining exactly the lines that are bad.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import duckdb
import pyarrow as pa

from distillguard.ingest.normalize import IPV4, _canonical_ip, normalize_sql
from distillguard.ingest.sources import Source
from distillguard.schema import ALIASES, BY_NAME
from distillguard.store.database import _sql_str, sql_literal_path, stores_any_of

_SHAPE_KEYS = {"request", "response", "resourceSpans", "attributes"}


SCAN_CHUNK = 1 << 23


def _scan_lines(path: Path, out: dict) -> None:
    """sha256 of the file, its number of lines and the length of its longest line that spans
    two reads (a line inside one read is shorter than SCAN_CHUNK), in one pass.

    Blank lines need no separate check: DuckDB skips them, so the row count would not match
    the line count and the file goes to the general lane.
    """
    digest = hashlib.sha256()
    lines = 0
    last = b"\n"
    longest = running = 0  # running: bytes since the last newline
    with path.open("rb") as fh:
        while chunk := fh.read(SCAN_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            first = chunk.find(b"\n")
            if first < 0:
                running += len(chunk)
            else:
                longest = max(longest, running + first)
                running = len(chunk) - chunk.rfind(b"\n") - 1
    if last != b"\n":
        lines += 1
    out.update(sha256=digest.hexdigest(), lines=lines, longest_spanning=max(longest, running))


def _projection(columns: list[tuple[str, str]], schema: pa.Schema) -> tuple[str, pa.Schema] | None:
    """SELECT list renaming aliases to canonical names; None if the file needs the general lane.

    ``columns`` are DuckDB's (name, type). A column DuckDB could only type as JSON (all null in
    the sample, or mixed types) is accepted only while every value is null: any other value
    raises inside the query, and the file falls back to the general lane.
    """
    chosen: dict[str, list[str]] = {}
    duck = dict(columns)
    for field in schema:
        if field.name in _SHAPE_KEYS or duck.get(field.name, "").startswith("STRUCT"):
            return None  # nested shapes and flattening belong to the general lane
        target = ALIASES.get(field.name)
        if target is None:
            continue
        if duck.get(field.name) != "JSON" and (pa.types.is_nested(field.type) or pa.types.is_null(field.type)):
            return None
        chosen.setdefault(target, []).append(field.name)
    select, fields = [], []
    for target, sources in chosen.items():
        order = sorted(sources, key=lambda n: 0 if n == target else 1 + BY_NAME[target].aliases.index(n))
        exprs, types = [], set()
        for name in order:
            if duck.get(name) == "JSON":
                exprs.append(f'CASE WHEN "{name}" IS NULL THEN NULL::VARCHAR ELSE error(\'mixed JSON column\') END')
                types.add(pa.string())
            else:
                exprs.append(f'"{name}"')
                types.add(schema.field(name).type)
        if len(types) > 1:
            exprs = [f"CAST({e} AS VARCHAR)" for e in exprs]
            typ = pa.string()
        else:
            typ = types.pop()
        expr = exprs[0] if len(exprs) == 1 else "coalesce(" + ", ".join(exprs) + ")"
        select.append(f'{expr} AS "{target}"')
        fields.append(pa.field(target, typ))
    return ", ".join(select), pa.schema(fields)


def try_ingest(con: duckdb.DuckDBPyConnection, source: Source, target: Path,
               max_record_bytes: int = 64 << 20) -> tuple[int, str] | None:
    """Normalise the whole file into ``target`` if every line is a clean, new exchange.

    Returns (rows in, sha256), or None (nothing written) when the general lane must read it:
    any rejected row, repeated or already stored exchange_id, blank line, line longer than
    ``max_record_bytes`` or parse surprise.
    """
    if max_record_bytes < SCAN_CHUNK:  # the scan could not see a short line over the cap
        return None
    scan: dict = {}
    scanner = threading.Thread(target=_scan_lines, args=(source.path, scan))
    scanner.start()
    staged = target.with_suffix(".staged.parquet")
    try:
        reader = (f"read_json('{sql_literal_path(source.path)}', format = 'newline_delimited', records = true, "
                  f"sample_size = 20480, maximum_object_size = {int(max_record_bytes)}, "
                  # no format matches: timestamps stay text, so that their UTC offset is checked
                  # by the same SQL as on the general lane (DuckDB's own parse takes +25:00)
                  "timestampformat = '%Y-%m-%d~never', dateformat = '%Y-%m-%d~never')")
        try:
            schema = con.execute(f"SELECT * FROM {reader} LIMIT 0").to_arrow_table().schema
            columns = [(row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        except duckdb.Error:
            return None
        projection = _projection(columns, schema)
        if projection is None or not any(BY_NAME[f.name].required for f in projection[1]):
            return None
        select, canonical = projection
        con.execute(f"CREATE OR REPLACE TEMP VIEW _json_src AS SELECT {select} FROM {reader}")
        try:
            con.execute(f"COPY ({normalize_sql(canonical, '_json_src', ip_passthrough=True)}) "
                        f"TO '{_sql_str(staged)}' (FORMAT parquet, COMPRESSION snappy)")
        except duckdb.Error:
            return None
        finally:
            con.execute("DROP VIEW IF EXISTS _json_src")
        part = f"read_parquet('{sql_literal_path(staged)}')"
        rows, bad, distinct = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE _reason IS NOT NULL), count(DISTINCT exchange_id) FROM {part}"
        ).fetchone()
        scanner.join()
        if bad or distinct != rows or rows != scan["lines"] or scan["longest_spanning"] > max_record_bytes:
            return None
        for (ip,) in con.execute(f"SELECT DISTINCT client_ip FROM {part} WHERE client_ip IS NOT NULL "
                                 f"AND NOT regexp_full_match(client_ip, '{IPV4}')").fetchall():
            if _canonical_ip(ip) != ip:  # not valid, or valid but not canonical text
                return None
        if stores_any_of(con, part):
            return None
        staged.rename(target)
        return rows, scan["sha256"]
    finally:
        scanner.join()
        staged.unlink(missing_ok=True)
