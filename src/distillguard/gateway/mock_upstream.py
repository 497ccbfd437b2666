"""A stand-in for the model API behind the gateway, for tests and the gateway benchmark.

It answers the four proxied APIs in their real shapes (with token usage, and server-sent
events when ``stream`` is set), after a fixed latency, and echoes the model it was asked for
(so a test can see a fallback). A prompt can steer it: ``status:NNN`` answers with that HTTP
status in the OpenAI error shape, ``sleep:S`` waits S seconds first, ``chunks:N`` streams N
chunks, ``encoding:gzip|deflate|br`` compresses the answer in that coding (streamed answers
event by event, flushed, as a compressing proxy does), ``close:N`` drops the connection after
N events (or, unstreamed, halfway through the body). Its answers carry the headers a real
provider's do (a cookie, its organisation, rate limits), and ``GET /mock/last-request``
returns the headers and the model of the last request it was sent. This is the one part the
project does not own, so a mock is the right thing here.

    python -m distillguard.gateway.mock_upstream --port 9000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import time
import zlib

import brotli
import orjson
from aiohttp import web

from distillguard.gateway.protocol import ROUTES, error_body, request_facts


def _directive(prompt: str | None, name: str) -> str | None:
    m = re.search(rf"\b{name}:(\S+)", prompt or "")
    return m.group(1) if m else None


def _answer(api: str, model: str, text: str, tokens_in: int, tokens_out: int) -> dict:
    if api == "chat":
        return {"id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out}}
    if api == "completions":
        return {"id": "cmpl-mock", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out}}
    if api == "responses":
        return {"id": "resp-mock", "object": "response", "status": "completed", "model": model,
                "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": text}]}],
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out}}
    return {"id": "msg-mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}


def _events(api: str, model: str, words: list[str], tokens_in: int) -> list[bytes]:
    """The SSE events of a streamed answer, one per word, then usage and the end marker."""
    n = len(words)
    out = []
    if api == "messages":
        out.append(b"event: message_start\ndata: " + orjson.dumps({"type": "message_start", "message": {
            "id": "msg-mock", "model": model, "usage": {"input_tokens": tokens_in, "output_tokens": 1}}}) + b"\n\n")
        for w in words:
            out.append(b"event: content_block_delta\ndata: " + orjson.dumps({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": w + " "}}) + b"\n\n")
        out.append(b"event: message_delta\ndata: " + orjson.dumps({"type": "message_delta", "delta": {
            "stop_reason": "end_turn"}, "usage": {"output_tokens": n}}) + b"\n\n")
        out.append(b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n")
        return out
    if api == "responses":
        for w in words:
            out.append(b"event: response.output_text.delta\ndata: " + orjson.dumps(
                {"type": "response.output_text.delta", "delta": w + " "}) + b"\n\n")
        out.append(b"event: response.completed\ndata: " + orjson.dumps({"type": "response.completed", "response": {
            "id": "resp-mock", "model": model, "usage": {"input_tokens": tokens_in, "output_tokens": n}}}) + b"\n\n")
        return out
    for w in words:
        delta = {"content": w + " "} if api == "chat" else None
        choice = {"index": 0, "delta": delta} if api == "chat" else {"index": 0, "text": w + " "}
        out.append(b"data: " + orjson.dumps({"id": "chatcmpl-mock", "model": model, "choices": [choice]}) + b"\n\n")
    out.append(b"data: " + orjson.dumps({"id": "chatcmpl-mock", "model": model, "choices": [], "usage": {
        "prompt_tokens": tokens_in, "completion_tokens": n, "total_tokens": tokens_in + n}}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


#: what a real provider's answer carries besides its body: some of it must not reach clients
PROVIDER_HEADERS = {"openai-organization": "provider-org-1", "openai-processing-ms": "12",
                    "x-request-id": "req-mock", "x-ratelimit-remaining-requests": "9999",
                    "Set-Cookie": "__cf_bm=mock-cookie; path=/; HttpOnly"}


class _Encoder:
    """Compresses a body or a stream in one content coding, each piece flushed as it is written."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding == "br":
            self._br = brotli.Compressor()
        else:
            self._z = zlib.compressobj(wbits=31 if coding == "gzip" else 15)

    def piece(self, data: bytes) -> bytes:
        if self.coding == "br":
            return self._br.process(data) + self._br.flush()
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._br.finish() if self.coding == "br" else self._z.flush(zlib.Z_FINISH)


