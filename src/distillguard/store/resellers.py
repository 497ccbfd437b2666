"""The resellers each scan recognised (detect/resellers.py), kept in the store beside its verdicts.

One row per reseller key and scan (``as_of``, ``scan_id``), so that the gateway, which judges a
reseller's end users one by one, knows which keys front end users in the scan whose verdicts it
enforces. A scan that recognised none stores no row; its ``scans`` row still says it ran, which
is how a reader tells "none" from "not stored yet".
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from distillguard.store.database import has_table

_DDL = """
CREATE TABLE IF NOT EXISTS resellers (
  scan_id VARCHAR NOT NULL,
  as_of TIMESTAMPTZ NOT NULL,
  "key" VARCHAR NOT NULL,
  account_id VARCHAR NOT NULL,
  exchanges BIGINT,
  end_users BIGINT,
  clients BIGINT,
  addresses BIGINT,
  agents BIGINT,
  p_end_users DOUBLE,
  p_clients DOUBLE
)
"""

#: the columns of a recognised key (detect/resellers.RESELLER_SCHEMA) the table keeps
COLUMNS = ("key", "account_id", "exchanges", "end_users", "clients", "addresses", "agents", "p_end_users",
           "p_clients")
#: what a reader gets of each reseller key
READ = pa.schema([("key", pa.string()), ("account_id", pa.string()), ("end_users", pa.int64()),
                  ("clients", pa.int64())])


def store(con: duckdb.DuckDBPyConnection, scan_id: str, as_of: datetime, found: pa.Table) -> None:
    """Replace the resellers of scan ``scan_id`` with ``found`` (one row per reseller key)."""
    con.execute(_DDL)
    rows = found.select(list(COLUMNS))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM resellers WHERE scan_id = ?", [scan_id])
        con.register("_found_resellers", rows)
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        con.execute(f"INSERT INTO resellers (scan_id, as_of, {names}) SELECT ?, ?, {names} FROM _found_resellers",
                    [scan_id, as_of])
        con.unregister("_found_resellers")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def latest(con: duckdb.DuckDBPyConnection, as_of: datetime | None = None) -> tuple[datetime, pa.Table] | None:
    """The resellers of the scan as of ``as_of`` (without it, of the latest scan), with that
    scan's as_of; None when the store holds no such scan."""
    if not has_table(con, "scans"):
        return None
    if as_of is None:
        found = con.execute("SELECT max(as_of) FROM scans").fetchone()[0]
    else:
        found = con.execute("SELECT max(as_of) FROM scans WHERE as_of = ?", [as_of]).fetchone()[0]
    if found is None:
        return None
    if not has_table(con, "resellers"):
        return found, READ.empty_table()
    rows = con.execute('SELECT "key", account_id, end_users, clients FROM resellers WHERE as_of = ? ORDER BY "key"',
                       [found]).to_arrow_table()
    return found, rows.cast(READ)
