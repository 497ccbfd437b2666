"""The gateway's operator-facing state and its process lifecycle, with real ``distillguard serve``
processes: overrides that hold (through loader rounds, restarts, kill -9, new scans) and expire,
their audit trail, where the admin API and /metrics listen and what they need, /health and
/ready, and how the gateway and its loader process stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distillguard.gateway.journal import Journal, Loader
from distillguard.gateway.ports import free_port
from tests.gateway.inputs import KEYS, write_scan
from tests.gateway.procs import (admin_call, call, chat, live_processes, start_gateway, start_redis, start_upstream,
                                 stop_process, stored, wait_until)

pytestmark = pytest.mark.slow  # each test starts and stops gateway processes of its own: 2-10 s each
TOKEN = "s3cret-admin-token"
UPSTREAM_CHUNK_DELAY_MS = 20


def admin(port: int, method: str, path: str, body=None, token: str | None = TOKEN):
    return admin_call(port, method, path, body, token)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not); reaps it when it is ours to reap."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gateway_with_admin(tmp: Path, upstream: int, **settings):
    return start_gateway(tmp, upstream, keys=KEYS, env={"DISTILLGUARD_ADMIN_TOKEN": TOKEN}, **settings)


# --- overrides are durable state ---------------------------------------------------------------

def test_a_block_holds_after_many_loader_rounds_and_is_copied_into_the_store(upstream, tmp_path):
    # the loader ran every 5 s and took the override file on its first round, so a block was
    # gone within seconds; here it runs every 0.2 s: 40 rounds in 8 s, the same code path as
    # 120 rounds in 10 minutes at the default interval
    gw = gateway_with_admin(tmp_path, upstream, load_every_seconds=0.2, segment_seconds=0.2)
    try:
        set_ = admin(gw.port, "POST", "/admin/accounts/alice/action",
                     {"action": "block", "reason": "case 42: harvesting", "actor": "jo"})
        assert set_.status == 200, set_.body
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # traffic, so that segments are closed and loaded all along
            assert call(gw.port, "/v1/chat/completions", chat("still blocked?")).status == 403
            assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-bob").status == 200
            time.sleep(0.2)
        listed = admin(gw.port, "GET", "/admin/overrides").json()
        assert [(o["account_id"], o["action"]) for o in listed["overrides"]] == [("alice", "block")]
    finally:
        gw.stop()
    assert stored(gw.db, "SELECT account_id, action, actor FROM overrides") == [("alice", "block", "jo")]
    audit = stored(gw.db, "SELECT account_id, action, reason, previous_action FROM override_audit")
    assert audit == [("alice", "block", "case 42: harvesting", None)]
    assert stored(gw.db, "SELECT count(*) FROM exchanges WHERE account_id = 'bob'")[0][0] >= 10
    assert stored(gw.db, "SELECT count(*) FROM quarantine")[0][0] == 0


def test_an_acknowledged_override_survives_kill_9_and_a_restart(upstream, tmp_path):
    gw = gateway_with_admin(tmp_path, upstream)
    assert admin(gw.port, "POST", "/admin/accounts/alice/action", {"action": "block", "reason": "r"}).status == 200
    gw.stop(signal.SIGKILL)  # at once: only what was fsynced before the answer can hold
    for _ in range(2):  # after the kill -9, and after a clean stop
        gw = gateway_with_admin(tmp_path, upstream)
        try:
            assert call(gw.port, "/v1/chat/completions", chat("after restart")).status == 403
            assert admin(gw.port, "GET", "/admin/verdicts/alice").json()["source"] == "override"
        finally:
            gw.stop()


def test_an_override_outranks_a_new_scan_whose_verdicts_say_allow(upstream, tmp_path):
    scan = tmp_path / "scan"
    write_scan(scan, [("carol", "block", "campaign-1")])
    gw = gateway_with_admin(tmp_path, upstream, verdicts=str(scan))
    try:
        assert admin(gw.port, "POST", "/admin/accounts/alice/action", {"action": "block", "reason": "r"}).status == 200
        assert admin(gw.port, "POST", "/admin/accounts/carol/action",
                     {"action": "allow", "reason": "verified customer"}).status == 200
        before = admin(gw.port, "GET", "/admin/verdicts/alice").json()["scan_as_of"]
        time.sleep(0.05)
        # the scan's new verdicts: alice allowed, carol blocked again
        write_scan(scan, [("alice", "allow", None), ("carol", "block", "campaign-2")])
        wait_until(lambda: admin(gw.port, "GET", "/admin/verdicts/alice").json()["scan_as_of"] != before,
                   what="the new verdicts to be loaded")
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 403
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-carol").status == 200
    finally:
        gw.stop()


def test_an_override_holds_until_it_expires(upstream, tmp_path):
    gw = gateway_with_admin(tmp_path, upstream)
    try:
        expires = datetime.now(UTC) + timedelta(seconds=2)
        set_ = admin(gw.port, "POST", "/admin/accounts/alice/action",
                     {"action": "block", "reason": "cool-off", "expires_at": expires.isoformat()})
        assert set_.status == 200 and set_.json()["override"]["expires_at"] is not None
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 403
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 200
        assert admin(gw.port, "GET", "/admin/overrides").json()["count"] == 0
        assert admin(gw.port, "GET", "/admin/verdicts/alice").json()["source"] == "default"
    finally:
        gw.stop()


def test_lifting_an_override_returns_the_account_to_its_verdict_and_every_change_is_audited(upstream, tmp_path):
    scan = tmp_path / "scan"
    write_scan(scan, [("dave", "throttle", "campaign-1")])
    gw = gateway_with_admin(tmp_path, upstream, verdicts=str(scan))
    try:
        assert admin(gw.port, "POST", "/admin/accounts/dave/action",
                     {"action": "block", "reason": "escalated", "actor": "jo"}).status == 200
        assert admin(gw.port, "POST", "/admin/accounts/dave/action",
                     {"action": "allow", "reason": "customer verified", "actor": "sam"}).status == 200
        lifted = admin(gw.port, "DELETE", "/admin/overrides/dave", {"reason": "back to the scan", "actor": "kim"})
        assert lifted.status == 200 and lifted.json()["source"] == "verdict"
        assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-dave").status == 429
        assert admin(gw.port, "DELETE", "/admin/overrides/dave", {"reason": "again"}).status == 404
        events = admin(gw.port, "GET", "/admin/overrides?history=1").json()["events"]
        assert [(e["action"], e["actor"], e["reason"], (e["previous"] or {}).get("action")) for e in events] == [
            ("block", "jo", "escalated", None), ("allow", "sam", "customer verified", "block"),
            ("lift", "kim", "back to the scan", "allow")]
        assert all(e["at"] and e["remote"] == "127.0.0.1" for e in events)
        assert admin(gw.port, "GET", "/admin/overrides/audit?account=nobody").json()["count"] == 0
    finally:
        gw.stop()
    assert stored(gw.db, "SELECT count(*) FROM override_audit")[0][0] == 3
    assert stored(gw.db, "SELECT count(*) FROM overrides")[0][0] == 0


@pytest.mark.parametrize("body, code", [
    ({"action": "block", "reason": "r", "expire_at": "2099-01-01T00:00:00Z"}, "invalid_body"),
    ({"action": "block", "reason": "r", "expires_at": "2001-01-01T00:00:00Z"}, "invalid_expires_at"),
    ({"action": "block", "reason": "r", "expires_at": "2099-01-01T00:00:00"}, "invalid_expires_at"),
    ({"action": "block", "reason": "r", "expires_at": 5}, "invalid_expires_at"),
    ({"action": "lift", "reason": "r"}, "invalid_action"),
    ({"action": {}, "reason": "r"}, "invalid_action"),
    ({"action": "block", "reason": "r", "actor": ["x"]}, "invalid_body"),
    (["block"], "invalid_body"),
    (b"\xff\xfe not json", "invalid_body"),
])
def test_an_override_body_that_is_not_understood_is_a_400_and_changes_nothing(upstream, tmp_path, body, code):
    gw = gateway_with_admin(tmp_path, upstream)
    try:
        reply = admin(gw.port, "POST", "/admin/accounts/alice/action", body)
        assert reply.status == 400 and reply.json()["error"]["code"] == code
        assert admin(gw.port, "GET", "/admin/overrides?history=1").json()["count"] == 0
    finally:
        gw.stop()


def test_the_loader_takes_only_its_own_segment_names(tmp_path):
    journal = Journal(tmp_path / "log")
    journal.append({"exchange_id": "x"})
    others = [tmp_path / "log" / name for name in ("overrides.jsonl", "notes.jsonl", "[ab].jsonl")]
    for path in others:
        path.write_text('{"account_id": "a"}\n')
    loader = Loader(journal, tmp_path / "dg.duckdb", in_process=True)
    loader.round(rotate=True)
    journal.close()
    assert all(p.exists() for p in others)
    assert [p.name for p in journal.closed_segments()] == []


# --- the admin token and the admin listener ---------------------------------------------------

def test_serve_refuses_an_admin_token_on_the_command_line(upstream, tmp_path):
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "serve", "--upstream",
                           f"http://127.0.0.1:{upstream}", "--db", str(tmp_path / "x.duckdb"), "--port",
                           str(free_port()), "--admin-token", "visible-in-ps"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "--admin-token-file" in done.stderr and "Traceback" not in done.stderr
    assert "visible-in-ps" not in done.stderr


def test_the_admin_token_comes_from_a_file(upstream, tmp_path):
    (tmp_path / "token").write_text("from-a-file\n")
    gw = start_gateway(tmp_path, upstream, keys=KEYS, args=("--admin-token-file", str(tmp_path / "token")))
    try:
        assert admin(gw.port, "GET", "/admin/overrides", token="from-a-file").status == 200
        assert admin(gw.port, "GET", "/admin/overrides", token="wrong").status == 401
    finally:
        gw.stop()


def test_metrics_on_the_main_port_need_the_admin_token(upstream, tmp_path):
    gw = gateway_with_admin(tmp_path, upstream)
    try:
        assert call(gw.port, "/metrics", method="GET", key=None).status == 401
        assert admin(gw.port, "GET", "/metrics").status == 200
        assert call(gw.port, "/health", method="GET", key=None).status == 200
    finally:
        gw.stop()


def test_an_admin_port_takes_the_admin_api_and_metrics_off_the_public_port(upstream, tmp_path):
    admin_port = free_port()
    gw = gateway_with_admin(tmp_path, upstream, args=("--admin-port", str(admin_port)))
    try:
        assert admin(gw.port, "GET", "/admin/verdicts").status == 404
        assert admin(gw.port, "GET", "/metrics").status == 404
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 200
        assert admin(admin_port, "GET", "/admin/verdicts").status == 200
        assert admin(admin_port, "GET", "/admin/verdicts", token="wrong").status == 401
        assert call(admin_port, "/metrics", method="GET", key=None).status == 200
        assert call(admin_port, "/v1/chat/completions", chat("hi")).status == 404
    finally:
        gw.stop()
    assert "admin API and /metrics listening on http://127.0.0.1:" in gw.log()


def test_counters_are_prometheus_counters(upstream, tmp_path):
    gw = gateway_with_admin(tmp_path, upstream)
    try:
        call(gw.port, "/v1/chat/completions", chat("count me"))
        call(gw.port, "/v1/chat/completions", chat("count me"), key="sk-nobody")
        text = admin(gw.port, "GET", "/metrics").body.decode()
    finally:
        gw.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("distillguard_requests", "distillguard_actions", "distillguard_log_rows_appended",
                 "distillguard_log_rows_loaded", "distillguard_log_failures"):
        assert families[name].type == "counter", name
    assert families["distillguard_request_duration_seconds"].type == "histogram"
    assert families["distillguard_verdicts_loaded"].type == "gauge"
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["distillguard_requests"].samples
                if s.name.endswith("_total")}
    assert requests[("/v1/chat/completions", "200")] == 1 and requests[("/v1/chat/completions", "401")] == 1
    assert "_created" not in text


# --- health, readiness, start-up ---------------------------------------------------------------

def test_health_is_liveness_and_ready_says_which_component_is_down(tmp_path):
    redis, redis_port = start_redis(tmp_path)  # first: it skips the test where there is no redis-server
    up, up_port = start_upstream()
    gw = start_gateway(tmp_path, up_port, keys=KEYS, state=f"redis://127.0.0.1:{redis_port}/0")
    try:
        ready = call(gw.port, "/ready", method="GET", key=None)
        assert ready.status == 200, ready.body
        assert set(ready.json()["components"]) == {"store", "log", "upstream", "redis"}
        stop_process(up)
        stop_process(redis)
        down = call(gw.port, "/ready", method="GET", key=None)
        assert down.status == 503
        components = down.json()["components"]
        assert not components["upstream"]["ok"] and not components["redis"]["ok"] and components["store"]["ok"]
        assert call(gw.port, "/health", method="GET", key=None).status == 200
    finally:
        gw.stop()
        stop_process(up)
        stop_process(redis)


def test_a_gateway_without_keys_says_so_once_at_start_up(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream)
    try:
        assert call(gw.port, "/v1/chat/completions", chat("hi")).status == 401
    finally:
        gw.stop()
    assert gw.log().count("no API keys") == 1


def test_serve_on_a_busy_port_is_one_line_and_exit_2(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS)
    try:
        done = subprocess.run([sys.executable, "-m", "distillguard.cli", "serve", "--upstream",
                               f"http://127.0.0.1:{upstream}", "--db", str(tmp_path / "other.duckdb"), "--port",
                               str(gw.port)], capture_output=True, text=True, timeout=60)
    finally:
        gw.stop()
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and f"127.0.0.1:{gw.port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --- stopping ----------------------------------------------------------------------------------

def test_sigterm_to_the_process_group_stops_the_gateway_and_its_loader_promptly(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS, preexec=os.setsid)
    loader = wait_until(lambda: live_processes(parent=gw.proc.pid), what="the loader process")
    assert call(gw.port, "/v1/chat/completions", chat("logged before the stop")).status == 200
    t0 = time.monotonic()
    os.killpg(gw.proc.pid, signal.SIGTERM)
    try:
        rc = gw.proc.wait(timeout=20)
    finally:
        gw.stop(signal.SIGKILL)
        for pid in loader:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert rc == 0 and time.monotonic() - t0 < 10
    assert not any(alive(pid) for pid in loader)
    assert stored(gw.db, "SELECT count(*) FROM exchanges")[0][0] == 1


def test_kill_9_of_the_gateway_takes_its_loader_with_it(upstream, tmp_path):
    gw = start_gateway(tmp_path, upstream, keys=KEYS)
    loader = wait_until(lambda: live_processes(parent=gw.proc.pid), what="the loader process")
    gw.stop(signal.SIGKILL)
    try:
        wait_until(lambda: not any(alive(pid) for pid in loader), timeout=5, what="the loader to die with its parent")
    finally:
        for pid in loader:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
