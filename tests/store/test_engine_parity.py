"""One pipeline, two engines: a small simulated scenario gets the same verdicts on DuckDB and
Spark; and what Spark cannot read is one error line. The module's tests share one local Spark
session (its JVM takes 15-20 s to start)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.store.engine import exchanges
from distillguard.detect.policy import Policy
from distillguard.detect.scan import scan
from distillguard.store import Store

# starts Spark and scans on both engines: minutes; under xdist on the worker of the other Spark
# test, never beside it (tests/conftest.py WORKER_GROUPS)
pytestmark = pytest.mark.slow

pytest.importorskip("pyspark", reason="the spark extra is not installed (make test installs it)")


@pytest.fixture(scope="module", autouse=True)
def spark_stopped_after():
    """Stops the Spark session that the module's tests started, and its JVM, once they are
    done: a JVM left running would hold gigabytes and outlive the test run."""
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


def test_duckdb_and_spark_give_the_same_verdicts(small_store):
    with Store(small_store) as store:
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


def test_an_input_uri_spark_cannot_read_is_one_error_line_and_exit_2(tmp_path):
    import shutil

    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Spark needs a JVM")
    missing = (tmp_path / "nowhere").as_uri() + "/"
    # in this process, on the module's Spark session (started here if this test runs alone)
    result = CliRunner().invoke(app, ["scan", "--engine", "spark", "--input", missing,
                                      "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"spark cannot read {missing}" in errors[0] and "PATH_NOT_FOUND" in errors[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
