"""One pipeline, two engines: a small simulated scenario gets the same verdicts on DuckDB and Spark."""

from __future__ import annotations

import pytest

from distillguard.store.engine import exchanges
from distillguard.ingest import ingest_paths
from distillguard.detect.policy import Policy
from distillguard.detect.scan import scan
from distillguard.simulate import simulate
from distillguard.store import Store

pytestmark = pytest.mark.slow  # starts Spark and scans on both engines: minutes

pytest.importorskip("pyspark", reason="the spark extra is not installed (make test installs it)")


@pytest.fixture
def spark_stopped_after():
    """Stops the Spark session and its JVM once the test ends: a JVM left running would hold
    gigabytes and outlive the test run."""
    yield
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        SparkContext._gateway = None
        SparkContext._jvm = None


def test_duckdb_and_spark_give_the_same_verdicts(tmp_path, spark_stopped_after):
    simulate("alibaba-2026", scale=0.002, seed=5, out_dir=tmp_path / "sim")
    with Store(tmp_path / "s.duckdb") as store:
        ingest_paths(store, [tmp_path / "sim" / "exchanges.parquet"])
        results = {}
        for engine in ("duckdb", "spark"):
            _, table, lookup = exchanges(store, engine, partitions=2)
            results[engine] = scan(table, None, Policy(lookback_days=365), lookup=lookup)
    duck, spark = (results[e].verdicts.sort_by("account_id") for e in ("duckdb", "spark"))
    assert duck.column("account_id").equals(spark.column("account_id"))
    assert duck.column("action").equals(spark.column("action"))
    assert duck.column("campaign_id").equals(spark.column("campaign_id"))
    for a, b in zip(duck.column("score").to_pylist(), spark.column("score").to_pylist()):
        assert a == pytest.approx(b, abs=1e-6)
    assert [c.campaign_id for c in results["duckdb"].campaigns] == [c.campaign_id for c in results["spark"].campaigns]
    assert any(a != "allow" for a in duck.column("action").to_pylist())
    # ...and the same campaign indicators, which the gateway's new accounts inherit from
    order = [("campaign_id", "ascending"), ("kind", "ascending"), ("key", "ascending")]
    duck_ind, spark_ind = (results[e].indicators.sort_by(order) for e in ("duckdb", "spark"))
    assert duck_ind.num_rows > 0
    assert duck_ind.equals(spark_ind)
