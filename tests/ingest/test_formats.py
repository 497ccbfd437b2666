"""Named log formats: each source's real export ingests whole, says what it was, and maps identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.errors import UserError
from distillguard.ingest import ingest_paths
from distillguard.ingest import helicone, langfuse, litellm, otel
from distillguard.ingest.fieldmap import FieldMap
from distillguard.ingest.formats import detect

SPENDLOGS = Path(__file__).parent.parent / "data" / "litellm_spendlogs"


@pytest.mark.parametrize("name", ["spendlogs.csv", "spendlogs.jsonl"])
def test_litellm_spendlogs_export_ingests_every_row_and_a_second_run_adds_nothing(store, name):
    first, = ingest_paths(store, [SPENDLOGS / name])
    assert (first.log_format, first.rows_in, first.rows_stored, first.rows_quarantined) == ("litellm-spendlogs", 8, 8, 0)
    assert first.balanced
    assert first.warnings and first.warnings[0].startswith("4 of 8 records carry no prompt")
    again, = ingest_paths(store, [SPENDLOGS / name])
    assert (again.rows_stored, again.rows_duplicate, again.rows_quarantined) == (0, 8, 0)


def test_csv_and_jsonl_exports_of_the_same_spendlogs_rows_store_the_same_exchanges(store):
    csv_result, jsonl_result = ingest_paths(store, [SPENDLOGS / "spendlogs.csv", SPENDLOGS / "spendlogs.jsonl"])
    assert csv_result.rows_stored == 8 and jsonl_result.rows_duplicate == 8


def test_spendlogs_identity_address_and_user_agent_come_from_the_row_and_its_metadata(store):
    ingest_paths(store, [SPENDLOGS / "spendlogs.jsonl"])
    rows = store.con.execute(
        "SELECT exchange_id, account_id, api_key_id, organization_id, client_ip, user_agent, prompt, system_prompt, "
        "max_tokens, latency_ms FROM exchanges ORDER BY exchange_id").fetchall()
    by_id = {r[0]: r for r in rows}
    stored_prompt = by_id["chatcmpl-0000"]
    assert stored_prompt[1:6] == ("alice@acme.test", "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                                  "org-acme", "203.0.113.7", "OpenAI/Python 1.82.0")
    assert stored_prompt[6:9] == ("Explain step 0 of the proof in full detail.", "You are a careful assistant.", 256)
    assert stored_prompt[9] == 850.0
    customer = by_id["chatcmpl-0001"]
    assert (customer[1], customer[4], customer[5]) == ("customer-4411", "2001:db8::42", "python-httpx/0.28.1")
    assert by_id["chatcmpl-0004"][6] == ""  # logged without its body: kept, prompt empty


def test_spendlogs_record_reads_psycopg_values_and_json_text_alike():
    from datetime import datetime

    row = {"request_id": "r1", "call_type": "acompletion", "api_key": "k", "startTime": datetime(2026, 1, 1, 9),
           "endTime": datetime(2026, 1, 1, 9, 0, 1), "user": "", "team_id": "team-a", "status": "success",
           "metadata": '{"requester_ip_address": "198.51.100.2"}', "proxy_server_request": {}}
    record = litellm.spendlogs_record(row)
    assert record["timestamp"] == "2026-01-01T09:00:00+00:00"
    assert (record["account_id"], record["client_ip"], record["status_code"], record["latency_ms"]) == (
        "team-a", "198.51.100.2", 200, 1000.0)
    assert record["prompt"] == "" and not litellm.prompts_stored(row)


def test_a_named_format_overrides_detection(store, tmp_path):
    rows = [json.loads(line) for line in (SPENDLOGS / "spendlogs.jsonl").read_text().splitlines()]
    odd = tmp_path / "odd.jsonl"  # without call_type, detection cannot tell it is SpendLogs
    odd.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "call_type"}) + "\n" for r in rows))
    result, = ingest_paths(store, [odd], log_format="litellm-spendlogs")
    assert (result.log_format, result.rows_stored, result.rows_quarantined) == ("litellm-spendlogs", 8, 0)


def test_detection_falls_back_to_the_canonical_format():
    assert detect({"exchange_id": "a", "prompt": "p"}).name == "canonical"
    assert detect(None).name == "canonical"
    assert detect({"traceId": "t", "startTime": "2026-01-01T00:00:00Z", "type": "GENERATION"}).name == "langfuse"
    assert detect({"request_id": "r", "request_created_at": "x", "request_body": {}}).name == "helicone"


def test_field_map_reads_columns_and_json_paths(store, tmp_path):
    logs = tmp_path / "own.jsonl"
    logs.write_text(json.dumps({"rid": "x1", "at": "2026-02-01T10:00:00Z", "customer": {"ref": "c-9"},
                                "body": {"messages": [{"role": "user", "content": "first"},
                                                      {"role": "user", "content": "last"}]}}) + "\n")
    field_map = tmp_path / "map.yaml"
    field_map.write_text("fields:\n  exchange_id: rid\n  timestamp: at\n  account_id: customer.ref\n"
                         "  prompt: $.body.messages[-1].content\n")
    result, = ingest_paths(store, [logs], field_map=FieldMap.load(field_map))
    assert (result.rows_stored, result.rows_quarantined) == (1, 0)
    assert store.con.execute("SELECT account_id, prompt FROM exchanges").fetchone() == ("c-9", "last")


def test_a_field_map_naming_an_unknown_canonical_field_is_one_error_line_and_exit_2(tmp_path):
    field_map = tmp_path / "map.yaml"
    field_map.write_text("fields:\n  acount_id: customer\n")
    result = CliRunner().invoke(app, ["ingest", str(SPENDLOGS / "spendlogs.csv"), "--db", str(tmp_path / "s.duckdb"),
                                      "--map", str(field_map)])
    assert result.exit_code == 2
    assert "fields.acount_id: unknown canonical field" in result.output
    with pytest.raises(UserError):
        FieldMap.load(field_map)


def test_formats_command_lists_every_format_with_the_fields_it_fills():
    result = CliRunner().invoke(app, ["formats", "--json"])
    listed = {f["name"]: f["fills"] for f in json.loads(result.output)}
    assert {"litellm-spendlogs", "langfuse", "helicone", "otel", "openai-pairs", "canonical"} <= set(listed)
    assert "client_ip" in listed["litellm-spendlogs"] and "system_prompt" in listed["otel"]


def test_ingest_json_summary_names_the_format_used(tmp_path):
    result = CliRunner().invoke(app, ["ingest", str(SPENDLOGS / "spendlogs.csv"), "--db", str(tmp_path / "s.duckdb"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["files"][0]["log_format"] == "litellm-spendlogs"


def test_otel_system_instructions_and_tool_definitions_fill_system_prompt_and_tool_count():
    record = otel.from_sdk_span({
        "context": {"span_id": "s", "trace_id": "t"}, "start_time": "2026-01-01T00:00:00Z",
        "attributes": {"gen_ai.request.model": "m",
                       "gen_ai.system_instructions": json.dumps([
                           {"type": "text", "content": "You are a helpful bot"},
                           {"type": "generic", "generic_type": "cache_control", "cache_control": {"type": "ephemeral"}}]),
                       "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
                       "gen_ai.tool.definitions": [{"type": "function", "name": "search"}]}})
    assert (record["system_prompt"], record["prompt"], record["tool_count"]) == ("You are a helpful bot", "hi", 1)


def test_langfuse_spans_are_not_model_calls_and_generations_map_usage_and_user():
    assert langfuse.record({"id": "o1", "traceId": "t", "type": "SPAN", "startTime": "x"}).startswith("not a model call")
    record = langfuse.record({"id": "o2", "traceId": "t", "type": "GENERATION", "startTime": "2026-01-01T00:00:00.000Z",
                              "endTime": "2026-01-01T00:00:02.000Z", "model": "gpt-4o", "userId": "u1",
                              "input": '[{"role": "user", "content": "hello"}]', "inputUsage": 5, "outputUsage": 7})
    assert (record["account_id"], record["prompt"], record["input_tokens"], record["latency_ms"]) == ("u1", "hello", 5, 2000.0)


def test_helicone_request_maps_user_session_and_body():
    record = helicone.record({"request_id": "h1", "request_created_at": "2026-01-01T00:00:00Z",
                              "request_user_id": "cust-1", "request_properties": {"Helicone-Session-Id": "s-1"},
                              "request_body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]},
                              "response_status": 200, "delay_ms": 321, "prompt_tokens": 3})
    assert (record["account_id"], record["conversation_id"], record["prompt"], record["latency_ms"]) == (
        "cust-1", "s-1", "q", 321)


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["request_id", "call_type", "api_key", "startTime", "endTime", "user",
                                        "metadata", "messages", "proxy_server_request", "status", "end_user"]),
                       _json_values | st.text(max_size=30)))
def test_mappers_never_raise_on_arbitrary_records(row):
    for mapper in (litellm.spendlogs_record, langfuse.record, helicone.record):
        assert isinstance(mapper(row), (dict, str))
    FieldMap({"prompt": "metadata.a[0].b", "account_id": "user"}).apply(row)
