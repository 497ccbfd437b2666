"""Real Langfuse and Helicone exports (tests/data/{langfuse,helicone}/README.md) ingest through the real ingest path:
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


# --- Helicone: exports written by Helicone's own export tool (tests/data/helicone/README.md) ---

HELICONE = Path(__file__).parent.parent / "data" / "helicone"
HELICONE_EXPORTS = ["export.jsonl", "export-with-body.jsonl", "export.csv", "export-with-body.csv"]
#: request id -> response id of the six exchanges; the tool's CSV carries only the response id
HELICONE_IDS = {"3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b60": "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c20",
                "3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b61": "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c21",
                "9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e70": "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d50",
                "9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e71": "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d51",
                "c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e00": "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a40",
                "c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e01": "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a41"}
PLACEHOLDER_WARNING = f"5 of 6 records {helicone.NO_BODY}"


@pytest.mark.parametrize("name", HELICONE_EXPORTS)
def test_every_row_of_a_helicone_export_tool_file_is_stored_and_detected_as_helicone(store, name):
    first, = ingest_paths(store, [HELICONE / name])
    assert (first.log_format, first.rows_in, first.rows_stored, first.rows_quarantined) == ("helicone", 6, 6, 0)
    assert first.balanced
    assert first.warnings == ([] if "with-body" in name else [PLACEHOLDER_WARNING])
    ids = set(HELICONE_IDS.values() if name.endswith(".csv") else HELICONE_IDS)
    assert {r[0] for r in store.con.execute("SELECT exchange_id FROM exchanges").fetchall()} == ids


@pytest.mark.parametrize("name", HELICONE_EXPORTS)
def test_reingesting_a_helicone_export_stores_nothing_new(store, name):
    ingest_paths(store, [HELICONE / name])
    again, = ingest_paths(store, [HELICONE / name])
    assert (again.rows_stored, again.rows_duplicate, again.rows_quarantined) == (0, 6, 0)
    assert again.balanced


def test_helicone_identity_session_model_tokens_and_prompt_land_in_their_canonical_fields(store):
    ingest_paths(store, [HELICONE / "export-with-body.jsonl"])
    rows = _by_id(store)
    second_turn = rows["3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b61"]
    assert second_turn[0] == datetime(2025, 6, 10, 9, 12, 41, 530000, tzinfo=timezone.utc)
    assert second_turn[1:6] == ("cust-alpha", "sess-alpha-1", "gpt-4o-mini",
                                'What about a "shared" room, say 50% office?',
                                "You are a careful assistant for a tax-preparation service. Answer briefly.")
    assert second_turn[6:11] == (71, 19, 256, 1034.0, 0)
    tools = rows["9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e70"]  # max_completion_tokens, one tool, no session
    assert (tools[1], tools[2], tools[3], tools[8], tools[10]) == ("cust-beta", None, "gpt-4o", 512, 1)
    rate_limited = rows["c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e00"]  # a 429 has no tokens
    assert rate_limited[4:8] == ("List every IRS form number.", None, None, None)
    status = dict(store.con.execute("SELECT exchange_id, status_code FROM exchanges").fetchall())
    assert status["c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e00"] == 429


def test_the_export_tools_csv_carries_what_its_jsonl_does_under_the_response_ids(store):
    """The CSV has no model or latency column values: the model comes from the request body and
    the latency from the two timestamps; its doubled-quote JSON fields read like the JSONL's."""
    from distillguard.store import Store

    ingest_paths(store, [HELICONE / "export-with-body.jsonl"])
    csv_store = Store(":memory:")
    try:
        ingest_paths(csv_store, [HELICONE / "export-with-body.csv"])
        from_csv = _by_id(csv_store)
    finally:
        csv_store.close()
    assert {request_id: from_csv[response_id] for request_id, response_id in HELICONE_IDS.items()} == _by_id(store)


def test_without_bodies_the_helicone_export_keeps_metadata_and_only_the_inline_body_has_a_prompt(store):
    ingest_paths(store, [HELICONE / "export.jsonl"])
    rows = _by_id(store)
    prompts = {k: r[4] for k, r in rows.items()}
    inline = "9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e71"  # storage_location clickhouse: the body is in the row
    assert prompts.pop(inline) == "Summarise IRS Publication 587 in one line."
    assert set(prompts.values()) == {""}
    assert {r[1] for r in rows.values()} == {"cust-alpha", "cust-beta", "cust-gamma"}
    assert rows["3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b60"][3] == "gpt-4o-mini"  # request_model
    assert rows["3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b60"][6:8] == (38, 17)


def test_a_helicone_csv_row_without_request_id_or_bodies_has_no_model_but_keeps_the_latency():
    row = helicone.record({"response_id": "resp", "request_created_at": "2025-06-10T09:12:03.114Z",
                           "response_created_at": "2025-06-10T09:12:03.926Z", "request_user_id": "u",
                           "request_body": '{"helicone_message": "fetching body from signed_url..."}'})
    assert (row["exchange_id"], row["latency_ms"], row["prompt"]) == ("resp", 812.0, "")
    assert "model" not in row
    with_both = helicone.record({"request_id": "req", "response_id": "resp", "latency": "95", "request_body": "{}",
                                 "request_created_at": "2025-06-10T09:00:00Z",
                                 "response_created_at": "2025-06-10T09:00:09Z"})
    assert (with_both["exchange_id"], with_both["latency_ms"]) == ("req", "95")  # the column before the timestamps


_session = st.text(min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(_session, st.text(max_size=30))
def test_a_json_field_with_the_export_tools_doubled_quotes_reads_as_its_json(session, prompt):
    """index.ts doubles every quote of an object field before CSV quoting doubles them again."""
    properties = json.dumps({"Helicone-Session-Id": session}).replace('"', '""')
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]}).replace('"', '""')
    row = helicone.record({"response_id": "x", "request_created_at": "2025-06-10T09:00:00Z", "request_user_id": "u",
                           "request_properties": properties, "request_body": body})
    assert (row["conversation_id"], row["prompt"], row["model"]) == (session, prompt, "m")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["response_id", "response_created_at", "request_created_at", "request_body",
                                        "request_properties", "request_user_id", "model", "prompt_tokens",
                                        "latency", "delay_ms", "cost"]),
                       st.text(max_size=40) | st.text(max_size=40).map(lambda t: '{""' + t)))
def test_the_helicone_mapper_answers_a_record_for_any_csv_row(row):
    out = helicone.record(row)
    assert isinstance(out, dict)
    assert out.get("latency_ms") is None or isinstance(out["latency_ms"], (str, float))
