"""Gateway defects found by the fault-injection and property suites, each pinned by the test
that failed before its fix: the exchange log on a full disk, and what aiohttp does on its own
with clients that send broken or unfinished requests."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import orjson
import pytest

from distillguard.gateway.journal import Journal, JournalError, Loader
from distillguard.store import Store
from tests.gateway.procs import call, chat, fill_disk, start_gateway, start_redis, stop_process, wait_until

pytestmark = pytest.mark.slow  # full disks, Redis killed, a gateway process per test
KEY = "sk-followups-alice-0123456789abcdef0123"
KEYS = [{"api_key": KEY, "account_id": "alice"}]
UPSTREAM_CHUNK_DELAY_MS = 0


def _exchange(i: int) -> dict:
    # 3,000-byte lines: a 4 KiB page boundary falls inside most of them, so the disk fills mid-line
    return {"exchange_id": f"gw-full-{i}", "timestamp": "2026-01-01T00:00:00+00:00", "account_id": "alice",
            "prompt": f"line {i} " + "x" * 2900, "status_code": 200}


def test_a_journal_that_fills_its_disk_mid_line_keeps_whole_lines_only_and_says_the_line_was_not_logged(
        tmp_path, small_disk):
    journal = Journal(small_disk / "log")
    refused = 0
    for i in range(400):  # 1.2 MB into 1 MiB
        try:
            journal.append(_exchange(i))
        except JournalError:
            refused += 1
    assert refused > 0 and journal.appended + refused == 400
    lines = Path(journal._path).read_bytes().split(b"\n")
    assert lines[-1] == b"", "the segment ends with a torn line"
    assert [orjson.loads(line)["exchange_id"] for line in lines[:-1]] == [f"gw-full-{i}" for i in range(journal.appended)]
    loader = Loader(journal, tmp_path / "store.duckdb", in_process=True)
    assert loader.round(rotate=True) == journal.appended and loader.quarantined_rows == 0
    with Store(tmp_path / "store.duckdb", read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == journal.appended
    journal.close()


def test_a_journal_on_a_full_disk_says_it_cannot_write_until_the_disk_has_room_again(small_disk):
    journal = Journal(small_disk / "log")
    filler = fill_disk(small_disk)
    assert journal.writable() is not None
    with pytest.raises(JournalError):
        journal.append(_exchange(0))
    filler.unlink()
    assert journal.writable() is None
    journal.append(_exchange(1))
    assert journal.appended == 1
    journal.close()


def test_with_redis_down_the_gateway_serves_from_its_own_counters_says_so_once_and_resumes(tmp_path, upstream):
    """Requests are served (the limits count this process's requests meanwhile, so they still
    hold), the log has one line for the outage and one for the return, /ready names Redis."""
    redis, redis_port = start_redis(tmp_path)
    policy = {"gateway": {"limits": [{"scope": "account", "window_seconds": 3600, "max_requests": 4}]}}
    gw = start_gateway(tmp_path, upstream, keys=KEYS, policy=policy, state=f"redis://127.0.0.1:{redis_port}/0")
    try:
        assert call(gw.port, "/v1/chat/completions", chat("before"), key=KEY).status == 200
        stop_process(redis)
        statuses = [call(gw.port, "/v1/chat/completions", chat(f"during {i}"), key=KEY).status for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        ready = call(gw.port, "/ready", method="GET", key=None)
        assert ready.status == 503 and ready.json()["components"]["redis"]["ok"] is False
        time.sleep(1.5)  # the background reader meets the outage too: still the one line
        log = gw.log()
        assert "Traceback" not in log
        assert len([line for line in log.splitlines() if "redis:" in line and "failed" in line]) == 1, log
        redis, _ = start_redis(tmp_path, redis_port)

        def answering_again() -> bool:
            call(gw.port, "/v1/chat/completions", chat("after"), key=KEY)
            return "redis: answering again" in gw.log()

        wait_until(answering_again, timeout=10, every=0.3, what="the log line saying Redis answers again")
        assert call(gw.port, "/ready", method="GET", key=None).status == 200
    finally:
        gw.stop()
        stop_process(redis)


def _raw(port: int, data: bytes, timeout: float = 30.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection; (everything answered until the gateway closes the
    connection, seconds until it did)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - t0


@pytest.fixture
def gateway(tmp_path, upstream):
    gw = start_gateway(tmp_path, upstream, keys=KEYS, header_read_timeout_seconds=1.0)
    yield gw
    gw.stop()


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: app"],
                         ids=["nothing", "part of its headers"])
def test_a_client_that_does_not_finish_its_headers_is_cut_off_after_the_header_read_timeout(gateway, sent):
    received, seconds = _raw(gateway.port, sent)
    assert received == b"" and 0.9 <= seconds < 4.0, (received[:200], seconds)


def test_a_header_with_a_control_character_gets_a_400_and_one_log_line_without_traceback(gateway):
    seen = len(gateway.log())
    received, _ = _raw(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nUser-Agent: bad\x01agent\r\n"
                       b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 2\r\n\r\n{}")
    assert received.startswith(b"HTTP/1.") and b" 400 " in received.split(b"\r\n")[0], received[:200]
    wait_until(lambda: "malformed HTTP request" in gateway.log()[seen:], timeout=5, what="the gateway's log line")
    new = gateway.log()[seen:].splitlines()
    assert "Traceback" not in "\n".join(new)
    assert [line for line in new if "malformed HTTP request" in line and "127.0.0.1" in line] == new, new


def test_a_raw_non_utf8_byte_in_the_url_gets_aiohttps_400_and_one_log_line_without_traceback(gateway):
    """aiohttp's parser refuses it before any handler or middleware runs, so the body is its own
    text/plain one, not the OpenAI shape (a RequestHandler of our own would take private aiohttp
    API); what the gateway controls is its log."""
    seen = len(gateway.log())
    received, _ = _raw(gateway.port, b"GET /v1/\xffmodels HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b" 400 " in received.split(b"\r\n")[0], received[:200]
    wait_until(lambda: "malformed HTTP request" in gateway.log()[seen:], timeout=5, what="the gateway's log line")
    new = gateway.log()[seen:].splitlines()
    assert "Traceback" not in "\n".join(new)
    assert len(new) == 1 and "malformed HTTP request (Invalid char in url path)" in new[0], new
