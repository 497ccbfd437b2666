"""Property-based: whatever an account event file holds, the parser never crashes and no row is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillguard.errors import IngestError
from distillguard.ingest.accounts import ingest_account_paths, parse_event
from distillguard.schema import ACCOUNT_EVENT_COLUMNS, ACCOUNT_EVENT_KINDS
from distillguard.store import Store

SETTINGS = settings(max_examples=int(__import__("os").environ.get("DG_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = sorted({n for c in ACCOUNT_EVENT_COLUMNS for n in (c.name, *c.aliases)})
CODES = ("missing field", "wrong type", "bad value", "bad timestamp", "bad IP", "malformed record")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=20),
    st.sampled_from(["2026-11-02T10:00:00Z", "2026-11-02T10:00:00+99:00", "1793613700", "192.0.2.1", "::ffff:1.2.3.4",
                     "", " ", "nan", "inf", "-5", *ACCOUNT_EVENT_KINDS]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=3), max_leaves=6)
records = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values, max_size=12)
event_like = st.fixed_dictionaries({"event": scalars, "timestamp": scalars, "account_id": scalars}).flatmap(
    lambda base: records.map(lambda extra: {**extra, **base}))


@SETTINGS
@given(st.one_of(values, records, event_like))
@example({"event": ";", "timestamp": None, "account_id": None})  # a value holding the reasons' separator
def test_any_record_parses_to_a_full_event_or_to_reasons_naming_their_field(record):
    parsed = parse_event(record)
    if isinstance(parsed, str):
        assert all(part.split(":")[0] in CODES for part in parsed.split("; ")), parsed
        return
    assert set(parsed) == {c.name for c in ACCOUNT_EVENT_COLUMNS}
    assert parsed["event"] in ACCOUNT_EVENT_KINDS and parsed["account_id"] and parsed["event_id"]
    assert parsed["timestamp"].tzinfo is not None
    assert parsed["client_asn"] is None or parsed["client_asn"] >= 0


@pytest.mark.slow  # a store per generated file: about 15 s
@SETTINGS
@given(st.lists(st.one_of(event_like.map(json.dumps), st.text(max_size=40)), max_size=8))
def test_any_file_balances_rows_in_with_stored_duplicates_and_quarantined(tmp_path_factory, lines):
    path = Path(tmp_path_factory.mktemp("accounts")) / "events.jsonl"
    path.write_text("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines) + "\n")
    with Store(":memory:") as store:
        try:
            [result] = ingest_account_paths(store, [path])
        except IngestError as exc:
            assert "not an account event file" in str(exc)
            assert store.con.execute("SELECT count(*) FROM ingests").fetchone()[0] == 0
            return
        assert result.balanced
        stored, distinct = store.con.execute("SELECT count(*), count(DISTINCT event_id) FROM account_events").fetchone()
        assert stored == distinct == result.rows_stored
        assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == result.rows_quarantined


@pytest.mark.slow  # a store per generated file: about 10 s
@SETTINGS
@given(st.lists(st.sampled_from(NAMES), max_size=6, unique=True).map(
           lambda extra: list(dict.fromkeys(["event", "timestamp", "account_id", *extra]))),
       st.lists(st.lists(st.one_of(st.text(max_size=12), scalars.map(str)), max_size=10), max_size=6))
def test_any_csv_balances_or_is_refused_whole_in_one_error(tmp_path_factory, header, rows):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(tmp_path_factory.mktemp("accounts")) / "events.csv"
    path.write_text(out.getvalue())
    with Store(":memory:") as store:
        try:
            results = ingest_account_paths(store, [path])
        except IngestError as exc:
            assert "events.csv" in str(exc)
            assert store.con.execute("SELECT count(*) FROM ingests").fetchone()[0] == 0
            return
        for result in results:
            assert result.balanced
            assert store.con.execute("SELECT count(*) FROM account_events").fetchone()[0] == result.rows_stored
