"""The command line, run as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.records import good_record, write_jsonl

pytestmark = pytest.mark.slow  # every test runs the CLI as a process: 4-28 s each

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "logs"


def run(*args: str) -> subprocess.CompletedProcess:
    # wide enough that rich's tables never fold a file's path over two lines
    return subprocess.run([sys.executable, "-m", "distillguard.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "400"})


def test_ingest_then_stats_as_json(tmp_path):
    db = str(tmp_path / "s.duckdb")
    done = run("ingest", str(EXAMPLES), "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    assert len(files) == 4 and all(f["balanced"] for f in files)
    stats = json.loads(run("stats", "--db", db, "--json").stdout)
    assert stats["rows"] == sum(f["rows_stored"] for f in files)
    assert stats["quarantined"] == sum(f["rows_quarantined"] for f in files)
    assert stats["rows_read"] == stats["rows"] + stats["quarantined"]
    assert {r["reason"] for r in stats["quarantine_by_reason"]} >= {"bad IP", "malformed record"}
    assert stats["first_seen"].startswith("2026-04-22")


def test_ingest_prints_a_summary_table_that_balances(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(3)])
    done = run("ingest", str(tmp_path / "a.jsonl"), "--db", str(tmp_path / "s.duckdb"))
    assert done.returncode == 0
    assert "a.jsonl" in done.stdout and "ok" in done.stdout


def test_compact_merges_the_segments_of_many_small_ingests_and_keeps_every_row(tmp_path):
    db = str(tmp_path / "s.duckdb")
    for f in range(4):
        write_jsonl(tmp_path / f"hour-{f}.jsonl", [good_record(10 * f + i) for i in range(3)])
        assert run("ingest", str(tmp_path / f"hour-{f}.jsonl"), "--db", db).returncode == 0
    done = run("compact", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["segments_merged"] == 4 and summary["segment_files_before"] == 4
    assert summary["segment_files_after"] == 1
    assert summary["rows_before"] == summary["rows_after"] == 12
    again = json.loads(run("compact", "--db", db, "--json").stdout)
    assert again["segments_merged"] == 0  # one segment left: nothing to merge
    stats = json.loads(run("stats", "--db", db, "--json").stdout)
    assert stats["files_ingested"] == 4 and stats["rows"] == 12


def test_user_errors_are_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "foreign.csv").write_text("name,age\nbob,3\n")
    for args in (["ingest", str(tmp_path / "missing.jsonl"), "--db", str(tmp_path / "s.duckdb")],
                 ["ingest", str(tmp_path / "foreign.csv"), "--db", str(tmp_path / "s.duckdb")],
                 ["stats", "--db", str(tmp_path / "never-created.duckdb")]):
        done = run(*args)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:")


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def test_bench_strategies_refuses_throttle_budgets_that_are_not_rates_in_one_line(tmp_path):
    for budgets, says in (("1e-3,lots", "numbers separated by commas"), ("2", "must lie in (0, 1]")):
        done = run("bench-strategies", "--n", "1", "--out", str(tmp_path / "out"), "--throttle-budgets", budgets)
        assert done.returncode == 2 and says in _one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_every_read_command_on_a_missing_store_fails_in_one_line_and_creates_nothing(tmp_path):
    db = str(tmp_path / "typo.duckdb")
    for args in (["scan", "--db", db, "--out", str(tmp_path / "out")], ["stats", "--db", db],
                 ["report", "--all", "--db", db, "--out", str(tmp_path / "rep")], ["keys", "list", "--db", db],
                 ["keys", "revoke", "key-0", "--db", db], ["compact", "--db", db], ["quarantine", "--db", db]):
        done = run(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "typo.duckdb" in _one_error_line(done)
        assert not Path(db).exists(), args
    assert not (tmp_path / "out").exists()


def test_a_scan_that_sees_no_exchanges_publishes_nothing_and_keeps_the_previous_verdicts(tmp_path):
    db = str(tmp_path / "s.duckdb")
    write_jsonl(tmp_path / "bad.jsonl", [good_record(i, timestamp="yesterday") for i in range(3)])
    run("ingest", str(tmp_path / "bad.jsonl"), "--db", db)
    out = tmp_path / "out"
    out.mkdir()
    (out / "verdicts.csv").write_text("account_id,action\nacct-0,block\n")
    done = run("scan", "--db", db, "--out", str(out))
    assert done.returncode == 2
    assert "no exchanges" in _one_error_line(done)
    assert sorted(p.name for p in out.iterdir()) == ["verdicts.csv"]
    assert (out / "verdicts.csv").read_text() == "account_id,action\nacct-0,block\n"


def test_ingest_fails_when_every_row_of_a_file_was_quarantined_and_the_quarantine_shows_why(tmp_path):
    db = str(tmp_path / "s.duckdb")
    write_jsonl(tmp_path / "bad.jsonl", [good_record(i, timestamp="yesterday") for i in range(3)])
    write_jsonl(tmp_path / "good.jsonl", [good_record(i) for i in range(10, 12)])
    done = run("ingest", str(tmp_path / "bad.jsonl"), str(tmp_path / "good.jsonl"), "--db", db)
    assert done.returncode == 2
    line = _one_error_line(done)
    assert "bad.jsonl" in line and "quarantined" in line and "good.jsonl" not in line
    shown = run("quarantine", "--db", db, "--json", "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    listing = json.loads(shown.stdout)
    assert listing["total"] == 3 and len(listing["rows"]) == 2
    row = listing["rows"][0]
    assert row["source_file"].endswith("bad.jsonl") and row["line_number"] in (1, 2, 3)
    assert row["reason"].startswith("bad timestamp: timestamp=yesterday")
    assert '"timestamp": "yesterday"' in row["raw"]
    table = run("quarantine", "--db", db)
    assert "bad timestamp" in table.stdout and "bad.jsonl" in table.stdout


def test_evaluate_with_swapped_or_non_parquet_inputs_is_one_clear_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    verdicts, labels = tmp_path / "verdicts.parquet", tmp_path / "labels.parquet"
    pq.write_table(pa.table({"account_id": ["a"], "action": ["block"], "campaign_id": ["c1"]}), verdicts)
    pq.write_table(pa.table({"account_id": ["a"], "campaign_id": ["c1"], "persona": [None], "role": ["member"],
                             "exchanges": [3]}), labels)
    (tmp_path / "verdicts.csv").write_text("account_id,action\na,block\n")
    for args, expected in ((["--verdicts", str(labels), "--labels", str(verdicts)], "swapped"),
                           (["--verdicts", str(tmp_path / "verdicts.csv"), "--labels", str(labels)], "not a Parquet")):
        done = run("evaluate", *args)
        assert done.returncode == 2
        assert expected in _one_error_line(done)


def test_keys_add_refuses_a_weak_key_and_prints_a_generated_one_once(tmp_path):
    db = str(tmp_path / "s.duckdb")
    for weak in ("password123", "sk-" + "ab" * 30, "0123456789" * 4, "a" * 64):
        done = run("keys", "add", "--account", "acct-1", "--key", weak, "--db", db)
        assert done.returncode == 2, weak
        assert "bits of entropy" in _one_error_line(done)
    strong = "sk-proj-" + "tF5SW01jlcj0uUMm0ZHr2A"  # 22 random URL-safe characters
    assert run("keys", "add", "--account", "acct-1", "--key", strong, "--db", db).returncode == 0
    generated = run("keys", "add", "--account", "acct-2", "--db", db)
    assert generated.returncode == 0
    secret = generated.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-dg-") and generated.stdout.count(secret) == 1
    listed = json.loads(run("keys", "list", "--db", db, "--json").stdout)
    assert sorted(r["account_id"] for r in listed) == ["acct-1", "acct-2"]
    assert secret not in json.dumps(listed)


def test_a_full_disk_is_one_clear_line_and_exit_code_1_not_a_traceback(capsys):
    import errno

    import duckdb
    import typer

    from distillguard.cli import user_errors

    for error in (duckdb.IOException('IO Error: Could not write file "/s.duckdb.tmp/t.tmp": No space left on device'),
                  OSError(errno.ENOSPC, "No space left on device")):
        @user_errors
        def ingest() -> None:
            raise error

        with pytest.raises(typer.Exit) as exited:
            ingest()
        assert exited.value.exit_code == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: out of disk space")

    @user_errors
    def broken() -> None:
        raise duckdb.IOException("IO Error: Cannot open file: permission denied")

    with pytest.raises(duckdb.IOException):  # any other failure is not dressed up as a full disk
        broken()
