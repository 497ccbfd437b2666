"""The gateway's request path as a client meets it: what it accepts, what it answers, what it
passes on each way and what it logs, with a real ``distillguard serve`` process in front of
the mock upstream. Where a client library would clean the bytes up, the request is written
on a raw socket.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway.inputs import write_scan
from tests.gateway.procs import call, chat, start_gateway, stored

pytestmark = pytest.mark.slow  # gateway processes (one per module, one per test for several): test_gateway keeps quick ones
KEYS = [
    {"api_key": "sk-alice", "account_id": "alice"},
    {"api_key": "sk-bob", "account_id": "bob"},
    {"api_key": "sk-carol", "account_id": "carol"},
    {"api_key": "sk-dave", "account_id": "dave"},
]
#: the scan's reasons name what gave an account away: none of it may reach the client
REASON = "linked to campaign-7 through card-77 and 10.9.8.0/24"
MAX_BODY = 200_000


def start(tmp: Path, upstream_port: int, **settings: Any):
    """A gateway where carol is blocked, dave throttled and bob served the fallback model."""
    write_scan(tmp / "scan", [("carol", "block", "campaign-7"), ("dave", "throttle", "campaign-7"),
                              ("bob", "fallback", "campaign-7")], reason=REASON)
    return start_gateway(tmp, upstream_port, keys=KEYS, verdicts=str(tmp / "scan"), fallback_model="safe-small",
                         admin_token="s3cret", upstream_timeout_seconds=5.0, max_request_bytes=MAX_BODY,
                         client_read_timeout_seconds=1.0, **settings)


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    gw = start(tmp_path_factory.mktemp("gw"), upstream)
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway(upstream, tmp_path):
    """A gateway of the test's own, whose store the test reads after stopping it."""
    gw = start(tmp_path, upstream)
    yield gw
    gw.stop()


# --- a client on a raw socket -----------------------------------------------------------------

class Raw:
    """One answer read off a raw socket: status, headers (lower-case names), body (de-chunked)."""

    def __init__(self, data: bytes) -> None:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.decode().strip().lower()] = value.decode("latin-1").strip()
        if self.headers.get("transfer-encoding") == "chunked":
            body = b""
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                body, rest = body + rest[:n], rest[n + 2:]
            rest = body
        self.body = rest

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                timeout: float = 30.0) -> Raw:
    """One request written byte for byte (``Connection: close``), its answer read to the end."""
    head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return Raw(data)


def body_of(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def metric(port: int, status: int, route: str = "/v1/chat/completions") -> int:
    page = call(port, "/metrics", method="GET", key="s3cret").body.decode()
    found = re.search(rf'distillguard_requests_total{{route="{re.escape(route)}",status="{status}"}} (\d+)', page)
    return int(found.group(1)) if found else 0


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.strip()]


# --- header bytes that are not UTF-8 ------------------------------------------------------------

def test_a_user_agent_that_is_not_utf8_is_served_logged_with_its_bytes_escaped_and_counted(own_gateway):
    gw = own_gateway
    ua = [(b"User-Agent", b"harvester/1.0 \xff\xfe (\xc3\xa9t\xc3\xa9)"), (b"Content-Type", b"application/json")]
    before = {s: metric(gw.port, s) for s in (200, 403)}
    plain = raw_request(gw.port, b"/v1/chat/completions", ua + [(b"Authorization", b"Bearer sk-alice")],
                        body_of(chat("plain answer")))
    assert plain.status == 200 and plain.json()["choices"][0]["message"]["content"] == "plain answer"
    streamed = raw_request(gw.port, b"/v1/chat/completions", ua + [(b"Authorization", b"Bearer sk-alice")],
                           body_of(chat("streamed answer", stream=True)))
    assert streamed.status == 200 and events(streamed.body)[-1] == b"data: [DONE]"
    blocked = raw_request(gw.port, b"/v1/chat/completions", ua + [(b"Authorization", b"Bearer sk-carol")],
                          body_of(chat("let me in")))
    assert blocked.status == 403 and blocked.json()["error"]["code"] == "account_blocked"
    assert metric(gw.port, 200) - before[200] == 2 and metric(gw.port, 403) - before[403] == 1
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()
    rows = stored(gw.db, "SELECT account_id, status_code, user_agent FROM exchanges ORDER BY timestamp")
    # valid UTF-8 (the accented word) stays as it is; each other byte is written \xNN
    assert rows == [(a, s, "harvester/1.0 \\xff\\xfe (\u00e9t\u00e9)") for a, s in
                    (("alice", 200), ("alice", 200), ("carol", 403))]


