"""Step-up verification through a running gateway: an operator's verify answers 403
verification_required with a reference, holds across a restart, and an allow lifts it; the
policy's verify rule does the same for a new account whose scan verdict rests on a calibrated test."""

from __future__ import annotations

import pytest

from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import admin_call, call, chat, wait_until

pytestmark = pytest.mark.slow  # each test starts gateway processes of its own: 2-6 s each
TOKEN = "verify-admin-token-0123456789"


def admin(port: int, method: str, path: str, body=None):
    return admin_call(port, method, path, body, TOKEN)


def test_verify_refuses_with_a_reference_until_an_operator_allows_and_holds_across_a_restart(upstream, tmp_path,
                                                                                           gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN)
    set_ = admin(gw.port, "POST", "/admin/accounts/alice/action",
                 {"action": "verify", "reason": "case 12: linked to campaign-77 by card", "actor": "jo"})
    assert set_.status == 200, set_.body
    reference = set_.json()["verification_reference"]
    refused = call(gw.port, "/v1/chat/completions", chat("hello"))
    error = refused.json()["error"]
    assert (refused.status, error["type"], error["code"]) == (403, "permission_error", "verification_required")
    assert reference in error["message"] and "campaign" not in error["message"] and "case 12" not in refused.body.decode()
    assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-bob").status == 200
    gw.stop()

    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN)
    again = call(gw.port, "/v1/chat/completions", chat("hello again"))
    assert again.status == 403 and reference in again.json()["error"]["message"]
    lifted = admin(gw.port, "POST", "/admin/accounts/alice/action", {"action": "allow", "reason": "verified by id"})
    assert lifted.status == 200 and lifted.json()["action"] == "allow"
    assert call(gw.port, "/v1/chat/completions", chat("hello")).status == 200
    audit = admin(gw.port, "GET", "/admin/overrides/audit?account=alice").json()["events"]
    assert [(e["action"], (e["previous"] or {}).get("action")) for e in audit] == [("verify", None),
                                                                                  ("allow", "verify")]


def test_the_policy_sends_a_new_account_with_a_calibrated_finding_to_verify(upstream, tmp_path, gateways):
    write_scan(tmp_path / "scan", [("recruit", "throttle", "campaign-1"), ("alice", "throttle", "campaign-1")],
               reason="block (BiCM null): 6 entities share 9 rare tokens, corrected p=1e-12")
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, verdicts=str(tmp_path / "scan"),
                  policy={"verify": {"enabled": True, "new_account_days": 7}})
    # recruit was created just now (inputs.KEYS); alice's creation is unknown, so she is not new
    new = wait_until(lambda: (r := call(gw.port, "/v1/chat/completions", chat("x"), key="sk-recruit")).status == 403
                     and r, what="the scan's verdicts to load")
    assert new.json()["error"]["code"] == "verification_required"
    old = call(gw.port, "/v1/chat/completions", chat("x"))
    assert (old.status, old.json()["error"]["code"]) == (429, "rate_limit_exceeded")
