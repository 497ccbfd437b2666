"""What the gateway reads from and writes to the wire: the OpenAI and Anthropic request and
response shapes, reduced to the canonical exchange fields, and the OpenAI error shape.

Pure functions over parsed JSON (or raw server-sent-event bytes), so that they can be tested
on any input: a client controls the request body entirely, so nothing here may raise on a
shape it does not expect; it returns None for what it cannot find.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from distillguard.ingest.messages import message_text

#: the proxied routes and the API family each speaks
ROUTES: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


#: the random part of exchange ids: unique, not secret (an id names an exchange, it grants nothing),
#: so a generator seeded once from the OS instead of a getrandom system call per request (2.5%
#: of the gateway's CPU in a profile)
_ids = random.Random()


def new_exchange_id(prefix: str, started: datetime) -> str:
    """A new exchange id that sorts by time: ``prefix``, the start in milliseconds since the
    epoch as 12 hex digits, then 80 random bits.

    Why time first: every load of the gateway's log checks its new ids against the whole store
    (a segment loaded twice must store nothing twice), and with ids that grow with time each
    segment file's min/max statistics cover only its own minutes, so DuckDB skips every old
    row group instead of reading every id ever stored (docs/gateway.md, the store)."""
    return f"{prefix}{int(started.timestamp() * 1000):012x}{_ids.getrandbits(80):020x}"


@dataclass(frozen=True)
class RequestFacts:
    """The canonical fields one request carries (schema.py names)."""

    model: str | None
    prompt: str | None
    system_prompt: str | None
    max_tokens: int | None
    tool_count: int
    turn_index: int
    conversation_id: str | None
    stream: bool
    end_user: str | None = None


#: the longest end-user id the gateway keeps (OpenAI's ``user``): an id, not a document
MAX_END_USER_CHARS = 256


def end_user(api: str, body: Any) -> str | None:
    """The end user a request names: OpenAI's request field ``user`` (Anthropic's
    ``metadata.user_id`` on /v1/messages). Anything but a printable string of 1 to
    MAX_END_USER_CHARS characters is no end user: the id becomes part of an entity id, a log
    line and an admin route, and a client writes it."""
    if not isinstance(body, dict):
        return None
    value = body.get("user")
    if api == "messages":
        meta = body.get("metadata")
        value = meta.get("user_id") if isinstance(meta, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_END_USER_CHARS and value.isprintable():
        return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _conversation(account: str, first_user: str | None, system: str | None, explicit: Any) -> str | None:
    """The conversation an exchange belongs to. Chat APIs resend the whole history, so a thread
    is identified by its account, system prompt and first user message; an explicit id (the
    Responses API's ``conversation`` or ``previous_response_id``) wins."""
    if isinstance(explicit, str) and explicit:
        return explicit
    if isinstance(explicit, dict) and isinstance(explicit.get("id"), str):
        return explicit["id"]
    if first_user is None:
        return None
    digest = hashlib.sha256(f"{account}\x00{system or ''}\x00{first_user}".encode()).hexdigest()
    return f"conv-{digest[:20]}"


def request_facts(api: str, body: Any, account: str) -> RequestFacts:
    """The canonical fields of one request body of API family ``api`` (ROUTES)."""
    if not isinstance(body, dict):
        return RequestFacts(None, None, None, None, 0, 0, None, False)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    tools = body.get("tools")
    tool_count = len(tools) if isinstance(tools, list) else 0
    max_tokens = _int(body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = _int(body.get("max_completion_tokens")) or _int(body.get("max_output_tokens"))
    stream = body.get("stream") is True
    system, users, explicit = None, [], None
    if api in ("chat", "messages"):
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        systems = [message_text(m.get("content")) for m in messages
                   if isinstance(m, dict) and m.get("role") in ("system", "developer")]
        if api == "messages":
            systems.insert(0, message_text(body.get("system")))
        system = "\n".join(s for s in systems if s) or None
        users = [message_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    elif api == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = next((p for p in prompt if isinstance(p, str)), None)
        users = [prompt] if isinstance(prompt, str) else []
    elif api == "responses":
        system = body.get("instructions") if isinstance(body.get("instructions"), str) else None
        given = body.get("input")
        if isinstance(given, str):
            users = [given]
        elif isinstance(given, list):
            for item in given:
                if isinstance(item, dict) and item.get("role") in ("system", "developer"):
                    system = "\n".join(s for s in (system, message_text(item.get("content"))) if s) or None
                elif isinstance(item, dict) and item.get("role") == "user":
                    users.append(message_text(item.get("content")))
        explicit = body.get("conversation") or body.get("previous_response_id")
    users = [u for u in users if u is not None]
    prompt = users[-1] if users else None
    conversation = _conversation(account, users[0] if users else None, system, explicit)
    return RequestFacts(model, prompt, system, max_tokens, tool_count, max(len(users) - 1, 0), conversation, stream,
                        end_user(api, body))


def usage(body: Any) -> tuple[int | None, int | None]:
    """(input_tokens, output_tokens) of a complete response body of any of the four APIs."""
    if not isinstance(body, dict):
        return None, None
    found = body.get("usage")
    if not isinstance(found, dict) and isinstance(body.get("response"), dict):  # Responses stream's last event
        found = body["response"].get("usage")
    if not isinstance(found, dict) and isinstance(body.get("message"), dict):  # Anthropic message_start
        found = body["message"].get("usage")
    if not isinstance(found, dict):
        return None, None
    tokens_in = _int(found.get("prompt_tokens"))
    if tokens_in is None:
        tokens_in = _int(found.get("input_tokens"))
    tokens_out = _int(found.get("completion_tokens"))
    if tokens_out is None:
        tokens_out = _int(found.get("output_tokens"))
    return tokens_in, tokens_out


class StreamUsage:
    """Token usage from a server-sent-event stream, fed chunk by chunk as it passes through.

    Only ``data:`` lines that mention usage are parsed: OpenAI's last chunk (with
    ``stream_options.include_usage``), the Responses API's ``response.completed`` and
    Anthropic's ``message_start``/``message_delta`` events. The latest value of each count
    wins, as each of those APIs reports running or final totals.
    """

    def __init__(self) -> None:
        self._tail = b""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > 1 << 20:  # a line longer than 1 MiB is not an event worth parsing
            self._tail = b""
        for line in lines:
            if line.startswith(b"data:") and b"tokens" in line:
                try:
                    event = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    continue
                tokens_in, tokens_out = usage(event)
                if tokens_in is not None:
                    self.input_tokens = tokens_in
                if tokens_out is not None:
                    self.output_tokens = tokens_out


class Client(NamedTuple):
    """Who is at the other end of the connection: address, user agent, and the address's
    autonomous system where a trusted proxy said (GatewayConfig.asn_header)."""

    ip: str | None
    user_agent: str | None
    asn: int | None = None


def exchange_row(exchange_id: str, started: datetime, who: Any, client: Client,
                 facts: RequestFacts, status: int, tokens: tuple[int | None, int | None],
                 latency_ms: float) -> dict[str, Any]:
    """One exchange in the canonical schema (schema.py), as the log stores it. ``who``: the
    key's record (keys.KeyRecord: account, key id, organisation, card, sign-up facts)."""
    created = who.account_created_at
    return {
        "exchange_id": exchange_id, "timestamp": started.isoformat(), "account_id": who.account_id,
        "api_key_id": who.key_id, "end_user": facts.end_user, "organization_id": who.organization_id,
        "client_ip": client.ip,
        "client_asn": client.asn,
        "user_agent": client.user_agent, "payment_fingerprint": who.payment_fingerprint,
        "account_created_at": created.isoformat() if created else None, "email_domain": who.email_domain,
        "model": facts.model, "conversation_id": facts.conversation_id, "turn_index": facts.turn_index,
        "system_prompt": facts.system_prompt, "prompt": facts.prompt or "", "input_tokens": tokens[0],
        "output_tokens": tokens[1], "max_tokens": facts.max_tokens, "tool_count": facts.tool_count,
        "status_code": status, "latency_ms": round(latency_ms, 3),
    }


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    """The OpenAI error shape, which every OpenAI SDK parses (and most other clients too)."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def stream_error(api: str, message: str, code: str) -> bytes:
    """A server-sent event that ends a broken stream as an error the client's SDK raises:
    Anthropic's ``error`` event on the Messages API; elsewhere a ``data:`` event holding an
    OpenAI error object, on which the OpenAI SDKs raise ``APIError``."""
    if api == "messages":
        return b"event: error\ndata: " + orjson.dumps(
            {"type": "error", "error": {"type": "api_error", "message": message}}) + b"\n\n"
    return b"data: " + orjson.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": code}}) + b"\n\n"


#: a ``"model": "..."`` member of a JSON object (a model named inside a string is escaped
#: there, \\"model\\", and does not match)
_MODEL_MEMBER = re.compile(rb'("model"\s*:\s*)"(?:[^"\\]|\\.)*"')


class ModelRewriter:
    """Puts the requested model back into an answer served by another model (``fallback``),
    so that the answer names what the client asked for, as a normal one does. Only the
    ``"model"`` members change; every other byte is the upstream's. A stream is rewritten
    line by line: a chunk's last, incomplete line waits for the rest of it."""

    def __init__(self, requested: str) -> None:
        value = orjson.dumps(requested)
        self._replace = lambda match: match.group(1) + value
        self._tail = b""

    def body(self, data: bytes) -> bytes:
        """A complete answer."""
        return _MODEL_MEMBER.sub(self._replace, data)

    def feed(self, chunk: bytes) -> bytes:
        """The next chunk of a stream: what can be sent now."""
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        return _MODEL_MEMBER.sub(self._replace, data[:cut]) if cut else b""

    def flush(self) -> bytes:
        """What is left at the end of a stream."""
        data, self._tail = self._tail, b""
        return _MODEL_MEMBER.sub(self._replace, data)
