"""Langfuse batch exports (observations or traces, as JSON Lines, JSON or CSV) -> canonical records.

Shapes as the Langfuse worker writes them (worker/src/features/database-read-stream/
observation-stream.ts and trace-stream.ts, langfuse/langfuse): an observation carries ``id``,
``traceId``, ``type`` (GENERATION, SPAN, EVENT ...), ``startTime``, ``endTime``, ``model``,
``modelParameters``, ``input``, ``output``, ``usageDetails`` / ``inputUsage`` / ``outputUsage``,
``metadata``, and from its trace ``userId`` (``sessionId`` in exports from the events table); a
trace carries ``id``, ``timestamp``, ``userId``, ``sessionId``, ``input``, ``output``, ``metadata``.
In CSV exports ``input``, ``output`` and ``metadata`` are JSON text; the public API (v2) returns
input and output as raw text too, and a Parquet file or the SDK's ``dict()`` has datetimes.
Only generations are model calls: other observations are quarantined with that reason, so the
count still balances.

A generation's input is whatever the instrumented framework logged: an OpenAI-style chat list or
body, chat messages with ``parts`` (OTel GenAI, Gemini), a Gemini ``generate_content`` body
(``contents``, ``config.system_instruction``), or plain text. Any other shape (llama-index's
``{"args": [...]}``) is kept as a model call whose prompt is the input's JSON text, counted in
the file's warnings.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from distillguard.ingest import openai_pairs

FILLS = ("exchange_id", "timestamp", "account_id", "conversation_id", "model", "prompt", "system_prompt",
         "turn_index", "max_tokens", "tool_count", "input_tokens", "output_tokens", "latency_ms")
NOT_GENERATION = "not a model call: Langfuse observation of type {}"
UNKNOWN_INPUT = "carry an input in no chat shape: the prompt is the input's JSON text"


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


def _parts_text(parts: Any) -> str | None:
    """The text parts of an OTel GenAI or Gemini message (``{"type": "text", "content"}``, ``{"text"}``)."""
    if not isinstance(parts, list):
        return None
    texts = [p.get("text") if isinstance(p.get("text"), str) else p.get("content") for p in parts
             if isinstance(p, dict) and (isinstance(p.get("text"), str)
                                         or (p.get("type") == "text" and isinstance(p.get("content"), str)))]
    return "\n".join(texts)


def _chat(messages: list[Any]) -> list[Any]:
    """Chat messages with OpenAI's ``role``/``content``: ``parts`` become their text, Gemini's
    ``model`` role is the assistant."""
    out = []
    for message in messages:
        if isinstance(message, dict) and "content" not in message and "parts" in message:
            role = message.get("role")
            message = {"role": "assistant" if role == "model" else role, "content": _parts_text(message["parts"])}
        out.append(message)
    return out


def _gemini(body: dict[str, Any]) -> dict[str, Any] | None:
    """A Gemini ``generate_content`` body (``contents``, ``config``) as an OpenAI-style chat body."""
    contents = body.get("contents")
    if not isinstance(contents, list):
        return None
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    system = config.get("system_instruction", body.get("systemInstruction"))
    if isinstance(system, dict):
        system = _parts_text(system.get("parts"))
    messages = ([{"role": "system", "content": system}] if isinstance(system, str) else []) + _chat(contents)
    return {"model": body.get("model"), "messages": messages, "tools": config.get("tools", body.get("tools"))}


def _request(value: Any) -> dict[str, Any] | None:
    """The generation's input as a request body: a chat list, a body with messages, a Gemini
    body, or text; None for any other shape."""
    value = _json(value)
    if isinstance(value, list):
        return {"messages": _chat(value)}
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            value = {**value, "messages": _chat(value["messages"])}
        return value if openai_pairs.is_pair({"request": value}) else _gemini(value)
    if isinstance(value, str):
        return {"prompt": value}
    return None


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else (
        value if isinstance(value, str) and value.strip() else None)


def _time(value: Any) -> datetime | None:
    """An ISO-8601 text or a datetime (Parquet, the SDK's ``dict()``); naive times are UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _time_text(value: Any) -> Any:
    """A datetime as the ISO text ingest reads (naive ones are UTC); text passes as it is."""
    time = _time(value) if isinstance(value, datetime) else None
    return time.isoformat() if time is not None else value


def _latency_ms(start: Any, end: Any) -> float | None:
    start, end = _time(start), _time(end)
    return None if start is None or end is None else (end - start).total_seconds() * 1000


def _max_tokens(parameters: dict[str, Any]) -> int | None:
    """The output limit of the model parameters; frameworks log -1 or 0 for "no limit" (autogen)."""
    value = parameters.get("max_tokens", parameters.get("max_completion_tokens",
                                                        parameters.get("max_output_tokens")))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def record(obj: Mapping[str, Any]) -> dict[str, Any] | str:
    kind = obj.get("type")
    if "traceId" in obj and kind not in (None, "", "GENERATION"):
        return NOT_GENERATION.format(kind)
    out: dict[str, Any] = {"exchange_id": obj.get("id"), "timestamp": _time_text(obj.get("startTime", obj.get("timestamp"))),
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
    elif obj.get("input") not in (None, ""):
        out["prompt"] = json.dumps(_json(obj["input"]), ensure_ascii=False, sort_keys=True, default=str)
        out["_notes"] = (UNKNOWN_INPUT,)
    parameters = _json(obj.get("modelParameters"))
    if isinstance(parameters, dict):
        out["max_tokens"] = _max_tokens(parameters)
    # a turn that answers a tool call has no user text: an empty prompt, not a missing one
    return {k: v for k, v in out.items() if v is not None and (v != "" or k == "prompt")}
