"""Where the one pipeline runs: DuckDB (default, embedded) or Spark (``distillguard[spark]``).

The engine differences live here, as data: how to connect and how to read the canonical
exchanges. Everything downstream is the same Ibis expressions (features.py, linkage.py).
Spark reads the store's Parquet segments, the very files the DuckDB view reads.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.errors import UserError
from distillguard.store.database import Store


Lookup = Callable[[str, pa.Table], ir.Table]


@dataclass(frozen=True)
class Engine:
    """How to reach the exchanges on one engine, and how to hand it a small lookup table.

    Lookups differ most: DuckDB scans an Arrow table in place, while Spark would serialise a
    local table into every task, so Spark gets it as a Parquet file instead.
    """

    name: str
    connect: Callable[[Store, dict], tuple[object, ir.Table, Lookup]]
    extra: str | None = None  # the pip extra that provides it


#: DuckDB's memory budget for a scan (it spills to disk beyond it); the store's own default is
#: sized for ingest. A full-scale scan stays well inside 16 GiB with this.
SCAN_MEMORY_LIMIT = "8GB"


def _duckdb(store: Store, options: dict) -> tuple[object, ir.Table, Lookup]:
    store.con.execute(f"SET memory_limit='{options.get('memory_limit') or SCAN_MEMORY_LIMIT}'")
    con = ibis.duckdb.from_connection(store.con)

    def lookup(name: str, table: pa.Table) -> ir.Table:
        # a temporary table, not an Arrow scan: DuckDB keeps statistics for its own tables and
        # plans joins by them; joined against an Arrow scan (no statistics) the cluster members
        # took 92 s instead of 3 at full scale. One name per lookup: a later scan on the same
        # connection (a replay) replaces the table instead of piling up copies.
        return con.create_table(name, table, temp=True, overwrite=True)

    return con, con.table("exchanges"), lookup


def _spark(store: Store, options: dict) -> tuple[object, ir.Table, Lookup]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("the spark engine needs PySpark: pip install 'distillguard[spark]'") from None
    files = [str(p) for p in store.segment_files()]
    if not files:
        raise UserError("the store holds no exchanges to scan")
    builder = (SparkSession.builder.master(options.get("master") or "local[2]").appName("distillguard")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", str(options.get("partitions", 8)))
               .config("spark.ui.enabled", "false")
               .config("spark.driver.memory", str(options.get("driver_memory") or "6g")))
    session = builder.getOrCreate()
    con = ibis.pyspark.connect(session)
    frame = session.read.option("mergeSchema", "true").parquet(*files)
    from pyspark.sql import functions as F

    from distillguard.schema import COLUMNS

    # a column the schema gained after these segments were written reads as NULL (as in database.py)
    spark_types = {"string": "string", "ip": "string", "timestamp": "timestamp", "integer": "bigint",
                   "number": "double"}
    frame.select(*(F.col(c.name) if c.name in frame.columns else F.lit(None).cast(spark_types[c.kind]).alias(c.name)
                   for c in COLUMNS)).createOrReplaceTempView("exchanges")
    scratch = Path(tempfile.mkdtemp(prefix="distillguard-spark-"))

    def lookup(name: str, table: pa.Table) -> ir.Table:
        path = scratch / f"{name}-{uuid.uuid4().hex}.parquet"
        pq.write_table(table, path)
        session.read.parquet(str(path)).createOrReplaceTempView(path.stem.replace("-", "_"))
        return con.table(path.stem.replace("-", "_"))

    return con, con.table("exchanges"), lookup


@ibis.udf.scalar.builtin(name="xxhash64")
def _xxhash64(text: str) -> int:
    """Spark SQL's 64-bit xxHash."""


def digest64(text: ir.StringValue) -> ir.IntegerValue:
    """A 64-bit digest of a text column, on whichever engine holds it: for counting distinct
    long texts without hashing the texts themselves into a set (3x faster on DuckDB).

    Ibis's ``hash()`` is 64-bit on DuckDB but 32-bit on Spark, where 30 million prompts
    would collide by the hundred thousand; Spark's ``xxhash64`` is 64-bit. The values differ
    between engines, so use a digest only where its count matters, never as a key that
    leaves the engine (expected collisions among 60 million texts at 64 bits: 1e-4).
    """
    if ibis.get_backend(text).name == "pyspark":
        return _xxhash64(text)
    return text.hash()


#: the resolution of :func:`exact_sum`: 2**-32, far below any threshold a sum is compared with
FIXED_POINT = 2**32


def exact_sum(value: ir.FloatingValue) -> ir.FloatingValue:
    """The sum of a float column, the same to the last bit whatever the engine's threads did.

    A float sum depends on the order of its terms, and a parallel aggregation adds them in
    whatever order its threads finish: at full scale the linkage weights differed in the last
    bits from one scan of a store to the next, enough to change a Leiden partition and with it
    verdicts. Each term is rounded to a multiple of 2**-32 and the multiples are summed as
    64-bit integers, which is exact and so independent of the order (terms up to 2**31 in
    total: ample for weights, idf and entropies).
    """
    return (value * FIXED_POINT).round().cast("int64").sum().cast("float64") / FIXED_POINT


ENGINES: dict[str, Engine] = {
    "duckdb": Engine("duckdb", _duckdb),
    "spark": Engine("spark", _spark, extra="spark"),
}


def exchanges(store: Store, engine: str = "duckdb", **options: object) -> tuple[object, ir.Table, Lookup]:
    """(backend, the canonical exchanges as an Ibis table, lookup maker) on the chosen engine."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[engine].connect(store, dict(options))
