"""An operator's override on a whole campaign (its stable id), and overrides another process
(the analyst console) appends to the gateway's override file: enforced by the running gateway."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

import pytest

from distillguard.detect.policy import Policy
from distillguard.gateway import overrides as overrides_mod
from distillguard.gateway.enforce import Enforcer, Request, ScanOutputs, campaign_key
from distillguard.gateway.limits import MemoryCounters
from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import admin_call, call, chat, start_gateway, wait_until

TOKEN = "s3cret-admin-token"


def decide(enforcer: Enforcer, account: str) -> str:
    r = Request(account, None, None, None, None, None, None, None, datetime.now(UTC))
    return asyncio.run(enforcer.decide(r)).action


def enforcer_for(tmp_path, verdicts) -> Enforcer:
    write_scan(tmp_path / "scan", verdicts)
    return Enforcer(Policy(), ScanOutputs(tmp_path / "scan"), MemoryCounters())


def test_a_campaign_override_applies_to_every_member_of_the_campaign_and_to_no_one_else(tmp_path):
    e = enforcer_for(tmp_path, [("m1", "monitor", "campaign-x"), ("m2", "throttle", "campaign-x"),
                                ("other", "throttle", "campaign-y")])
    book = overrides_mod.Book()
    e.overrides = book.active
    book.apply(overrides_mod.Event.new(campaign_key("campaign-x"), "block", "case 7", "ana", None, None, None,
                                       datetime.now(UTC)))
    assert [decide(e, a) for a in ("m1", "m2", "other", "stranger")] == ["block", "block", "throttle", "allow"]


def test_an_accounts_own_override_outranks_its_campaigns(tmp_path):
    e = enforcer_for(tmp_path, [("m1", "throttle", "campaign-x"), ("m2", "throttle", "campaign-x")])
    book = overrides_mod.Book()
    e.overrides = book.active
    now = datetime.now(UTC)
    book.apply(overrides_mod.Event.new(campaign_key("campaign-x"), "block", "case 7", "ana", None, None, None, now))
    book.apply(overrides_mod.Event.new("m1", "allow", "verified lab", "ana", None, None, None, now))
    assert (decide(e, "m1"), decide(e, "m2")) == ("allow", "block")


def test_a_campaign_override_covers_a_member_a_later_scan_adds(tmp_path):
    e = enforcer_for(tmp_path, [("m1", "throttle", "campaign-x")])
    book = overrides_mod.Book()
    e.overrides = book.active
    book.apply(overrides_mod.Event.new(campaign_key("campaign-x"), "block", "case 7", "ana", None, None, None,
                                       datetime.now(UTC)))
    assert decide(e, "late") == "allow"
    write_scan(tmp_path / "scan", [("m1", "throttle", "campaign-x"), ("late", "monitor", "campaign-x")])
    os.utime(tmp_path / "scan" / "verdicts.parquet", ns=(time.time_ns() + 10**9,) * 2)
    e.refresh()
    assert decide(e, "late") == "block"


@pytest.mark.slow  # a gateway process and its upstream: about 4 s
def test_a_campaign_block_through_the_admin_api_and_an_event_another_process_appends_are_enforced(
        upstream, tmp_path):
    write_scan(tmp_path / "scan", [("carol", "monitor", "campaign-1"), ("dave", "monitor", "campaign-1")])
    gw = start_gateway(tmp_path, upstream, keys=KEYS, env={"DISTILLGUARD_ADMIN_TOKEN": TOKEN},
                       verdicts=str(tmp_path / "scan"))
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 200
        set_ = admin_call(gw.port, "POST", "/admin/campaigns/campaign-1/action",
                          {"action": "block", "reason": "case 9", "actor": "jo"}, TOKEN)
        assert set_.status == 200, set_.body
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 403
        assert admin_call(gw.port, "GET", "/admin/verdicts/dave", token=TOKEN).json()["source"] == "override"
        assert admin_call(gw.port, "POST", "/admin/accounts/campaign:campaign-1/action",
                          {"action": "allow", "reason": "x"}, TOKEN).status == 400
        lift = admin_call(gw.port, "DELETE", "/admin/campaigns/campaign-1/override", {"reason": "closed"}, TOKEN)
        assert lift.status == 200, lift.body
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 200
        # the console writes to the same durable file the gateway keeps; the gateway picks it up
        state = tmp_path / "gw.gateway-state"
        overrides_mod.OverrideFile(state).append(overrides_mod.Event.new(
            "alice", "block", "case 10", "console:ana", None, None, None, datetime.now(UTC)))
        wait_until(lambda: call(gw.port, "/v1/chat/completions", chat("hi")).status == 403, timeout=5,
                   what="the appended block to be enforced")
        audit = admin_call(gw.port, "GET", "/admin/overrides/audit", token=TOKEN).json()["events"]
        assert [(e["account_id"], e["action"]) for e in audit] == [
            ("campaign:campaign-1", "block"), ("campaign:campaign-1", "lift"), ("alice", "block")]
    finally:
        gw.stop()
