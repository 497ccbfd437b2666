"""Langfuse batch exports (observations or traces, as JSON Lines, JSON or CSV) -> canonical records.

Shapes as the Langfuse worker writes them (worker/src/features/database-read-stream/
observation-stream.ts and trace-stream.ts, langfuse/langfuse): an observation carries ``id``,
``traceId``, ``type`` (GENERATION, SPAN, EVENT ...), ``startTime``, ``endTime``, ``model``,
``modelParameters``, ``input``, ``output``, ``usageDetails`` / ``inputUsage`` / ``outputUsage``,
``metadata``, and from its trace ``userId`` (``sessionId`` in exports from the events table); a
trace carries ``id``, ``timestamp``, ``userId``, ``sessionId``, ``input``, ``output``, ``metadata``.
In CSV exports ``input``, ``output`` and ``metadata`` are JSON text. Only generations are model
calls: other observations are quarantined with that reason, so the count still balances.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

from distillguard.ingest import openai_pairs

FILLS = ("exchange_id", "timestamp", "account_id", "conversation_id", "model", "prompt", "system_prompt",
         "turn_index", "max_tokens", "tool_count", "input_tokens", "output_tokens", "latency_ms")
NOT_GENERATION = "not a model call: Langfuse observation of type {}"


def is_langfuse_record(obj: Mapping[str, Any]) -> bool:
    observation = "traceId" in obj and "startTime" in obj and "type" in obj
    trace = {"id", "timestamp", "userId", "sessionId", "input"} <= set(obj)
    return observation or trace


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _request(value: Any) -> dict[str, Any] | None:
    """The generation's input as a request body: a chat list, a body with messages, or text."""
    value = _json(value)
    if isinstance(value, list):
        return {"messages": value}
    if isinstance(value, dict):
        return value if openai_pairs.is_pair({"request": value}) else None
    if isinstance(value, str):
        return {"prompt": value}
    return None


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else (
        value if isinstance(value, str) and value.strip() else None)


def _latency_ms(start: Any, end: Any) -> float | None:
    try:
        return (datetime.fromisoformat(str(end).replace("Z", "+00:00"))
                - datetime.fromisoformat(str(start).replace("Z", "+00:00"))).total_seconds() * 1000
    except (TypeError, ValueError):
        return None


def record(obj: Mapping[str, Any]) -> dict[str, Any] | str:
    kind = obj.get("type")
    if "traceId" in obj and kind not in (None, "", "GENERATION"):
        return NOT_GENERATION.format(kind)
    out: dict[str, Any] = {"exchange_id": obj.get("id"), "timestamp": obj.get("startTime", obj.get("timestamp")),
                           "account_id": obj.get("userId"), "conversation_id": obj.get("sessionId"),
                           "model": obj.get("model")}
    usage = _json(obj.get("usageDetails"))
    usage = usage if isinstance(usage, dict) else {}
    legacy = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    out["input_tokens"] = next((v for v in (obj.get("inputUsage"), usage.get("input"), legacy.get("input"))
                                if _number(v) is not None), None)
    out["output_tokens"] = next((v for v in (obj.get("outputUsage"), usage.get("output"), legacy.get("output"))
                                 if _number(v) is not None), None)
    if obj.get("endTime"):
        out["latency_ms"] = _latency_ms(obj.get("startTime"), obj.get("endTime"))
    body = _request(obj.get("input"))
    if body is not None:
        request = openai_pairs.to_flat({"request": body})
        for name in ("prompt", "system_prompt", "turn_index", "tool_count"):
            out[name] = request.get(name)
    parameters = _json(obj.get("modelParameters"))
    if isinstance(parameters, dict):
        out["max_tokens"] = parameters.get("max_tokens", parameters.get("max_completion_tokens"))
    return {k: v for k, v in out.items() if v is not None and v != ""}
