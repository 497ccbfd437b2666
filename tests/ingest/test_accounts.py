"""Account events (ingest --kind accounts): sign-ups and cards stored with the exchange ingest's guarantees."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from distillguard.errors import IngestError
from distillguard.ingest.accounts import ingest_account_paths, parse_event
from distillguard.schema import ACCOUNT_EVENT_COLUMNS
from distillguard.store import Store, chain

SIGNUP = {"event": "account_created", "timestamp": "2026-11-02T10:00:00Z", "account_id": "acct-1",
          "ip": "203.0.113.5", "user_agent": "Mozilla/5.0", "email_domain": "Example.COM", "country": "de"}


def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _events(store: Store) -> list[dict]:
    cur = store.con.execute("SELECT * FROM account_events ORDER BY record_number")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def test_a_sign_up_record_becomes_one_canonical_event():
    event = parse_event({**SIGNUP, "client_asn": "16509", "card_fingerprint": "card-9"})
    assert event["event"] == "account_created"
    assert event["timestamp"] == datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    assert event["email_domain"] == "example.com" and event["country"] == "DE"
    assert event["client_asn"] == 16509 and event["payment_fingerprint"] == "card-9"
    assert event["event_id"].startswith("sha256:")
    assert set(event) == {c.name for c in ACCOUNT_EVENT_COLUMNS}


def test_a_bad_record_is_refused_naming_every_field_at_fault():
    reason = parse_event({"event": "teleported", "timestamp": "yesterday", "ip": "not-an-ip", "client_asn": -3})
    assert reason == ("bad value: event=teleported is not one of account_created, card_added, verification_passed, "
                      "verification_failed; bad timestamp: timestamp=yesterday; missing field: account_id; "
                      "bad IP: client_ip is not an IPv4 or IPv6 address; bad value: client_asn is negative: -3")
    assert parse_event(["not", "an", "object"]).startswith("malformed record")
    assert parse_event({**SIGNUP, "account_id": {"id": 1}}) == "wrong type: account_id cannot be an object"
    assert parse_event({"event": "account_created", "timestamp": 0, "account_id": "a"}) == "bad timestamp: timestamp=0"
    nested = {"event": "account_created", "timestamp": "2026-11-02", "account_id": "a",
              "email": {"domain": "C.example"}}
    assert parse_event(nested)["email_domain"] == "c.example"
    assert parse_event({**nested, "email_domain": "canonical.example"})["email_domain"] == "canonical.example"


def test_an_e_mail_address_is_stored_as_its_fingerprint_and_gives_its_domain(tmp_path):
    address = " Ana.Silva@Example.ORG "
    event = parse_event({**SIGNUP, "email_domain": None, "email": address})
    assert event["email_fingerprint"] == hashlib.sha256(b"ana.silva@example.org").hexdigest()
    assert event["email_domain"] == "example.org"
    assert parse_event({**SIGNUP, "email": "no address"}) == \
        "bad value: email_fingerprint is neither an e-mail address nor a sha256 fingerprint"
    path = _jsonl(tmp_path / "signups.jsonl", [{**SIGNUP, "email": address},
                                               {**SIGNUP, "email": address, "timestamp": "never"}])
    with Store(":memory:") as store:
        ingest_account_paths(store, [path])
        text = str(store.con.execute("SELECT * FROM account_events").fetchall()) + \
            str(store.con.execute("SELECT * FROM quarantine").fetchall())
    assert "Ana.Silva" not in text and "ana.silva" not in text.lower()


def test_the_derived_event_id_is_the_same_for_the_same_content_and_differs_for_other_content():
    assert parse_event(SIGNUP)["event_id"] == parse_event(dict(reversed(SIGNUP.items())))["event_id"]
    assert parse_event(SIGNUP)["event_id"] != parse_event({**SIGNUP, "country": "FR"})["event_id"]


def test_every_row_is_stored_a_duplicate_or_quarantined_with_its_line(tmp_path):
    path = _jsonl(tmp_path / "signups.jsonl", [
        SIGNUP,
        {"event": "card_added", "timestamp": 1793613700, "account_id": "acct-1", "card_fingerprint": "card-1"},
        "",
        {"event": "verification_failed", "ts": "not a time", "account_id": "acct-2"},
        "not json",
        SIGNUP,  # the same event twice in one file
    ])
    with Store(":memory:") as store:
        [result] = ingest_account_paths(store, [path])
        assert (result.rows_in, result.rows_stored, result.rows_duplicate, result.rows_quarantined) == (5, 2, 1, 2)
        assert result.balanced and result.log_format == "accounts"
        assert store.con.execute("SELECT line_number, reason FROM quarantine ORDER BY line_number").fetchall() == [
            (4, "bad timestamp: timestamp=not a time"),
            (5, "malformed record: invalid JSON (invalid literal, expected 'null')")]
        assert "record 3 at line 4: bad timestamp: timestamp=not a time" in result.warnings[0]
        assert [e["event"] for e in _events(store)] == ["account_created", "card_added"]
        assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 0


def test_reingesting_the_same_file_stores_no_duplicates(tmp_path):
    path = _jsonl(tmp_path / "signups.jsonl", [SIGNUP, {**SIGNUP, "account_id": "acct-2"}])
    with Store(":memory:") as store:
        ingest_account_paths(store, [path])
        [again] = ingest_account_paths(store, [path])
        assert (again.rows_stored, again.rows_duplicate) == (0, 2)
        assert len(_events(store)) == 2


def test_an_event_id_seen_before_with_other_content_is_quarantined_as_a_conflict(tmp_path):
    first = _jsonl(tmp_path / "a.jsonl", [{**SIGNUP, "event_id": "ev-1"}])
    second = _jsonl(tmp_path / "b.jsonl", [{**SIGNUP, "event_id": "ev-1", "country": "FR"}])
    with Store(":memory:") as store:
        ingest_account_paths(store, [first])
        [result] = ingest_account_paths(store, [second])
        assert (result.rows_stored, result.rows_quarantined) == (0, 1)
        assert [e["country"] for e in _events(store)] == ["DE"]
        assert store.con.execute("SELECT reason_code FROM quarantine").fetchall() == [("conflict",)]


def test_csv_with_aliased_headers_and_gzip_jsonl_are_read(tmp_path):
    csv_path = tmp_path / "cards.csv"
    csv_path.write_text("type,created_at,user_id,card_fingerprint,country_code\n"
                        "card_added,2026-11-02 10:05:00,acct-7,card-3,us\n"
                        "card_added,2026-11-02 10:06:00,acct-8\n")
    gz = tmp_path / "signups.jsonl.gz"
    gz.write_bytes(gzip.compress((json.dumps(SIGNUP) + "\n").encode()))
    with Store(":memory:") as store:
        results = ingest_account_paths(store, [csv_path, gz])
        assert [(r.format, r.rows_stored, r.rows_quarantined) for r in results] == [("csv", 1, 1), ("jsonl", 1, 0)]
        assert store.con.execute("SELECT reason FROM quarantine").fetchone()[0] == \
            "malformed record: 3 fields, header has 5"
        assert {(e["account_id"], e["payment_fingerprint"], e["country"]) for e in _events(store)} == {
            ("acct-7", "card-3", "US"), ("acct-1", None, "DE")}


def test_a_file_that_is_not_account_events_is_refused_whole(tmp_path):
    exchanges = _jsonl(tmp_path / "log.jsonl", [{"exchange_id": "e1", "prompt": "hi"}])
    header = tmp_path / "log.csv"
    header.write_text("exchange_id,prompt\ne1,hi\n")
    with Store(":memory:") as store:
        for path in (exchanges, header):
            with pytest.raises(IngestError, match=f"{path.name}: not an account event file"):
                ingest_account_paths(store, [path])
        assert store.con.execute("SELECT count(*) FROM ingests").fetchone()[0] == 0


def test_the_hash_chain_names_an_account_event_changed_after_its_ingest(tmp_path):
    path = _jsonl(tmp_path / "signups.jsonl", [SIGNUP, {**SIGNUP, "account_id": "acct-2"}])
    with Store(":memory:") as store:
        [result] = ingest_account_paths(store, [path])
        assert list(chain.check_store(store.con, store.segments_dir)) == []
        link = chain.links(store.con)[-1]
        assert link.kind == "ingest_file" and link.detail["account_events"]["rows"] == 2
        assert link.sha256 == result.sha256
        store.con.execute("UPDATE account_events SET payment_fingerprint = 'card-x' WHERE account_id = 'acct-2'")
        [found] = chain.check_store(store.con, store.segments_dir)
        assert "account_events of ingest" in found.where and "rows changed after the ingest" in found.what


@pytest.mark.slow  # runs the CLI as a process: about 4 s
def test_cli_ingest_kind_accounts_refuses_a_file_of_bad_records_in_one_line_naming_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"event": "account_created", "timestamp": "2026-11-02", "account": ""}])
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "ingest", "--kind", "accounts", str(path),
                           "--db", str(tmp_path / "s.duckdb")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "bad.jsonl" in lines[0] and "line 1" in lines[0] and "missing field: account_id" in lines[0]


def test_store_stats_count_account_events_apart_from_exchanges(tmp_path):
    from distillguard.store.stats import store_stats

    with Store(":memory:") as store:
        ingest_account_paths(store, [_jsonl(tmp_path / "s.jsonl", [SIGNUP, {**SIGNUP, "account_id": "acct-2"},
                                                                    {**SIGNUP, "event": "card_added"}])])
        stats = store_stats(store)
    assert (stats["rows"], stats["account_events"], stats["accounts_with_events"]) == (0, 3, 2)
