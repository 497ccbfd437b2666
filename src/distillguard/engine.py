"""Where the one pipeline runs: DuckDB (default, embedded) or Spark (``distillguard[spark]``).

The engine differences live here, as data: how to connect and how to read the canonical
exchanges. Everything downstream is the same Ibis expressions (features.py, linkage.py).
Spark reads the store's Parquet segments, the very files the DuckDB view reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ibis
import ibis.expr.types as ir

from distillguard.errors import UserError
from distillguard.store import Store


@dataclass(frozen=True)
class Engine:
    name: str
    connect: Callable[[Store, dict], tuple[object, ir.Table]]
    extra: str | None = None  # the pip extra that provides it


def _duckdb(store: Store, options: dict) -> tuple[object, ir.Table]:
    con = ibis.duckdb.from_connection(store.con)
    return con, con.table("exchanges")


def _spark(store: Store, options: dict) -> tuple[object, ir.Table]:
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
    from distillguard.schema import COLUMN_NAMES

    frame.select(*COLUMN_NAMES).createOrReplaceTempView("exchanges")
    return con, con.table("exchanges")


ENGINES: dict[str, Engine] = {
    "duckdb": Engine("duckdb", _duckdb),
    "spark": Engine("spark", _spark, extra="spark"),
}


def exchanges(store: Store, engine: str = "duckdb", **options: object) -> tuple[object, ir.Table]:
    """(backend, the canonical exchanges as an Ibis table) on the chosen engine."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[engine].connect(store, dict(options))
