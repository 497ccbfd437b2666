"""The LiteLLM guardrail and logging callback inside a real LiteLLM proxy process (no database:
keys come through LiteLLM's custom auth), in front of the mock upstream."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from datetime import UTC, datetime

from distillguard.gateway.journal import Journal, Loader
from distillguard.gateway.overrides import Event, OverrideFile
from distillguard.store import Store
from distillguard.store import resellers as stored_resellers
from distillguard.gateway.ports import free_port, wait_port
from tests.gateway.inputs import write_scan
from tests.gateway.procs import Reply, call, chat, live_processes, wait_until

litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed")
pytestmark = pytest.mark.slow  # starts the LiteLLM proxy (10-20 s) twice: one live, one stopped
LITELLM = shutil.which("litellm", path=str(Path(sys.executable).parent))

AUTH = '''
from litellm.proxy._types import UserAPIKeyAuth
ACCOUNTS = {"sk-ok": "alice", "sk-blocked": "carol", "sk-throttled": "dave", "sk-erin": "erin", "sk-frank": "frank",
            "sk-relay": "relay-co"}
async def user_api_key_auth(request, api_key):
    if api_key not in ACCOUNTS:
        raise Exception("invalid key")
    return UserAPIKeyAuth(api_key=api_key, user_id=ACCOUNTS[api_key], team_id="team-" + ACCOUNTS[api_key])
'''
GUARDRAIL = "distillguard.gateway.litellm.DistillguardGuardrail"


@contextmanager
def _litellm_proxy(tmp_path: Path, upstream: int, policy: dict | None = None
                   ) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    """(port, process, directory) of a LiteLLM proxy with the guardrail and the logging callback,
    its verdicts, journal, state and store in ``tmp_path`` and the distillguard ``policy`` given;
    its process group is killed on leaving."""
    write_scan(tmp_path / "scan", [("carol", "block", "campaign-1"), ("dave", "throttle", "campaign-1"),
                                   ("frank", "fallback", "campaign-2"), ("relay-co::user-0", "throttle", "campaign-3"),
                                   ("relay-co::user-1", "allow", None)])
    _store_reseller(tmp_path / "dg.duckdb", tmp_path / "scan", "sk-relay", "relay-co")
    (tmp_path / "custom_auth.py").write_text(AUTH)
    (tmp_path / "litellm.yaml").write_text(yaml.safe_dump({
        "model_list": [{"model_name": "m-large", "litellm_params": {
            "model": "openai/m-large", "api_base": f"http://127.0.0.1:{upstream}/v1", "api_key": "up"}},
                       # the fallback: its model group and the upstream's model name, each a name of its own
                       {"model_name": "m-safe", "litellm_params": {
            "model": "openai/m-safe-upstream", "api_base": f"http://127.0.0.1:{upstream}/v1", "api_key": "up"}}],
        "general_settings": {"custom_auth": "custom_auth.user_api_key_auth", "use_x_forwarded_for": True,
                             "master_key": "sk-master-" + "x" * 40},
        "guardrails": [{"guardrail_name": "distillguard", "litellm_params": {
            "guardrail": GUARDRAIL, "mode": "pre_call", "default_on": True,
            "distillguard_config": str(tmp_path / "distillguard.yaml")}}],
        "litellm_settings": {"callbacks": "distillguard.gateway.litellm.guard"}}))
    (tmp_path / "distillguard.yaml").write_text(yaml.safe_dump({
        "db": str(tmp_path / "dg.duckdb"), "verdicts": str(tmp_path / "scan"), "log_dir": str(tmp_path / "log"),
        "state_dir": str(tmp_path / "state"), "load_every_seconds": 0.5, "segment_seconds": 0.5,
        "reload_every_seconds": 0.2, "fallback_model": "m-safe"}
        | ({"policy": str(tmp_path / "policy.yaml")} if policy else {})))
    if policy:
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
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


def _store_reseller(db: Path, scan: Path, secret: str, account: str) -> None:
    """The store as ``scan --db`` leaves it for a scan that recognised ``secret`` as a reseller's
    key: its scans row (as of the verdicts in ``scan``) and its resellers row."""
    as_of = pq.read_table(scan / "verdicts.parquet", columns=["as_of"])["as_of"][0].as_py()
    with Store(db) as store:
        store.con.execute("CREATE TABLE scans (scan_id VARCHAR, as_of TIMESTAMPTZ)")
        store.con.execute("INSERT INTO scans VALUES ('scan-1', ?)", [as_of])
        stored_resellers.store(store.con, "scan-1", as_of, pa.table({
            "key": ["key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]], "account_id": [account],
            "exchanges": [200], "end_users": [40], "clients": [40], "addresses": [16], "agents": [6],
            "p_end_users": [0.01], "p_clients": [0.1]}))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream):
    """A running proxy that the module's tests share (each uses accounts and prompts of its own);
    no test stops it. Starting LiteLLM takes 10-20 s, so it is started once."""
    with _litellm_proxy(tmp_path_factory.mktemp("litellm-live"), upstream) as started:
        yield started


@dataclass
class StoppedRun:
    """What a proxy answered to ``RUN``, whether its loader outlived its SIGTERM, and the
    exchanges its store held afterwards (oldest first)."""

    replies: dict[str, Reply]
    left_after_sigterm: list[int]
    rows: list[dict]


#: the requests of the stopped run, each with a prompt of its own: name -> (key, body, headers)
RUN = {
    "identity": ("sk-ok", chat("who am i"), {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "User-Agent": "probe/1.0"}),
    "allowed": ("sk-ok", chat("through litellm"), {}),
    "blocked": ("sk-blocked", chat("hi from carol"), {}),
    "throttled": ("sk-throttled", chat("hi from dave"), {}),
    "streamed": ("sk-ok", chat("chunks:3", stream=True), {}),
    "relayed": ("sk-relay", chat("from an end user") | {"user": "user-1"}, {}),
    "relayed for nobody": ("sk-relay", chat("from no end user"), {}),
}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, upstream) -> StoppedRun:
    """A proxy of its own sent ``RUN`` in order, then stopped with SIGTERM as an operator stops
    LiteLLM; the tests below read that one run, each a different fact of it."""
    with _litellm_proxy(tmp_path_factory.mktemp("litellm-stopped"), upstream,
                        policy={"resellers": {"require_end_user": True}}) as (port, proc, tmp):
        replies = {name: call(port, "/v1/chat/completions", body, key=key, headers=headers)
                   for name, (key, body, headers) in RUN.items()}
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        # the loader process finishes its round, and lets go of the store, after LiteLLM
        left = _wait_group_gone(proc.pid)
    # whatever the exit did not load is still on disk; load it as the gateway would at start-up
    Loader(Journal(tmp / "log"), tmp / "dg.duckdb").round(rotate=True)
    with Store(tmp / "dg.duckdb", read_only=True) as store:
        cursor = store.con.execute("SELECT exchange_id, account_id, api_key_id, organization_id, client_ip, prompt, "
                                   "status_code, output_tokens, end_user FROM exchanges ORDER BY timestamp")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r)) for r in cursor.fetchall()]
    return StoppedRun(replies, left, rows)


def _wait_group_gone(pgid: int, timeout: float = 15.0) -> list[int]:
    """Wait until no process of group ``pgid`` runs; those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := live_processes(group=pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


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


def test_each_exchange_is_logged_once_with_litellms_identity(stopped_run):
    assert stopped_run.replies["identity"].status == 200, stopped_run.replies["identity"].body
    key_id = "key-" + hashlib.sha256(b"sk-ok").hexdigest()[:12]  # LiteLLM's key hash, as the gateway names keys
    [identity] = [r for r in stopped_run.rows if r["prompt"] == "who am i"]
    assert (identity["account_id"], identity["api_key_id"], identity["organization_id"], identity["client_ip"],
            identity["status_code"]) == ("alice", key_id, "team-alice", "203.0.113.9", 200)
    # guardrail and callback: one row each, refused or served
    assert sorted(r["prompt"] for r in stopped_run.rows) == sorted(body["messages"][-1]["content"]
                                                                   for _, body, _ in RUN.values())


def test_the_plugin_applies_verdicts_and_logs_exchanges_in_litellm(stopped_run):
    replies = stopped_run.replies
    assert replies["allowed"].status == 200, replies["allowed"].body
    assert replies["allowed"].json()["choices"][0]["message"]["content"] == "through litellm"
    assert replies["blocked"].status == 403, replies["blocked"].body
    assert replies["throttled"].status == 429, replies["throttled"].body
    assert int(replies["throttled"].headers["retry-after"]) == 3600
    assert replies["streamed"].status == 200 and b"[DONE]" in replies["streamed"].body
    rows = stopped_run.rows
    assert [(r["account_id"], r["status_code"]) for r in rows] == [
        ("alice", 200), ("alice", 200), ("carol", 403), ("dave", 429), ("alice", 200), ("relay-co", 200),
        ("relay-co", 400)]
    assert rows[1]["prompt"] == "through litellm" and rows[1]["output_tokens"] == 2


def test_stopping_litellm_with_sigterm_leaves_no_loader_process_behind(stopped_run):
    """uvicorn re-raises SIGTERM after its shutdown, so the plugin's atexit drain never runs:
    the loader process must end on its own when its parent is gone."""
    assert stopped_run.replies["allowed"].status == 200  # the loader had exchanges to load
    assert stopped_run.left_after_sigterm == []


def test_the_guardrails_refusals_carry_the_logged_exchange_id_as_support_reference(stopped_run):
    logged = {r["exchange_id"]: r["account_id"] for r in stopped_run.rows}
    for name, account in (("blocked", "carol"), ("throttled", "dave")):
        reply = stopped_run.replies[name]
        assert reply.status in (403, 429), reply.body
        found = re.search(rb"quote reference (litellm-[\w-]+)", reply.body)
        assert found, reply.body
        assert logged[found.group(1).decode()] == account


def test_a_fallback_answer_through_litellm_names_the_model_asked_for_in_the_body_and_every_stream_chunk(
        proxy, upstream):
    port, proc, tmp = proxy
    served = call(port, "/v1/chat/completions", chat("served by the fallback"), key="sk-frank")
    assert served.status == 200, served.body
    # the upstream was asked for the fallback's model ...
    assert call(upstream, "/mock/last-request", method="GET", key=None).json()["model"] == "m-safe-upstream"
    # ... and the client reads the model it asked for, nowhere the fallback's
    assert served.json()["model"] == "m-large"
    assert served.json()["choices"][0]["message"]["content"] == "served by the fallback"
    streamed = call(port, "/v1/chat/completions", chat("chunks:4 streamed by the fallback", stream=True),
                    key="sk-frank")
    assert streamed.status == 200, streamed.body
    events = [json.loads(line[6:]) for line in streamed.body.decode().splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert len(events) >= 4 and {e.get("model") for e in events} == {"m-large"}, events
    # beside ordinary answers of the model asked for, in the same shape: the same headers, the
    # deployment that answered named the same way (model group, name, id, api base)
    for reply, stream in ((served, False), (streamed, True)):
        ordinary = call(port, "/v1/chat/completions", chat("chunks:4 served by the model asked for", stream=stream),
                        key="sk-ok")
        assert b"m-safe" not in reply.body
        assert not [(h, v) for h, v in reply.headers.items() if "m-safe" in v], reply.headers
        assert set(reply.headers) == set(ordinary.headers), set(reply.headers) ^ set(ordinary.headers)
        deployment = {h: v for h, v in ordinary.headers.items() if h.startswith("x-litellm-model-")}
        assert len(deployment) == 4 and deployment["x-litellm-model-group"] == "m-large", deployment
        assert {h: reply.headers[h] for h in deployment} == deployment


def test_a_reseller_keys_end_users_are_decided_one_by_one_by_the_running_guardrail(proxy):
    port, proc, tmp = proxy

    def ask(user: str | None, prompt: str = "hello") -> Reply:
        return call(port, "/v1/chat/completions", chat(prompt) | ({"user": user} if user else {}), key="sk-relay")

    # the scan throttled one end user of the reseller's key, not the key's account
    assert ask("user-0").status == 429
    assert ask("user-1").status == 200 and ask("user-never-seen").status == 200
    assert ask(None).status == 200  # naming no end user: the key's account, allowed
    # an operator blocks one end user, as the admin API writes it (the entity <account>::<end user>)
    assert ask("user-5", "before").status == 200
    OverrideFile(tmp / "state").append(Event.new("relay-co::user-5", "block", "case 9: resold to a lab",
                                                 "ops@example.com", None, None, None, datetime.now(UTC)))
    wait_until(lambda: ask("user-5", "after").status == 403, timeout=10, what="the guardrail to block the end user")
    assert ask("user-6").status == 200 and ask(None, "the key itself").status == 200
    assert ask("user-5", "again").body.count(b"relay-co") == 0  # the refusal names neither account nor end user


def test_a_reseller_key_naming_no_end_user_is_refused_where_the_policy_requires_one(stopped_run):
    relayed, nobody = stopped_run.replies["relayed"], stopped_run.replies["relayed for nobody"]
    assert relayed.status == 200, relayed.body
    assert nobody.status == 400 and b"must name its end user" in nobody.body, nobody.body
    # logged under the reseller's account, the end user it named beside it
    assert [(r["account_id"], r["end_user"], r["status_code"]) for r in stopped_run.rows
            if r["prompt"] in ("from an end user", "from no end user")] == [
        ("relay-co", "user-1", 200), ("relay-co", None, 400)]
