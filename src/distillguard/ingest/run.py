"""Ingest files into the store: one transaction per file, every row accounted for.

Per file: the reader streams batches; each batch is normalised in DuckDB; good rows go to a
staging table, bad rows to a quarantine staging table with their raw text. At the end of the
file, staged rows are checked against each other and against the store: an exchange_id seen
before with identical content is a duplicate (not stored again); with different content it
is a conflict (quarantined, never overwriting). Then ``rows in = stored + duplicates +
quarantined`` is checked, and the file's provenance row is written, all in one commit.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from distillguard import __version__
from distillguard.errors import IngestError
from distillguard.ingest import delimited, json_doc, jsonl, parquet
from distillguard.ingest.normalize import (BATCH_INDEX, canonicalize_columns, neutralize_nested, normalize_sql,
                                           register_ips, scrub_addresses)
from distillguard.ingest import formats
from distillguard.ingest.fieldmap import FieldMap
from distillguard.ingest.formats import RecordMapper
from distillguard.ingest.records import Batch, Expander, Rejected
from distillguard.ingest import fast_jsonl, fast_parquet
from distillguard.ingest.sources import (CappedReader, IngestLimits, Source, discover, first_record, open_binary,
                                         sha256_file)
from distillguard.schema import COLUMN_NAMES, REQUIRED
from distillguard.store import chain
from distillguard.store.database import Store, _sql_str, sql_literal_path, stores_any_of

Progress = Callable[[Source, int], None]

_COLS = ", ".join(f'"{c}"' for c in COLUMN_NAMES)


@dataclass
class FileResult:
    path: str
    format: str
    size_bytes: int
    sha256: str
    rows_in: int
    rows_stored: int
    rows_duplicate: int
    rows_quarantined: int
    #: the log format the records were read as (named by --format, or told from the first record)
    log_format: str = "canonical"
    #: what the file lacked, once each (e.g. LiteLLM rows stored without their prompts)
    warnings: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_stored + self.rows_duplicate + self.rows_quarantined

    def as_dict(self) -> dict:
        return {**asdict(self), "balanced": self.balanced}


def ingest_paths(store: Store, paths: list[str | Path], progress: Progress | None = None,
                 on_error: Callable[[IngestError], None] | None = None,
                 limits: IngestLimits | None = None, log_format: str | None = None,
                 field_map: FieldMap | None = None) -> list[FileResult]:
    """Ingest every file under ``paths``. File-level errors go to ``on_error`` (or raise).

    ``log_format`` names the format of every file (see ingest.formats); None tells it per file
    from its first record. ``field_map`` maps the user's own names onto canonical fields.
    """
    if log_format is not None:
        formats.named(log_format)  # an unknown name fails before any file is read
    results = []
    for source in discover(paths):
        if log_format is not None:
            source = replace(source, log_format=log_format)
        try:
            results.append(ingest_file(store, source, progress, limits=limits, field_map=field_map))
        except IngestError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return results


def _batches(source: Source, done: Callable[[str], None], limits: IngestLimits,
             mapper: Expander | None = None) -> Iterator[Batch]:
    if source.format == "parquet":
        result: dict[str, str] = {}
        hasher = threading.Thread(target=lambda: result.setdefault("h", sha256_file(source.path)))
        hasher.start()
        yield from parquet.read(source.path, mapper)
        hasher.join()
        done(result["h"])
        return
    stream, hashing = open_binary(source, limits)
    rows = 0
    try:
        if source.format == "jsonl":
            batches = jsonl.read(stream, hashing, limits.max_record_bytes, mapper)
        elif source.format == "json":
            batches = json_doc.read(stream, hashing, limits.max_record_bytes, mapper)
        elif source.format == "csv":
            batches = delimited.read(stream, hashing, str(source.path), limits.max_record_bytes, mapper)
        else:
            raise IngestError(f"{source.path}: unreadable format {source.format!r}")
        for batch in batches:
            rows += batch.rows_in
            yield batch
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip/zstd stream
        raise IngestError(f"{source.path}: cannot read ({source.compression or 'file'}): {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            raise IngestError(f"{source.path}: cannot read (zstd): {exc}") from None
        raise
    capped = getattr(stream, "raw", None)
    if isinstance(capped, CappedReader) and capped.exceeded:
        yield Batch(None, [Rejected(rows + 1, None, f"too large: decompressed past {limits.max_decompressed_bytes:,} "
                                    "bytes (max_decompressed_bytes); the rest of the file is not read", "")],
                    None, hashing.bytes_read)
    stream.close()
    done(hashing.finish())


def ingest_file(store: Store, source: Source, progress: Progress | None = None, *,
                allow_fast_lane: bool = True, limits: IngestLimits | None = None,
                field_map: FieldMap | None = None) -> FileResult:
    """Ingest one file as one unit: all of it becomes visible at once, or none of it."""
    limits = limits or IngestLimits()
    log_format = (formats.named(source.log_format) if source.log_format
                  else formats.detect(first_record(source)))
    mapper = log_format.mapper(field_map)
    allow_fast_lane = allow_fast_lane and mapper is None
    con = store.con
    started = datetime.now(timezone.utc)
    ingest_id = uuid.uuid4().hex
    pending = store.pending_dir(ingest_id)
    con.execute("CREATE OR REPLACE TEMP TABLE _qstage (line_number BIGINT, record_number BIGINT, "
                "exchange_id VARCHAR, reason_code VARCHAR, reason VARCHAR, raw VARCHAR)")
    try:
        fast = None
        if allow_fast_lane and source.format == "parquet":
            fast = fast_parquet.try_copy(store, source.path, pending / "part-00000.parquet")
        elif allow_fast_lane and source.format == "jsonl" and source.compression is None:
            fast = fast_jsonl.try_ingest(con, source, pending / "part-00000.parquet", limits.max_record_bytes)
        if fast is not None:  # the fast lanes have already ruled out repeats and stored ids
            rows_in, sha256 = fast
            stored, duplicates = rows_in, 0
        else:
            rows_in, sha256 = _read_into_parts(store, source, pending, progress, limits, mapper)
            stored, duplicates = _merge(con, pending)
        quarantined = con.execute("SELECT count(*) FROM _qstage").fetchone()[0]
        result = FileResult(str(source.path), source.format, source.size, sha256, rows_in, stored,
                            duplicates, quarantined, log_format.name,
                            mapper.warnings(rows_in) if isinstance(mapper, RecordMapper) else [])
        if not result.balanced:  # an invariant, so a bug if it fails: keep the traceback
            raise AssertionError(f"row accounting broken for {source.path}: {result}")
        commit_ingest(store, pending, ingest_id, result, started)
    finally:
        shutil.rmtree(pending, ignore_errors=True)
        con.execute("DROP TABLE IF EXISTS _qstage")
        con.execute("DROP TABLE IF EXISTS _batch")
    store.refresh_view()
    if progress:
        progress(source, source.size)
    return result


def commit_ingest(store: Store, pending: Path, ingest_id: str, result: FileResult, started: datetime,
                  before_commit: Callable[[], None] | None = None) -> None:
    """Make one ingest visible at once: its quarantined records (staged in ``_qstage``), its parts
    under ``pending`` as a segment, its row in ``ingests`` and its link in the store's hash chain
    (store/chain.py), in one transaction (``before_commit``
    adds what else must land with them, e.g. a source's watermark), or none of it."""
    con = store.con
    digest = chain.segment_digest(pending) if result.rows_stored else None  # hashed before the lock is taken
    con.execute("BEGIN TRANSACTION")
    try:
        # the same bytes ingested again (by another name, or the gateway's loader retrying a
        # segment) quarantine the same records: each is kept once, by its first ingest
        con.execute(f"INSERT INTO quarantine SELECT '{ingest_id}', ?, line_number, record_number, "
                    "exchange_id, reason_code, reason, raw FROM _qstage s WHERE NOT EXISTS ("
                    "SELECT 1 FROM quarantine q JOIN ingests i USING (ingest_id) WHERE i.sha256 = ? "
                    "AND q.record_number IS NOT DISTINCT FROM s.record_number "
                    "AND q.line_number IS NOT DISTINCT FROM s.line_number)", [result.path, result.sha256])
        segment = store.publish(pending, ingest_id) if result.rows_stored else None
        con.execute("INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [ingest_id, result.path, result.format, result.size_bytes, result.sha256, result.rows_in,
                     result.rows_stored, result.rows_duplicate, result.rows_quarantined, started,
                     datetime.now(timezone.utc), __version__, segment])
        chain.record_ingest(con, ingest_id, result.path, result.sha256, result.rows_stored, segment, digest)
        if before_commit is not None:
            before_commit()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _read_into_parts(store: Store, source: Source, pending: Path, progress: Progress | None,
                     limits: IngestLimits, mapper: Expander | None = None) -> tuple[int, str]:
    """General lane: stream batches, normalise each, write good rows as Parquet parts."""
    digest: dict[str, str] = {}
    rows_in = 0
    part = 0
    checked_columns = False
    for batch in _batches(source, lambda h: digest.setdefault("sha256", h), limits, mapper):
        rows_in += batch.rows_in
        if batch.rejected:
            _stage_rejected(store.con, batch.rejected)
        if batch.table is not None and batch.table.num_rows:
            table = canonicalize_columns(batch.table)
            if not checked_columns:
                _check_columns(source, table)
                checked_columns = True
            _write_batch(store.con, table, batch, pending / f"part-{part:05d}.parquet")
            part += 1
        if progress:
            progress(source, batch.position)
    return rows_in, digest.get("sha256", "")


