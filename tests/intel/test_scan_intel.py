"""Imported indicators in a scan: a match is a reason with its provenance, weighed by confidence
and age, and alone never acts past the policy's cap for outside evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import stix2
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.detect import extract, scan
from distillguard.detect.policy import Policy
from distillguard.ingest import normalize
from distillguard.intel.indicators import SCHEMA, Indicator
from distillguard.store import Store
from tests.intel.conftest import accounts_store

AS_OF = datetime(2026, 5, 10, tzinfo=UTC)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.mark.slow
def test_an_imported_indicator_is_a_reason_on_exactly_the_accounts_it_matches_and_acts_at_most_monitor(
        eight_accounts, tmp_path):
    t0 = datetime(2026, 4, 28, tzinfo=UTC)
    feed = stix2.Bundle(
        stix2.Indicator(pattern="[ipv4-addr:value ISSUBSET '198.51.3.0/24']", pattern_type="stix", valid_from=t0,
                        confidence=90, name="harvest proxies"),
        stix2.Indicator(pattern="[x-acme-payment:fingerprint = 'card-5']", pattern_type="stix", valid_from=t0,
                        confidence=95),
        # expired before the scan: never matched
        stix2.Indicator(pattern="[ipv4-addr:value = '198.51.6.7']", pattern_type="stix", valid_from=t0 - timedelta(days=9),
                        valid_until=t0, confidence=95), allow_custom=True)
    (tmp_path / "feed.json").write_text(feed.serialize())
    done = _invoke("intel", "import", str(tmp_path / "feed.json"), "--db", str(eight_accounts))
    assert done.exit_code == 0, done.output
    assert "stored 2 network, 1 payment-fingerprint" in done.output
    done = _invoke("scan", "--db", str(eight_accounts), "--out", str(tmp_path / "out"), "--lookback", "365",
                   "--json", "--quiet")
    assert done.exit_code == 0, done.output
    with Store(eight_accounts, read_only=True) as store:
        verdicts = {a: (act, list(r)) for a, act, r in store.con.execute(
            "SELECT account_id, action, reasons FROM verdicts").fetchall()}
    flagged = {a for a, (act, _) in verdicts.items() if act != "allow"}
    assert flagged == {"acct-3", "acct-5"}
    assert {verdicts[a][0] for a in flagged} == {"monitor"}
    reason = next(r for r in verdicts["acct-3"][1] if r.startswith("imported indicator ind-"))
    assert f"from {tmp_path / 'feed.json'}" in reason and "indicator--" in reason and "confidence 90" in reason
    assert "days old" in reason and "(network 198.51.3.0/24)" in reason
    assert not any("imported" in r for a, (_, rs) in verdicts.items() if a not in flagged for r in rs)


def _verdicts(action: str = "allow") -> pa.Table:
    return scan.Verdict.table([scan.Verdict("acct-1", action, 0.0, None, ["own reason"], AS_OF),
                               scan.Verdict("acct-2", "allow", 0.0, None, [], AS_OF)])


def _intel(*rows: Indicator) -> pa.Table:
    data = [{"indicator_id": i.indicator_id, **i.__dict__, "imported_at": AS_OF - timedelta(days=1)} for i in rows]
    return pa.Table.from_pylist(data, schema=SCHEMA)


def _apply(indicator: Indicator, verdicts: pa.Table, policy: Policy | None = None) -> dict:
    matches = pa.table({"account_id": ["acct-1"], "kind": ["x"], "key": [indicator.indicator_id]})
    out = scan.with_outside_evidence(verdicts, matches, _intel(indicator), policy or Policy(), AS_OF)
    return {r["account_id"]: r for r in out.to_pylist()}


def _card(confidence: int | None, age_days: float) -> Indicator:
    return Indicator("feed", "indicator--1", "payment-fingerprint", "card-1", confidence,
                     AS_OF - timedelta(days=age_days), None, "amber")


@pytest.mark.parametrize(("confidence", "age_days", "acts"), [
    (90, 0, True),       # 0.90
    (90, 90, False),     # one half-life: 0.45 < 0.5
    (None, 0, True),     # unstated: 50 -> 0.50
    (40, 0, False),
])
def test_a_match_weighs_its_confidence_halved_every_half_life_of_its_age(confidence, age_days, acts):
    got = _apply(_card(confidence, age_days), _verdicts())
    assert (got["acct-1"]["action"] == "monitor") is acts
    assert any(r.startswith("imported indicator ") for r in got["acct-1"]["reasons"])
    assert got["acct-2"]["action"] == "allow" and got["acct-2"]["reasons"] == []


def test_the_cap_for_outside_evidence_is_a_policy_field_and_never_lowers_an_action():
    capped = Policy.model_validate({"intel": {"max_action": "allow"}})
    assert _apply(_card(99, 0), _verdicts(), capped)["acct-1"]["action"] == "allow"
    throttled = Policy.model_validate({"intel": {"max_action": "throttle"}})
    assert _apply(_card(99, 0), _verdicts(), throttled)["acct-1"]["action"] == "throttle"
    kept = _apply(_card(99, 0), _verdicts("block"))["acct-1"]
    assert kept["action"] == "block" and kept["reasons"][0] == "own reason"


def test_a_range_matches_the_addresses_inside_it_and_only_while_it_is_valid():
    net = Indicator("feed", "i-1", "network", "203.0.113.0/24", 80, AS_OF - timedelta(days=1), AS_OF + timedelta(days=1))
    v6 = Indicator("feed", "i-2", "network", "2001:db8::/32", 80, None, None)
    old = Indicator("feed", "i-3", "network", "198.51.100.0/24", 80, None, AS_OF)
    rows = extract.outside_rows(_intel(net, v6, old), ["203.0.113.9", "203.0.114.9", "2001:db8::7", "198.51.100.1",
                                                        "not an address"], AS_OF)
    assert sorted(zip(rows["indicator_id"].to_pylist(), rows["value"].to_pylist())) == sorted(
        [(net.indicator_id, "203.0.113.9"), (v6.indicator_id, "2001:db8::7")])


@pytest.mark.slow
def test_an_imported_address_is_stored_as_a_fingerprint_and_is_a_reason_on_the_account_that_wrote_it(tmp_path):
    db = accounts_store(tmp_path / "s", {"acct-0": {"email": " Ops@Byte81.TOP"}, "acct-1": {"email": "ann@lab.example"},
                                         "acct-2": {}})
    feed = stix2.Bundle(stix2.Indicator(pattern="[email-addr:value = 'ops@byte81.top']", pattern_type="stix",
                                        valid_from=datetime(2026, 4, 28, tzinfo=UTC), confidence=90))
    (tmp_path / "feed.json").write_text(feed.serialize())
    done = _invoke("intel", "import", str(tmp_path / "feed.json"), "--db", str(db))
    assert done.exit_code == 0, done.output
    with Store(db, read_only=True) as store:
        stored = store.con.execute("SELECT * FROM intel_indicators").fetchall()
    assert [(row[3], row[4]) for row in stored] == [("email-fingerprint", normalize.email_fingerprint("ops@byte81.top"))]
    assert not any("byte81" in str(v).lower() for row in stored for v in row)
    done = _invoke("scan", "--db", str(db), "--out", str(tmp_path / "out"), "--lookback", "365", "--json", "--quiet")
    assert done.exit_code == 0, done.output
    with Store(db, read_only=True) as store:
        reasons = dict(store.con.execute("SELECT account_id, reasons FROM verdicts").fetchall())
    imported = {a for a, rs in reasons.items() for r in rs or [] if r.startswith("imported indicator ind-")}
    assert imported == {"acct-0"}
    assert any("(email-fingerprint " in r for r in reasons["acct-0"])
