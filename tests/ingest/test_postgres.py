"""The LiteLLM SpendLogs source, read live from a real PostgreSQL server (tests/ingest/conftest.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg
import pytest

from distillguard.errors import IngestError
from distillguard.ingest.postgres import TABLE, ingest_spendlogs, redacted

T0 = datetime(2026, 11, 20, 9, 30, 0, 125000)  # naive UTC, as LiteLLM stores "startTime"


def spendlog(i: int, start: datetime = T0, *, prompt: str | None = "Explain step by step: item {i}",
             **overrides) -> dict:
    """One row in the shape LiteLLM's get_logging_payload writes (spend_tracking_utils.py)."""
    request = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be terse."},
                                              {"role": "user", "content": prompt.format(i=i)}],
               "max_tokens": 512} if prompt is not None else None
    row = {
        "request_id": f"chatcmpl-{i:06d}", "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.00042, "total_tokens": 130, "prompt_tokens": 30, "completion_tokens": 100,
        "startTime": start, "endTime": start + timedelta(milliseconds=850),
        "model": "gpt-4o-2024-08-06", "model_group": "gpt-4o", "custom_llm_provider": "openai",
        "user": "owner-1", "end_user": f"customer-{i % 3}", "team_id": "team-a", "organization_id": "org-1",
        "requester_ip_address": "203.0.113.7", "session_id": f"sess-{i % 5}", "status": "success",
        "metadata": json.dumps({"user_api_key_org_id": "org-1", "user_agent": "OpenAI/Python 1.54.0",
                                "requester_ip_address": "203.0.113.7"}),
        "messages": json.dumps(request["messages"] if request else {}),
        "response": json.dumps({}),
        "proxy_server_request": json.dumps({"body": request} if request else {}),
    }
    row.update(overrides)
    return row


def insert(url: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("%s" for _ in columns)
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.executemany(f'INSERT INTO "{TABLE}" ({names}) VALUES ({marks})',
                        [[r[c] for c in columns] for r in rows])


def test_spendlogs_rows_become_exchanges_with_identity_address_agent_and_prompt(store, litellm_db):
    insert(litellm_db, [spendlog(i) for i in range(3)])
    done = ingest_spendlogs(store, litellm_db)
    r = done.result
    assert (r.rows_in, r.rows_stored, r.rows_duplicate, r.rows_quarantined) == (3, 3, 0, 0)
    assert done.warnings == []
    row = store.con.execute(
        "SELECT exchange_id, timestamp, account_id, api_key_id, organization_id, client_ip, user_agent, model, "
        "conversation_id, prompt, system_prompt, input_tokens, output_tokens, max_tokens, status_code, latency_ms "
        "FROM exchanges WHERE exchange_id = 'chatcmpl-000001'").fetchone()
    assert row[0] == "chatcmpl-000001"
    assert row[1].replace(tzinfo=None) == T0
    assert row[2:] == ("customer-1", spendlog(1)["api_key"], "org-1", "203.0.113.7", "OpenAI/Python 1.54.0",
                       "gpt-4o", "sess-1", "Explain step by step: item 1", "Be terse.", 30, 100, 512, 200, 850.0)
