"""The embedded store: a DuckDB file plus the Parquet segments it catalogues.

Layout for ``--db distillguard.duckdb``::

    distillguard.duckdb            quarantine, ingests, and the ``exchanges`` view
    distillguard.segments/<id>/    one directory of Parquet parts per ingested file

Why segments rather than a native DuckDB table: writing tens of millions of rows into DuckDB's
own storage runs at a few hundred thousand rows per second on two cores, while Parquet parts
are written at several times that, are read by DuckDB just as fast, and are exactly what Spark
reads, so the detection pipeline sees the same canonical table on both engines
(:meth:`Store.segment_files`). The ``ingests`` table is the source of truth of which segments
are live: a segment without its ``ingests`` row (a crash mid-ingest) is removed on the next
open, so the view never shows half an ingest.

Tables:
- ``exchanges`` (view): the canonical schema (schema.py), exchange_id unique.
- ``quarantine``: every input record that could not be used, with file, line, raw text, reason.
- ``ingests``: one row per ingested file (path, size, sha256, row counts, times, segment).
- ``account_events``: sign-up and payment events (schema.ACCOUNT_EVENT_COLUMNS, ``ingest --kind
  accounts``), with the ``ingest_id`` and ``record_number`` each came from; event_id unique.
- ``watermarks``: per live source (a database table read incrementally), the key of the last
  row ingested, so that the next read starts after it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import duckdb

from distillguard.errors import UserError
from distillguard.schema import ACCOUNT_EVENT_COLUMNS, COLUMNS, COLUMN_NAMES, duckdb_columns_sql

DEFAULT_DB = "distillguard.duckdb"

_QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
  ingest_id VARCHAR NOT NULL,
  source_file VARCHAR NOT NULL,
  line_number BIGINT,
  record_number BIGINT,
  exchange_id VARCHAR,
  reason_code VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  raw VARCHAR
)
"""

_INGESTS_DDL = """
CREATE TABLE IF NOT EXISTS ingests (
  ingest_id VARCHAR PRIMARY KEY,
  path VARCHAR NOT NULL,
  format VARCHAR NOT NULL,
  size_bytes BIGINT NOT NULL,
  sha256 VARCHAR NOT NULL,
  rows_in BIGINT NOT NULL,
  rows_stored BIGINT NOT NULL,
  rows_duplicate BIGINT NOT NULL,
  rows_quarantined BIGINT NOT NULL,
  started_at TIMESTAMPTZ NOT NULL,
  finished_at TIMESTAMPTZ NOT NULL,
  distillguard_version VARCHAR NOT NULL,
  segment VARCHAR
)
"""

# the key is (time, id), not time alone: rows sharing the last time are told apart by their id,
# so none of them is read twice or skipped; time is naive UTC, exactly as the source stores it
_WATERMARKS_DDL = """
CREATE TABLE IF NOT EXISTS watermarks (
  source VARCHAR PRIMARY KEY,
  last_time TIMESTAMP NOT NULL,
  last_id VARCHAR NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL
)
"""

# a native table, not segments: a provider has one row per sign-up or card, not per request
_ACCOUNT_EVENTS_DDL = f"""
CREATE TABLE IF NOT EXISTS account_events (
  {duckdb_columns_sql(ACCOUNT_EVENT_COLUMNS)},
  ingest_id VARCHAR NOT NULL,
  record_number BIGINT
)
"""

_COLS = ", ".join(f'"{c}"' for c in COLUMN_NAMES)


