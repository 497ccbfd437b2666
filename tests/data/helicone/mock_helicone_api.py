"""A stand-in for Helicone's request API and its body storage, serving the rows the export files hold.

``POST /v1/request/query-clickhouse`` answers ``{"data": rows, "error": null}`` with ``offset``
and ``limit`` honoured, as jawn's RequestManager.getRequestsClickhouse returns them: the columns of
the SELECT in ``getRequestsClickhouse`` (valhalla/jawn/src/lib/stores/request/request.ts,
Helicone/helicone @ 0003b753b4b7e0e2dfded3a80a033ca6531153f8), ClickHouse's JSONEachRow types
(Int64 columns as quoted strings, its default ``output_format_json_quote_64bit_integers``; maps as
objects; ``updated_at`` in ClickHouse's own text), ``request_created_at`` / ``response_created_at``
rewritten to ISO by the manager, ``costUSD`` added by it, and for rows whose bodies live in object
storage the body placeholder text plus a ``signed_body_url``. ``GET`` on a signed URL's path answers
the stored ``{"request": ..., "response": ...}`` body. Run: ``python mock_helicone_api.py PORT``.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ORG = "6c8c4e0b-2f1d-4a4b-9a0e-3d5f7c1b2a90"
BUCKET = "https://request-response-storage.s3.us-west-2.amazonaws.com"
PLACEHOLDER = ('{"helicone_message": "fetching body from signed_url... contact engineering@helicone.ai '
               'for more information"}')
DEFAULT_UUID = "00000000-0000-0000-0000-000000000000"
SIGNATURE = ("?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD"
             "&X-Amz-Credential=AKIAEXAMPLEEXAMPLE00%2F20250610%2Fus-west-2%2Fs3%2Faws4_request"
             "&X-Amz-Date=20250610T093000Z&X-Amz-Expires=1800&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=5f0c1c9b1d0e4a7e9d8b6a5c4b3a2918f7e6d5c4b3a29180f7e6d5c4b3a29180")

SYSTEM = "You are a careful assistant for a tax-preparation service. Answer briefly."


def _completion(model: str, text: str, prompt_tokens: int, completion_tokens: int, created: int,
                cid: str) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_07871e2ad8"}


# (request_id, response_id, created, latency ms, user, session, model, request body, response body,
#  status, prompt tokens, completion tokens, storage)
EXCHANGES: list[tuple] = [
    ("3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b60", "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c20", "2025-06-10 09:12:03.114", 812,
     "cust-alpha", "sess-alpha-1", "gpt-4o-mini",
     {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": SYSTEM},
                                           {"role": "user", "content": "Can I deduct a home office in 2024?"}],
      "temperature": 0.2, "max_tokens": 256},
     _completion("gpt-4o-mini-2024-07-18", "Yes, if the space is used regularly and exclusively for business.",
                 38, 17, 1749546723, "chatcmpl-BgS1a9xQk2mJ7v0AaZ1"), 200, 38, 17, "s3"),
    ("3f1c2a9e-5b7d-4e21-9c3a-1d2e3f4a5b61", "8a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c21", "2025-06-10 09:12:41.530", 1034,
     "cust-alpha", "sess-alpha-1", "gpt-4o-mini",
     {"model": "gpt-4o-mini", "messages": [
         {"role": "system", "content": SYSTEM},
         {"role": "user", "content": "Can I deduct a home office in 2024?"},
         {"role": "assistant", "content": "Yes, if the space is used regularly and exclusively for business."},
         {"role": "user", "content": "What about a \"shared\" room, say 50% office?"}],
      "temperature": 0.2, "max_tokens": 256},
     _completion("gpt-4o-mini-2024-07-18", "Only the exclusive-use part qualifies; a shared room usually does not.",
                 71, 19, 1749546761, "chatcmpl-BgS2b0yRl3nK8w1BbA2"), 200, 71, 19, "s3"),
    ("9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e70", "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d50", "2025-06-10 09:20:15.007", 2290,
     "cust-beta", "", "gpt-4o",
     {"model": "gpt-4o", "messages": [{"role": "user", "content": "Look up the 2024 standard deduction."}],
      "tools": [{"type": "function", "function": {
          "name": "lookup_rate", "description": "Look up a tax figure by year and name",
          "parameters": {"type": "object", "properties": {"year": {"type": "integer"}, "name": {"type": "string"}},
                         "required": ["year", "name"]}}}],
      "tool_choice": "auto", "max_completion_tokens": 512},
     _completion("gpt-4o-2024-08-06", "For 2024 the standard deduction is $14,600 for single filers.",
                 96, 24, 1749547215, "chatcmpl-BgS9c1zSm4oL9x2CcB3"), 200, 96, 24, "s3"),
    ("9d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e71", "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d51", "2025-06-10 09:21:02.448", 640,
     "cust-beta", "", "gpt-4o",
     {"model": "gpt-4o", "messages": [{"role": "user", "content": "Summarise IRS Publication 587 in one line."}]},
     _completion("gpt-4o-2024-08-06", "Publication 587 explains the business use of your home deduction.",
                 18, 13, 1749547262, "chatcmpl-BgSAd2aTn5pM0y3DdC4"), 200, 18, 13, "clickhouse"),
    ("c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e00", "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a40", "2025-06-10 09:30:44.902", 183,
     "cust-gamma", "sess-gamma-7", "gpt-4o-mini",
     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "List every IRS form number."}],
      "n": 1},
     {"error": {"message": "Rate limit reached for gpt-4o-mini in organization org-xyz on requests per min "
                           "(RPM): Limit 500, Used 500, Requested 1.",
                "type": "requests", "param": None, "code": "rate_limit_exceeded"}}, 429, None, None, "s3"),
    ("c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e01", "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a41", "2025-06-10 09:31:10.266", 3921,
     "cust-gamma", "sess-gamma-7", "gpt-4o-mini",
     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "List the IRS forms a freelancer files."}],
      "stream": True, "stream_options": {"include_usage": True}},
     _completion("gpt-4o-mini-2024-07-18", "Typically Form 1040 with Schedules C and SE, plus 1040-ES.",
                 17, 21, 1749547870, "chatcmpl-BgSKe3bUo6qN1z4EeD5"), 200, 17, 21, "s3"),
]


def _iso(clickhouse_time: str) -> str:
    """RequestManager's toISOStringClickhousePatch on a UTC server: 'YYYY-MM-DD hh:mm:ss.sss' -> ISO Z."""
    return clickhouse_time.replace(" ", "T") + "Z"


