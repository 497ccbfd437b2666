"""Live routing through a running ``distillguard serve``: an account whose requests match an
imported indicator no organic account used is served by the fallback model, and its client
sees an answer shaped like anyone else's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from distillguard.gateway import live
from distillguard.intel import indicators as intel
from distillguard.store import Store
from tests.gateway.procs import admin_call, call, chat

pytestmark = pytest.mark.slow  # a gateway process of the test's own

KEYS = [{"api_key": "sk-alice", "account_id": "alice", "email_domain": "example.com"},
        {"api_key": "sk-mallory", "account_id": "mallory", "email_domain": "bad.example"}]
#: headers whose values differ from one answer to the next
_PER_ANSWER = {"date", "x-distillguard-exchange-id", "content-length"}


def _upstream_saw(port: int) -> dict:
    return json.loads(call(port, "/mock/last-request", method="GET", key=None).body)


def _same_but_for_time(a: bytes, b: bytes) -> None:
    strip = re.compile(rb'"created":\d+')
    assert strip.sub(b"", a) == strip.sub(b"", b)


def test_a_session_matching_an_imported_indicator_is_served_by_the_fallback_in_the_same_shape(
        tmp_path, upstream, gateways):
    indicator = intel.Indicator("feed.json", "ind-1", "email-domain", "bad.example", confidence=90)
    with Store(str(tmp_path / "gw.duckdb")) as store:
        intel.store(store.con, [indicator], datetime.now(UTC))
    tails = {s.name: [live.Tail() for _ in range(live.BUCKETS)] for s in live.STATISTICS}
    # 5,000 organic accounts, none of which ever came from that domain
    live.Reference(tails, 5000, {indicator.indicator_id: 0}).write(tmp_path / "live.json")
    gw = gateways(tmp_path, upstream, keys=KEYS, fallback_model="safe-small", admin_token="s3cret",
                  live_reference=str(tmp_path / "live.json"))
    for stream in (False, True):
        normal = call(gw.port, "/v1/chat/completions", chat("same question", stream=stream), key="sk-alice")
        assert _upstream_saw(upstream)["model"] == "m-large"
        routed = call(gw.port, "/v1/chat/completions", chat("same question", stream=stream), key="sk-mallory")
        assert _upstream_saw(upstream)["model"] == "safe-small"  # the fallback model answered
        assert routed.status == normal.status == 200
        assert sorted(routed.headers) == sorted(normal.headers)
        for name in set(normal.headers) - _PER_ANSWER:
            assert routed.headers[name] == normal.headers[name], name
        assert b"safe-small" not in routed.body
        _same_but_for_time(routed.body, normal.body)
    metrics = admin_call(gw.port, "GET", "/metrics", token="s3cret").body.decode()
    assert re.search(r"^distillguard_live_routed_total 2\.0$", metrics, re.M), metrics
    assert re.search(r"^distillguard_live_sessions_routed_total 1\.0$", metrics, re.M)
    assert re.search(r"^distillguard_live_looks_total 4\.0$", metrics, re.M)
    assert "mallory routed to the fallback for the rest of its session" in gw.log()
