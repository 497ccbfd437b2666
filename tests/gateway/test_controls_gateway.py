"""Entity controls through a running gateway: a disabled model (for everyone, or for one
organisation or country), blocked organisations, e-mail domains, ASNs and countries, each applied
at once, still in force after a restart, in the audit trail, shared with another gateway through
Redis; the policy file's controls; bad bodies refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.inputs import KEYS
from tests.gateway.procs import admin_call, call, chat, start_redis, stop_process, wait_until

pytestmark = pytest.mark.slow  # each test starts gateway processes of its own: 2-8 s each
TOKEN = "controls-admin-token-0123456789"
GEOIP = Path(__file__).parents[1] / "data" / "geoip" / "GeoIP2-Country-Test.mmdb"
GB_IP, SE_IP = "81.2.69.160", "89.160.20.112"  # in MaxMind's test database
#: a trusted proxy (this host) says where the client is and which autonomous system it is in
BEHIND_PROXY = {"trusted_proxies": ["127.0.0.1/32"], "asn_header": "X-Client-ASN", "geoip": str(GEOIP)}


def admin(port: int, method: str, path: str, body=None):
    return admin_call(port, method, path, body, TOKEN)


def ask(port: int, key: str = "sk-alice", model: str = "m-large", ip: str | None = None, asn: int | None = None):
    headers = ({"X-Forwarded-For": ip} if ip else {}) | ({"X-Client-ASN": f"AS{asn}"} if asn else {})
    return call(port, "/v1/chat/completions", chat("hello", model=model), key=key, headers=headers)


def code(reply) -> tuple[int, str | None]:
    return reply.status, reply.json()["error"]["code"] if reply.status >= 400 else None


def control(port: int, **body):
    reply = admin(port, "POST", "/admin/controls", {"reason": "case 31: resold access", "actor": "jo"} | body)
    assert reply.status == 200, reply.body
    return reply.json()["control"]


def test_each_kind_of_control_refuses_at_once_and_after_a_restart(upstream, tmp_path, gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, **BEHIND_PROXY)
    assert code(ask(gw.port, model="m-old")) == (200, None)
    control(gw.port, kind="model", value="m-old", action="disable")
    control(gw.port, kind="model", value="m-large", action="disable", scope={"organizations": ["org-b"]})
    control(gw.port, kind="email_domain", value="example.com", action="block")  # alice's
    control(gw.port, kind="asn", value="AS64500", action="block")
    control(gw.port, kind="country", value="SE", action="block")
    control(gw.port, kind="organization", value="verified-uni", action="block")  # erin's

    def check() -> None:
        assert code(ask(gw.port, key="sk-carol", model="m-old")) == (404, "model_not_found")
        assert code(ask(gw.port, key="sk-bob", model="m-large")) == (404, "model_not_found")  # org-b only
        assert code(ask(gw.port, key="sk-carol", model="m-large")) == (200, None)
        blocked = ask(gw.port, key="sk-alice")
        assert code(blocked) == (403, "account_blocked") and "case 31" not in blocked.body.decode()
        assert code(ask(gw.port, key="sk-carol", asn=64500)) == (403, "account_blocked")
        assert code(ask(gw.port, key="sk-carol", asn=64501)) == (200, None)
        assert code(ask(gw.port, key="sk-carol", ip=SE_IP)) == (403, "account_blocked")
        assert code(ask(gw.port, key="sk-carol", ip=GB_IP)) == (200, None)
        assert code(ask(gw.port, key="sk-erin")) == (403, "account_blocked")
        models = call(gw.port, "/v1/models", method="GET", key="sk-carol").json()
        assert [m["id"] for m in models["data"]] == ["mock-model"]

    check()
    listed = admin(gw.port, "GET", "/admin/controls").json()
    assert listed["count"] == 6 and listed["geoip"]["loaded"] is True
    gw.stop()
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, **BEHIND_PROXY)
    check()
    audit = admin(gw.port, "GET", "/admin/controls/audit").json()["events"]
    assert [(e["op"], e["control"]["kind"], e["actor"]) for e in audit][:2] == [("set", "model", "jo"),
                                                                               ("set", "model", "jo")]
    assert len(audit) == 6


def test_a_removed_control_no_longer_refuses_and_the_audit_keeps_what_it_was(upstream, tmp_path, gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN)
    held = control(gw.port, kind="organization", value="org-b", action="block")
    assert code(ask(gw.port, key="sk-bob")) == (403, "account_blocked")
    gone = admin(gw.port, "DELETE", f"/admin/controls/{held['control_id']}", {"reason": "contract signed"})
    assert gone.status == 200, gone.body
    assert code(ask(gw.port, key="sk-bob")) == (200, None)
    assert admin(gw.port, "DELETE", f"/admin/controls/{held['control_id']}", {"reason": "again"}).status == 404
    audit = admin(gw.port, "GET", "/admin/controls/audit").json()["events"]
    assert [(e["op"], (e["previous"] or {}).get("value")) for e in audit] == [("set", None), ("remove", "org-b")]


def test_a_model_disabled_for_a_country_is_hidden_from_its_model_list_only(upstream, tmp_path, gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, **BEHIND_PROXY)
    control(gw.port, kind="model", value="mock-model", action="disable", scope={"countries": ["GB"]})
    gb = call(gw.port, "/v1/models", method="GET", key="sk-carol", headers={"X-Forwarded-For": GB_IP})
    se = call(gw.port, "/v1/models", method="GET", key="sk-carol", headers={"X-Forwarded-For": SE_IP})
    assert gb.json()["data"] == [] and [m["id"] for m in se.json()["data"]] == ["mock-model"]
    assert code(ask(gw.port, key="sk-carol", model="mock-model", ip=GB_IP)) == (404, "model_not_found")
    assert code(ask(gw.port, key="sk-carol", model="mock-model", ip=SE_IP)) == (200, None)


def test_without_a_geoip_database_a_country_control_is_accepted_but_said_to_be_inert(upstream, tmp_path, gateways):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, trusted_proxies=["127.0.0.1/32"])
    row = control(gw.port, kind="country", value="gb", action="block")
    assert (row["value"], row["inert"]) == ("GB", True)
    assert code(ask(gw.port, key="sk-carol", ip=GB_IP)) == (200, None)
    listed = admin(gw.port, "GET", "/admin/controls").json()
    assert listed["geoip"]["loaded"] is False and "inert" in listed["geoip"]["detail"]


def test_policy_file_controls_hold_from_the_start_and_cannot_be_removed_through_the_api(upstream, tmp_path, gateways):
    policy = {"controls": [{"kind": "model", "value": "m-retired", "action": "disable", "reason": "retired"}]}
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN, policy=policy)
    assert code(ask(gw.port, model="m-retired")) == (404, "model_not_found")
    [row] = admin(gw.port, "GET", "/admin/controls").json()["controls"]
    assert row["read_only"] is True
    refused = admin(gw.port, "DELETE", f"/admin/controls/{row['control_id']}", {"reason": "try"})
    assert code(refused) == (409, "read_only")


@pytest.mark.parametrize("body, says", [
    ({"kind": "planet", "value": "x", "action": "block", "reason": "r"}, "kind: Input should be"),
    ({"kind": "asn", "value": 64500, "action": "block", "reason": "r"}, "value: Input should be a valid string"),
    ({"kind": "model", "value": "m", "action": "block", "reason": "r"}, "a model control's action is disable"),
    ({"kind": "model", "value": "m", "action": "disable", "reason": "r", "expires_at": "soon"},
     "expires_at: 'soon' is not an ISO-8601 time"),
    ({"kind": "model", "value": "m", "action": "disable"}, "reason: required"),
])
def test_a_bad_control_body_is_a_400_naming_the_field(upstream, tmp_path, gateways, body, says):
    gw = gateways(tmp_path, upstream, keys=KEYS, admin_token=TOKEN)
    reply = admin(gw.port, "POST", "/admin/controls", body)
    assert code(reply) == (400, "invalid_body") and says in reply.json()["error"]["message"]
    assert "Traceback" not in gw.log()


def test_a_control_set_on_one_gateway_holds_on_another_through_redis(upstream, tmp_path, gateways):
    redis_proc, redis_port = start_redis(tmp_path)
    try:
        common = {"keys": KEYS, "admin_token": TOKEN, "state": f"redis://127.0.0.1:{redis_port}/0"}
        a = gateways(tmp_path / "a", upstream, name="a", **common)
        b = gateways(tmp_path / "b", upstream, name="b", **common)
        control(a.port, kind="organization", value="org-b", action="block")
        wait_until(lambda: ask(b.port, key="sk-bob").status == 403, what="gateway b to apply a's control")
        assert admin(b.port, "GET", "/admin/controls").json()["count"] == 1
    finally:
        stop_process(redis_proc)
