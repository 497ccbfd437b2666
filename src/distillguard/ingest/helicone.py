"""Helicone request exports (JSON Lines, JSON or CSV) -> canonical records.

The shape is Helicone's ``HeliconeRequest`` (valhalla/jawn/src/lib/stores/request/request.ts,
Helicone/helicone), which its REST API (``POST /v1/request/query``) returns and its UI exports:
``request_id``, ``request_created_at``, ``request_body``, ``request_path``, ``request_user_id``
(the ``Helicone-User-Id`` header), ``request_properties`` (``Helicone-Property-*`` and
``Helicone-Session-Id``), ``request_model``, ``helicone_user``, ``provider``, ``delay_ms``,
``prompt_tokens``, ``completion_tokens``, ``response_status``, ``response_model``,
``response_body``, ``country_code``. Helicone keeps no client address or user agent.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from distillguard.ingest import openai_pairs

FILLS = ("exchange_id", "timestamp", "account_id", "conversation_id", "model", "prompt", "system_prompt",
         "turn_index", "max_tokens", "tool_count", "input_tokens", "output_tokens", "status_code", "latency_ms")
SIGNATURE = ("request_id", "request_created_at", "request_body")
#: what the request API puts in request_body when the body lives in object storage (signed_body_url)
NO_BODY = ("carry no request body, only Helicone's placeholder (the body is behind signed_body_url: export "
           "with bodies, e.g. its export tool's --include-body); they are ingested with an empty prompt, so only "
           "the metadata signals see them")


def is_helicone_record(obj: Mapping[str, Any]) -> bool:
    return all(k in obj for k in SIGNATURE)


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


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
        "exchange_id": obj.get("request_id"),
        "timestamp": _time_text(obj.get("request_created_at")),
        "account_id": obj.get("request_user_id") or obj.get("helicone_user"),
        "conversation_id": session,
        "model": obj.get("request_model") or obj.get("model_override") or obj.get("response_model")
        or obj.get("model"),
        "input_tokens": obj.get("prompt_tokens"),
        "output_tokens": obj.get("completion_tokens"),
        "status_code": obj.get("response_status"),
        "latency_ms": obj.get("delay_ms"),
    }
    body = _json(obj.get("request_body"))
    if isinstance(body, dict) and set(body) == {"helicone_message"}:
        out["prompt"], out["_notes"] = "", (NO_BODY,)
    elif isinstance(body, dict) and openai_pairs.is_pair({"request": body}):
        request = openai_pairs.to_flat({"request": body})
        for name in ("prompt", "system_prompt", "turn_index", "max_tokens", "tool_count"):
            out[name] = request.get(name)
    return {k: v for k, v in out.items() if v is not None and (v != "" or k == "prompt")}