class Store:
    """A DuckDB file with the distillguard tables; ``":memory:"`` gives a throwaway store."""

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False,
                 memory_limit: str | None = "3GB") -> None:
        self.path = str(path)
        self.read_only = read_only
        self._tmp: tempfile.TemporaryDirectory | None = None
        if self.path == ":memory:":
            self._tmp = tempfile.TemporaryDirectory(prefix="distillguard-")
            self.segments_dir = Path(self._tmp.name)
        else:
            db = Path(self.path)
            if read_only and not db.exists():
                raise UserError(f"store {self.path} does not exist (run `distillguard ingest` first)")
            self.segments_dir = db.with_name(db.stem + ".segments").resolve()
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise UserError(f"cannot open store {self.path}: {exc}") from None
        # Timestamps without an offset are UTC everywhere in distillguard.
        self.con.execute("SET TimeZone='UTC'")
        if self._tmp is not None:  # an in-memory DuckDB would spill into ./.tmp of whoever runs it
            self.con.execute(f"SET temp_directory='{Path(self._tmp.name) / 'spill'}'")
        if memory_limit:
            self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute("SET preserve_insertion_order=false")
        self.con.execute("SET enable_progress_bar=false")
        if not read_only:
            self.con.execute(_QUARANTINE_DDL)
            self.con.execute(_INGESTS_DDL)
            self.con.execute(_WATERMARKS_DDL)
            self.con.execute(_ACCOUNT_EVENTS_DDL)
            for c in ACCOUNT_EVENT_COLUMNS:  # a column the schema gained since the table was made
                self.con.execute(f'ALTER TABLE account_events ADD COLUMN IF NOT EXISTS "{c.name}" {c.duckdb_type}')
            self.segments_dir.mkdir(parents=True, exist_ok=True)
            self._remove_orphans()
        self.refresh_view()

    # --- watermarks of live sources -------------------------------------------------------

    def watermark(self, source: str) -> tuple[datetime, str] | None:
        """(time, id) of the last row ingested from ``source``, or None if never read."""
        if not has_table(self.con, "watermarks"):
            return None
        row = self.con.execute("SELECT last_time, last_id FROM watermarks WHERE source = ?", [source]).fetchone()
        return (row[0], row[1]) if row else None

    def set_watermark(self, source: str, last_time: datetime, last_id: str) -> None:
        """Move ``source``'s watermark to (``last_time``, ``last_id``), never backwards (a
        ``--since`` read of older rows leaves it where it was). Runs in the caller's
        transaction, so the watermark moves with the rows it covers or not at all."""
        self.con.execute(
            "INSERT INTO watermarks VALUES (?, ?, ?, now()) ON CONFLICT (source) DO UPDATE SET "
            "last_time = excluded.last_time, last_id = excluded.last_id, updated_at = excluded.updated_at "
            "WHERE (excluded.last_time, excluded.last_id) > (watermarks.last_time, watermarks.last_id)",
            [source, last_time, last_id])

    # --- segments --------------------------------------------------------------------------

    def pending_dir(self, ingest_id: str) -> Path:
        """Where an ingest writes its parts before it commits."""
        path = self.segments_dir / f".pending-{ingest_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, pending: Path, ingest_id: str) -> str:
        """Move a finished pending directory to its live name; returns the segment name."""
        target = self.segments_dir / ingest_id
        pending.rename(target)
        return ingest_id

    def segment_files(self) -> list[Path]:
        """Every live Parquet part, in ingest order: what Spark (or anything else) should read."""
        if not has_table(self.con, "ingests"):
            return []
        # several ingests share a segment once compacted: each segment once, by its first ingest
        names = [s for (s,) in self.con.execute(
            "SELECT segment FROM ingests WHERE segment IS NOT NULL GROUP BY segment "
            "ORDER BY min(started_at), min(ingest_id)").fetchall()]
        return [p for name in names for p in sorted((self.segments_dir / name).glob("*.parquet"))]

    def compact(self, min_segments: int = 48, small_rows: int = 1_000_000) -> int:
        """Merge the small segments into one when there are at least ``min_segments`` of them;
        returns how many segments were merged (0: nothing to do).

        Why: the gateway's loader writes one segment per log file it loads, every half minute,
        and every open of the store lists every segment's Parquet footer (refresh_view): a
        gateway running for a month would leave tens of thousands. A segment is small when it
        holds fewer than ``small_rows`` rows; merged ones keep being merged until they reach it.

        Nothing is lost or shown twice, even on a crash: the merged segment is written and
        counted aside, published under a new name, and the ``ingests`` rows are pointed at it
        in one transaction; only then are the old directories deleted. A crash before the
        transaction leaves the new directory an orphan, after it the old ones, and the next
        open removes orphans (_remove_orphans). The ``ingests`` rows themselves (provenance:
        path, sha256, counts) are kept as they were, only their ``segment`` changes.
        """
        if self.read_only:
            raise UserError(f"store {self.path} is open read-only: cannot compact it")
        if not has_table(self.con, "ingests"):
            return 0
        found = self.con.execute(
            "SELECT segment, sum(rows_stored) FROM ingests WHERE segment IS NOT NULL GROUP BY segment "
            "HAVING sum(rows_stored) < ? ORDER BY min(started_at), min(ingest_id)", [small_rows]).fetchall()
        if len(found) < max(min_segments, 2):
            return 0
        small = [name for name, _ in found]
        expected = sum(rows for _, rows in found)  # what the ingests stored there
        files = [p for name in small for p in sorted((self.segments_dir / name).glob("*.parquet"))]
        segment = "compact-" + uuid.uuid4().hex
        pending = self.pending_dir(segment)
        target = pending / "part-00000.parquet"
        try:
            self.con.execute(f"COPY ({self._canonical_select(files)}) "
                             f"TO '{_sql_str(target)}' (FORMAT parquet, COMPRESSION zstd)")
            written = self.con.execute(
                f"SELECT count(*) FROM read_parquet('{sql_literal_path(target)}')").fetchone()[0]
            if written != expected:  # an invariant: keep the traceback
                raise AssertionError(f"compaction of {len(small)} segments wrote {written} rows, not {expected}")
            from distillguard.store import chain  # chain reads this module's helpers

            digest = chain.segment_digest(pending)
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.publish(pending, segment)
                self.con.execute("UPDATE ingests SET segment = ? WHERE list_contains(?, segment)", [segment, small])
                chain.record_segment(self.con, segment, small, digest)
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                shutil.rmtree(self.segments_dir / segment, ignore_errors=True)
                raise
        finally:
            shutil.rmtree(pending, ignore_errors=True)
        for name in small:
            shutil.rmtree(self.segments_dir / name, ignore_errors=True)
        self.refresh_view()
        return len(small)

    def _remove_orphans(self) -> None:
        live = {s for (s,) in self.con.execute("SELECT segment FROM ingests WHERE segment IS NOT NULL").fetchall()}
        for child in self.segments_dir.iterdir():
            if child.name not in live:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def refresh_view(self) -> None:
        """(Re)define ``exchanges`` over the live segments."""
        files = self.segment_files()
        if files:
            body = self._canonical_select(files)
        else:
            body = "SELECT " + ", ".join(f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in COLUMNS) + " WHERE false"
        kind = "TEMP VIEW" if self.read_only else "VIEW"
        self.con.execute(f"CREATE OR REPLACE {kind} exchanges AS {body}")

    def _canonical_select(self, files: list[Path]) -> str:
        """SELECT of the canonical columns, in order, over Parquet ``files``: a column the
        schema gained after they were written reads as NULL."""
        listing = ", ".join("'" + sql_literal_path(f) + "'" for f in files)
        source = f"read_parquet([{listing}], union_by_name = true)"
        present = {row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        columns = ", ".join(f'"{c.name}"' if c.name in present else f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"'
                            for c in COLUMNS)
        return f"SELECT {columns} FROM {source}"

    def export_parquet(self, out_dir: str | Path) -> Path:
        """Write ``exchanges`` as one Parquet file in the canonical schema."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        target = out / "exchanges.parquet"
        self.con.execute(f"COPY (SELECT {_COLS} FROM exchanges) TO '{_sql_str(target)}' (FORMAT parquet)")
        return target

    def close(self) -> None:
        self.con.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store has table ``name``: a store written by an older version, or one never
    scanned, lacks some, and readers say so instead of failing in SQL."""
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [name]).fetchone()[0])


