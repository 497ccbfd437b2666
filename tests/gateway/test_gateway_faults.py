"""Fault injection with real processes: what the gateway does when what it depends on fails.

The upstream down, slow, closing mid-stream or compressing its answers; Redis killed and
restarted under ``state: redis://``; the journal's disk full; the gateway itself killed (-9) or
stopped (SIGTERM, to it alone or to its process group) with streams in flight, then restarted.
Every answer a client received whole must be in the store after the restart and a load, every
override the admin API confirmed must still hold, and no failure may reach a client as a 500 or
as anything but the OpenAI error shape.

The figures of the kill and stop runs (acknowledged exchanges lost, overrides lost, time to shut
down) are printed on one line each: ``pytest tests/gateway/test_gateway_faults.py -s -k stopped``.
Each runs with 40 streams in flight and again with 200.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import threading
import time
import zlib
from pathlib import Path

import aiohttp
import pytest

from distillguard.gateway.ports import free_port
from distillguard.store import Store
from tests.gateway.procs import call, chat, fill_disk, start_redis, stop_process, wait_until

pytestmark = pytest.mark.slow  # fault injection: processes killed, disks filled, streams cut
KEY = "sk-faults-alice-0123456789abcdef0123"
KEYS = [{"api_key": KEY, "account_id": "alice"}]
ADMIN = "faults-admin-token-0123456789abcdef"
UPSTREAM_CHUNK_DELAY_MS = 20


def _openai_error(reply) -> dict:
    assert reply.headers.get("content-type", "").startswith("application/json"), (reply.status, reply.body[:300])
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and "type" in error and "code" in error
    return error


def _stored(gw, where: str = "TRUE") -> list[tuple]:
    """(prompt, status_code, input_tokens, output_tokens) of the stored exchanges, once the
    gateway has stopped (its stop drains the log into the store)."""
    gw.stop()
    with Store(gw.db, read_only=True) as store:
        return store.con.execute(f"SELECT prompt, status_code, input_tokens, output_tokens FROM exchanges "
                                 f"WHERE {where} ORDER BY timestamp").fetchall()


# --- an upstream that misbehaves on purpose ----------------------------------------------------

class StubUpstream:
    """A raw HTTP/1.1 upstream in a thread of this process, for what the mock upstream cannot do:
    ``cut`` streams two events then closes the connection without ending the stream; ``gzip``
    and ``deflate`` answer compressed (streams too, flushed event by event) whatever was asked."""

    EVENTS = [b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"one "}}]}\n\n',
              b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"two"}}]}\n\n',
              b'data: {"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
              b'"total_tokens":9}}\n\n', b"data: [DONE]\n\n"]
    ANSWER = {"id": "c1", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _compressor(self):
        wbits = 16 + zlib.MAX_WBITS if self.mode == "gzip" else zlib.MAX_WBITS
        return zlib.compressobj(wbits=wbits)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(body) < length:
                body += conn.recv(65536)
            stream = json.loads(body).get("stream") is True
            if not stream:
                payload = json.dumps(self.ANSWER).encode()
                c = self._compressor()
                payload = c.compress(payload) + c.flush()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: "
                             + self.mode.encode() + b"\r\nContent-Length: " + str(len(payload)).encode()
                             + b"\r\nConnection: close\r\n\r\n" + payload)
                return
            encoding = b"" if self.mode == "cut" else b"Content-Encoding: " + self.mode.encode() + b"\r\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                         + encoding + b"Connection: close\r\n\r\n")
            c = None if self.mode == "cut" else self._compressor()
            for i, event in enumerate(self.EVENTS):
                if self.mode == "cut" and i == 2:
                    conn.shutdown(socket.SHUT_RDWR)  # gone mid-stream: no usage, no [DONE], no last chunk
                    return
                piece = event if c is None else c.compress(event) + c.flush(zlib.Z_SYNC_FLUSH)
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                time.sleep(0.02)
            if c is not None:
                tail = c.flush()
                conn.sendall(f"{len(tail):x}\r\n".encode() + tail + b"\r\n")
            conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def stub():
    made = []

    def make(mode: str) -> StubUpstream:
        made.append(StubUpstream(mode))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _decoded(reply) -> bytes:
    """The body as a client that honours Content-Encoding reads it."""
    encoding = reply.headers.get("content-encoding", "identity")
    if encoding == "gzip":
        return gzip.decompress(reply.body)
    if encoding == "deflate":
        return zlib.decompress(reply.body)
    assert encoding == "identity", encoding
    return reply.body


# --- the upstream ----------------------------------------------------------------------------------

def test_an_upstream_that_is_down_gets_the_client_an_openai_shaped_502_and_is_logged(tmp_path, gateways):
    gw = gateways(tmp_path, free_port(), keys=KEYS, connect_timeout_seconds=2.0)
    reply = call(gw.port, "/v1/chat/completions", chat("nobody home"), key=KEY)
    assert reply.status == 502
    _openai_error(reply)
    assert "Traceback" not in gw.log()
    assert [(p, s) for p, s, _, _ in _stored(gw)] == [("nobody home", 502)]


def test_a_slow_upstream_gets_the_client_an_openai_shaped_504_in_time_and_is_logged(tmp_path, upstream, gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, upstream_timeout_seconds=1.0)
    t0 = time.monotonic()
    reply = call(gw.port, "/v1/chat/completions", chat("sleep:5 too slow"), key=KEY)
    assert reply.status == 504 and time.monotonic() - t0 < 4.0
    _openai_error(reply)
    assert [(p, s) for p, s, _, _ in _stored(gw)] == [("sleep:5 too slow", 504)]


def test_an_upstream_that_closes_mid_stream_ends_the_clients_stream_with_an_error_event(tmp_path, stub, gateways):
    cut = stub("cut")
    gw = gateways(tmp_path, cut.port, keys=KEYS)
    reply = call(gw.port, "/v1/chat/completions", chat("cut me off", stream=True), key=KEY)
    assert reply.status == 200 and b"one " in reply.body
    assert b"[DONE]" not in reply.body
    # what the OpenAI SDK raises on: a data event whose JSON holds "error"
    events = [json.loads(line[5:]) for line in reply.body.split(b"\n")
              if line.startswith(b"data:") and line[5:].strip().startswith(b"{")]
    assert any("error" in e for e in events), reply.body
    (prompt, status, _, _), = _stored(gw)
    assert prompt == "cut me off" and status != 200  # logged as incomplete


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_compressing_upstreams_answers_reach_the_client_intact_with_usage_logged(tmp_path, stub, gateways, coding,
                                                                                     stream):
    upstream = stub(coding)
    gw = gateways(tmp_path, upstream.port, keys=KEYS)
    reply = call(gw.port, "/v1/chat/completions", chat("squeeze", stream=stream), key=KEY)
    assert reply.status == 200
    body = _decoded(reply)
    if stream:
        assert body.count(b"data: ") == 4 and body.endswith(b"data: [DONE]\n\n"), body
    else:
        assert json.loads(body)["choices"][0]["message"]["content"] == "one two"
    assert _stored(gw) == [("squeeze", 200, 7, 2)]


# --- Redis ------------------------------------------------------------------------------------------

def test_redis_killed_and_restarted_never_gives_a_500_and_the_gateway_recovers(tmp_path, upstream, gateways):
    redis, redis_port = start_redis(tmp_path)
    gw = gateways(tmp_path, upstream, keys=KEYS, state=f"redis://127.0.0.1:{redis_port}/0")
    try:
        assert call(gw.port, "/v1/chat/completions", chat("before"), key=KEY).status == 200
        stop_process(redis)
        for i in range(5):
            reply = call(gw.port, "/v1/chat/completions", chat(f"during {i}"), key=KEY, timeout=30)
            assert reply.status in (200, 503), (reply.status, reply.body[:300])
            if reply.status == 503:
                _openai_error(reply)
        assert gw.proc.poll() is None
        redis, _ = start_redis(tmp_path, redis_port)
        wait_until(lambda: call(gw.port, "/v1/chat/completions", chat("after"), key=KEY).status == 200, every=0.5,
                   what="the gateway to recover once Redis was back")
    finally:
        gw.stop()
        stop_process(redis)


# --- disk full ----------------------------------------------------------------------------------------

def _ask(gw, prompt: str, acknowledged: list[str]) -> int:
    reply = call(gw.port, "/v1/chat/completions", chat(prompt), key=KEY)
    assert reply.status in (200, 503), (reply.status, reply.body[:300])
    if reply.status == 200:
        acknowledged.append(prompt)
    else:
        _openai_error(reply)
    return reply.status


def test_a_full_journal_disk_refuses_with_openai_shaped_503s_and_loses_no_acknowledged_exchange(
        tmp_path, upstream, small_disk, gateways):
    settings = dict(keys=KEYS, log_dir=str(small_disk), load_every_seconds=3600, segment_seconds=3600)
    gw = gateways(tmp_path, upstream, **settings)
    acknowledged: list[str] = []
    for i in range(5):
        assert _ask(gw, f"room {i}", acknowledged) == 200
    filler = fill_disk(small_disk)
    statuses = [_ask(gw, f"full {i} " + "x" * 300, acknowledged) for i in range(20)]
    assert 503 in statuses  # fail closed: nothing served unlogged
    assert "Traceback" not in gw.log()
    gw.stop()
    filler.unlink()
    again = gateways(tmp_path, upstream, **settings)  # the restart loads what the first one logged
    stored = {p for p, s, _, _ in _stored(again, "status_code = 200")}
    lost = [p for p in acknowledged if p not in stored]
    assert lost == [], f"{len(lost)} acknowledged exchange(s) not in the store: {lost[:5]}"


def test_the_gateway_logs_and_serves_again_once_the_full_journal_disk_has_room(tmp_path, upstream, small_disk,
                                                                                gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, log_dir=str(small_disk), load_every_seconds=3600,
                  segment_seconds=3600)
    acknowledged: list[str] = []
    filler = fill_disk(small_disk)
    assert 503 in [_ask(gw, f"full {i} " + "x" * 300, acknowledged) for i in range(20)]
    filler.unlink()
    wait_until(lambda: _ask(gw, f"freed {len(acknowledged)}", acknowledged) == 200, timeout=10, every=0.2,
               what="the gateway to write its log again once space was free")
    stored = {p for p, s, _, _ in _stored(gw, "status_code = 200")}
    assert [p for p in acknowledged if p not in stored] == []


# --- kill -9 and SIGTERM under streams in flight, then restart -----------------------------------------

async def _streams(port: int, count: int, chunks: tuple[int, ...], quarter: threading.Event,
                   in_flight: threading.Event) -> tuple[list[str], int]:
    """``count`` concurrent streamed chats; (prompts whose answer arrived whole, streams started).
    ``quarter`` is set once a quarter of them have arrived whole, ``in_flight`` once every one
    has its answer's headers (the gateway has received them all)."""
    whole: list[str] = []
    started = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal started
        prompt = f"stream {i} chunks:{chunks[i % len(chunks)]}"
        try:
            async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat(prompt, stream=True),
                                    headers={"Authorization": f"Bearer {KEY}"}) as reply:
                started += 1
                if started == count:
                    in_flight.set()
                body = await reply.read()
            if reply.status == 200 and body.endswith(b"data: [DONE]\n\n"):
                whole.append(prompt)
                if len(whole) >= count // 4:
                    quarter.set()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # cut off: not acknowledged

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))
    return whole, started


