"""The LiteLLM guardrail and logging callback inside a real LiteLLM proxy process (no database:
keys come through LiteLLM's custom auth), in front of the mock upstream."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from datetime import UTC, datetime

from distillguard.gateway.journal import Journal, Loader
from distillguard.gateway.overrides import Event, OverrideFile
from distillguard.store import Store
from distillguard.gateway.ports import free_port, wait_port
from tests.gateway.inputs import write_scan
from tests.gateway.procs import call, chat, live_processes, wait_until

litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed")
pytestmark = pytest.mark.slow  # starts the LiteLLM proxy: 10-20 s each
LITELLM = shutil.which("litellm", path=str(Path(sys.executable).parent))

AUTH = '''
from litellm.proxy._types import UserAPIKeyAuth
ACCOUNTS = {"sk-ok": "alice", "sk-blocked": "carol", "sk-throttled": "dave", "sk-erin": "erin"}
async def user_api_key_auth(request, api_key):
    if api_key not in ACCOUNTS:
        raise Exception("invalid key")
    return UserAPIKeyAuth(api_key=api_key, user_id=ACCOUNTS[api_key], team_id="team-" + ACCOUNTS[api_key])
'''
GUARDRAIL = "distillguard.gateway.litellm.DistillguardGuardrail"


@pytest.fixture
def proxy(tmp_path, upstream):
    write_scan(tmp_path / "scan", [("carol", "block", "campaign-1"), ("dave", "throttle", "campaign-1")])
    (tmp_path / "custom_auth.py").write_text(AUTH)
    (tmp_path / "litellm.yaml").write_text(yaml.safe_dump({
        "model_list": [{"model_name": "m-large", "litellm_params": {
            "model": "openai/m-large", "api_base": f"http://127.0.0.1:{upstream}/v1", "api_key": "up"}}],
        "general_settings": {"custom_auth": "custom_auth.user_api_key_auth", "use_x_forwarded_for": True,
                             "master_key": "sk-master-" + "x" * 40},
        "guardrails": [{"guardrail_name": "distillguard", "litellm_params": {
            "guardrail": GUARDRAIL, "mode": "pre_call", "default_on": True,
            "distillguard_config": str(tmp_path / "distillguard.yaml")}}],
        "litellm_settings": {"callbacks": "distillguard.gateway.litellm.guard"}}))
    (tmp_path / "distillguard.yaml").write_text(yaml.safe_dump({
        "db": str(tmp_path / "dg.duckdb"), "verdicts": str(tmp_path / "scan"), "log_dir": str(tmp_path / "log"),
        "state_dir": str(tmp_path / "state"), "load_every_seconds": 0.5, "segment_seconds": 0.5,
        "reload_every_seconds": 0.2}))
    port = free_port()
    # the guardrail's config comes from the proxy's config; no DISTILLGUARD_LITELLM_CONFIG
    env = {k: v for k, v in os.environ.items() if k != "DISTILLGUARD_LITELLM_CONFIG"} | {
        "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([LITELLM, "--config", str(tmp_path / "litellm.yaml"), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=(tmp_path / "litellm.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_port(port, proc, timeout=120)
        except Exception:
            print((tmp_path / "litellm.log").read_text()[-5000:])
            raise
        yield port, proc, tmp_path
    finally:
        # the whole group: LiteLLM's own children and the plugin's loader process with it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _wait_group_gone(pgid: int, timeout: float = 15.0) -> list[int]:
    """Wait until no process of group ``pgid`` runs; those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := live_processes(group=pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _stored(tmp: Path, proc: subprocess.Popen, columns: str) -> list[tuple]:
    """The exchanges in the store once LiteLLM has stopped, oldest first."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    _wait_group_gone(proc.pid)  # the loader process finishes its round, and lets go of the store, after LiteLLM
    # whatever the exit did not load is still on disk; load it as the gateway would at start-up
    Loader(Journal(tmp / "log"), tmp / "dg.duckdb").round(rotate=True)
    with Store(tmp / "dg.duckdb", read_only=True) as store:
        return store.con.execute(f"SELECT {columns} FROM exchanges ORDER BY timestamp").fetchall()


def test_the_guardrail_refuses_a_blocked_account_without_saying_why_and_serves_an_allowed_one(proxy):
    port, proc, tmp = proxy
    blocked = call(port, "/v1/chat/completions", chat("hi"), key="sk-blocked")
    assert blocked.status == 403, blocked.body
    assert b"cannot use the API" in blocked.body
    # the scan's reasons (campaign, linkage figures) stay in the log
    assert b"campaign-1" not in blocked.body and b"linkage" not in blocked.body and b"carol" not in blocked.body
    allowed = call(port, "/v1/chat/completions", chat("let me through"), key="sk-ok")
    assert allowed.status == 200 and allowed.json()["choices"][0]["message"]["content"] == "let me through"


def test_an_operators_override_is_applied_by_the_running_guardrail(proxy):
    port, proc, tmp = proxy
    assert call(port, "/v1/chat/completions", chat("before"), key="sk-erin").status == 200
    # as the gateway's admin API writes it, into the state directory the guardrail reads
    OverrideFile(tmp / "state").append(Event.new("erin", "block", "case 12", "ops@example.com", None, None, None,
                                                 datetime.now(UTC)))
    wait_until(lambda: call(port, "/v1/chat/completions", chat("after"), key="sk-erin").status == 403,
               timeout=10, what="the guardrail to apply the override")
    assert call(port, "/v1/chat/completions", chat("still"), key="sk-ok").status == 200


def test_each_exchange_is_logged_once_with_litellms_identity(proxy):
    port, proc, tmp = proxy
    ok = call(port, "/v1/chat/completions", chat("who am i"), key="sk-ok",
              headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "User-Agent": "probe/1.0"})
    assert ok.status == 200, ok.body
    assert call(port, "/v1/chat/completions", chat("hi"), key="sk-blocked").status == 403
    rows = _stored(tmp, proc, "account_id, api_key_id, organization_id, client_ip, prompt, status_code")
    key_id = "key-" + hashlib.sha256(b"sk-ok").hexdigest()[:12]  # LiteLLM's key hash, as the gateway names keys
    assert rows[0] == ("alice", key_id, "team-alice", "203.0.113.9", "who am i", 200)
    assert [(r[0], r[5]) for r in rows] == [("alice", 200), ("carol", 403)]  # guardrail and callback: one row each


def test_the_plugin_applies_verdicts_and_logs_exchanges_in_litellm(proxy):
    port, proc, tmp = proxy
    ok = call(port, "/v1/chat/completions", chat("through litellm"), key="sk-ok")
    assert ok.status == 200, ok.body
    assert ok.json()["choices"][0]["message"]["content"] == "through litellm"
    blocked = call(port, "/v1/chat/completions", chat("hi"), key="sk-blocked")
    assert blocked.status == 403, blocked.body
    throttled = call(port, "/v1/chat/completions", chat("hi"), key="sk-throttled")
    assert throttled.status == 429, throttled.body
    assert int(throttled.headers["retry-after"]) == 3600
    streamed = call(port, "/v1/chat/completions", chat("chunks:3", stream=True), key="sk-ok")
    assert streamed.status == 200 and b"[DONE]" in streamed.body
    rows = _stored(tmp, proc, "account_id, prompt, status_code, output_tokens")
    assert [(a, s) for a, _, s, _ in rows] == [("alice", 200), ("carol", 403), ("dave", 429), ("alice", 200)]
    assert rows[0][1] == "through litellm" and rows[0][3] == 2


def test_stopping_litellm_with_sigterm_leaves_no_loader_process_behind(proxy):
    """uvicorn re-raises SIGTERM after its shutdown, so the plugin's atexit drain never runs:
    the loader process must end on its own when its parent is gone."""
    port, proc, tmp = proxy
    assert call(port, "/v1/chat/completions", chat("hello"), key="sk-ok").status == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert _wait_group_gone(proc.pid) == []


def test_the_guardrails_refusals_carry_the_logged_exchange_id_as_support_reference(proxy):
    port, proc, tmp = proxy
    refused = {key: call(port, "/v1/chat/completions", chat("hi"), key=key) for key in ("sk-blocked", "sk-throttled")}
    references = {}
    for key, reply in refused.items():
        assert reply.status in (403, 429), reply.body
        found = re.search(rb"quote reference (litellm-[\w-]+)", reply.body)
        assert found, reply.body
        references[key] = found.group(1).decode()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    Loader(Journal(tmp / "log"), tmp / "dg.duckdb").round(rotate=True)
    with Store(tmp / "dg.duckdb", read_only=True) as store:
        logged = dict(store.con.execute("SELECT exchange_id, account_id FROM exchanges").fetchall())
    assert logged[references["sk-blocked"]] == "carol" and logged[references["sk-throttled"]] == "dave"
