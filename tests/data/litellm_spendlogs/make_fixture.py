"""Writes spendlogs.csv and spendlogs.jsonl: LiteLLM_SpendLogs rows made by LiteLLM's own
``get_logging_payload`` (litellm/proxy/spend_tracking/spend_tracking_utils.py, the function the
proxy calls before it inserts a row), serialised as a PostgreSQL export of that table writes them:
CSV from ``COPY "LiteLLM_SpendLogs" TO STDOUT CSV HEADER`` (JSON columns as JSON text, times as
timestamp(3) text), JSON Lines from ``row_to_json``. Half the requests are logged with
``store_prompts_in_spend_logs`` on (the request body kept), half with it off (``{}``).

Run: LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python tests/data/litellm_spendlogs/make_fixture.py
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm.proxy import proxy_server  # noqa: E402
from litellm.proxy.spend_tracking.spend_tracking_utils import get_logging_payload  # noqa: E402

HERE = Path(__file__).parent
COLUMNS = [line.split()[0] for line in """request_id call_type api_key spend total_tokens prompt_tokens
completion_tokens startTime endTime request_duration_ms completionStartTime model model_id model_group
custom_llm_provider api_base user metadata cache_hit cache_key request_tags team_id organization_id end_user
requester_ip_address messages response session_id status mcp_namespaced_tool_name billing_agent_id agent_id
proxy_server_request litellm_call_id created_at updated_at""".split()]
JSON_COLUMNS = {"metadata", "request_tags", "messages", "response", "proxy_server_request"}

ACCOUNTS = [  # (hashed key, key owner, team, org, end user, client address, user agent)
    ("88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", "alice@acme.test", "team-research",
     "org-acme", "", "203.0.113.7", "OpenAI/Python 1.82.0"),
    ("2f3c9e0d5b1a4c7e8f6a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e", "bot@scrape.test", "", "",
     "customer-4411", "2001:db8::42", "python-httpx/0.28.1"),
]


def kwargs_for(i: int, store_prompts: bool) -> tuple[dict, dict, datetime, datetime]:
    key, user, team, org, end_user, ip, agent = ACCOUNTS[i % 2]
    body = {"model": "gpt-4o-mini", "max_tokens": 256,
            "messages": [{"role": "system", "content": "You are a careful assistant."},
                         {"role": "user", "content": f"Explain step {i} of the proof in full detail."}]}
    if end_user:
        body["user"] = end_user
    metadata = {"user_api_key": key, "user_api_key_hash": key, "user_api_key_user_id": user,
                "user_api_key_team_id": team or None, "user_api_key_org_id": org or None,
                "user_api_key_end_user_id": end_user or None, "requester_ip_address": ip,
                "user_agent": agent, "model_group": "gpt-4o-mini", "model_info": {"id": "deploy-1"},
                "headers": {"user-agent": agent}}
    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=7 * i)
    end = start + timedelta(milliseconds=850 + 40 * i)
    kwargs = {"model": "gpt-4o-mini", "call_type": "acompletion", "custom_llm_provider": "openai",
              "litellm_call_id": f"call-{i:04d}", "messages": body["messages"],
              "litellm_params": {"metadata": metadata, "api_base": "https://api.openai.com/v1",
                                 "proxy_server_request": {"url": "http://localhost:4000/chat/completions",
                                                          "method": "POST", "headers": {"user-agent": agent},
                                                          "body": body},
                                 "user": end_user or None}}
    response = litellm.ModelResponse(id=f"chatcmpl-{i:04d}", model="gpt-4o-mini-2024-07-18",
                                     choices=[{"message": {"role": "assistant", "content": "Step ..."}}],
                                     usage={"prompt_tokens": 31 + i, "completion_tokens": 120 + i,
                                            "total_tokens": 151 + 2 * i})
    return kwargs, response, start, end


def main() -> None:
    rows = []
    for i in range(8):
        store_prompts = i < 4
        proxy_server.general_settings["store_prompts_in_spend_logs"] = store_prompts
        kwargs, response, start, end = kwargs_for(i, store_prompts)
        payload = dict(get_logging_payload(kwargs, response, start, end))
        rows.append({c: payload.get(c) for c in COLUMNS})
    with (HERE / "spendlogs.jsonl").open("w") as fh:
        for row in rows:
            out = {c: (json.loads(v) if c in JSON_COLUMNS and isinstance(v, str) else v) for c, v in row.items()}
            fh.write(json.dumps(out, default=_pg_json_time) + "\n")
    with (HERE / "spendlogs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_pg_csv(row[c]) for c in COLUMNS])


def _pg_json_time(value: object) -> str:
    """row_to_json writes timestamp(3) as 2026-03-02T09:00:00.85 (no zone)."""
    assert isinstance(value, datetime)
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _pg_csv(value: object) -> str:
    """COPY ... CSV writes NULL as an empty field, timestamp(3) as 2026-03-02 09:00:00.85."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


if __name__ == "__main__":
    main()
