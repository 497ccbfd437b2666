"""Resellers through a running gateway: a store whose scan (ingest, intel import, scan --db, all
through the CLI) recognised a reseller key and throttled one of its end users; the gateway refuses
that end user alone, limits each end user on its own, refuses a request naming none only when the
policy requires it, and keeps all of it across a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import stix2
import yaml
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.gateway.keys import hash_key
from tests.gateway.procs import admin_call, call, chat, stored

pytestmark = pytest.mark.slow  # ingest, a scan and gateway processes: about 20 s
TOKEN = "resellers-admin-token-0123456789"
T0 = datetime(2026, 11, 2, tzinfo=UTC)
KEYS = [{"api_key": "sk-relay", "account_id": "relay-co", "organization_id": "org-relay"},
        {"api_key": "sk-cust-0", "account_id": "cust-0"}]
FLAGGED_AGENT = "DataForge/2.0"


def key_id(secret: str) -> str:
    return "key-" + hash_key(secret)[:12]


def _invoke(*args: str) -> None:
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output


def relay_exchanges() -> list[dict]:
    """30 customers on keys of their own, naming no end user; one reseller key (``sk-relay``)
    relaying 40 end users from 16 backend addresses and 6 user agents, one of them (user-0) through
    a data-generation client that an outside feed names."""
    rows = []

    def add(account, key, end_user, ip, agent, at, prompt):
        rows.append({"exchange_id": f"x{len(rows)}", "timestamp": at.isoformat(), "account_id": account,
                     "api_key_id": key, "end_user": end_user, "client_ip": ip, "user_agent": agent, "prompt": prompt,
                     "model": "m1", "input_tokens": 40, "output_tokens": 200})

    for i in range(30):
        for day in range(5):
            add(f"cust-{i}", key_id(f"sk-cust-{i}"), None, f"198.51.100.{i + 1}", f"client/{i}",
                T0 + timedelta(days=day, hours=i % 24, minutes=i), f"question {day} about topic {i}")
    for u in range(40):
        for day in range(5):
            add("relay-co", key_id("sk-relay"), f"user-{u}", f"203.0.113.{u % 16 + 1}",
                FLAGGED_AGENT if u == 0 else f"app/{u % 5}", T0 + timedelta(days=day, hours=(u * 7) % 24, minutes=u),
                f"note {day} from user {u}")
    return rows


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> tuple[Path, Path]:
    """(store, scan directory): the exchanges ingested, a STIX feed naming the data-generation
    client imported, and scanned with imported indicators allowed to throttle on their own."""
    tmp = tmp_path_factory.mktemp("relay")
    (tmp / "relay.jsonl").write_text("".join(json.dumps(r) + "\n" for r in relay_exchanges()))
    feed = stix2.Bundle(stix2.Indicator(
        pattern=f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = '{FLAGGED_AGENT}']",
        pattern_type="stix", valid_from=T0 - timedelta(days=1), confidence=95, name="distillation client"),
        allow_custom=True)
    (tmp / "feed.json").write_text(feed.serialize())
    (tmp / "scan-policy.yaml").write_text(yaml.safe_dump({"intel": {"max_action": "throttle"}}))
    db = tmp / "dg.duckdb"
    _invoke("ingest", str(tmp / "relay.jsonl"), "--db", str(db), "--quiet")
    _invoke("intel", "import", str(tmp / "feed.json"), "--db", str(db))
    _invoke("scan", "--db", str(db), "--out", str(tmp / "scan"), "--policy", str(tmp / "scan-policy.yaml"),
            "--as-of", "2026-11-08T00:00:00Z", "--json", "--quiet")
    return db, tmp / "scan"


def ask(port: int, user: str | None = None, key: str = "sk-relay"):
    return call(port, "/v1/chat/completions", chat("hello") | ({"user": user} if user else {}), key=key)


def test_scan_stores_the_reseller_key_beside_its_verdicts(scanned):
    db, _ = scanned
    assert stored(db, 'SELECT scan_id, "key", account_id, end_users FROM resellers') == [
        ("20261108T000000Z", key_id("sk-relay"), "relay-co", 40)]
    verdicts = dict(stored(db, "SELECT account_id, action FROM verdicts"))
    assert verdicts["relay-co::user-0"] == "throttle" and verdicts["relay-co::user-1"] == "allow"
    assert "relay-co" not in verdicts


def test_a_flagged_end_user_is_refused_alone_each_end_user_is_limited_alone_and_both_survive_a_restart(
        scanned, upstream, tmp_path, gateways):
    db, scan = scanned
    start = lambda: gateways(tmp_path, upstream, keys=KEYS, db=str(db), verdicts=str(scan),  # noqa: E731
                             admin_token=TOKEN, policy={"resellers": {"per_end_user_rate": 3}})
    gw = start()
    refused = ask(gw.port, "user-0")
    assert (refused.status, refused.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert "DataForge" not in refused.body.decode() and "reseller" not in refused.body.decode()
    assert ask(gw.port, "user-1").status == 200
    assert ask(gw.port, "user-never-seen").status == 200  # not judged: the account's verdict (none: allowed)
    assert ask(gw.port).status == 200  # naming no end user is allowed unless the policy requires it
    # 3 a minute per end user: user-2's fourth is throttled, user-3 and the key's other traffic are not
    assert [ask(gw.port, "user-2").status for _ in range(4)] == [200, 200, 200, 429]
    assert ask(gw.port, "user-3").status == 200
    # an operator's override on one end user, through the admin routes (:: URL-encoded)
    entity = quote("relay-co::user-5", safe="")
    assert admin_call(gw.port, "POST", f"/admin/accounts/{entity}/action",
                      {"action": "block", "reason": "case 9: resold to a lab"}, TOKEN).status == 200
    assert ask(gw.port, "user-5").status == 403 and ask(gw.port, "user-6").status == 200
    view = admin_call(gw.port, "GET", f"/admin/verdicts/{quote('relay-co::user-0', safe='')}", token=TOKEN).json()
    assert (view["action"], view["source"]) == ("throttle", "verdict")
    assert view["reasons"][0].startswith("end user user-0 of reseller account relay-co")
    gw.stop()
    # what the gateway logged went into the store with its end user
    logged = stored(db, "SELECT end_user, count(*) FROM exchanges WHERE exchange_id LIKE 'gw-%' AND end_user IS NOT "
                        "NULL GROUP BY end_user")
    assert dict(logged) == {"user-0": 1, "user-1": 1, "user-never-seen": 1, "user-2": 4, "user-3": 1, "user-5": 1,
                            "user-6": 1}

    gw = start()
    assert ask(gw.port, "user-0").status == 429 and ask(gw.port, "user-5").status == 403
    assert ask(gw.port, "user-1").status == 200 and ask(gw.port, "user-6").status == 200
    assert admin_call(gw.port, "DELETE", f"/admin/overrides/{entity}?reason=cleared", token=TOKEN).status == 200
    assert ask(gw.port, "user-5").status == 200


def test_a_reseller_request_naming_no_end_user_is_refused_only_when_the_policy_requires_one(
        scanned, upstream, tmp_path, gateways):
    db, scan = scanned
    gw = gateways(tmp_path, upstream, keys=KEYS, db=str(db), verdicts=str(scan), admin_token=TOKEN,
                  policy={"resellers": {"require_end_user": False}})
    assert ask(gw.port).status == 200
    (tmp_path / "gw-policy.yaml").write_text(yaml.safe_dump({"resellers": {"require_end_user": True}}))
    assert admin_call(gw.port, "POST", "/admin/policy/reload", token=TOKEN).status == 200
    refused = ask(gw.port)
    error = refused.json()["error"]
    assert (refused.status, error["type"], error["code"]) == (400, "invalid_request_error", "end_user_required")
    assert refused.headers["x-distillguard-exchange-id"].startswith("gw-")
    assert ask(gw.port, "user-7").status == 200
    assert ask(gw.port, key="sk-cust-0").status == 200  # not a reseller: naming no end user is fine


def test_a_stored_reseller_changed_after_the_scan_is_named_by_the_stores_hash_chain(scanned, tmp_path):
    import shutil

    from distillguard.store import Store, chain

    db, _ = scanned
    shutil.copytree(db.parent, tmp_path / "copy", ignore=shutil.ignore_patterns("*.gateway-*"))
    with Store(tmp_path / "copy" / db.name) as store:
        assert [str(d) for d in chain.check_store(store.con, store.segments_dir)] == []
        # dropping the reseller would hand its end users' requests back to the reseller's account
        store.con.execute("DELETE FROM resellers")
        assert [str(d) for d in chain.check_store(store.con, store.segments_dir)] == [
            "scan 20261108T000000Z table resellers: its rows changed after the scan (1 rows then, 0 now)"]


def test_the_gateway_reads_the_resellers_of_the_scan_its_verdicts_come_from_and_keeps_them_until_another_is_stored(
        scanned, caplog):
    from distillguard.gateway.resellers import Resellers

    db, _ = scanned
    resellers = Resellers()
    assert resellers.refresh(str(db), "2026-11-08T00:00:00+00:00", now=0.0)
    assert resellers.keys == {key_id("sk-relay")}
    assert not resellers.refresh(str(db), "2026-11-08T00:00:00+00:00", now=100.0)  # read once per scan
    # verdicts of a scan the store does not hold (scan --input): the keys read before stay, one warning
    assert not resellers.refresh(str(db), "2026-12-01T00:00:00+00:00", now=101.0)
    assert not resellers.refresh(str(db), "2026-12-01T00:00:00+00:00", now=102.0)
    assert resellers.keys == {key_id("sk-relay")}
    assert sum("holds no scan as of 2026-12-01" in r.message for r in caplog.records) == 1
    fresh = Resellers()  # no verdicts: the store's latest scan
    assert fresh.refresh(str(db), None, now=0.0) and fresh.keys == {key_id("sk-relay")}
