"""Real Langfuse exports (tests/data/langfuse/README.md) ingest through the real ingest path:
every generation stored, counts balanced, nothing new on a second run, fields where they belong."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.ingest import helicone, ingest_paths, langfuse

LANGFUSE = Path(__file__).parent.parent / "data" / "langfuse"
EXPORTS = ["observations.jsonl", "observations.json", "observations.csv", "observations-api-v2.jsonl"]
GENERATIONS = {"5cb389a3bdd21a6e", "7ca8b22f6628d0c7", "83517f9062f5ada4", "f6e4c65297e40c96", "bded677884f031ce"}


def _quarantine_reasons(store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT reason FROM quarantine").fetchall()]


@pytest.mark.parametrize("name", EXPORTS)
def test_every_langfuse_generation_is_stored_and_only_non_model_calls_are_quarantined(store, name):
    first, = ingest_paths(store, [LANGFUSE / name])
    assert (first.log_format, first.rows_in, first.rows_stored, first.rows_quarantined) == ("langfuse", 12, 5, 7)
    assert first.balanced
    assert all(r.startswith("not a model call: Langfuse observation of type ") for r in _quarantine_reasons(store))
    stored = {r[0] for r in store.con.execute("SELECT exchange_id FROM exchanges").fetchall()}
    assert stored == GENERATIONS
    assert first.warnings == ["1 of 12 records carry an input in no chat shape: the prompt is the input's JSON text"]


@pytest.mark.parametrize("name", EXPORTS)
def test_reingesting_a_langfuse_export_stores_nothing_new(store, name):
    ingest_paths(store, [LANGFUSE / name])
    again, = ingest_paths(store, [LANGFUSE / name])
    assert (again.rows_stored, again.rows_duplicate, again.rows_quarantined) == (0, 5, 7)
    assert again.balanced


def test_the_same_generations_from_the_api_after_the_batch_export_are_conflicts_not_silent_duplicates(store):
    """The batch export has no sessionId, the API has: same ids, different content."""
    export, api = ingest_paths(store, [LANGFUSE / "observations.csv", LANGFUSE / "observations-api-v2.jsonl"])
    assert (export.rows_stored, api.rows_stored, api.rows_quarantined) == (5, 0, 12) and api.balanced
    conflicts = [r for r in _quarantine_reasons(store) if r.startswith("conflict: exchange_id ")]
    assert len(conflicts) == 5


def _by_id(store) -> dict[str, tuple]:
    rows = store.con.execute(
        "SELECT exchange_id, timestamp, account_id, conversation_id, model, prompt, system_prompt, input_tokens, "
        "output_tokens, max_tokens, latency_ms, tool_count FROM exchanges").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_langfuse_identity_prompt_model_and_tokens_land_in_their_canonical_fields(store):
    ingest_paths(store, [LANGFUSE / "observations-api-v2.jsonl"])
    rows = _by_id(store)
    pydantic_ai = rows["5cb389a3bdd21a6e"]  # an OpenAI chat list
    assert pydantic_ai[0] == datetime(2025, 6, 6, 14, 40, 28, 562000, tzinfo=timezone.utc)
    assert pydantic_ai[1:6] == ("user_123", "session_abc", "gpt-4o", "What is Langfuse?",
                                "You are a helpful assistant that answers questions clearly and concisely.")
    assert pydantic_ai[6:9] == (31, 96, None) and pydantic_ai[9] == 4794.0
    gemini = rows["f6e4c65297e40c96"]  # a Gemini generate_content body from Google ADK
    assert gemini[1:5] == ("demo-user", "demo-session", "gemini-2.0-flash", "hi")
    assert gemini[5].startswith("Always greet using the say_hello tool.") and gemini[10] == 1
    assert rows["bded677884f031ce"][4] == ""  # the turn answering a tool call has no user text
    autogen = rows["83517f9062f5ada4"]  # plain text input; max_tokens -1 means no limit
    assert autogen[4].endswith("user: Say 'Hello World!'") and autogen[8] is None
    assert rows["7ca8b22f6628d0c7"][4] == '{"args": ["What is Langfuse?"]}'  # llama-index's own shape


def test_the_batch_export_has_the_user_but_not_the_session(store):
    ingest_paths(store, [LANGFUSE / "observations.csv"])
    rows = _by_id(store)
    assert {r[1] for r in rows.values()} == {"user_123", "demo-user"}
    assert {r[2] for r in rows.values()} == {None}


def test_a_langfuse_parquet_export_with_datetime_columns_ingests_like_its_jsonl(store, tmp_path):
    records = [json.loads(line) for line in (LANGFUSE / "observations-api-v2.jsonl").read_text().splitlines()]
    columns = ["id", "traceId", "type", "startTime", "endTime", "model", "userId", "sessionId", "input", "usageDetails"]
    table = pa.table({
        **{c: [r.get(c) if c != "usageDetails" else json.dumps(r.get(c)) for r in records]
           for c in columns if c not in ("startTime", "endTime")},
        **{c: pa.array([datetime.fromisoformat(r[c].replace("Z", "+00:00")) if r.get(c) else None for r in records],
                       pa.timestamp("us", tz="UTC")) for c in ("startTime", "endTime")},
    })
    pq.write_table(table, tmp_path / "observations.parquet")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "observations.parquet"), "--format", "langfuse",
                                      "--db", str(tmp_path / "s.duckdb"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert (summary["files"][0]["rows_stored"], summary["files"][0]["rows_quarantined"]) == (5, 7)
    ingest_paths(store, [LANGFUSE / "observations-api-v2.jsonl"])
    again, = ingest_paths(store, [tmp_path / "observations.parquet"], log_format="langfuse")
    assert (again.rows_stored, again.rows_duplicate) == (0, 5)


def test_mappers_take_datetimes_as_well_as_iso_text():
    start, end = datetime(2026, 1, 1, 9, 0, 0), datetime(2026, 1, 1, 9, 0, 1, 500000)  # naive: UTC
    record = langfuse.record({"id": "g", "traceId": "t", "type": "GENERATION", "startTime": start, "endTime": end,
                              "userId": "u", "input": [{"role": "user", "content": "q"}]})
    assert (record["timestamp"], record["latency_ms"]) == ("2026-01-01T09:00:00+00:00", 1500.0)
    row = helicone.record({"request_id": "r", "request_created_at": start, "request_user_id": "u",
                           "request_body": {"messages": [{"role": "user", "content": "q"}]}})
    assert row["timestamp"] == "2026-01-01T09:00:00+00:00"


def test_a_helicone_row_whose_body_is_the_signed_url_placeholder_is_kept_with_an_empty_prompt():
    # the placeholder text of valhalla/jawn/src/lib/stores/request/request.ts (Helicone/helicone @ 0003b753)
    placeholder = ('{"helicone_message": "fetching body from signed_url... contact engineering@helicone.ai '
                   'for more information"}')
    row = helicone.record({"request_id": "r", "request_created_at": "2026-01-01T00:00:00Z", "request_user_id": "u",
                           "request_body": placeholder, "request_model": "gpt-4o"})
    assert (row["prompt"], row["account_id"], row["model"]) == ("", "u", "gpt-4o")
    assert row["_notes"] == (helicone.NO_BODY,)


_values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30) | st.datetimes()
_json_like = st.recursive(_values, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["role", "content", "parts", "text", "type", "contents",
                                                             "config", "messages", "system_instruction"]),
                                            inner, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "traceId", "type", "startTime", "endTime", "timestamp", "userId",
                                        "input", "modelParameters", "usageDetails", "inputUsage", "usage",
                                        "request_id", "request_created_at", "request_body", "request_properties",
                                        "request_user_id", "delay_ms"]),
                       _json_like | st.text(max_size=40).map(lambda t: "{" + t) | st.just("GENERATION")))
def test_langfuse_and_helicone_mappers_answer_a_record_or_a_reason_for_any_record(row):
    for mapper in (langfuse.record, helicone.record):
        out = mapper(row)
        assert isinstance(out, (dict, str))
        if isinstance(out, dict):
            assert not isinstance(out.get("timestamp"), datetime)


def test_the_langfuse_api_fixture_is_what_the_langfuse_sdk_parses_and_writes_back():
    from langfuse.api.core.pydantic_utilities import parse_obj_as as parse
    from langfuse.api.observations.types import ObservationsV2Response

    lines = (LANGFUSE / "observations-api-v2.jsonl").read_text().splitlines()
    page = parse(ObservationsV2Response, {"data": [json.loads(line) for line in lines], "meta": {}})
    assert [o.json() for o in page.data] == lines