def _stop_under_streams(gateways, tmp_path: Path, upstream: int, how: str, count: int) -> dict:
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=ADMIN, preexec=os.setsid, name="gw")
    accounts = [f"acct-{i}" for i in range(5)]
    for account in accounts:
        reply = call(gw.port, f"/admin/accounts/{account}/action", {"action": "block", "reason": "fault test"},
                     key=ADMIN)
        assert reply.status == 200, reply.body
    result: dict = {}
    quarter, in_flight = threading.Event(), threading.Event()

    def signal_soon() -> None:
        # streams of 5 to 60 chunks of 20 ms each: once every one has begun and a quarter are
        # whole, the rest are in flight (a connection the gateway has not yet read a request
        # from is closed by a graceful stop: that request was never received, so not waited for)
        quarter.wait(timeout=30)
        in_flight.wait(timeout=30)
        result["t0"] = time.monotonic()
        if how == "kill -9":
            gw.proc.send_signal(signal.SIGKILL)
        elif how == "SIGTERM":
            gw.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(gw.proc.pid, signal.SIGTERM)
        gw.proc.wait(timeout=60)
        result["shutdown_s"] = time.monotonic() - result["t0"]

    stopper = threading.Thread(target=signal_soon)
    stopper.start()
    whole, started = asyncio.run(_streams(gw.port, count, (5, 15, 40, 60), quarter, in_flight))
    stopper.join()
    # the restart: a new gateway on the same store, log and state
    again = gateways(tmp_path, upstream, keys=KEYS, admin_token=ADMIN, name="gw")
    held = [a for a in accounts
            if call(again.port, f"/admin/verdicts/{a}", method="GET", key=ADMIN).json()["action"] == "block"]
    stored = {p for p, s, _, _ in _stored(again, "status_code = 200")}
    result |= {"how": how, "streams": count, "acknowledged": len(whole), "started": started,
               "acknowledged_lost": len([p for p in whole if p not in stored]),
               "overrides_lost": len(accounts) - len(held)}
    print(f"\nfault figures: {how} under {count} streams: {len(whole)} acknowledged, "
          f"{result['acknowledged_lost']} lost; overrides lost {result['overrides_lost']} of {len(accounts)}; "
          f"shut down in {result['shutdown_s']:.2f} s")
    return result


HOW = ["kill -9", "SIGTERM", "SIGTERM to the group"]


def _assert_nothing_lost(result: dict) -> None:
    assert result["acknowledged"] > 0, result  # the signal came with answers already whole
    assert result["acknowledged_lost"] == 0, result
    assert result["overrides_lost"] == 0, result
    if result["how"] != "kill -9":
        # a graceful stop lets the streams in flight finish (within shutdown_timeout_seconds)
        assert result["acknowledged"] == result["started"] == result["streams"], str(result)
        assert result["shutdown_s"] < 15, str(result)


@pytest.mark.parametrize("how", HOW)
def test_the_gateway_stopped_under_40_streams_loses_no_acknowledged_exchange_or_override(tmp_path, own_upstream, gateways,
                                                                                          how):
    _assert_nothing_lost(_stop_under_streams(gateways, tmp_path, own_upstream, how, 40))


@pytest.mark.parametrize("how", HOW)
def test_the_gateway_stopped_under_200_streams_loses_no_acknowledged_exchange_or_override(tmp_path, own_upstream, gateways,
                                                                                          how):
    _assert_nothing_lost(_stop_under_streams(gateways, tmp_path, own_upstream, how, 200))