def _check_columns(source: Source, table: pa.Table) -> None:
    """A file whose records carry none of the required fields is not an exchange log."""
    if not any(r in table.column_names for r in REQUIRED):
        raise IngestError(
            f"{source.path}: unknown column set: no record has any of {', '.join(REQUIRED)} "
            "(or an alias, see docs/schema.md)")


def _stage_rejected(con, rejected: list[Rejected]) -> None:
    table = pa.table({
        "line_number": pa.array([r.line for r in rejected], pa.int64()),
        "record_number": pa.array([r.record for r in rejected], pa.int64()),
        "exchange_id": pa.array([r.exchange_id for r in rejected], pa.string()),
        "reason_code": pa.array([r.reason.split(":")[0] for r in rejected], pa.string()),
        "reason": pa.array([r.reason for r in rejected], pa.string()),
        "raw": pa.array([scrub_addresses(r.raw) if r.raw else r.raw for r in rejected], pa.string()),
    })
    con.register("_rejected", table)
    con.execute("INSERT INTO _qstage SELECT * FROM _rejected")
    con.unregister("_rejected")


def _write_batch(con, table: pa.Table, batch: Batch, target: Path) -> None:
    table, wrong = neutralize_nested(table)
    table = table.append_column(BATCH_INDEX, pa.array(range(table.num_rows), pa.int64()))
    con.register("_raw_batch", table)
    try:
        register_ips(con, "_raw_batch", table.schema)
        write_normalized(con, normalize_sql(table.schema, "_raw_batch", wrong), target,
                         lambda rows: [Rejected(record, line, reason, batch.raw(idx), exchange_id)
                                       for line, record, exchange_id, reason, idx in rows])
    finally:
        con.unregister("_raw_batch")