@pytest.mark.parametrize("header", [(b"Authorization", b"Bearer sk-alice\xff"), (b"x-api-key", b"sk-\xe9alice"),
                                    (b"Authorization", b"Bearer \xc3\xa9")])
def test_an_api_key_header_that_is_not_ascii_is_a_401_and_one_log_line(gateway, header):
    reply = raw_request(gateway.port, b"/v1/chat/completions", [header, (b"Content-Type", b"application/json")],
                        body_of(chat("hi")))
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    log = gateway.log()
    assert "Traceback" not in log and "not ASCII" in log


def test_a_path_that_is_not_utf8_is_a_404_in_the_openai_shape(gateway):
    reply = raw_request(gateway.port, b"/v1/%ff%c3%a9", [], b"")
    assert reply.status == 404 and set(reply.json()["error"]) == {"message", "type", "param", "code"}


# --- compressing upstreams -----------------------------------------------------------------------

def test_answers_of_a_compressing_upstream_reach_the_client_decoded_with_their_usage(own_gateway):
    gw = own_gateway
    for coding in ("gzip", "deflate", "br"):
        reply = call(gw.port, "/v1/chat/completions", chat(f"encoding:{coding} plain"))
        assert reply.status == 200 and "content-encoding" not in reply.headers
        assert reply.json()["choices"][0]["message"]["content"] == f"encoding:{coding} plain"
        reply = call(gw.port, "/v1/chat/completions", chat(f"encoding:{coding} streamed", stream=True))
        assert reply.status == 200 and "content-encoding" not in reply.headers
        got = events(reply.body)
        assert got[0].startswith(b"data: {") and got[-1] == b"data: [DONE]" and len(got) == 4
    gw.stop()
    rows = stored(gw.db, "SELECT prompt, input_tokens, output_tokens FROM exchanges ORDER BY timestamp")
    assert [p for p, _, _ in rows] == [f"encoding:{c} {k}" for c in ("gzip", "deflate", "br")
                                       for k in ("plain", "streamed")]
    assert all(i == 5 and o == 2 for _, i, o in rows), rows


# --- refusals and fallbacks tell the client nothing of why ----------------------------------------

@pytest.mark.parametrize("key, status, code", [("sk-carol", 403, "account_blocked"),
                                                ("sk-dave", 429, "rate_limit_exceeded")])
def test_a_refusal_names_no_reason_but_a_support_reference(gateway, key, status, code):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi"), key=key)
    assert reply.status == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    reference = reply.headers["x-distillguard-exchange-id"]
    assert reference in error["message"]
    for secret in ("campaign", "card-77", "10.9.8", "linked", "override", "policy", "127.0.0.1"):
        assert secret not in reply.body.decode()
    assert not any(name.startswith("x-distillguard-") and name != "x-distillguard-exchange-id"
                   for name in reply.headers)


#: headers whose values differ from one answer to the next, fallback or not
_PER_ANSWER = {"date", "x-distillguard-exchange-id", "content-length"}


def _same_but_for_time(a: bytes, b: bytes) -> None:
    strip = re.compile(rb'"created":\d+')
    assert strip.sub(b"", a) == strip.sub(b"", b)


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_answer_differs_from_a_normal_one_only_in_what_the_fallback_model_says(gateway, upstream,
                                                                                          stream):
    normal = call(gateway.port, "/v1/chat/completions", chat("same question", stream=stream), key="sk-alice")
    fallback = call(gateway.port, "/v1/chat/completions", chat("same question", stream=stream), key="sk-bob")
    seen = json.loads(call(upstream, "/mock/last-request", method="GET", key=None).body)
    assert seen["model"] == "safe-small"  # it was the fallback model that answered
    assert fallback.status == normal.status == 200
    assert sorted(fallback.headers) == sorted(normal.headers)
    assert "x-distillguard-exchange-id" in fallback.headers
    for name in set(normal.headers) - _PER_ANSWER:
        assert fallback.headers[name] == normal.headers[name], name
    assert b"safe-small" not in fallback.body
    _same_but_for_time(fallback.body, normal.body)


