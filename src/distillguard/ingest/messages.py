"""The text of a chat message in the OpenAI and Anthropic request shapes.

Both the gateway (reading a live request) and ingest (reading a logged request/response pair)
read messages with it, so a logged and an ingested exchange carry the same prompt. It lives in
ingest because the gateway sits above ingest and may import it, never the reverse.
"""

from __future__ import annotations

from typing import Any


def message_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list (images skipped, tool
    results' text kept); None when it holds no text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif isinstance(part.get("content"), (str, list)):  # tool_result blocks and the like
                    inner = message_text(part["content"])
                    if inner:
                        parts.append(inner)
        return "\n".join(parts) if parts else None
    return None
