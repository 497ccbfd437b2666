"""Where the one pipeline runs: DuckDB (default, embedded) or Spark (``distillguard[spark]``).

The engine differences live here, as data: how to connect and how to read the canonical
exchanges. Everything downstream is the same Ibis expressions (features.py, linkage.py).
Spark reads the store's Parquet segments, the very files the DuckDB view reads, or canonical
Parquet at Hadoop URIs (``sources``) that a cluster's executors read themselves (docs/spark.md).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from distillguard.errors import UserError
from distillguard.store.database import Store


Lookup = Callable[[str, pa.Table], ir.Table]


@dataclass(frozen=True)
class Engine:
    """How to reach the exchanges on one engine, and how to hand it a small lookup table.

    Lookups differ most: DuckDB keeps a temporary table of its own, while Spark gets a
    DataFrame whose rows travel with the job (a file on the driver's disk is out of reach of
    the executors of a cluster).
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
        from pyspark.sql import functions as F
    except ImportError:
        raise UserError("the spark engine needs PySpark: pip install 'distillguard[spark]'") from None
    # Hadoop URIs (file://, s3a://, gs://, abfss://) that every executor reads itself; a local
    # store's segments are the same files the DuckDB view reads (a cluster then needs the store on
    # a filesystem mounted at the same path on every machine)
    sources = list(options.get("sources") or [p.resolve().as_uri() for p in store.segment_files()])
    if not sources:
        raise UserError("the store holds no exchanges to scan")
    session = _spark_session(SparkSession, options)
    con = ibis.pyspark.connect(session)
    try:
        # recursive: a store's whole segments directory (one subdirectory per ingest) reads as one;
        # Spark skips the names starting with "." or "_" (an ingest still pending)
        frame = session.read.option("mergeSchema", "true").option("recursiveFileLookup", "true").parquet(*sources)
    except _spark_errors() as exc:  # a missing path, or a scheme without its connector
        raise UserError(f"spark cannot read {', '.join(sources)}: {_first_line(exc)}") from None

    from distillguard.schema import COLUMNS

    # a column the schema gained after these segments were written reads as NULL (as in database.py)
    spark_types = {"string": "string", "ip": "string", "timestamp": "timestamp", "integer": "bigint",
                   "number": "double"}
    frame.select(*(F.col(c.name) if c.name in frame.columns else F.lit(None).cast(spark_types[c.kind]).alias(c.name)
                   for c in COLUMNS)).createOrReplaceTempView("exchanges")
    broadcast_below = _broadcast_threshold(session)

    def lookup(name: str, table: pa.Table) -> ir.Table:
        # the rows travel with the job (sliced into the tasks, or broadcast to every executor when
        # small, as Spark would broadcast a small Parquet file), so no executor reads a file that
        # only the driver's disk holds
        view = f"{name}_{uuid.uuid4().hex}"
        frame = session.createDataFrame(table)
        if table.nbytes < broadcast_below:
            frame = F.broadcast(frame)
        frame.createOrReplaceTempView(view)
        return con.table(view)

    return con, con.table("exchanges"), lookup


def _spark_session(SparkSession: type, options: dict) -> object:
    """The Spark session to scan on: the running one, or the one the submitted driver's conf
    describes (spark-submit, with its master and every --conf), else a new local one on
    ``options["master"]`` (default local[2])."""
    master = options.get("master")
    # spark-submit (or any Spark driver) starts this Python with the port of its own JVM, whose
    # conf holds the submitted master and settings: pyspark connects to it (java_gateway.py)
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    session = SparkSession.getActiveSession()
    if session is None and not submitted:
        session = (SparkSession.builder.master(master or "local[2]").appName("distillguard")
                   .config("spark.ui.enabled", "false")
                   .config("spark.sql.shuffle.partitions", str(options.get("partitions", 8)))
                   .config("spark.driver.memory", str(options.get("driver_memory") or "6g")).getOrCreate())
    else:
        session = session or SparkSession.builder.getOrCreate()
        running = session.sparkContext.master
        if master and master != running:
            raise UserError(f"--master {master} differs from the running Spark session's master {running} "
                            f"(give the master to spark-submit only)")
        if options.get("partitions"):
            session.conf.set("spark.sql.shuffle.partitions", str(options["partitions"]))
    # day and hour features are cut in UTC whatever the machines' zone
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


def _broadcast_threshold(session: object) -> int:
    """Spark's own limit for broadcasting a join side, in bytes (0 when broadcasting is off)."""
    value = session.conf.get("spark.sql.autoBroadcastJoinThreshold", "10485760")
    unit = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    text = value.strip().lower().rstrip("b") or "0"
    number = int(text[:-1]) * unit[text[-1]] if text[-1] in unit else int(text)
    return max(number, 0)


def _spark_errors() -> tuple[type[BaseException], ...]:
    """What Spark raises for a location it cannot reach: PySpark's own error for a missing path,
    the Java exception as it is for the rest (no FileSystem for a scheme, access denied)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import AnalysisException

    return AnalysisException, Py4JJavaError


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_uri(location: str) -> bool:
    """Whether ``location`` names a Hadoop filesystem (``scheme://...``) rather than a local path."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def copy_out(backend: object, local_dir: Path, target: str) -> dict[str, str]:
    """Copy every file of ``local_dir`` into the directory URI ``target`` through the Spark
    session's Hadoop filesystems, so the connectors and credentials configured for the job
    (spark.hadoop.fs.s3a.* and the like) write it; returns file name -> its URI."""
    session = getattr(backend, "_session", None)
    if session is None:
        raise UserError(f"--out {target} is a URI: write it with --engine spark (DuckDB writes local paths)")
    jvm = session.sparkContext._jvm
    hadoop = jvm.org.apache.hadoop.fs
    conf = session.sparkContext._jsc.hadoopConfiguration()
    dest = hadoop.Path(target)
    written = {}
    try:
        fs = dest.getFileSystem(conf)
        fs.setWriteChecksum(False)  # the local filesystem would add a .crc file beside each output
        fs.mkdirs(dest)
        for file in sorted(p for p in local_dir.iterdir() if p.is_file()):
            there = hadoop.Path(dest, file.name)
            fs.copyFromLocalFile(False, True, hadoop.Path(file.resolve().as_uri()), there)
            written[file.name] = there.toString()
    except _spark_errors() as exc:  # a scheme without its connector, a refused credential
        raise UserError(f"cannot write {target}: {_first_line(exc)}") from None
    return written


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