# --- an upstream that breaks off -------------------------------------------------------------------

def test_an_upstream_that_closes_mid_stream_ends_it_with_an_error_the_openai_sdk_raises(own_gateway):
    gw = own_gateway
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="sk-alice", max_retries=0)
    stream = client.chat.completions.create(model="m-large", stream=True,
                                            messages=[{"role": "user", "content": "chunks:10 close:4"}])
    received = []
    with pytest.raises(openai.APIError, match="broke off"):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 4
    reply = call(gw.port, "/v1/chat/completions", chat("chunks:10 close:4", stream=True))
    last = events(reply.body)[-1]
    assert b"[DONE]" not in reply.body and json.loads(last.removeprefix(b"data: "))["error"]["code"] == \
        "upstream_incomplete"
    messages = call(gw.port, "/v1/messages", {"model": "m", "max_tokens": 9, "stream": True,
                                              "messages": [{"role": "user", "content": "close:2"}]})
    assert events(messages.body)[-1].startswith(b"event: error\ndata: ")
    unstreamed = call(gw.port, "/v1/chat/completions", chat("close:1"))
    assert unstreamed.status == 502 and unstreamed.json()["error"]["code"] == "upstream_incomplete"
    gw.stop()
    assert stored(gw.db, "SELECT status_code FROM exchanges ORDER BY timestamp") == [(502,)] * 4
    assert gw.log().count("(incomplete)") == 3


# --- what crosses the gateway, each way ---------------------------------------------------------

def test_only_allowlisted_request_headers_reach_the_upstream(gateway, upstream):
    sent = {"Cookie": "session=client-secret", "OpenAI-Organization": "org-client", "OpenAI-Project": "proj-client",
            "Forwarded": "for=10.0.0.1", "X-Forwarded-For": "10.0.0.1", "X-Real-IP": "10.0.0.1",
            "x-api-key": "sk-alice", "anthropic-version": "2023-06-01", "Accept-Encoding": "identity"}
    assert call(gateway.port, "/v1/messages", {"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "hi"}]}, headers=sent).status == 200
    seen = {k.lower(): v for k, v in
            json.loads(call(upstream, "/mock/last-request", method="GET", key=None).body)["headers"].items()}
    for name in ("cookie", "openai-organization", "openai-project", "forwarded", "x-forwarded-for", "x-real-ip",
                 "authorization", "x-api-key"):
        assert name not in seen, name
    assert seen["anthropic-version"] == "2023-06-01" and seen["content-type"] == "application/json"


def test_only_allowlisted_response_headers_reach_the_client(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi"))
    assert reply.status == 200
    for name in ("set-cookie", "openai-organization"):
        assert name not in reply.headers, name
    assert reply.headers["x-ratelimit-remaining-requests"] == "9999"
    assert reply.headers["openai-processing-ms"] == "12"


# --- bodies too large or too slow -------------------------------------------------------------------

def test_a_body_over_the_limit_is_a_413_in_the_openai_shape_logged_and_counted(own_gateway):
    gw = own_gateway
    big = body_of(chat("x" * MAX_BODY))
    declared = call(gw.port, "/v1/chat/completions", big)
    assert declared.status == 413 and declared.json()["error"]["code"] == "request_too_large"
    # chunked: no Content-Length to refuse it by, the gateway counts as it reads
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=iter([big[:100_000], big[100_000:]]),
                 headers={"Authorization": "Bearer sk-alice", "Content-Type": "application/json"},
                 encode_chunked=True)
    chunked = conn.getresponse()
    assert chunked.status == 413 and json.loads(chunked.read())["error"]["code"] == "request_too_large"
    conn.close()
    assert metric(gw.port, 413) == 2
    gw.stop()
    assert stored(gw.db, "SELECT account_id, status_code FROM exchanges") == [("alice", 413)] * 2


def test_a_client_that_stalls_mid_body_is_answered_408_and_cut_off(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
        t0 = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        waited = time.monotonic() - t0
    reply = Raw(data)
    assert reply.status == 408 and reply.json()["error"]["code"] == "request_timeout"
    assert 0.8 < waited < 5, waited  # client_read_timeout_seconds is 1