def write_normalized(con, query: str, target: Path, to_rejected: Callable[[list[tuple]], list[Rejected]]) -> None:
    """Write the normalised rows of ``query`` to ``target`` and stage the rejected ones.

    One pass writes every row with its ``_reason``; rejected rows are read back from the part
    (cheap: the reason column's statistics let DuckDB skip clean row groups) and, only if there
    are any, the part is rewritten without them.
    """
    staged = target.with_suffix(".staged.parquet")
    con.execute(f"COPY ({query}) TO '{_sql_str(staged)}' (FORMAT parquet, COMPRESSION zstd)")
    src = f"read_parquet('{sql_literal_path(staged)}')"
    bad = con.execute(f"SELECT _line, _record, exchange_id, _reason, _idx FROM {src} "
                      "WHERE _reason IS NOT NULL").fetchall()
    if not bad:
        staged.rename(target)  # extra columns (_reason, _idx) are harmless: the view projects
        return
    _stage_rejected(con, to_rejected(bad))
    con.execute(f"COPY (SELECT {_COLS}, _record, _line FROM {src} WHERE _reason IS NULL) "
                f"TO '{_sql_str(target)}' (FORMAT parquet, COMPRESSION zstd)")
    staged.unlink()


def _same_content(a: str, b: str) -> str:
    return " AND ".join(f'{a}."{c}" IS NOT DISTINCT FROM {b}."{c}"' for c in COLUMN_NAMES)