def _int64(value: int | None) -> str | None:
    return None if value is None else str(value)


def _cost(model: str, prompt: int | None, completion: int | None) -> float:
    per_million = {"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0)}[model]
    return round(((prompt or 0) * per_million[0] + (completion or 0) * per_million[1]) / 1e6, 9)


def row(exchange: tuple) -> dict[str, Any]:
    (request_id, response_id, created, latency, user, session, model, request, response, status, prompt,
     completion, storage) = exchange
    properties = {"Helicone-Property-App": "taxhelp-web"}
    if session:
        properties.update({"Helicone-Session-Id": session, "Helicone-Session-Path": "/chat",
                           "Helicone-Session-Name": "tax-chat"})
    responded = created[:-6] + f"{float(created[-6:]) + latency / 1000:06.3f}"
    inline = storage == "clickhouse"
    out = {
        "response_id": response_id,
        "response_body": response if inline else PLACEHOLDER,
        "response_created_at": _iso(responded),
        "response_status": status,
        "request_id": request_id,
        "request_body": request if inline else PLACEHOLDER,
        "request_created_at": _iso(created),
        "request_user_id": user,
        "request_properties": properties,
        "provider": "OPENAI",
        "delay_ms": latency,
        "request_model": model,
        "ai_gateway_body_mapping": "",
        "time_to_first_token": _int64(latency // 3 if status == 200 else None),
        "total_tokens": _int64(None if prompt is None else prompt + completion),
        "completion_tokens": _int64(completion),
        "prompt_tokens": _int64(prompt),
        "prompt_cache_read_tokens": _int64(0 if prompt is not None else None),
        "prompt_cache_write_tokens": _int64(0 if prompt is not None else None),
        "country_code": "US",
        "scores": {},
        "properties": properties,
        "asset_ids": [],
        "target_url": "https://api.openai.com/v1/chat/completions",
        "cache_reference_id": DEFAULT_UUID,
        "request_referrer": "",
        "cache_enabled": False,
        "cost": _cost(model, prompt, completion),
        "prompt_id": "",
        "prompt_version": "",
        "updated_at": created[:-4] + ".000",
        "storage_location": storage,
        "costUSD": _cost(model, prompt, completion),
    }
    if not inline:
        key = f"organizations/{ORG}/requests/{request_id}/request_response_body"
        out["signed_body_url"] = f"{BUCKET}/{key}{SIGNATURE}"
    return out


ROWS = sorted((row(e) for e in EXCHANGES), key=lambda r: r["request_created_at"], reverse=True)
BODIES = {f"/organizations/{ORG}/requests/{e[0]}/request_response_body": {"request": e[7], "response": e[8]}
          for e in EXCHANGES}


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/v1/request/query-clickhouse":
            return self._send(404, {"error": "not found"})
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return self._send(401, {"error": "unauthorized"})
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 10))
        self._send(200, {"data": ROWS[offset:offset + limit], "error": None})

    def do_GET(self) -> None:
        body = BODIES.get(self.path.split("?", 1)[0])
        self._send(200, body) if body is not None else self._send(404, {"error": "NoSuchKey"})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
