"""The embedded store: one DuckDB file holding the canonical exchanges and their provenance.

Tables:
- ``exchanges``: the canonical schema (schema.py), one row per exchange, exchange_id unique.
- ``quarantine``: every input record that could not be used, with file, line, raw text and reason.
- ``ingests``: one row per ingested file (path, size, sha256, row counts, times), so an evidence
  report can say exactly which inputs it rests on.

The detection pipeline reads ``exchanges`` through Ibis; for Spark the same table is exported
as Parquet (:meth:`Store.export_parquet`), so both engines read identical data.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from distillguard.errors import UserError
from distillguard.schema import COLUMN_NAMES, duckdb_columns_sql

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
  distillguard_version VARCHAR NOT NULL
)
"""


class Store:
    """A DuckDB file with the distillguard tables; ``":memory:"`` gives a throwaway store."""

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False,
                 memory_limit: str | None = "3GB") -> None:
        self.path = str(path)
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise UserError(f"store {self.path} does not exist (run `distillguard ingest` first)")
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            raise UserError(f"cannot open store {self.path}: {exc}") from None
        # Timestamps without an offset are UTC everywhere in distillguard.
        self.con.execute("SET TimeZone='UTC'")
        if memory_limit:
            self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute("SET preserve_insertion_order=false")
        self.con.execute("SET enable_progress_bar=false")
        if not read_only:
            self.ensure_tables()

    def ensure_tables(self) -> None:
        self.con.execute(f"CREATE TABLE IF NOT EXISTS exchanges (\n  {duckdb_columns_sql()}\n)")
        self.con.execute(_QUARANTINE_DDL)
        self.con.execute(_INGESTS_DDL)

    def has_table(self, name: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()[0])

    def export_parquet(self, out_dir: str | Path) -> Path:
        """Write ``exchanges`` as Parquet so that another engine (Spark) reads the same rows."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        target = out / "exchanges.parquet"
        cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
        self.con.execute(
            f"COPY (SELECT {cols} FROM exchanges) TO '{_sql_str(target)}' (FORMAT parquet)"
        )
        return target

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sql_str(path: Path | str) -> str:
    return str(path).replace("'", "''")
