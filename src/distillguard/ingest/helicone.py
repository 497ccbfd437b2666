"""Helicone request exports (JSON Lines, JSON or CSV) -> canonical records.

The shape is Helicone's ``HeliconeRequest`` (valhalla/jawn/src/lib/stores/request/request.ts,
Helicone/helicone), which its REST API (``POST /v1/request/query``) returns and its UI exports:
``request_id``, ``request_created_at``, ``request_body``, ``request_path``, ``request_user_id``
(the ``Helicone-User-Id`` header), ``request_properties`` (``Helicone-Property-*`` and
``Helicone-Session-Id``), ``request_model``, ``helicone_user``, ``provider``, ``delay_ms``,
``prompt_tokens``, ``completion_tokens``, ``response_status``, ``response_model``,
``response_body``, ``country_code``. Helicone keeps no client address or user agent.

Its export tool (examples/export/typescript/index.ts) writes those rows as JSON Lines unchanged,
and as CSV with only ``response_id``, ``response_created_at``, ``response_status``,
``request_created_at``, ``request_body``, ``request_properties``, ``request_user_id``, ``model``,
``prompt_tokens``, ``completion_tokens``, ``latency`` and ``cost``: no ``request_id`` (the
response's id is then the exchange id, so a CSV and a JSON Lines export of the same requests do
not deduplicate against each other), an empty ``model`` and ``latency`` (the API rows have
neither; the model comes from the request body, the latency from the two timestamps), and
object fields with their quotes doubled once more than CSV needs (read back here). Rows whose
body lives in object storage carry a placeholder instead of it unless exported with
``--include-body``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from distillguard.ingest import openai_pairs

FILLS = ("exchange_id", "timestamp", "account_id", "conversation_id", "model", "prompt", "system_prompt",
         "turn_index", "max_tokens", "tool_count", "input_tokens", "output_tokens", "status_code", "latency_ms")
#: every export carries these, and request_id (the API's rows) or response_id (the export tool's CSV)
SIGNATURE = ("request_created_at", "request_body")
IDS = ("request_id", "response_id")
#: what the request API puts in request_body when the body lives in object storage (signed_body_url)
NO_BODY = ("carry no request body, only Helicone's placeholder (the body is behind signed_body_url: export "
           "with bodies, e.g. its export tool's --include-body); they are ingested with an empty prompt, so only "
           "the metadata signals see them")


def is_helicone_record(obj: Mapping[str, Any]) -> bool:
    return all(k in obj for k in SIGNATURE) and any(k in obj for k in IDS)


def _json(value: Any) -> Any:
    """A JSON object or array held as text, parsed; the export tool's CSV doubles every quote of
    an object field before CSV quoting doubles them again, so text that is not JSON as read is
    tried with its doubled quotes undone (exact: the tool doubled every one)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        for text in (value, value.replace('""', '"')):
            try:
                return json.loads(text)
            except ValueError:
                continue
    return value


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from one ISO time to another (the export's two timestamps), None if either is not one."""
    try:
        first, last = (datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in (start, end))
        return (last - first).total_seconds()
    except (ValueError, TypeError):
        return None


def _time_text(value: Any) -> Any:
    """A datetime (Parquet, a database driver) as the ISO text ingest reads, naive ones UTC."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def record(obj: Mapping[str, Any]) -> dict[str, Any] | str:
    properties = _json(obj.get("request_properties"))
    properties = properties if isinstance(properties, dict) else {}
    session = next((v for k, v in properties.items() if str(k).lower() == "helicone-session-id"), None)
    out: dict[str, Any] = {
        "exchange_id": obj.get("request_id") or obj.get("response_id"),
        "timestamp": _time_text(obj.get("request_created_at")),
        "account_id": obj.get("request_user_id") or obj.get("helicone_user"),
        "conversation_id": session,
        "model": obj.get("request_model") or obj.get("model_override") or obj.get("response_model")
        or obj.get("model"),
        "input_tokens": obj.get("prompt_tokens"),
        "output_tokens": obj.get("completion_tokens"),
        "status_code": obj.get("response_status"),
        "latency_ms": _latency_ms(obj),
    }
    body = _json(obj.get("request_body"))
    if isinstance(body, dict) and set(body) == {"helicone_message"}:
        out["prompt"], out["_notes"] = "", (NO_BODY,)
    elif isinstance(body, dict) and openai_pairs.is_pair({"request": body}):
        request = openai_pairs.to_flat({"request": body})
        for name in ("prompt", "system_prompt", "turn_index", "max_tokens", "tool_count"):
            out[name] = request.get(name)
        out["model"] = out["model"] or request.get("model")
    return {k: v for k, v in out.items() if v is not None and (v != "" or k == "prompt")}


def _latency_ms(obj: Mapping[str, Any]) -> Any:
    """Helicone's ``delay_ms``, else the CSV's ``latency`` column, else the time from the request's
    creation to the response's (what the CSV has: the API rows carry no ``latency`` for it)."""
    for name in ("delay_ms", "latency"):
        if obj.get(name) not in (None, ""):
            return obj[name]
    if obj.get("response_created_at") in (None, ""):
        return None
    seconds = _seconds_between(_time_text(obj.get("request_created_at")), _time_text(obj["response_created_at"]))
    return None if seconds is None or seconds < 0 else round(seconds * 1000, 3)