def app(latency_ms: float = 0.0, chunk_delay_ms: float = 5.0, fast_model: str | None = None,
        fast_latency_ms: float = 0.0) -> web.Application:
    """``fast_model``: requests for that model answer after ``fast_latency_ms`` instead (the
    benchmark measures latency and throughput against one upstream process)."""
    application = web.Application(client_max_size=64 * 1024 * 1024)
    stats = {"requests": 0, "last_request": {}}
    application["stats"] = stats

    def handler(api: str):
        async def answer(request: web.Request) -> web.StreamResponse:
            stats["requests"] += 1
            body = orjson.loads(await request.read())
            facts = request_facts(api, body, "upstream")
            stats["last_request"] = {"headers": dict(request.headers), "model": facts.model}
            wait = fast_latency_ms if fast_model is not None and facts.model == fast_model else latency_ms
            if wait:
                await asyncio.sleep(wait / 1000)
            if (sleep := _directive(facts.prompt, "sleep")) is not None:
                await asyncio.sleep(float(sleep))
            if (status := _directive(facts.prompt, "status")) is not None:
                return web.Response(status=int(status), body=error_body(f"mock upstream answers {status}",
                                    "invalid_request_error", "mock"), content_type="application/json")
            model = facts.model or "mock-model"
            words = (facts.prompt or "hello").split()[:64] or ["ok"]
            chunks = _directive(facts.prompt, "chunks")
            if chunks is not None:
                words = [f"w{i}" for i in range(int(chunks))]
            tokens_in = len((facts.prompt or "").split()) + 3
            coding = _directive(facts.prompt, "encoding")
            encoder = _Encoder(coding) if coding else None
            close = _directive(facts.prompt, "close")
            headers = dict(PROVIDER_HEADERS) | ({"Content-Encoding": coding} if coding else {})
            if not facts.stream:
                body = orjson.dumps(_answer(api, model, " ".join(words), tokens_in, len(words)))
                if encoder is not None:
                    body = encoder.piece(body) + encoder.end()
                if close is None:
                    return web.Response(body=body, content_type="application/json", headers=headers)
                response = web.StreamResponse(headers=headers | {"Content-Type": "application/json"})
                response.content_length = len(body)
                await response.prepare(request)
                await response.write(body[:len(body) // 2])
                await asyncio.sleep(0.05)
                request.transport.close()
                return response
            response = web.StreamResponse(headers=headers | {"Content-Type": "text/event-stream",
                                                             "Cache-Control": "no-cache"})
            await response.prepare(request)
            for i, event in enumerate(_events(api, model, words, tokens_in)):
                if close is not None and i == int(close):
                    await asyncio.sleep(0.05)
                    request.transport.close()
                    return response
                if i and chunk_delay_ms:
                    await asyncio.sleep(chunk_delay_ms / 1000)
                await response.write(encoder.piece(event) if encoder is not None else event)
            if encoder is not None:
                await response.write(encoder.end())
            await response.write_eof()
            return response
        return answer

    for path, api in ROUTES.items():
        application.router.add_post(path, handler(api))

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock-model", "object": "model"}]})

    async def last_request(request: web.Request) -> web.Response:
        return web.json_response(stats["last_request"])

    application.router.add_get("/v1/models", models)
    application.router.add_get("/mock/last-request", last_request)
    return application


def main() -> None:  # pragma: no cover - exercised as a subprocess by the tests and the benchmark
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=5.0)
    parser.add_argument("--fast-model", default=None)
    parser.add_argument("--fast-latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # the mock stands for the model provider: its collector's pauses (tens of milliseconds under
    # a benchmark's load) would be charged to the proxy measured in front of it. Its requests
    # leave little cyclic garbage, so the collector stays off
    gc.collect()
    gc.freeze()
    gc.disable()
    web.run_app(app(args.latency_ms, args.chunk_delay_ms, args.fast_model, args.fast_latency_ms), host=args.host, port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
