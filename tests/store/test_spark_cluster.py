"""Spark on a cluster: a scan submitted with spark-submit to a standalone master and one worker
started here reads and writes file:// URIs and gives the verdicts DuckDB gives; URIs anywhere
else are refused in one line (and one Spark cannot read: test_engine_parity, on its session)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

import distillguard.cli
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.store.engine import is_uri



@pytest.mark.parametrize("location, uri", [
    ("file:///data/exchanges/", True), ("s3a://bucket/scans/2026-05", True), ("gs://b/x.parquet", True),
    ("abfss://c@account.dfs.core.windows.net/x", True), ("hdfs://namenode:8020/x", True),
    ("exchanges.parquet", False), ("/data/exchanges.parquet", False), ("./a://b", False), ("://x", False),
    ("C:\\logs\\a.jsonl", False),
])
def test_a_location_is_a_uri_only_with_a_scheme_before_its_double_slash(location, uri):
    assert is_uri(location) is uri


@given(st.text(alphabet=st.characters(blacklist_characters=":"), max_size=40))
def test_a_path_without_a_colon_is_never_taken_for_a_uri(path):
    assert is_uri(path) is False


@pytest.mark.parametrize("args, message", [
    (["--input", "s3a://bucket/exchanges/"], "an --input URI is read by Spark"),
    (["--engine", "spark", "--input", "s3a://bucket/x/", "--input", "local.jsonl"], "an --input URI is read by Spark"),
    (["--db", "s.duckdb", "--out", "s3a://bucket/scan/"], "is a URI: give --engine spark"),
])
def test_a_uri_outside_the_spark_engine_is_one_error_line_and_exit_2(tmp_path, args, message):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, ["scan", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


# --- a standalone cluster ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_state(webui: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5) as response:
        return json.load(response)


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process`` and what it started: it leads a process group of its own (the launcher
    script, its JVM, a worker's executors), so the group is signalled, not a name."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def standalone_cluster(tmp_path) -> Iterator[tuple[str, int]]:
    """(master URL, master web UI port) of a Spark standalone master and one worker (1 core, 2g)
    started for the test; both processes are stopped afterwards (the worker stops the executors
    it launched). Skips when PySpark or Java is missing or the master does not come up."""
    pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed (make test installs it)")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: a Spark standalone cluster needs a JVM")
    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOCAL_DIRS": str(tmp_path / "spark-local"), "SPARK_DAEMON_MEMORY": "512m"}
    port, webui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    started: list[subprocess.Popen] = []
    try:
        with open(tmp_path / "master.log", "wb") as log:
            started.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(webui)], stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True))
        deadline = time.monotonic() + 90
        while True:
            try:
                _master_state(webui)
                break
            except OSError:
                if started[0].poll() is not None or time.monotonic() > deadline:
                    tail = (tmp_path / "master.log").read_text(errors="replace")[-800:]
                    pytest.skip(f"the Spark standalone master did not start: {tail}")
                time.sleep(1)
        with open(tmp_path / "worker.log", "wb") as log:
            started.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "2g", "--webui-port", str(worker_ui), "--work-dir", str(tmp_path / "worker"), url],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True))
        while not [w for w in _master_state(webui)["workers"] if w["state"] == "ALIVE"]:
            assert started[1].poll() is None, (tmp_path / "worker.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline + 90, "the worker did not register with the master"
            time.sleep(1)
        yield url, webui
    finally:
        for process in reversed(started):
            _stop(process)


@pytest.mark.slow  # starts a cluster and scans on both engines: minutes
def test_a_scan_submitted_to_a_standalone_cluster_gives_duckdbs_verdicts(tmp_path, standalone_cluster, small_store):
    url, webui = standalone_cluster
    duck = CliRunner().invoke(app, ["scan", "--db", str(small_store), "--out", str(tmp_path / "duck"),
                                    "--json", "--quiet"])
    assert duck.exit_code == 0, duck.output

    home = Path(pytest.importorskip("pyspark").__file__).parent
    out = (tmp_path / "spark-out").as_uri() + "/"
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    submitted = subprocess.run(
        [str(home / "bin" / "spark-submit"), "--master", url, "--name", "distillguard-test", "--driver-memory", "2g",
         "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=1", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.sql.shuffle.partitions=4",
         # spark-submit runs a Python file: the CLI's own
         distillguard.cli.__file__,
         "scan", "--engine", "spark", "--input", small_store.with_name("s.segments").as_uri() + "/", "--out", out,
         "--json", "--quiet"], env=env, capture_output=True, text=True, timeout=900)
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    summary = json.loads(submitted.stdout)
    assert summary["files"]["verdicts.parquet"].startswith("file:")

    # the scan ran on the cluster's executor, not in a local session of the driver, with the submitted conf
    apps = _master_state(webui)["completedapps"] + _master_state(webui)["activeapps"]
    assert [a["name"] for a in apps] == ["distillguard-test"]

    on_duck = pq.read_table(tmp_path / "duck" / "verdicts.parquet").sort_by("account_id")
    on_spark = pq.read_table(tmp_path / "spark-out" / "verdicts.parquet").sort_by("account_id")
    assert on_duck.num_rows == on_spark.num_rows > 0
    for column in ("account_id", "action", "campaign_id"):
        assert on_duck.column(column).equals(on_spark.column(column)), column
    for a, b in zip(on_duck.column("score").to_pylist(), on_spark.column("score").to_pylist()):
        assert a == pytest.approx(b, abs=1e-6)
    assert any(a != "allow" for a in on_duck.column("action").to_pylist())
    # every output, and nothing else (no checksum files beside them)
    assert sorted(p.name for p in (tmp_path / "spark-out").iterdir()) == sorted(summary["files"])
