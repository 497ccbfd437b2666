"""OpenAI-style request/response log pairs -> one canonical record.

The shape gateways and SDK loggers write: top-level metadata (id, timestamp, account, IP,
user agent ...) beside a ``request`` body (``messages`` for chat completions, ``prompt`` for
completions, ``input`` for the Responses API, Anthropic ``messages`` with a top-level
``system``) and a ``response`` body whose ``usage`` carries the token counts.
"""

from __future__ import annotations

from typing import Any

from distillguard.ingest.keys import canonical_keys, flatten
from distillguard.ingest.messages import message_text


def is_pair(obj: dict[str, Any]) -> bool:
    request = obj.get("request")
    return isinstance(request, dict) and any(k in request for k in ("messages", "prompt", "input"))


def _text(content: Any) -> str | None:
    """Message content as text (ingest.messages.message_text); a content list without text is
    the empty prompt, not a missing one."""
    text = message_text(content)
    return "" if text is None and isinstance(content, list) else text


def _last_user_message(messages: list[Any]) -> tuple[Any, int, str | None]:
    """(prompt, turn_index, system prompt) from a chat ``messages`` list."""
    system = None
    user_turns = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer") and system is None:
            system = _text(message.get("content"))
        elif role == "user":
            user_turns.append(message.get("content"))
    if not user_turns:
        return None, 0, system
    last = user_turns[-1]
    text = _text(last)
    return (text if text is not None else last), len(user_turns) - 1, system


def to_flat(obj: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = obj["request"]
    response = obj.get("response") if isinstance(obj.get("response"), dict) else {}
    meta = {k: v for k, v in obj.items() if k not in ("request", "response")}
    record = canonical_keys(flatten(meta))

    prompt: Any = None
    turn_index = 0
    system = request.get("system") if isinstance(request.get("system"), str) else None
    if isinstance(request.get("messages"), list):
        prompt, turn_index, chat_system = _last_user_message(request["messages"])
        system = system or chat_system
    elif "input" in request:
        value = request["input"]
        if isinstance(value, list):
            prompt, turn_index, chat_system = _last_user_message(value)
            system = system or chat_system
        else:
            prompt = value
        if isinstance(request.get("instructions"), str):
            system = system or request["instructions"]
    elif "prompt" in request:
        prompt = request["prompt"]

    tools = request.get("tools") or request.get("functions") or []
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    derived = {
        "prompt": prompt,
        "turn_index": turn_index,
        "system_prompt": system,
        "model": request.get("model") or response.get("model"),
        "max_tokens": request.get("max_tokens", request.get("max_completion_tokens",
                                                            request.get("max_output_tokens"))),
        "tool_count": len(tools) if isinstance(tools, list) else None,
        "input_tokens": usage.get("prompt_tokens", usage.get("input_tokens")),
        "output_tokens": usage.get("completion_tokens", usage.get("output_tokens")),
        "exchange_id": response.get("id"),
        "timestamp": response.get("created", response.get("created_at")),
        # the end user the caller named (OpenAI's request field ``user``): a reseller's customer
        "end_user": request.get("user") if isinstance(request.get("user"), str) and request["user"] else None,
    }
    for key, value in derived.items():
        if record.get(key) is None and value is not None:
            record[key] = value
    return record


#: the canonical fields a pair fills by itself (the metadata beside it may fill any other)
FILLS = ("exchange_id", "timestamp", "prompt", "turn_index", "system_prompt", "model", "max_tokens", "tool_count",
         "input_tokens", "output_tokens", "end_user")
