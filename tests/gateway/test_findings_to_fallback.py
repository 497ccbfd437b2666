"""The policy's ``gateway.findings_to_fallback``: a throttle the scan's verdicts put on an account
is served by the fallback model instead of a 429, the client's answer naming the model it asked
for; overrides, online limits, the allowlist and the verify rule keep their own answers. In
process (the enforcer) and through a running gateway, across a policy reload and a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from distillguard.detect.policy import Policy
from distillguard.gateway import controls
from distillguard.gateway.enforce import Decision, Enforcer, Override, Request, ScanOutputs
from distillguard.gateway.limits import MemoryCounters
from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import admin_call, call, chat, wait_until

NOW = datetime.now(UTC)
ON = {"gateway": {"findings_to_fallback": True}}
TOKEN = "fallback-admin-token-0123456789"
CALIBRATED = "block (BiCM null): 6 entities share 9 rare tokens, corrected p=1e-12"


def _enforcer(tmp_path: Path, policy: dict, verdicts: list[tuple[str, str, str | None]],
              reason: str | None = None) -> Enforcer:
    write_scan(tmp_path / "scan", verdicts, reason=reason)
    return Enforcer(Policy.model_validate(policy), ScanOutputs(tmp_path / "scan"), MemoryCounters())


def _decide(enforcer: Enforcer, account: str, org: str | None = None, created: datetime | None = None) -> Decision:
    decision = asyncio.run(enforcer.decide(Request(account, org, None, None, created, "10.0.0.1", None, "hi", NOW)))
    return controls.step_up(decision, created, NOW, enforcer.policy)  # as the gateway applies it next


def test_without_the_option_a_throttled_account_is_refused_as_before(tmp_path):
    enforcer = _enforcer(tmp_path, {}, [("alice", "throttle", "campaign-1")])
    assert _decide(enforcer, "alice").action == "throttle"


def test_with_the_option_a_verdicts_throttle_becomes_fallback_and_says_why(tmp_path):
    enforcer = _enforcer(tmp_path, ON, [("alice", "throttle", "campaign-1"), ("bob", "monitor", None),
                                        ("carol", "block", "campaign-1")])
    alice = _decide(enforcer, "alice")
    assert (alice.action, alice.source, alice.campaign_id) == ("fallback", "verdict", "campaign-1")
    assert "gateway.findings_to_fallback" in alice.reasons[-1] and alice.reasons[0].startswith("test reason")
    assert _decide(enforcer, "bob").action == "monitor"
    assert _decide(enforcer, "carol").action == "block"
    assert _decide(enforcer, "dave").action == "allow"


def test_overrides_online_limits_and_the_allowlist_keep_their_own_answers(tmp_path):
    policy = ON | {"allowlist_organizations": ["verified-uni"],
                   "gateway": ON["gateway"] | {"limits": [{"scope": "account", "max_requests": 1}]}}
    enforcer = _enforcer(tmp_path, policy, [("alice", "throttle", None), ("erin", "throttle", None)])
    enforcer.overrides["alice"] = Override("throttle", "case 3", "jo", NOW)
    assert _decide(enforcer, "alice").action == "throttle"  # the operator chose a 429
    assert _decide(enforcer, "erin", org="verified-uni").action == "monitor"
    assert _decide(enforcer, "dave").action == "allow"
    flood = _decide(enforcer, "dave")  # over the limit: a flood, not a finding
    assert (flood.action, flood.source) == ("throttle", "limit")


def test_the_verify_rule_still_takes_a_new_account_and_the_fallback_serves_the_others(tmp_path):
    enforcer = _enforcer(tmp_path, ON | {"verify": {"enabled": True, "new_account_days": 7}},
                         [("recruit", "throttle", "campaign-1"), ("alice", "throttle", "campaign-1")],
                         reason=CALIBRATED)
    assert _decide(enforcer, "recruit", created=NOW - timedelta(days=1)).action == "verify"
    assert _decide(enforcer, "alice", created=NOW - timedelta(days=400)).action == "fallback"
    assert _decide(enforcer, "alice").action == "fallback"  # creation unknown: never new


# --- through a running gateway ---------------------------------------------------------------------

def _upstream_model(port: int) -> str:
    return call(port, "/mock/last-request", method="GET", key=None).json()["model"]


@pytest.mark.slow  # gateway processes of the test's own
def test_a_throttled_account_is_served_by_the_fallback_as_if_by_its_model_after_a_reload_and_a_restart(
        upstream, tmp_path, gateways):
    write_scan(tmp_path / "scan", [("alice", "throttle", "campaign-1")])
    settings = {"keys": KEYS, "admin_token": TOKEN, "fallback_model": "safe-small",
                "verdicts": str(tmp_path / "scan")}
    gw = gateways(tmp_path, upstream, policy={}, **settings)
    refused = wait_until(lambda: (r := call(gw.port, "/v1/chat/completions", chat("x"))).status == 429 and r,
                         what="the scan's verdicts to load")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"

    (tmp_path / "gw-policy.yaml").write_text(yaml.safe_dump(ON))  # the operator turns the option on
    reloaded = admin_call(gw.port, "POST", "/admin/policy/reload", token=TOKEN)
    assert reloaded.status == 200, reloaded.body
    for stream in (False, True):
        normal = call(gw.port, "/v1/chat/completions", chat("same question", stream=stream), key="sk-bob")
        assert _upstream_model(upstream) == "m-large"
        served = call(gw.port, "/v1/chat/completions", chat("same question", stream=stream))
        assert _upstream_model(upstream) == "safe-small"  # the fallback model answered
        assert served.status == normal.status == 200
        assert sorted(served.headers) == sorted(normal.headers)
        assert b"safe-small" not in served.body and b'"model":"m-large"' in served.body.replace(b" ", b"")
    gw.stop()

    gw = gateways(tmp_path, upstream, policy=ON, **settings)
    again = call(gw.port, "/v1/chat/completions", chat("after the restart"))
    assert again.status == 200 and _upstream_model(upstream) == "safe-small"
    assert again.json()["model"] == "m-large"