def _merge(con, pending: Path) -> tuple[int, int]:
    """Check the new parts against themselves and the store; returns (stored, duplicates).

    Duplicates (same id, same content) are dropped; conflicts (same id, other content) go to
    the quarantine. Only when something must be dropped are the parts rewritten.
    """
    parts = sorted(pending.glob("*.parquet"))
    if not parts:
        return 0, 0
    src = f"read_parquet('{sql_literal_path(pending)}/*.parquet', union_by_name = true)"
    staged, distinct = con.execute(f"SELECT count(*), count(DISTINCT exchange_id) FROM {src}").fetchone()
    overlap = stores_any_of(con, src)
    if staged == distinct and not overlap:
        return staged, 0
    con.execute(f"CREATE OR REPLACE TEMP TABLE _stage AS SELECT * FROM {src}")
    con.execute("CREATE OR REPLACE TEMP TABLE _drop (_record BIGINT, same BOOLEAN)")
    if staged != distinct:
        con.execute(f"""
            INSERT INTO _drop
            WITH ranked AS (
              SELECT *, row_number() OVER (PARTITION BY exchange_id ORDER BY _record) AS _rn
              FROM _stage WHERE exchange_id IN (
                SELECT exchange_id FROM _stage GROUP BY exchange_id HAVING count(*) > 1))
            SELECT s._record, {_same_content('s', 'f')}
            FROM ranked s JOIN ranked f ON f.exchange_id = s.exchange_id AND f._rn = 1
            WHERE s._rn > 1""")
    if overlap:
        con.execute(f"""
            INSERT INTO _drop
            SELECT s._record, {_same_content('s', 'e')}
            FROM _stage s JOIN exchanges e ON e.exchange_id = s.exchange_id""")
    con.execute("CREATE OR REPLACE TEMP TABLE _dropped AS SELECT _record, bool_and(same) AS same "
                "FROM _drop GROUP BY _record")
    con.execute(f"""
        INSERT INTO _qstage
        SELECT s._line, s._record, s.exchange_id, 'conflict',
               'conflict: exchange_id ' || s.exchange_id || ' already seen with different content',
               to_json(struct_pack({', '.join(f's."{c}"' for c in COLUMN_NAMES)}))::VARCHAR
        FROM _stage s JOIN _dropped d USING (_record) WHERE NOT d.same""")
    duplicates, dropped = con.execute("SELECT count(*) FILTER (WHERE same), count(*) FROM _dropped").fetchone()
    for part in parts:
        part.unlink()
    con.execute(f"COPY (SELECT * FROM _stage WHERE _record NOT IN (SELECT _record FROM _dropped)) "
                f"TO '{_sql_str(pending / 'part-00000.parquet')}' (FORMAT parquet, COMPRESSION zstd)")
    for table in ("_stage", "_drop", "_dropped"):
        con.execute(f"DROP TABLE {table}")
    return staged - dropped, duplicates
