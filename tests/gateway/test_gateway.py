"""The gateway, end to end: a real ``distillguard serve`` process in front of the mock upstream.

Each behaviour of issue 6 is one test: what a client sees on the wire, and what lands in the
store afterwards.
"""

from __future__ import annotations

import json
import resource
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distillguard.detect import inherit
from distillguard.store import Store
from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import admin_call, call, chat, start_gateway, stored, wait_until

#: 40 ms between the upstream's chunks: a relayed stream of 10 chunks is seen arriving over 0.4 s
UPSTREAM_CHUNK_DELAY_MS = 40

#: a campaign script's own system prompt (an indicator of 21 words) and a short framing one
SCRIPT_PROMPT = ("You are a world-class expert. Work through the problem exhaustively and verify each step. "
                 "Always include code where it helps.")


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    write_scan(tmp / "scan", [("carol", "block", "campaign-1"), ("dave", "throttle", "campaign-1"),
                              ("bob", "fallback", "campaign-1"), ("erin", "block", "campaign-1")],
               [("campaign-1", "throttle", "payment", "card-campaign", 40),
                ("campaign-1", "throttle", "system_prompt", inherit.system_prompt_key(SCRIPT_PROMPT), 436),
                ("campaign-1", "throttle", "system_prompt", "you are a harvester", 200)])
    gw = start_gateway(tmp, upstream, keys=KEYS, verdicts=str(tmp / "scan"), fallback_model="safe-small",
                       admin_token="s3cret", upstream_timeout_seconds=2.0,
                       policy={"allowlist_organizations": ["verified-uni"]})
    yield gw
    gw.stop()


# --- proxying ---------------------------------------------------------------------------------

def test_a_chat_completion_passes_through_unchanged(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("hello there", system="be brief"))
    assert reply.status == 200
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "hello there"
    assert body["model"] == "m-large"
    assert reply.headers["x-distillguard-exchange-id"].startswith("gw-")


def upstream_saw(upstream: int) -> dict:
    """The headers and the model of the last request the mock upstream was sent."""
    return call(upstream, "/mock/last-request", method="GET", key=None).json()


@pytest.mark.slow  # a gateway process of its own
def test_the_clients_key_never_goes_upstream(gateway, upstream, tmp_path):
    assert call(gateway.port, "/v1/chat/completions", chat("hi")).status == 200
    assert not {"authorization", "x-api-key"} & {k.lower() for k in upstream_saw(upstream)["headers"]}
    gw = start_gateway(tmp_path, upstream, keys=KEYS, upstream_api_key="sk-provider-upstream")
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 200
        assert upstream_saw(upstream)["headers"]["Authorization"] == "Bearer sk-provider-upstream"
    finally:
        gw.stop()


def test_a_stream_is_passed_through_chunk_by_chunk(gateway):
    # the mock sends 10 events 40 ms apart: the first must reach the client long before the last
    reply = call(gateway.port, "/v1/chat/completions", chat("chunks:10", stream=True))
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [e for e in reply.body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" and len(events) == 12
    assert len(reply.chunk_times) >= 5, "the stream arrived in one piece"
    assert reply.chunk_times[-1] - reply.chunk_times[0] > 0.25


@pytest.mark.parametrize("path, body, text", [
    ("/v1/completions", {"model": "m", "prompt": "complete this"}, "complete this"),
    ("/v1/responses", {"model": "m", "input": "respond to this"}, "respond to this"),
    ("/v1/messages", {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "anthropic style"}]},
     "anthropic style"),
])
def test_every_api_family_is_proxied(gateway, path, body, text):
    reply = call(gateway.port, path, body)
    assert reply.status == 200
    assert text in reply.body.decode()


def test_models_are_listed_for_a_known_key_only(gateway):
    assert call(gateway.port, "/v1/models", method="GET").json()["data"][0]["id"] == "mock-model"
    assert call(gateway.port, "/v1/models", method="GET", key="sk-unknown").status == 401


@pytest.mark.parametrize("key", ["sk-unknown", "sk-gone", None])
def test_an_unknown_or_revoked_key_gets_401_in_the_openai_shape(gateway, key):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi"), key=key)
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


def test_an_unknown_path_is_404_in_the_openai_shape(gateway):
    reply = call(gateway.port, "/v1/nothing-here", {})
    assert reply.status == 404
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_an_upstream_4xx_passes_through_with_its_status(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("status:422"))
    assert reply.status == 422
    assert reply.json()["error"]["message"] == "mock upstream answers 422"


