"""LiteLLM proxy SpendLogs rows (the ``"LiteLLM_SpendLogs"`` table) -> canonical records.

One function, ``spendlogs_record``, maps a row however it was read: exported as CSV (every
value text, JSON columns as JSON text), as JSON Lines (JSON columns as objects or as text),
or live from PostgreSQL (datetimes, dicts). Column names are the table's own, as created by
LiteLLM's migrations (``"startTime"``, ``"endTime"``, ``"user"`` quoted there).

What LiteLLM stores, per ``get_logging_payload`` in litellm/proxy/spend_tracking/
spend_tracking_utils.py: the key's hash in ``api_key``; the key owner in ``user``, its team
and organisation in ``team_id`` / ``organization_id``; the customer the caller named (the
request's ``user`` field) in ``end_user``; the client address in ``requester_ip_address``
and, inside the ``metadata`` JSON, ``requester_ip_address`` and ``user_agent`` (taken from
the request headers). The request body is kept in ``proxy_server_request`` only when the
proxy runs with ``store_prompts_in_spend_logs: true``; otherwise that column (and
``messages``) holds ``{}``. Such rows are still exchanges: their prompt is stored empty, so
the metadata signals (timing, identity, addresses, token counts) still see them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from distillguard.ingest import openai_pairs

#: the account an exchange is charged to, finest first: the customer the caller named, the
#: key's owner, its team, the key itself (a key with no owner is its own account)
ACCOUNT_COLUMNS = ("end_user", "user", "team_id", "api_key")

#: canonical field -> the SpendLogs columns it is read from, first present wins
DIRECT: dict[str, tuple[str, ...]] = {
    "exchange_id": ("request_id",),
    "timestamp": ("startTime",),
    "api_key_id": ("api_key",),
    "end_user": ("end_user",),
    "organization_id": ("organization_id",),
    "client_ip": ("requester_ip_address",),
    "model": ("model_group", "model"),
    "conversation_id": ("session_id",),
    "input_tokens": ("prompt_tokens",),
    "output_tokens": ("completion_tokens",),
    "latency_ms": ("request_duration_ms",),
}

#: the canonical fields a SpendLogs row can fill (``distillguard formats`` lists them)
FILLS = ("exchange_id", "timestamp", "account_id", "api_key_id", "end_user", "organization_id", "client_ip",
         "user_agent", "model", "conversation_id", "prompt", "system_prompt", "turn_index", "max_tokens", "tool_count",
         "input_tokens", "output_tokens", "status_code", "latency_ms")

#: the columns that say a record is a SpendLogs row (content detection)
SIGNATURE = ("request_id", "call_type", "startTime", "api_key")


def is_spendlogs_row(obj: Mapping[str, Any]) -> bool:
    return all(k in obj for k in SIGNATURE)


def _json(value: Any) -> Any:
    """A JSON column's value: already decoded (psycopg, JSON Lines) or JSON text (CSV)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _scalar(value: Any) -> Any:
    """A database value as ingest reads it: datetimes as ISO text (naive ones are UTC, as
    Prisma writes them), everything else unchanged."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def request_body(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored request body (``proxy_server_request``, or ``messages`` when that holds the
    chat list), or None when prompts were not stored."""
    body = _json(row.get("proxy_server_request"))
    if isinstance(body, dict) and isinstance(body.get("body"), dict):
        body = body["body"]  # the proxy's own {"url", "method", "headers", "body"} wrapping
    if isinstance(body, dict) and openai_pairs.is_pair({"request": body}):
        return body
    messages = _json(row.get("messages"))
    if isinstance(messages, list) and messages:
        return {"messages": messages}
    if isinstance(messages, dict) and openai_pairs.is_pair({"request": messages}):
        return messages
    return None


def prompts_stored(row: Mapping[str, Any]) -> bool:
    """Whether the row carries its request (the proxy stored prompts)."""
    return request_body(row) is not None


def _user_agent(row: Mapping[str, Any], metadata: dict[str, Any]) -> Any:
    if _present(metadata.get("user_agent")):
        return metadata["user_agent"]
    stored = _json(row.get("proxy_server_request"))
    headers = stored.get("headers") if isinstance(stored, dict) else None
    if isinstance(headers, dict):
        for name, value in headers.items():
            if str(name).lower() == "user-agent" and _present(value):
                return value
    return None


def _status_code(row: Mapping[str, Any], metadata: dict[str, Any]) -> Any:
    """LiteLLM logs ``status`` as success/failure; a failure's HTTP code is in the metadata's
    ``error_information.error_code`` when the provider returned one."""
    status = row.get("status")
    if status == "success":
        return 200
    if status == "failure":
        error = metadata.get("error_information")
        code = error.get("error_code") if isinstance(error, dict) else None
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            return int(code)
    return None


def _latency_ms(row: Mapping[str, Any]) -> float | None:
    start, end = row.get("startTime"), row.get("endTime")
    try:
        if not isinstance(start, datetime):
            start = datetime.fromisoformat(str(start))
        if not isinstance(end, datetime):
            end = datetime.fromisoformat(str(end))
        return (end - start).total_seconds() * 1000
    except (TypeError, ValueError):
        return None


def spendlogs_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One SpendLogs row (column name -> value) as canonical fields (absent ones left out).

    The prompt is the last user message of the stored request; a row whose request was not
    stored gets the empty prompt (see ``prompts_stored``) so that it is still ingested.
    """
    metadata = _json(row.get("metadata"))
    metadata = metadata if isinstance(metadata, dict) else {}
    record: dict[str, Any] = {}
    for field, columns in DIRECT.items():
        value = next((row[c] for c in columns if _present(row.get(c))), None)
        if value is not None:
            record[field] = _scalar(value)
    account = next((row[c] for c in ACCOUNT_COLUMNS if _present(row.get(c))), None)
    if account is not None:
        record["account_id"] = account
    if "client_ip" not in record and _present(metadata.get("requester_ip_address")):
        record["client_ip"] = metadata["requester_ip_address"]
    if "organization_id" not in record and _present(metadata.get("user_api_key_org_id")):
        record["organization_id"] = metadata["user_api_key_org_id"]
    # the key owner's address, when the key owner is the account (ingest keeps only its fingerprint)
    if (account is not None and account == metadata.get("user_api_key_user_id")
            and _present(metadata.get("user_api_key_user_email"))):
        record["email_address"] = metadata["user_api_key_user_email"]
    for field, value in (("user_agent", _user_agent(row, metadata)), ("status_code", _status_code(row, metadata)),
                         ("latency_ms", None if "latency_ms" in record else _latency_ms(row))):
        if value is not None:
            record[field] = value
    body = request_body(row)
    if body is None:
        record["prompt"] = ""
    else:
        request = openai_pairs.to_flat({"request": body})
        for field in ("prompt", "system_prompt", "turn_index", "max_tokens", "tool_count"):
            if request.get(field) is not None:
                record[field] = request[field]
        record.setdefault("prompt", "")
    return record
