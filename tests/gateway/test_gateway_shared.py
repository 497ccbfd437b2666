"""Several gateway processes share counters, overrides and inherited actions through a real Redis."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import (NO_REDIS, admin_call, call, chat, start_gateway, start_redis, stop_process,
                                 wait_until)

pytestmark = [pytest.mark.slow,  # two gateway processes and a Redis per test
              pytest.mark.skipif(shutil.which("redis-server") is None, reason=NO_REDIS)]


@pytest.fixture
def pair(tmp_path, upstream):
    redis_proc, redis_port = start_redis(tmp_path)
    write_scan(tmp_path / "scan", [], [("campaign-1", "throttle", "payment", "card-campaign", 40)])
    policy = {"gateway": {"limits": [{"scope": "account", "window_seconds": 3600, "max_requests": 4}]}}
    common = dict(keys=KEYS, policy=policy, state=f"redis://127.0.0.1:{redis_port}/0", admin_token="s3cret")
    # only the first reads the scan's indicators: what the second knows of them comes through Redis
    gateways = [start_gateway(tmp_path / "a", upstream, name="a", verdicts=str(tmp_path / "scan"), **common),
                start_gateway(tmp_path / "b", upstream, name="b", **common)]
    yield gateways
    for gw in gateways:
        gw.stop()
    stop_process(redis_proc)


def test_the_online_limits_count_across_gateways(pair):
    a, b = pair
    statuses = [call(gw.port, "/v1/chat/completions", chat(f"q{i}")).status for i, gw in enumerate([a, b, a, b, a, b])]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_an_override_on_one_gateway_holds_on_the_other(pair):
    a, b = pair
    assert call(b.port, "/v1/chat/completions", chat("hi"), key="sk-bob").status == 200
    assert admin_call(a.port, "POST", "/admin/accounts/bob/action", {"action": "block", "reason": "case 7"},
                      token="s3cret").status == 200
    wait_until(lambda: call(b.port, "/v1/chat/completions", chat("hi"), key="sk-bob").status == 403, timeout=5,
               what="the other gateway to apply the override")


def test_an_inheritance_is_shared_once_not_at_every_request(pair):
    import redis

    a, _ = pair
    for i in range(5):
        assert call(a.port, "/v1/chat/completions", chat(f"q{i}"), key="sk-recruit").status == 429
    client = redis.Redis.from_url(a.settings["state"])
    entries = client.xrange("dg:changes")
    assert [(e[1][b"kind"], e[1][b"account"]) for e in entries] == [(b"inherited", b"recruit")]
    client.close()


def test_an_inherited_action_holds_on_every_gateway(pair):
    a, b = pair
    assert call(b.port, "/v1/chat/completions", chat("before"), key="sk-recruit").status == 200
    assert call(a.port, "/v1/chat/completions", chat("first"), key="sk-recruit").status == 429
    wait_until(lambda: call(b.port, "/v1/chat/completions", chat("again"), key="sk-recruit").status == 429,
               timeout=5, what="the other gateway to apply the inherited action")


# --- the change stream: each process reads the whole state once, then only what changed ------

@pytest.fixture
def redis_url(tmp_path):
    proc, port = start_redis(tmp_path)
    yield f"redis://127.0.0.1:{port}/0"
    stop_process(proc)


def _shared(url: str):
    import redis.asyncio as redis_asyncio

    from distillguard.gateway.shared import SharedState

    return SharedState(redis_asyncio.from_url(url))


def test_a_process_reads_the_whole_state_once_then_only_the_changes(redis_url):
    async def scenario():
        a, b = _shared(redis_url), _shared(redis_url)
        await a.publish("inherited", "acct-1", b'{"n": 1}')
        await a.publish("overrides", "acct-2", b'{"n": 2}')
        first = await b.changes()
        assert {(c.kind, c.account, c.value) for c in first} == {
            ("inherited", "acct-1", b'{"n": 1}'), ("overrides", "acct-2", b'{"n": 2}')}
        assert await b.changes() == []  # nothing new: nothing read
        for i in range(3, 30):
            await a.publish("inherited", f"acct-{i}", b"{}")
        later = await b.changes()
        assert [c.account for c in later] == [f"acct-{i}" for i in range(3, 30)]  # in order, each once
        assert b.full_reads == 1
        await a.client.aclose()
        await b.client.aclose()

    asyncio.run(scenario())


def test_a_process_whose_unread_changes_were_trimmed_reads_the_whole_state_again(redis_url):
    async def scenario():
        a, b = _shared(redis_url), _shared(redis_url)
        await b.changes()  # an empty state: b is at the start of an empty stream
        for i in range(10):
            await a.publish("inherited", f"acct-{i}", b"{}")
        await a.client.xtrim("dg:changes", maxlen=2, approximate=False)  # eight changes b never read are gone
        seen = await b.changes()
        assert {c.account for c in seen} == {f"acct-{i}" for i in range(10)}
        assert b.full_reads == 2
        await a.publish("overrides", "acct-x", b"{}")
        assert [c.account for c in await b.changes()] == ["acct-x"]
        assert b.full_reads == 2
        await a.client.aclose()
        await b.client.aclose()

    asyncio.run(scenario())
