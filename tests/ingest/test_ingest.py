"""Ingest: every format and alias lands in the canonical table; nothing is silently lost."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distillguard.errors import IngestError
from distillguard.ingest import ingest_paths
from distillguard.schema import ARROW_SCHEMA

from tests.records import good_record, rows, write_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "logs"


def ingest_one(store, path):
    [result] = ingest_paths(store, [path])
    assert result.balanced
    return result


def quarantine_reasons(store) -> list[str]:
    return [r for (r,) in rows(store, "SELECT reason FROM quarantine ORDER BY record_number")]


# --- formats -------------------------------------------------------------------------------

def test_jsonl_rows_are_stored_with_canonical_types(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(5)])
    result = ingest_one(store, tmp_path / "a.jsonl")
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (5, 5, 0)
    ts, tokens = rows(store, "SELECT strftime(timestamp, '%Y-%m-%dT%H:%M:%S'), input_tokens FROM exchanges LIMIT 1")[0]
    assert ts == "2026-04-22T10:00:00" and tokens == 10


def test_json_array_is_read_element_by_element(store, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([good_record(i) for i in range(4)], indent=2))
    assert ingest_one(store, tmp_path / "a.json").rows_stored == 4


def test_csv_with_aliased_header(store, tmp_path):
    path = tmp_path / "a.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "ts", "user_id", "prompt", "gen_ai.request.model", "prompt_tokens"])
        w.writerow(["x1", "1776852000", "u1", "hello, world", "m1", "7"])
        w.writerow(["x2", "1776852000123", "u1", "multi\nline", "", ""])
    ingest_one(store, path)
    assert rows(store, "SELECT exchange_id, account_id, prompt, model, input_tokens FROM exchanges ORDER BY 1") == [
        ("x1", "u1", "hello, world", "m1", 7), ("x2", "u1", "multi\nline", None, None)]


def test_parquet_with_native_types(store, tmp_path):
    table = pa.table({
        "exchange_id": ["p1", "p2"],
        "timestamp": pa.array([1776852000_000000, 1776852001_000000], pa.timestamp("us")),
        "account_id": ["a", "b"],
        "prompt": ["x", "y"],
        "gen_ai.usage.output_tokens": pa.array([5, 6], pa.int32()),
        "latency_ms": [1.5, 2.5],
    })
    pq.write_table(table, tmp_path / "a.parquet")
    ingest_one(store, tmp_path / "a.parquet")
    assert rows(store, "SELECT exchange_id, output_tokens, latency_ms FROM exchanges ORDER BY 1") == [
        ("p1", 5, 1.5), ("p2", 6, 2.5)]


def test_parquet_in_the_canonical_schema_round_trips(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(3)])
    ingest_one(store, tmp_path / "a.jsonl")
    exported = store.export_parquet(tmp_path / "export")
    assert pq.read_schema(exported).names == ARROW_SCHEMA.names
    other = type(store)(":memory:")
    assert ingest_one(other, exported).rows_stored == 3


@pytest.mark.parametrize("suffix,opener", [
    (".jsonl.gz", lambda p: gzip.open(p, "wt")),
    (".jsonl.zst", lambda p: zstandard.open(p, "wt")),
])
def test_compressed_files_are_read(store, tmp_path, suffix, opener):
    path = tmp_path / f"a{suffix}"
    with opener(path) as fh:
        for i in range(3):
            fh.write(json.dumps(good_record(i)) + "\n")
    assert ingest_one(store, path).rows_stored == 3


def test_directory_is_read_recursively_and_in_order(store, tmp_path):
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "b.jsonl", [good_record(1)])
    write_jsonl(tmp_path / "sub" / "a.jsonl", [good_record(2)])
    (tmp_path / "notes.txt").write_text("not a log")
    results = ingest_paths(store, [tmp_path])
    assert [Path(r.path).name for r in results] == ["b.jsonl", "a.jsonl"]


def test_openai_request_response_pairs(store, tmp_path):
    pair = {
        "timestamp": "2026-04-23T00:00:00Z", "account_id": "acct", "client_ip": "198.51.100.7",
        "request": {"model": "m", "max_tokens": 8192, "tools": [{}, {}],
                    "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "first"},
                                 {"role": "assistant", "content": "ok"},
                                 {"role": "user", "content": [{"type": "text", "text": "second"}]}]},
        "response": {"id": "chatcmpl-1", "usage": {"prompt_tokens": 11, "completion_tokens": 22}},
    }
    write_jsonl(tmp_path / "pairs.jsonl", [pair])
    ingest_one(store, tmp_path / "pairs.jsonl")
    assert rows(store, "SELECT exchange_id, prompt, system_prompt, turn_index, tool_count, max_tokens, "
                       "input_tokens, output_tokens, model FROM exchanges") == [
        ("chatcmpl-1", "second", "be brief", 1, 2, 8192, 11, 22, "m")]


def test_otel_genai_spans_and_non_genai_spans_are_accounted(store):
    result = ingest_one(store, EXAMPLES / "otel_spans.json")
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (7, 6, 1)
    assert quarantine_reasons(store) == ["not a GenAI span: no gen_ai.* attribute"]
    model, ip, ua, account, prompt, latency = rows(
        store, "SELECT model, client_ip, user_agent, account_id, prompt, latency_ms FROM exchanges LIMIT 1")[0]
    assert (model, ip, ua, account, latency) == ("model-large", "203.0.113.9", "my-agent/2.1", "acct-otel", 2000.0)
    assert prompt.startswith("List ")


def test_otel_sdk_span_json(store, tmp_path):
    span = {"name": "chat m", "context": {"trace_id": "0xabc", "span_id": "0x1"},
            "start_time": "2026-04-22T10:00:00.000000Z", "end_time": "2026-04-22T10:00:01.000000Z",
            "attributes": {"gen_ai.request.model": "m", "gen_ai.prompt": "hello", "enduser.id": "u9",
                           "gen_ai.request.max_tokens": 100}}
    write_jsonl(tmp_path / "spans.jsonl", [span])
    ingest_one(store, tmp_path / "spans.jsonl")
    assert rows(store, "SELECT account_id, prompt, max_tokens FROM exchanges") == [("u9", "hello", 100)]


def test_shipped_examples_balance(store):
    results = ingest_paths(store, [EXAMPLES])
    assert len(results) == 4 and all(r.balanced for r in results)


# --- aliases and timestamps ----------------------------------------------------------------

@pytest.mark.parametrize("alias,column,value,expected", [
    ("gen_ai.request.model", "model", "m9", "m9"),
    ("gen_ai.usage.input_tokens", "input_tokens", 5, 5),
    ("gen_ai.usage.output_tokens", "output_tokens", 6, 6),
    ("gen_ai.request.max_tokens", "max_tokens", 7, 7),
    ("gen_ai.conversation.id", "conversation_id", "c1", "c1"),
    ("client.address", "client_ip", "203.0.113.5", "203.0.113.5"),
    ("user_agent.original", "user_agent", "ua/1", "ua/1"),
])
def test_otel_attribute_names_are_aliases(store, tmp_path, alias, column, value, expected):
    record = good_record(0)
    record.pop(column, None)
    record[alias] = value
    write_jsonl(tmp_path / "a.jsonl", [record])
    ingest_one(store, tmp_path / "a.jsonl")
    assert rows(store, f"SELECT {column} FROM exchanges") == [(expected,)]


def test_nested_usage_object_is_flattened_to_its_alias(store, tmp_path):
    record = good_record(0, input_tokens=None)
    record["usage"] = {"prompt_tokens": 41}
    write_jsonl(tmp_path / "a.jsonl", [record])
    ingest_one(store, tmp_path / "a.jsonl")
    assert rows(store, "SELECT input_tokens FROM exchanges") == [(41,)]


@pytest.mark.parametrize("value", [
    "2026-04-22T10:00:00Z", "2026-04-22T12:00:00+02:00", "2026-04-22 10:00:00",
    1776852000, 1776852000.0, 1776852000000, "1776852000", 1776852000000000, 1776852000000000000,
])
def test_timestamps_in_iso_or_epoch_units_mean_the_same_instant(store, tmp_path, value):
    write_jsonl(tmp_path / "a.jsonl", [good_record(0, timestamp=value)])
    ingest_one(store, tmp_path / "a.jsonl")
    assert rows(store, "SELECT epoch(timestamp) FROM exchanges") == [(1776852000.0,)]


def test_ipv6_and_ipv4_mapped_addresses_are_canonicalised(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(0, client_ip="2001:DB8:0:0::1"),
                                       good_record(1, client_ip="::ffff:192.0.2.9")])
    ingest_one(store, tmp_path / "a.jsonl")
    assert rows(store, "SELECT client_ip FROM exchanges ORDER BY exchange_id") == [("2001:db8::1",), ("192.0.2.9",)]


# --- quarantine ----------------------------------------------------------------------------

@pytest.mark.parametrize("change,reason", [
    ({"prompt": None}, "missing field: prompt"),
    ({"exchange_id": ""}, "missing field: exchange_id"),
    ({"account_id": None}, "missing field: account_id"),
    ({"timestamp": "last tuesday"}, "bad timestamp: timestamp=last tuesday"),
    ({"timestamp": "1890-01-01T00:00:00Z"}, "bad timestamp: timestamp=1890-01-01"),
    ({"account_created_at": "soon"}, "bad timestamp: account_created_at=soon"),
    ({"client_ip": "999.1.1.1"}, "bad IP: client_ip is not an IPv4 or IPv6 address"),
    ({"client_ip": "10.0.0.1:443"}, "bad IP: client_ip is not an IPv4 or IPv6 address"),
    ({"input_tokens": "lots"}, "wrong type: input_tokens is not an integer: lots"),
    ({"input_tokens": 3.5}, "wrong type: input_tokens is not an integer: 3.5"),
    ({"output_tokens": -1}, "bad value: output_tokens is negative: -1"),
    ({"prompt": ["a", "b"]}, "wrong type: prompt cannot be a list"),
    ({"prompt": 42}, "wrong type: prompt cannot be a number"),
    ({"model": {"name": "m"}}, "wrong type: model cannot be an object"),
    ({"tool_count": True}, "wrong type: tool_count cannot be a boolean"),
])
def test_bad_rows_are_quarantined_with_their_reason(store, tmp_path, change, reason):
    bad = {k: v for k, v in {**good_record(1), **change}.items() if v is not None}
    write_jsonl(tmp_path / "a.jsonl", [good_record(0), bad, good_record(2)])
    result = ingest_one(store, tmp_path / "a.jsonl")
    assert (result.rows_stored, result.rows_quarantined) == (2, 1)
    [(got, line, raw, source)] = rows(store, "SELECT reason, line_number, raw, source_file FROM quarantine")
    assert got.startswith(reason)
    assert line == 2 and json.loads(raw) == bad and source.endswith("a.jsonl")


def test_malformed_lines_are_quarantined_and_good_lines_kept(store, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(good_record(0)) + "\n{not json\n\n[1, 2]\n" + json.dumps(good_record(1)) + "\n")
    result = ingest_one(store, path)
    assert (result.rows_in, result.rows_stored, result.rows_quarantined) == (4, 2, 2)
    assert rows(store, "SELECT line_number, reason_code FROM quarantine ORDER BY 1") == [
        (2, "malformed record"), (4, "malformed record")]


def test_truncated_json_array_keeps_what_came_before(store, tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[" + json.dumps(good_record(0)) + ", " + json.dumps(good_record(1)) + ', {"exchange_id": ')
    result = ingest_one(store, path)
    assert (result.rows_stored, result.rows_quarantined) == (2, 1)


def test_csv_row_with_wrong_field_count_is_quarantined(store, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("exchange_id,timestamp,account_id,prompt\nx1,2026-04-22,a,p\nx2,2026-04-22,a\n")
    result = ingest_one(store, path)
    assert (result.rows_stored, result.rows_quarantined) == (1, 1)
    assert quarantine_reasons(store) == ["malformed record: 3 fields, header has 4"]


# --- idempotence and conflicts -------------------------------------------------------------

def test_reingesting_the_same_file_stores_no_duplicates(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(10)])
    ingest_one(store, tmp_path / "a.jsonl")
    again = ingest_one(store, tmp_path / "a.jsonl")
    assert (again.rows_stored, again.rows_duplicate) == (0, 10)
    assert rows(store, "SELECT count(*), count(DISTINCT exchange_id) FROM exchanges") == [(10, 10)]


def test_overlapping_files_store_each_exchange_once(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(0, 6)])
    write_jsonl(tmp_path / "b.jsonl", [good_record(i) for i in range(4, 10)])
    results = ingest_paths(store, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert [(r.rows_stored, r.rows_duplicate) for r in results] == [(6, 0), (4, 2)]
    assert rows(store, "SELECT count(*) FROM exchanges") == [(10,)]


def test_same_id_with_different_content_is_a_conflict_not_an_overwrite(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(0, prompt="original")])
    write_jsonl(tmp_path / "b.jsonl", [good_record(0, prompt="tampered")])
    ingest_one(store, tmp_path / "a.jsonl")
    result = ingest_one(store, tmp_path / "b.jsonl")
    assert (result.rows_stored, result.rows_quarantined) == (0, 1)
    assert rows(store, "SELECT prompt FROM exchanges") == [("original",)]
    assert rows(store, "SELECT reason_code, exchange_id FROM quarantine") == [("conflict", "ex-0")]


def test_duplicates_inside_one_file(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [good_record(0), good_record(0), good_record(0, prompt="other")])
    result = ingest_one(store, tmp_path / "a.jsonl")
    assert (result.rows_stored, result.rows_duplicate, result.rows_quarantined) == (1, 1, 1)


# --- provenance and file-level errors ------------------------------------------------------

def test_each_file_is_recorded_with_its_sha256_and_counts(store, tmp_path):
    import hashlib

    path = write_jsonl(tmp_path / "a.jsonl", [good_record(0), {"broken": True}, good_record(1)])
    path.write_text(path.read_text() + "{oops\n")
    ingest_paths(store, [path])
    [(p, sha, size, n_in, n_ok, n_q)] = rows(
        store, "SELECT path, sha256, size_bytes, rows_in, rows_stored, rows_quarantined FROM ingests")
    assert p == str(path) and sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (size, n_in, n_ok, n_q) == (path.stat().st_size, 4, 2, 2)


def test_missing_file_is_a_user_error(store, tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        ingest_paths(store, [tmp_path / "nope.jsonl"])


def test_file_without_any_exchange_columns_is_rejected_whole(store, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(IngestError, match="unknown column set"):
        ingest_paths(store, [tmp_path / "a.jsonl"])
    assert rows(store, "SELECT count(*) FROM ingests") == [(0,)]


def test_csv_missing_a_required_column_names_it(store, tmp_path):
    (tmp_path / "a.csv").write_text("exchange_id,timestamp,prompt\n1,2,3\n")
    with pytest.raises(IngestError, match="missing required account_id"):
        ingest_paths(store, [tmp_path / "a.csv"])


def test_unknown_format_is_a_user_error(store, tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00\x01binary")
    with pytest.raises(IngestError, match="unreadable format"):
        ingest_paths(store, [tmp_path / "a.bin"])


def test_corrupt_gzip_is_a_user_error_and_stores_nothing(store, tmp_path):
    data = gzip.compress(b"".join(json.dumps(good_record(i)).encode() + b"\n" for i in range(100)))
    (tmp_path / "a.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match="cannot read"):
        ingest_paths(store, [tmp_path / "a.jsonl.gz"])
    assert rows(store, "SELECT count(*) FROM exchanges") == [(0,)]


# --- fast lanes and the segment store ------------------------------------------------------

def _stored(store) -> list[tuple]:
    return rows(store, "SELECT * FROM exchanges ORDER BY exchange_id")


def _both_lanes(path: Path) -> list[tuple[int, list[tuple]]]:
    """(rows stored, the stored rows) of ``path`` ingested by the fast lane, then by the general one."""
    from distillguard.ingest.run import ingest_file
    from distillguard.ingest.sources import discover
    from distillguard.store import Store

    results = []
    for fast in (True, False):
        with Store(":memory:") as s:
            [source] = discover([path])
            results.append((ingest_file(s, source, allow_fast_lane=fast).rows_stored, _stored(s)))
    return results


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_fast_and_general_lanes_store_identical_rows(tmp_path, fmt):
    from distillguard.store import Store

    records = [good_record(i, client_ip=ip, user_agent="ua", max_tokens=100, latency_ms=1.5,
                           account_created_at="2026-01-01T00:00:00Z")
               for i, ip in enumerate(["192.0.2.1", "2001:db8::1", "198.51.100.200"])]
    path = write_jsonl(tmp_path / "a.jsonl", records)
    if fmt == "parquet":
        with Store(":memory:") as s:
            ingest_paths(s, [path])
            path = s.export_parquet(tmp_path / "export")
    fast, general = _both_lanes(path)
    assert fast == general and fast[0] == 3


def test_the_store_is_a_duckdb_file_with_parquet_segments_readable_by_other_engines(tmp_path):
    from distillguard.store import Store

    db = tmp_path / "s.duckdb"
    write_jsonl(tmp_path / "a.jsonl", [good_record(i) for i in range(4)])
    with Store(db) as s:
        ingest_paths(s, [tmp_path / "a.jsonl"])
        files = s.segment_files()
    assert files and all(f.suffix == ".parquet" for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 4
    with Store(db, read_only=True) as s:
        assert rows(s, "SELECT count(*) FROM exchanges") == [(4,)]


def test_a_half_finished_ingest_leaves_nothing_visible(tmp_path):
    from distillguard.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        pending = s.pending_dir("crashed")
        (pending / "part-00000.parquet").write_bytes(b"partial")
        (s.segments_dir / "orphan").mkdir()  # published, but its ingests row never committed
    with Store(db) as s:
        assert sorted(p.name for p in s.segments_dir.iterdir()) == []
        assert rows(s, "SELECT count(*) FROM exchanges") == [(0,)]


def test_a_store_written_before_a_schema_column_existed_still_opens(tmp_path):
    """Segments lacking a column the schema gained later (client_asn) read it as NULL."""
    from distillguard.store import Store

    db = tmp_path / "old.duckdb"
    with Store(db) as store:
        ingest_paths(store, [write_jsonl(tmp_path / "a.jsonl", [good_record(i, client_asn=64500) for i in range(3)])])
        parts = store.segment_files()
    for part in parts:  # as an older distillguard wrote them
        pq.write_table(pq.read_table(part).drop_columns(["client_asn"]), part)
    with Store(db, read_only=True) as store:
        assert store.con.execute("SELECT count(*), count(client_asn) FROM exchanges").fetchone() == (3, 0)
    with Store(db) as store:  # and a newer ingest beside them keeps its values
        ingest_paths(store, [write_jsonl(tmp_path / "b.jsonl", [good_record(9, client_asn=64501)])])
        assert rows(store, "SELECT client_asn FROM exchanges WHERE client_asn IS NOT NULL") == [(64501,)]


# --- compaction: the gateway's many small segments merged ----------------------------------

def _ingest_small_files(store, tmp_path, files: int, per_file: int = 3) -> None:
    for f in range(files):
        ingest_paths(store, [write_jsonl(tmp_path / f"log-{f:03d}.jsonl",
                                         [good_record(f * per_file + i) for i in range(per_file)])])


def test_compaction_merges_small_segments_and_keeps_every_row_and_its_provenance(tmp_path):
    from distillguard.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _ingest_small_files(s, tmp_path, 6)
        before = _stored(s)
        provenance = rows(s, "SELECT ingest_id, path, sha256, rows_in, rows_stored FROM ingests ORDER BY ingest_id")
        assert len({p.parent for p in s.segment_files()}) == 6
        assert s.compact(min_segments=7) == 0  # fewer than asked for: left alone
        assert s.compact(min_segments=4) == 6
        assert len(s.segment_files()) == 1
        assert _stored(s) == before
        assert rows(s, "SELECT ingest_id, path, sha256, rows_in, rows_stored FROM ingests ORDER BY ingest_id") \
            == provenance
        assert rows(s, "SELECT count(DISTINCT segment) FROM ingests") == [(1,)]
    with Store(db) as s:  # reopened: the old directories are gone, the rows are there once
        assert len(list(s.segments_dir.iterdir())) == 1
        assert _stored(s) == before
        ingest_paths(s, [write_jsonl(tmp_path / "later.jsonl", [good_record(i) for i in range(100, 103)])])
        assert rows(s, "SELECT count(*) FROM exchanges") == [(len(before) + 3,)]


def test_large_segments_are_not_rewritten(tmp_path):
    from distillguard.store import Store

    with Store(tmp_path / "s.duckdb") as s:
        _ingest_small_files(s, tmp_path, 4, per_file=5)
        big = s.segment_files()[0]
        assert s.compact(min_segments=2, small_rows=5) == 0  # every segment holds 5 rows: none small
        assert s.compact(min_segments=2, small_rows=6) == 4
        assert big not in s.segment_files()


def test_a_compaction_that_fails_midway_changes_nothing(tmp_path, monkeypatch):
    """A failure between publishing the merged segment and committing: the store shows every
    row once, from the old segments, and the merged segment is gone (after a kill -9 at that
    point, the next open removes it as an orphan: test_a_half_finished_ingest_...)."""
    from distillguard.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _ingest_small_files(s, tmp_path, 3)
        before, files = _stored(s), s.segment_files()

        publish = Store.publish

        def crash(self, pending, name):  # published, then the transaction fails
            publish(self, pending, name)
            raise OSError("disk vanished")

        monkeypatch.setattr(Store, "publish", crash)
        with pytest.raises(OSError):
            s.compact(min_segments=2)
        monkeypatch.undo()
        assert s.segment_files() == files and _stored(s) == before
    with Store(db) as s:
        assert _stored(s) == before
        assert sorted(p.name for p in s.segments_dir.iterdir()) == sorted({f.parent.name for f in files})


def test_a_read_only_store_is_not_compacted(tmp_path):
    from distillguard.errors import UserError
    from distillguard.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _ingest_small_files(s, tmp_path, 2)
    with Store(db, read_only=True) as s, pytest.raises(UserError, match="read-only"):
        s.compact(min_segments=2)


def test_canonical_parquet_without_an_optional_column_takes_the_fast_lane_and_stores_it_null(tmp_path):
    """A file written before an optional column was declared is still canonical: copied as is,
    read back with the column null, the same rows as the general lane stores."""
    from distillguard.ingest import fast_parquet
    from distillguard.store import Store

    path = write_jsonl(tmp_path / "a.jsonl", [good_record(i, client_ip="192.0.2.1") for i in range(3)])
    with Store(":memory:") as s:
        ingest_paths(s, [path])
        exported = s.export_parquet(tmp_path / "export")
    files = [exported] if exported.is_file() else sorted(exported.rglob("*.parquet"))
    table = pq.read_table(files[0])
    older = tmp_path / "older.parquet"
    pq.write_table(table.drop_columns(["email_fingerprint", "user_agent"]), older)
    with Store(":memory:") as s:
        assert fast_parquet.try_copy(s, older, tmp_path / "copy.parquet") is not None
    fast, general = _both_lanes(older)
    assert fast == general and fast[0] == 3