def test_an_upstream_timeout_is_a_504(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("sleep:4"))
    assert reply.status == 504
    assert reply.json()["error"]["code"] == "upstream_timeout"


@pytest.mark.slow  # a gateway process of its own
def test_an_unreachable_upstream_is_a_502(tmp_path):
    from distillguard.gateway.ports import free_port

    gw = start_gateway(tmp_path, free_port(), keys=KEYS)
    try:
        reply = call(gw.port, "/v1/chat/completions", chat("anyone there?"))
        assert reply.status == 502 and reply.json()["error"]["code"] == "upstream_unreachable"
    finally:
        gw.stop()


def test_invalid_json_is_a_400(gateway):
    reply = call(gateway.port, "/v1/chat/completions", b"{not json")
    assert reply.status == 400 and reply.json()["error"]["code"] == "invalid_json"


# --- enforcement ------------------------------------------------------------------------------

def test_a_blocked_account_gets_403_that_sdks_do_not_retry(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi"), key="sk-carol")
    assert reply.status == 403
    assert reply.headers["x-should-retry"] == "false"
    assert reply.json()["error"]["code"] == "account_blocked"
    # the reasons are the operator's (admin API, store, reports), never the client's
    assert "test reason for carol" not in reply.body.decode()
    assert "test reason for carol: linkage 0.9 >= 0.4" in admin(gateway.port, "GET", "/admin/verdicts/carol").json()[
        "reasons"]


def test_a_throttled_account_gets_429_with_retry_after(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi"), key="sk-dave")
    assert reply.status == 429
    assert int(reply.headers["retry-after"]) == 3600
    assert int(reply.headers["retry-after-ms"]) == 3_600_000
    assert reply.json()["error"]["type"] == "rate_limit_error"


def test_fallback_serves_the_fallback_model_under_the_name_asked_for(gateway, upstream):
    reply = call(gateway.port, "/v1/chat/completions", chat("hi", model="m-large"), key="sk-bob")
    assert reply.status == 200
    assert upstream_saw(upstream)["model"] == "safe-small"
    # nothing tells the account it is suspected (test_gateway_requests compares it with a normal answer)
    assert reply.json()["model"] == "m-large"
    assert [h for h in reply.headers if h.startswith("x-distillguard-")] == ["x-distillguard-exchange-id"]


def _actions_counted(port: int) -> dict[str, float]:
    """/metrics's count of requests per enforcement action applied."""
    text = admin(port, "GET", "/metrics").body.decode()
    return {s.labels["action"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "distillguard_actions_total"}


def test_an_allowlisted_organisation_is_only_monitored(gateway, upstream):
    # erin's scan verdict is block; her organisation is on the policy's allowlist
    before = _actions_counted(gateway.port)
    reply = call(gateway.port, "/v1/chat/completions", chat("hi", model="m-large"), key="sk-erin")
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "hi"
    assert upstream_saw(upstream)["model"] == "m-large"  # served as asked, not the fallback model
    after = _actions_counted(gateway.port)
    assert after.get("monitor", 0) - before.get("monitor", 0) == 1
    assert after.get("block", 0) == before.get("block", 0)


def test_a_new_account_with_a_campaign_card_inherits_its_action(gateway):
    reply = call(gateway.port, "/v1/chat/completions", chat("first request"), key="sk-recruit")
    assert reply.status == 429
    reasons = admin(gateway.port, "GET", "/admin/verdicts/recruit").json()["reasons"]
    assert "inherits throttle from campaign-1" in reasons[0]


def test_a_new_account_sending_a_campaigns_own_long_system_prompt_inherits_from_its_second_request(gateway):
    assert call(gateway.port, "/v1/chat/completions", chat("task 1", system=SCRIPT_PROMPT), key="sk-scripted").status == 200
    reply = call(gateway.port, "/v1/chat/completions", chat("task 2", system=SCRIPT_PROMPT), key="sk-scripted")
    assert reply.status == 429
    reasons = " ".join(admin(gateway.port, "GET", "/admin/verdicts/scripted").json()["reasons"])
    assert "inherits throttle from campaign-1" in reasons and "own 21-word system prompt" in reasons
    # a short framing is a phrase anyone may type: alone, however often, it is not enough
    for i in range(4):
        assert call(gateway.port, "/v1/chat/completions", chat(f"q{i}", system="You are a harvester."),
                    key="sk-copycat").status == 200


@pytest.mark.slow  # a gateway process of its own
def test_new_verdicts_are_picked_up_without_a_restart(upstream, tmp_path):
    write_scan(tmp_path / "scan", [])
    gw = start_gateway(tmp_path, upstream, keys=KEYS, verdicts=str(tmp_path / "scan"))
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 200
        write_scan(tmp_path / "scan", [("alice", "block", "campaign-9")])
        wait_until(lambda: call(gw.port, "/v1/chat/completions", chat("hi")).status == 403, timeout=10,
                   what="the new verdict to be picked up")
    finally:
        gw.stop()


@pytest.mark.slow  # a gateway process of its own
def test_an_account_over_its_online_limit_is_throttled_until_the_window_frees(upstream, tmp_path):
    policy = {"gateway": {"limits": [{"scope": "account", "window_seconds": 3600, "max_requests": 3}]}}
    gw = start_gateway(tmp_path, upstream, keys=KEYS, policy=policy)
    try:
        statuses = [call(gw.port, "/v1/chat/completions", chat(f"q{i}")).status for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        refused = call(gw.port, "/v1/chat/completions", chat("again"))
        # the reason (limit 3) stays in the log; the client gets a reference to quote
        assert refused.headers["x-distillguard-exchange-id"] in refused.json()["error"]["message"]
        assert 0 < int(refused.headers["retry-after"]) <= 300  # a bucket of the hour, not the scan's hour
        assert call(gw.port, "/v1/chat/completions", chat("other account"), key="sk-bob").status == 200
    finally:
        gw.stop()


# --- admin and metrics ------------------------------------------------------------------------

def admin(port: int, method: str, path: str, body=None, token: str | None = "s3cret"):
    return admin_call(port, method, path, body, token)


def test_the_admin_api_needs_its_token(gateway):
    assert admin(gateway.port, "GET", "/admin/verdicts", token=None).status == 401
    assert admin(gateway.port, "GET", "/admin/verdicts", token="wrong").status == 401
    listing = admin(gateway.port, "GET", "/admin/verdicts").json()
    assert {v["account_id"] for v in listing["verdicts"]} >= {"carol", "dave", "bob"}


@pytest.mark.slow  # a gateway process of its own
def test_the_admin_api_is_off_without_a_token(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS)
    try:
        assert admin(gw.port, "GET", "/admin/verdicts").status == 404
    finally:
        gw.stop()


def test_an_override_holds_at_once_and_is_kept_with_who_and_when(gateway):
    before = admin(gateway.port, "GET", "/admin/verdicts/carol").json()
    assert before["action"] == "block" and before["source"] == "verdict"
    set_ = admin(gateway.port, "POST", "/admin/accounts/carol/action",
                 {"action": "allow", "reason": "verified customer, ticket 123", "actor": "jo"})
    assert set_.status == 200 and set_.json()["override"]["actor"].startswith("jo")
    assert call(gateway.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 200
    bad = admin(gateway.port, "POST", "/admin/accounts/carol/action", {"action": "nuke", "reason": "x"})
    assert bad.status == 400
    assert admin(gateway.port, "POST", "/admin/accounts/carol/action", {"action": "block"}).status == 400


def test_metrics_are_in_prometheus_text(gateway):
    call(gateway.port, "/v1/chat/completions", chat("count me"))
    assert call(gateway.port, "/metrics", method="GET", key=None).status == 401  # the operator's, on this port
    text = admin(gateway.port, "GET", "/metrics").body.decode()
    assert 'distillguard_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'distillguard_request_duration_seconds_bucket{le="+Inf",route="/v1/chat/completions"}' in text
    assert "distillguard_actions_total{action=\"block\"}" in text


# --- the exchange log -------------------------------------------------------------------------

@pytest.mark.slow  # a gateway process of its own
def test_every_exchange_lands_in_the_store_in_the_canonical_schema(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS, trusted_proxies=["127.0.0.1/32"], asn_header="X-Client-ASN")
    call(gw.port, "/v1/chat/completions", chat("logged prompt", system="sys text"),
         headers={"X-Forwarded-For": "203.0.113.7", "User-Agent": "test-agent/1.0", "X-Client-ASN": "AS64500"})
    call(gw.port, "/v1/chat/completions", chat("chunks:4", stream=True))
    call(gw.port, "/v1/chat/completions", chat("status:400"))
    assert gw.stop() == 0
    rows = stored(gw.db, "SELECT prompt, system_prompt, account_id, payment_fingerprint, client_ip, user_agent, "
                         "input_tokens, output_tokens, status_code FROM exchanges ORDER BY timestamp")
    assert rows[0] == ("logged prompt", "sys text", "alice", "card-a", "203.0.113.7", "test-agent/1.0", 5, 2, 200)
    assert rows[1][0] == "chunks:4" and rows[1][7] == 4  # usage from the stream's last event
    assert rows[2][8] == 400
    assert stored(gw.db, "SELECT client_asn FROM exchanges ORDER BY timestamp") == [(64500,), (None,), (None,)]
    assert stored(gw.db, "SELECT count(*) FROM quarantine") == [(0,)]


@pytest.mark.slow  # a gateway process of its own
def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS, asn_header="X-Client-ASN")
    call(gw.port, "/v1/chat/completions", chat("spoof"),
         headers={"X-Forwarded-For": "203.0.113.7", "X-Client-ASN": "64500"})
    gw.stop()
    assert stored(gw.db, "SELECT client_ip, client_asn FROM exchanges") == [("127.0.0.1", None)]


@pytest.mark.slow  # a gateway process of its own
def test_no_answered_exchange_is_lost_on_kill_9(upstream, tmp_path):
    # a long segment interval, so that nothing has been loaded when the process dies
    gw = start_gateway(tmp_path, upstream, keys=KEYS, segment_seconds=3600, load_every_seconds=3600)
    answered = sum(call(gw.port, "/v1/chat/completions", chat(f"request {i}")).status == 200 for i in range(40))
    answered += sum(call(gw.port, "/v1/chat/completions", chat("chunks:3", stream=True)).status == 200
                    for _ in range(10))
    gw.stop(signal.SIGKILL)
    again = start_gateway(tmp_path, upstream, keys=KEYS)  # the same db and log directory
    assert again.stop() == 0
    assert stored(gw.db, "SELECT count(*) FROM exchanges") == [(answered,)]
    assert answered == 50


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.slow  # a gateway process of its own
def test_an_unwritable_log_fails_closed_and_says_so(upstream, tmp_path):
    Store(tmp_path / "gw.duckdb").close()  # created before the file-size limit applies
    gw = start_gateway(tmp_path, upstream, keys=KEYS, preexec=_small_files, load_every_seconds=3600)
    try:
        statuses = [call(gw.port, "/v1/chat/completions", chat("x" * 4000)).status for _ in range(8)]
        assert statuses[0] == 200 and statuses[-1] == 503
        assert "failing closed" in gw.log()
    finally:
        gw.stop(signal.SIGKILL)


@pytest.mark.slow  # a gateway process of its own
def test_an_unwritable_log_can_fail_open(upstream, tmp_path):
    Store(tmp_path / "gw.duckdb").close()
    gw = start_gateway(tmp_path, upstream, keys=KEYS, preexec=_small_files, load_every_seconds=3600,
                       on_log_failure="open")
    try:
        statuses = [call(gw.port, "/v1/chat/completions", chat("x" * 4000)).status for _ in range(8)]
        assert statuses == [200] * 8
        assert "failing open" in gw.log()
    finally:
        gw.stop(signal.SIGKILL)


# --- keys -------------------------------------------------------------------------------------

@pytest.mark.slow  # runs the keys commands as processes
def test_keys_are_managed_from_the_command_line_and_stored_hashed(upstream, tmp_path):
    import subprocess
    import sys

    db = tmp_path / "gw.duckdb"
    cli = [sys.executable, "-m", "distillguard.cli", "keys"]
    added = subprocess.run([*cli, "add", "--account", "frank", "--db", str(db)], capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-dg-")
    listing = json.loads(subprocess.run([*cli, "list", "--db", str(db), "--json"], capture_output=True,
                                        text=True).stdout)
    assert [k["account_id"] for k in listing] == ["frank"]
    assert secret not in db.read_bytes().decode("latin-1")
    gw = start_gateway(tmp_path, upstream)
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key=secret).status == 200
    finally:
        gw.stop()
    revoked = subprocess.run([*cli, "revoke", "frank", "--db", str(db)], capture_output=True, text=True)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    gw = start_gateway(tmp_path, upstream)
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key=secret).status == 401
    finally:
        gw.stop()


@pytest.mark.slow  # a gateway process of its own
def test_a_cookie_one_upstream_answer_sets_never_travels_with_another_clients_request(upstream, tmp_path):
    """The gateway's upstream connection pool is shared by every client: a cookie the provider sets
    in one client's answer (the mock sets one in every answer) must not go up with the next
    client's request. The upstream is named by host name, as a deployed one is (cookie jars
    ignore cookies from bare IP addresses)."""
    gw = start_gateway(tmp_path, upstream, keys=KEYS, upstream=f"http://localhost:{upstream}")
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-alice").status == 200
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 200
        assert "cookie" not in {k.lower() for k in upstream_saw(upstream)["headers"]}
    finally:
        gw.stop()
