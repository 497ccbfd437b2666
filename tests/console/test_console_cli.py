"""``distillguard analysts`` and ``distillguard console`` as a user runs them, and the console
acting through a running gateway's admin API (``--gateway-admin``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from distillguard.console.auth import Analysts
from distillguard.gateway.ports import free_port, wait_port
from tests.console.conftest import DEMO_CAMPAIGN
from tests.gateway.inputs import write_scan
from tests.gateway.procs import (
    admin_call,
    call,
    chat,
    mock_upstream,
    start_gateway,
    stop_process,
)

pytestmark = pytest.mark.slow  # every test runs the CLI as a process: 3-15 s each
TOKEN = "s3cret-admin-token"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillguard.cli", *args], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "400", **(env or {})})


def test_analysts_add_prints_a_working_token_once_and_list_shows_no_secret(intel_store, tmp_path):
    state = tmp_path / "state"
    added = run("analysts", "add", "ana", "--role", "operator", "--db", str(intel_store), "--state-dir", str(state))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert Analysts(state).verify(token).role == "operator"
    listed = run("analysts", "list", "--db", str(intel_store), "--state-dir", str(state))
    assert "ana" in listed.stdout and "operator" in listed.stdout and token not in listed.stdout


@pytest.mark.parametrize("args, env, says", [
    (("--state-dir", "{tmp}/empty"), {}, "no analysts in"),
    (("--state-dir", "{tmp}/state", "--gateway-admin", "http://127.0.0.1:9"), {"DISTILLGUARD_ADMIN_TOKEN": ""},
     "--gateway-admin needs the gateway's admin token"),
])
def test_the_console_refuses_to_start_without_analysts_or_an_admin_token_in_one_line(intel_store, tmp_path, args,
                                                                                     env, says):
    Analysts(tmp_path / "state").add("ana", "operator")
    done = run("console", "--db", str(intel_store), *(a.format(tmp=tmp_path) for a in args), env=env)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_with_gateway_admin_a_campaign_block_goes_through_the_gateways_admin_api(intel_store, tmp_path):
    with mock_upstream() as upstream:
        member = "acct_1df41ca64fc28aa0"  # a member of the demo campaign
        write_scan(tmp_path / "scan", [(member, "fallback", DEMO_CAMPAIGN)])
        gw = start_gateway(tmp_path, upstream, keys=[{"api_key": "sk-member-key", "account_id": member}],
                           env={"DISTILLGUARD_ADMIN_TOKEN": TOKEN}, verdicts=str(tmp_path / "scan"))
        state = tmp_path / "console-state"
        token = Analysts(state).add("ana", "operator")
        port = free_port()
        console = subprocess.Popen(
            [sys.executable, "-m", "distillguard.cli", "console", "--db", str(intel_store), "--port", str(port),
             "--state-dir", str(state), "--gateway-admin", f"http://127.0.0.1:{gw.port}"],
            env={**os.environ, "DISTILLGUARD_ADMIN_TOKEN": TOKEN}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(port, console)
            url = f"http://127.0.0.1:{port}"
            s = requests.Session()
            s.post(url + "/login", data={"token": token})
            page = s.get(url + "/act", params={"kind": "campaign", "target": DEMO_CAMPAIGN, "action": "block"}).text
            csrf = page.split('name="csrf" value="')[1].split('"')[0]
            r = s.post(url + "/act", data={"csrf": csrf, "kind": "campaign", "target": DEMO_CAMPAIGN,
                                           "action": "block", "reason": "case 40"}, allow_redirects=False)
            assert r.status_code == 303, r.text
            # applied by the gateway as it answered: no reload tick needed
            assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-member-key").status == 403
            (event,) = admin_call(gw.port, "GET", "/admin/overrides/audit", token=TOKEN).json()["events"]
            assert (event["account_id"], event["actor"], event["reason"]) == (f"campaign:{DEMO_CAMPAIGN}", "ana",
                                                                               "case 40")
            assert "case 40" in s.get(url + "/audit").text
            assert not (state / "overrides.jsonl").exists()
        finally:
            stop_process(console)
            gw.stop()