def stores_any_of(con: duckdb.DuckDBPyConnection, source: str) -> bool:
    """Whether any ``exchange_id`` of the relation ``source`` (SQL) is already in ``exchanges``.

    Every ingest asks this (a file loaded twice must store nothing twice), so it must not read
    every stored id. The new ids' min and max go into the query as constants: DuckDB then skips
    every row group of the segments whose statistics lie outside that range (a join's own
    dynamic filter does not skip them: measured 13-30x slower). Ids that grow with time (the
    gateway's, ``protocol.new_exchange_id``) make that skip nearly everything; random ids
    cost what a full check costs."""
    lo, hi = con.execute(f"SELECT min(exchange_id), max(exchange_id) FROM {source}").fetchone()
    if lo is None:
        return False
    return bool(con.execute(f"SELECT count(*) FROM exchanges WHERE exchange_id BETWEEN ? AND ? "
                            f"AND exchange_id IN (SELECT exchange_id FROM {source})", [lo, hi]).fetchone()[0])


def _sql_str(path: Path | str) -> str:
    return str(path).replace("'", "''")


_GLOB_ESCAPES = str.maketrans({"[": "[[]", "*": "[*]", "?": "[?]"})


def sql_literal_path(path: Path | str) -> str:
    """``path`` for a DuckDB file reader (read_parquet, read_json) inside single quotes, naming
    exactly that file.

    DuckDB's readers expand glob characters, so ``'[ab].jsonl'`` would read ``a.jsonl`` and
    ``b.jsonl`` instead of the file of that name. Each of ``[ * ?`` is put inside a bracket class
    of its own, which matches only that character. Not for ``COPY ... TO``: a target is not
    globbed, and would be written under the escaped name.
    """
    return _sql_str(str(path).translate(_GLOB_ESCAPES))
