"""Account events count before any traffic: the scan judges accounts from their sign-up on."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ibis
import pyarrow as pa
import pytest

from distillguard.detect import features
from distillguard.detect import scan as scanning
from distillguard.detect.policy import Policy
from distillguard.ingest.accounts import ingest_account_paths
from distillguard.store import Store
from distillguard.store.engine import exchanges

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
AS_OF = START + timedelta(days=31)
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "uni.example.edu", "corp.example")


def sign_ups(path: Path, organic: int = 400, farm: int = 30, seed: int = 5) -> Path:
    """``organic`` accounts signing up over 30 days, each with its own card, from residential
    addresses; ``farm`` accounts created within 8 minutes from one /24, all on one card."""
    rng = random.Random(seed)
    events = []
    for i in range(organic):
        at = START + timedelta(seconds=rng.uniform(0, 30 * 86400))
        account = f"org-{i:03d}"
        events.append({"event": "account_created", "timestamp": at.isoformat(), "account_id": account,
                       "ip": f"{rng.randrange(11, 220)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                       "asn": rng.choice([7922, 3320, 701, 2856, 3215, 1136, 5089, 6830, 12322, 3352]),
                       "user_agent": f"Mozilla/5.0 v{rng.randrange(40)}", "email_domain": rng.choice(DOMAINS),
                       "country": "US"})
        events.append({"event": "card_added", "timestamp": (at + timedelta(minutes=rng.uniform(1, 600))).isoformat(),
                       "account_id": account, "card_fingerprint": f"card-{i}"})
    wave = START + timedelta(days=20, hours=3)
    for i in range(farm):
        at = wave + timedelta(seconds=rng.uniform(0, 8 * 60))
        account = f"farm-{i:02d}"
        events.append({"event": "account_created", "timestamp": at.isoformat(), "account_id": account,
                       "ip": f"203.0.113.{rng.randrange(1, 255)}", "user_agent": f"Mozilla/5.0 v{rng.randrange(40)}",
                       "email_domain": rng.choice(DOMAINS), "country": "SG"})
        events.append({"event": "card_added", "timestamp": (at + timedelta(minutes=2)).isoformat(),
                       "account_id": account, "card_fingerprint": "card-shared"})
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_a_card_farm_is_flagged_from_its_sign_ups_before_any_exchange_and_organic_sign_ups_are_not(tmp_path):
    with Store(":memory:") as store:
        ingest_account_paths(store, [sign_ups(tmp_path / "signups.jsonl")])
        assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 0
        _, table, lookup = exchanges(store, "duckdb")
        events = lookup("dg_account_events", store.con.execute("SELECT * FROM account_events").to_arrow_table())
        result = scanning.scan(table, AS_OF, Policy(), lookup=lookup, accounts=events)
    verdicts = {r["account_id"]: r for r in result.verdicts.to_pylist()}
    farm = [v for a, v in verdicts.items() if a.startswith("farm-")]
    organic = [v for a, v in verdicts.items() if a.startswith("org-")]
    assert len(farm) == 30 and len(organic) > 350  # the organic accounts of the lookback, judged too
    assert all(v["action"] != "allow" for v in farm)
    assert all("card-shared" in " ".join(v["reasons"]) for v in farm)
    assert all(v["action"] == "allow" for v in organic)
    joined = {a: f for a, f in zip(result.features.column("account_id").to_pylist(),
                                   result.features.select(["exchanges", "created_at"]).to_pylist())}
    assert joined["farm-00"]["exchanges"] == 0 and joined["farm-00"]["created_at"] >= START + timedelta(days=20)


def test_a_sign_up_gives_an_account_with_exchanges_its_creation_time_and_a_quiet_account_its_own_row():
    created = datetime(2026, 10, 5, tzinfo=timezone.utc)
    ex = ibis.memtable(pa.table({
        "account_id": ["busy"], "timestamp": pa.array([created + timedelta(days=1)], pa.timestamp("us", tz="UTC")),
        "account_created_at": pa.array([None], pa.timestamp("us", tz="UTC")), "exchange_id": ["e1"],
        "input_tokens": [10], "output_tokens": [20], "turn_index": [0], "max_tokens": [None], "tool_count": [0],
        "user_agent": ["curl/8"], "organization_id": [None], "email_domain": [None], "model": ["m"],
        "client_ip": ["192.0.2.1"]}, schema=pa.schema([
            ("account_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
            ("account_created_at", pa.timestamp("us", tz="UTC")), ("exchange_id", pa.string()),
            ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("turn_index", pa.int64()),
            ("max_tokens", pa.int64()), ("tool_count", pa.int64()), ("user_agent", pa.string()),
            ("organization_id", pa.string()), ("email_domain", pa.string()), ("model", pa.string()),
            ("client_ip", pa.string())])))
    events = ibis.memtable(pa.table({
        "event": ["account_created", "account_created", "card_added"],
        "timestamp": pa.array([created, created + timedelta(hours=2), created + timedelta(hours=3)],
                              pa.timestamp("us", tz="UTC")),
        "account_id": ["busy", "quiet", "quiet"], "organization_id": [None, "org-q", None],
        "email_domain": ["Busy.example", "Quiet.example", None]}))
    ex = features.with_seconds(ex)
    ips = features.label_ips(features.ip_pairs(ex), ibis.memtable(pa.table({
        "ip": ["192.0.2.1"], "subnet": ["192.0.2.0/24"], "infra_category": pa.array([None], pa.string())})))
    base = features.feature_parts(ex, ips, events)["base"].to_pyarrow().sort_by("account_id").to_pylist()
    assert [(r["account_id"], r["exchanges"], r["created_at"]) for r in base] == [
        ("busy", 1, created), ("quiet", 0, created + timedelta(hours=2))]
    quiet = base[1]
    assert quiet["first_seen"] == created + timedelta(hours=2) and quiet["last_seen"] == created + timedelta(hours=3)
    assert quiet["organization_id"] == "org-q" and quiet["email_domain"] == "quiet.example"


@pytest.mark.slow  # runs the CLI as a process: about 10 s
def test_cli_scan_of_a_store_holding_only_sign_ups_judges_their_accounts(tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest_account_paths(store, [sign_ups(tmp_path / "signups.jsonl", organic=120)])
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", "--db", str(db), "--out",
                           str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["accounts"] == 150 and summary["actions"].get("allow") == 120
