"""OpenTelemetry GenAI spans exported as JSON -> canonical records.

Two exports are read: the OTLP/JSON ``ExportTraceServiceRequest`` (``resourceSpans`` ->
``scopeSpans`` -> ``spans`` with typed attribute lists and nanosecond times, as the collector's
file exporter writes it) and the Python SDK's ``span.to_json()`` (attributes as a plain
object, ISO times). Attribute names follow the GenAI semantic conventions; the schema's alias
table maps them (``gen_ai.request.model`` -> ``model``...). Spans with no ``gen_ai.*``
attribute (HTTP, database spans in the same trace) are not exchanges and are quarantined with
that reason, so the row count still adds up.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from distillguard.ingest.keys import canonical_keys

NOT_GENAI = "not a GenAI span: no gen_ai.* attribute"
#: canonical fields the GenAI attributes fill (gen_ai.response.id, gen_ai.conversation.id,
#: gen_ai.request.model, gen_ai.input.messages, gen_ai.system_instructions, gen_ai.tool.definitions,
#: gen_ai.request.max_tokens, gen_ai.usage.*, client.address, user_agent.original ...)
FILLS = ("exchange_id", "timestamp", "account_id", "client_ip", "user_agent", "model", "conversation_id",
         "system_prompt", "prompt", "input_tokens", "output_tokens", "max_tokens", "tool_count", "status_code",
         "latency_ms")


def is_otlp_export(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("resourceSpans"), list)


def is_sdk_span(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("attributes"), dict) and ("context" in obj or "start_time" in obj)


def _any_value(value: Any) -> Any:
    """Decode an OTLP ``AnyValue`` ({"stringValue": ...}, {"intValue": "12"}, ...)."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "arrayValue" in value:
        return [_any_value(v) for v in _list(_dict(value["arrayValue"]).get("values"))]
    if "kvlistValue" in value:
        return _attributes(_dict(value["kvlistValue"]).get("values"))
    return None


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is an object, else an empty one: an export from an unknown writer may put
    anything anywhere, and a wrong shape means "absent", never a crash."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attributes(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, list):
        return {kv["key"]: _any_value(kv.get("value")) for kv in items
                if isinstance(kv, dict) and isinstance(kv.get("key"), str)}
    return {}


def _prompt_from(attributes: dict[str, Any], events: Any) -> Any:
    """Last user message: ``gen_ai.input.messages`` (current), ``gen_ai.prompt`` (older) or events."""
    messages = attributes.get("gen_ai.input.messages")
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                parts = message.get("parts", message.get("content"))
                if isinstance(parts, str):
                    return parts
                if isinstance(parts, list):
                    texts = [p.get("content", p.get("text")) for p in parts if isinstance(p, dict)]
                    return "\n".join(t for t in texts if isinstance(t, str))
    if "gen_ai.prompt" in attributes:
        return attributes["gen_ai.prompt"]
    for event in reversed(events if isinstance(events, list) else []):
        if isinstance(event, dict) and event.get("name") == "gen_ai.user.message":
            body = _attributes(event.get("attributes"))
            content = body.get("content", body.get("gen_ai.event.content"))
            if isinstance(content, str):
                try:
                    decoded = json.loads(content)
                    content = decoded.get("content", content) if isinstance(decoded, dict) else content
                except ValueError:
                    pass
            return content
    return None


def _parts_text(value: Any) -> Any:
    """Text of a GenAI parts list (``[{"type": "text", "content": ...}, ...]``, given as a list or as
    its JSON text); generic and media parts are skipped; a value of another shape is returned as is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list):
        texts = [p.get("content", p.get("text")) for p in value if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return value


def _tool_count(value: Any) -> int | None:
    """Number of tools in ``gen_ai.tool.definitions`` (a list, or its JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return len(value) if isinstance(value, list) else None


def _record(attributes: dict[str, Any], span_id: Any, trace_id: Any, start: Any, end: Any,
            events: Any, resource: dict[str, Any]) -> dict[str, Any] | str:
    if not any(str(k).startswith("gen_ai.") for k in attributes):
        return NOT_GENAI
    record = canonical_keys({**resource, **attributes})
    record.setdefault("exchange_id", f"{trace_id}:{span_id}" if trace_id else span_id)
    record.setdefault("timestamp", start)
    prompt = _prompt_from(attributes, events)
    if prompt is not None:
        record["prompt"] = prompt
    if "gen_ai.system_instructions" in attributes and "system_prompt" not in record:
        record["system_prompt"] = _parts_text(attributes["gen_ai.system_instructions"])
    if "gen_ai.tool.definitions" in attributes and "tool_count" not in record:
        record["tool_count"] = _tool_count(attributes["gen_ai.tool.definitions"])
    latency = _latency_ms(start, end)
    if latency is not None:
        record.setdefault("latency_ms", latency)
    return {k: v for k, v in record.items() if v is not None}


def _latency_ms(start: Any, end: Any) -> float | None:
    try:
        return (int(end) - int(start)) / 1e6
    except (TypeError, ValueError):
        return None


def expand_otlp(obj: dict[str, Any]) -> Iterator[dict[str, Any] | tuple[str, Any]]:
    """One record per span; a refused span comes as (reason, the span) so that only the span,
    not the whole export, is kept as its raw text."""
    for resource_spans in obj["resourceSpans"]:
        if not isinstance(resource_spans, dict):
            yield "malformed record: resourceSpans entry is not an object"
            continue
        resource = _attributes(_dict(resource_spans.get("resource")).get("attributes"))
        for scope in _list(resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans")):
            for span in _list(_dict(scope).get("spans")):
                if not isinstance(span, dict):
                    yield "malformed record: span is not an object"
                    continue
                record = _record(_attributes(span.get("attributes")), span.get("spanId"), span.get("traceId"),
                                 span.get("startTimeUnixNano"), span.get("endTimeUnixNano"),
                                 span.get("events"), resource)
                yield (record, span) if isinstance(record, str) else record


def from_sdk_span(obj: dict[str, Any]) -> dict[str, Any] | str:
    context = obj.get("context") if isinstance(obj.get("context"), dict) else {}
    resource = obj.get("resource", {})
    resource_attrs = _attributes(resource.get("attributes")) if isinstance(resource, dict) else {}
    record = _record(_attributes(obj.get("attributes")), context.get("span_id"), context.get("trace_id"),
                     obj.get("start_time"), obj.get("end_time"), obj.get("events"), resource_attrs)
    return record
