"""The scan end to end on simulated traffic, and its parts on hand-made tables."""

from __future__ import annotations

import json
from dataclasses import replace
import re
from datetime import datetime, timezone

import pyarrow.parquet as pq
import ibis
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from distillguard.detect import linkage, scan, signals
from distillguard.detect.campaigns import Campaign
from distillguard.errors import UserError
from distillguard.ingest import ingest_paths
from distillguard.detect.policy import Policy, load_policy
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY, VERDICT_SCHEMA


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, alibaba_small):
    out = alibaba_small
    store = Store(":memory:")
    ingest_paths(store, [out / "exchanges.parquet"])
    con = ibis.duckdb.from_connection(store.con)
    result = scan.scan(con.table("exchanges"), None, Policy(lookback_days=365))
    labels = pq.read_table(out / "labels.parquet")
    yield store, result, labels, tmp_path_factory.mktemp("scan")
    store.close()


def _by_role(result, labels):
    role = dict(zip(labels.column("account_id").to_pylist(), labels.column("role").to_pylist()))
    out: dict[str, list[str]] = {}
    for account, action in zip(result.verdicts.column("account_id").to_pylist(),
                               result.verdicts.column("action").to_pylist()):
        out.setdefault(role[account], []).append(action)
    return out


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_every_account_seen_gets_exactly_one_verdict(scanned):
    store, result, _, _ = scanned
    accounts = store.con.execute("SELECT count(DISTINCT account_id) FROM exchanges").fetchone()[0]
    assert result.verdicts.schema.equals(VERDICT_SCHEMA)
    assert result.verdicts.num_rows == accounts
    assert len(set(result.verdicts.column("account_id").to_pylist())) == accounts


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_the_campaign_is_throttled_and_customers_are_not(scanned):
    """alibaba-2026 at scale 0.004 (about 100 campaign accounts among 1,000): the calibrated tests
    alone throttle most of the campaign (the rule-based campaign monitors the rest: 65 of 100 with
    the strongest-first budget, 75 when it went cheapest per entity first) and no customer."""
    _, result, labels, _ = scanned
    by_role = _by_role(result, labels)
    attackers = by_role["attacker"]
    caught = sum(SEVERITY[a] >= SEVERITY["throttle"] for a in attackers)
    assert caught / len(attackers) >= 0.6
    assert all(SEVERITY[a] >= SEVERITY["monitor"] for a in attackers)
    assert not [a for a in by_role["organic"] if SEVERITY[a] >= SEVERITY["throttle"]]


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_the_campaign_is_found_as_one_campaign(scanned):
    _, result, labels, _ = scanned
    role = dict(zip(labels.column("account_id").to_pylist(), labels.column("role").to_pylist()))
    ids = [c for a, c in zip(result.verdicts.column("account_id").to_pylist(),
                              result.verdicts.column("campaign_id").to_pylist()) if role[a] == "attacker" and c]
    top = max(set(ids), key=ids.count)
    assert ids.count(top) / len(ids) >= 0.9


#: the reason line that states the score an action rests on and the threshold it reached
_SCORED = re.compile(r"(?:campaign (?P<campaign>\S+): score|account suspicion)=(?P<value>[\d.]+) "
                     r"\(>= (?P<level>\w+) (?P<threshold>[\d.]+)\)")


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_every_non_allow_verdict_explains_itself_with_numbers(scanned):
    """Each one names the score it rests on (its campaign's, or the account's own suspicion) and
    the threshold that score reached."""
    _, result, _, _ = scanned
    verdicts = [v for v in result.verdicts.to_pylist() if v["action"] != "allow"]
    assert verdicts
    for v in verdicts:
        scored = [m for m in map(_SCORED.search, v["reasons"]) if m]
        assert scored, v
        m = scored[0]
        assert float(m["value"]) >= float(m["threshold"]) and m["level"] in SEVERITY, v
        assert m["campaign"] == v["campaign_id"], v


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_outputs_are_written_and_kept_in_the_store(scanned):
    store, result, _, out = scanned
    files = scan.write_outputs(result, out)
    assert {p.name for p in files.values()} == {"verdicts.parquet", "verdicts.csv", "campaigns.parquet",
                                                "campaigns.json", "signals.parquet", "indicators.parquet"}
    campaigns = json.loads((out / "campaigns.json").read_text())
    assert campaigns and {"campaign_id", "members", "exchanges", "output_tokens", "first_seen", "last_seen",
                          "score", "indicators", "capability_mix"} <= set(campaigns[0])
    scan.store_result(store, result)
    scan.store_result(store, result)  # the same scan twice replaces, never duplicates
    n = store.con.execute("SELECT count(*) FROM verdicts").fetchone()[0]
    assert n == result.verdicts.num_rows
    assert store.con.execute("SELECT count(*) FROM indicators").fetchone()[0] == result.indicators.num_rows


#: the fields of each campaign in campaigns.json, in order: what reports and analysts read
_CAMPAIGN_FIELDS = ["campaign_id", "members", "cells", "exchanges", "output_tokens", "first_seen", "last_seen",
                    "score", "action", "structure", "automation", "collective", "complementarity", "recruited",
                    "pivoted", "indicators", "capability_mix", "pivot_within_day_share", "accounts",
                    "first_scan", "last_scan", "members_added", "members_removed", "merged_from", "split_from", "tested"]


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_campaign_files_and_the_stored_detail_keep_every_field_in_order(scanned):
    store, result, _, out = scanned
    scan.write_outputs(result, out)
    written = json.loads((out / "campaigns.json").read_text())
    assert written and [list(c) for c in written] == [_CAMPAIGN_FIELDS] * len(written)
    assert [sorted(v) for c in written for v in c["indicators"].values()] == \
        [["accounts", "shared_keys"]] * sum(len(c.indicators) for c in result.campaigns)
    assert written[0]["accounts"] == result.campaigns[0].accounts
    assert written[0]["members"] == len(result.campaigns[0].accounts)
    table = pq.read_table(out / "campaigns.parquet")
    assert table.column_names == [f for f in _CAMPAIGN_FIELDS if f != "accounts"]
    assert [json.loads(i) for i in table.column("indicators").to_pylist()] == [c["indicators"] for c in written]
    scan_id = scan.store_result(store, result)
    detail = store.con.execute("SELECT detail FROM campaigns WHERE scan_id = ? ORDER BY score DESC, campaign_id",
                               [scan_id]).fetchall()
    assert [json.loads(d) for (d,) in detail] == written


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_verdict_rows_rebuild_the_verdict_table_exactly(scanned):
    _, result, _, _ = scanned
    rows = [scan.Verdict(**row) for row in result.verdicts.to_pylist()]
    assert scan.Verdict.table(rows).equals(result.verdicts)
    assert scan.Verdict.table([]).schema.equals(VERDICT_SCHEMA)


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_the_store_keeps_what_a_report_needs_to_check_the_scan(scanned):
    store, result, _, _ = scanned
    scan_id = scan.store_result(store, result, policy_source="policy.yaml", engine="duckdb")
    row = store.con.execute("SELECT as_of, lookback_days, policy, policy_sha256, policy_source, accounts, campaigns "
                            "FROM scans WHERE scan_id = ?", [scan_id]).fetchone()
    assert row[0] == result.as_of and row[1] == 365 and row[4] == "policy.yaml"
    assert json.loads(row[2])["lookback_days"] == 365 and len(row[3]) == 64
    assert (row[5], row[6]) == (result.verdicts.num_rows, len(result.campaigns))
    # the edges kept are exactly the scan's edges between members of its campaigns
    members = {a for c in result.campaigns for a in c.accounts}
    expected = sum(1 for a, b in zip(result.edges.column("a").to_pylist(), result.edges.column("b").to_pylist())
                   if a in members and b in members)
    assert expected > 0
    assert store.con.execute("SELECT count(*) FROM edges WHERE scan_id = ?", [scan_id]).fetchone()[0] == expected


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_a_signal_fires_exactly_when_its_value_passes_its_threshold_in_its_declared_direction(scanned):
    _, result, _, _ = scanned
    assert result.signals.column_names == ["account_id", "signal", "value", "threshold", "fired"]
    rows = result.signals.to_pylist()
    assert rows and any(r["fired"] for r in rows) and not all(r["fired"] for r in rows)
    for r in rows:
        declared = signals.BY_NAME[r["signal"]]
        passes = r["value"] > r["threshold"] if declared.direction == "above" else r["value"] < r["threshold"]
        assert r["fired"] == passes, r


# --- linkage on hand-made keys --------------------------------------------------------------

def _edges(rows, orgs=None):
    keys = ibis.memtable(pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows],
                                   "key": [r[2] for r in rows]}))
    accounts = sorted({r[0] for r in rows})
    orgs = orgs or {}
    org_table = ibis.memtable(pa.table({"account_id": accounts,
                                        "organization_id": pa.array([orgs.get(a) for a in accounts], pa.string())}))
    params = linkage.LinkageParams(max_accounts_floor=50)
    weighted = linkage.weighted_keys(keys)
    held = linkage.ranked(linkage.informative_keys(weighted, len(accounts), params), org_table)
    con = ibis.duckdb.connect()
    return con.to_pyarrow(linkage.pair_edges(held, params)).to_pylist()


def test_a_shared_card_links_two_accounts_and_says_so():
    [edge] = _edges([("a", "payment", "card1"), ("b", "payment", "card1"), ("c", "payment", "card2")])
    assert (edge["a"], edge["b"], edge["shared_payment"]) == ("a", "b", 1)
    assert edge["weight"] >= linkage.EVIDENCE["payment"].weight * 0.99


def test_accounts_of_one_declared_organization_are_never_linked():
    assert _edges([("a", "payment", "card1"), ("b", "payment", "card1")], orgs={"a": "org1", "b": "org1"}) == []


def test_one_shared_moment_is_not_synchrony():
    once = [("a", "sync", "100"), ("b", "sync", "100")]
    assert _edges(once) == []
    sustained = [(acc, "sync", str(slot)) for acc in ("a", "b") for slot in (100, 200, 300, 400)]
    [edge] = _edges(sustained)
    assert edge["shared_sync"] == 4


def test_a_crowded_slot_is_not_synchrony():
    # 13 accounts start sessions in the same four slots: in a population that large, a slot
    # everyone uses says nothing about any pair (and would cost a quadratic number of pairs)
    crowd = [(f"u{i:02d}", "sync", str(slot)) for i in range(13) for slot in (100, 200, 300, 400)]
    assert _edges(crowd) == []
    few = [(f"u{i:02d}", "sync", str(slot)) for i in range(5) for slot in (100, 200, 300, 400)]
    assert len(_edges(few)) == 10


def test_a_cell_on_one_proxy_pool_is_linked_as_strongly_as_a_clique():
    # 45 accounts share 12 addresses, each held by all of them: above clique_max, so each
    # key links only ring neighbours; the ring order is the same in every key, so neighbours
    # share all 12 addresses and their pair weighs what a clique pair would
    pool = [(f"c{i:02d}", "ip", f"10.0.0.{k}") for i in range(45) for k in range(12)]
    edges = _edges(pool)
    assert edges and all(e["shared_ip"] == 12 for e in edges)
    assert min(e["weight"] for e in edges) >= linkage.EVIDENCE["ip"].weight * 0.99
    linked = {e["a"] for e in edges} | {e["b"] for e in edges}
    assert len(linked) == 45


def _ties(rows, clusters):
    from distillguard.detect import campaigns

    holders = {}
    for account, kind, key in rows:
        holders[(kind, key)] = holders.get((kind, key), 0) + 1
    held = ibis.memtable(pa.table({"kind": [r[1] for r in rows], "key": [r[2] for r in rows],
                                   "account_id": [r[0] for r in rows],
                                   "holders": [holders[(r[1], r[2])] for r in rows],
                                   "idf": [0.5] * len(rows)}))
    members = ibis.memtable(pa.table({"account_id": list(clusters),
                                      "cluster": pa.array(list(clusters.values()), pa.int64())}))
    table = ibis.duckdb.connect().to_pyarrow(campaigns.member_evidence(held, members, 2))
    return campaigns.ties(table)


def test_member_evidence_says_which_kinds_of_fact_tie_a_member():
    # what the collective acts build on: whether creation time already counts (a burst key), and
    # whether the member is tied by addresses alone (a residential neighbour of proxy exits)
    cell = [(f"m{i}", kind, key) for i in range(5) for kind, key in (("signup_burst", "gmail@h1"),
                                                                     ("scaffold", "show every step"))]
    neighbour = [("n", "subnet", "10.0.0.0/24")] + [(f"m{i}", "subnet", "10.0.0.0/24") for i in range(3)]
    rows = cell + neighbour
    tie = _ties(rows, {a: 1 for a, _, _ in rows})
    assert tie["m0"].burst and tie["m0"].account and not tie["m0"].network_only
    assert tie["n"].network_only and not tie["n"].burst and not tie["n"].account
    # reach through keys that are not client ones: the burst's 4 others and, by the subnet, n
    assert tie["m0"].reach_beyond_client == 5 and tie["n"].reach_beyond_client == 3


def test_one_shared_key_counts_once_however_many_members_hold_it():
    # a customer who signed up in the same hour as ten campaign accounts: one fact, not ten
    rows = [(f"m{i}", "signup_burst", "gmail@h1") for i in range(10)] + [("customer", "signup_burst", "gmail@h1")]
    tie = _ties(rows, {a: 1 for a, _, _ in rows})
    assert tie["customer"].evidence == pytest.approx(linkage.EVIDENCE["signup_burst"].weight * 0.5)
    assert (tie["customer"].families, tie["customer"].reach) == (1, 10)


def test_keys_shared_with_a_single_other_member_do_not_tie_an_account_to_a_campaign():
    # a household in a campaign's cluster: its card and router tie it to each other only
    rows = [("home1", "payment", "card"), ("home2", "payment", "card"), ("home1", "ip", "router"),
            ("home2", "ip", "router")] + [(f"m{i}", "payment", "ring") for i in range(5)]
    tie = _ties(rows, {a: 1 for a, _, _ in rows})
    assert "home1" not in tie and "home2" not in tie
    assert tie["m0"].reach == 4


def test_a_small_team_reaches_too_few_members_to_be_admitted():
    from distillguard.detect import campaigns

    team = [(f"t{i}", kind, key) for i in range(3) for kind, key in (("payment", "card"), ("ip", "office"),
                                                                    ("subnet", "office/24"))]
    cell = [(f"m{i}", kind, key) for i in range(6) for kind, key in (("payment", "card2"), ("ip", "proxy"),
                                                                    ("sync", "s1"), ("sync", "s2"), ("sync", "s3"))]
    clusters = {a: 1 for a, _, _ in team + cell}
    tie = _ties(team + cell, clusters)
    params = campaigns.CampaignParams(min_member_evidence=1.0)
    kept = campaigns.admitted(clusters, tie, params)
    assert set(kept) == {f"m{i}" for i in range(6)}
    assert tie["t0"].reach == 2 and tie["m0"].families == 3


POLICY = Policy(lookback_days=365)
AS_OF = datetime(2026, 6, 6, tzinfo=timezone.utc)


def _flagged_campaign(result) -> Campaign:
    """The scanned store's highest-scored campaign (recommended throttle or stronger)."""
    flagged = [c for c in result.campaigns if POLICY.campaign_action(c.score) in ("throttle", "fallback", "block")]
    assert flagged
    return max(flagged, key=lambda c: (c.score, c.campaign_id))


def _verdict_rows(result, tie, suspicion, acted=None, policy=POLICY, campaigns=None) -> dict[str, dict]:
    """scan._verdicts of the scanned store with ``tie``, ``suspicion`` (and ``campaigns``) put in, by account."""
    verdicts = scan._verdicts(result.features, result.signals, suspicion, tie, acted or {},
                              result.campaigns if campaigns is None else campaigns, policy, AS_OF)
    return {r["account_id"]: r for r in verdicts.to_pylist()}


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_a_rule_based_campaign_is_only_monitored_whatever_its_score(scanned):
    """The campaign score recommends an action; the verdicts rest on it at monitor at most, and say
    so: a throttle needs a calibrated test, whatever the member's tie or own suspicion."""
    from distillguard.detect import campaigns

    _, result, _, _ = scanned
    # the same members as found by the linkage alone, without a calibrated test's group
    campaign = replace(_flagged_campaign(result), tested=0)
    rule_based = [campaign if c.campaign_id == campaign.campaign_id else c for c in result.campaigns]
    firm = {**result.ties, **{a: campaigns.Tie(evidence=50.0, families=4, reach=40) for a in campaign.accounts}}
    rows = _verdict_rows(result, firm, {a: 0.9 for a in campaign.accounts}, campaigns=rule_based)
    assert {rows[a]["action"] for a in campaign.accounts} == {"monitor"}
    recommended = POLICY.campaign_action(campaign.score)
    assert all(f"recommends {recommended}" in rows[a]["reasons"][0] and "need a calibrated test" in rows[a]["reasons"][0]
               for a in campaign.accounts)


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_every_campaign_id_a_verdict_names_is_a_campaign_of_the_scan(scanned):
    """A tested group's accounts are named by the campaign record that holds them, so a report can
    show every campaign a verdict names; and each tested account's verdict names its campaign."""
    _, result, _, _ = scanned
    members = {c.campaign_id: set(c.accounts) for c in result.campaigns}
    named = [(a, c) for a, c in zip(result.verdicts.column("account_id").to_pylist(),
                                    result.verdicts.column("campaign_id").to_pylist()) if c]
    assert named and all(a in members[c] for a, c in named)
    assert any(c.tested for c in result.campaigns)
    action = dict(zip(result.verdicts.column("account_id").to_pylist(), result.verdicts.column("action").to_pylist()))
    for c in result.campaigns:
        assert sum(action[a] in ("throttle", "block") for a in c.accounts) >= c.tested


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_a_campaign_record_says_what_its_members_verdicts_do(scanned):
    """campaigns.parquet's action is the strongest action at least half the members hold."""
    _, result, _, _ = scanned
    action = dict(zip(result.verdicts.column("account_id").to_pylist(), result.verdicts.column("action").to_pylist()))
    for c in result.campaigns:
        held = [SEVERITY[action.get(a, "allow")] for a in c.accounts]
        assert sum(h >= SEVERITY[c.action] for h in held) * 2 >= len(held)
        stronger = [s for s in SEVERITY.values() if s > SEVERITY[c.action]]
        assert all(sum(h >= s for h in held) * 2 < len(held) for s in stronger)


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_a_member_credited_with_coordination_is_told_so_in_its_own_reasons(scanned):
    """with_coordination adds a family to a member's tie; the verdict must say which act earned it."""
    _, result, _, _ = scanned
    member, other = [a for a in _flagged_campaign(result).accounts if a in result.ties][:2]
    line = "coordination: first used a newly released model 2.0 h after its release (< 24 h) with 40% of its cluster"
    reasons = {a: r["reasons"] for a, r in _verdict_rows(result, result.ties, {}, {member: [line]}).items()}
    assert line in reasons[member] and reasons[member].index(line) == 2  # after the campaign and the tie
    assert not any(r.startswith("coordination:") for r in reasons[other])


def test_a_fleet_moving_to_a_new_model_within_hours_shows_in_pivot_hours():
    from distillguard.detect import features

    day = 86400
    rows = []
    for i in range(40):  # the old model all along, from day 0
        rows.append(("fleet", "old", i * 3600))
        rows.append(("fan", "old", i * 3600))
    release = 10 * day
    rows += [("early", "new", release)]  # whoever used it first defines the release
    rows += [("fleet", "new", release + 3 * 3600 + i) for i in range(30)]
    rows += [("fan", "new", release + 5 * day)]
    table = pa.table({"account_id": [r[0] for r in rows], "model": [r[1] for r in rows],
                      "ts_s": pa.array([r[2] for r in rows], pa.int64())})
    got = ibis.duckdb.connect().to_pyarrow(features._model_pivot(ibis.memtable(table))).to_pylist()
    hours = {r["account_id"]: r["pivot_hours"] for r in got}
    assert hours["fleet"] == 3.0
    assert hours["fan"] == 120.0
    assert hours["early"] == 0.0


# --- policy -------------------------------------------------------------------------------

def test_policy_field_errors_name_the_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("campaign:\n  throttle: 2.0\n")
    with pytest.raises(UserError, match="campaign.throttle"):
        load_policy(path)
    path.write_text("signal_thresholds:\n  no_such_signal: 1\n")
    with pytest.raises(UserError, match="no_such_signal"):
        load_policy(path)


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_allowlisted_organization_is_capped_at_monitor(scanned):
    _, result, _, _ = scanned
    flagged = [a for a, act in zip(result.verdicts.column("account_id").to_pylist(),
                                   result.verdicts.column("action").to_pylist()) if act != "allow"]
    assert flagged
    orgs = dict(zip(result.features.column("account_id").to_pylist(),
                    result.features.column("organization_id").to_pylist()))
    policy = Policy(allowlist_organizations=[orgs[flagged[0]]])
    verdicts = scan._verdicts(result.features, result.signals, {}, result.ties, {}, result.campaigns, policy,
                              datetime(2026, 6, 6, tzinfo=timezone.utc))
    action = dict(zip(verdicts.column("account_id").to_pylist(), verdicts.column("action").to_pylist()))
    assert action[flagged[0]] in ("monitor", "allow")


def test_an_error_in_the_statistical_tests_fails_the_scan_with_that_error(alibaba_small, monkeypatch):
    """The tests run in a thread beside linkage; what they raise reaches the scan's caller."""
    store = Store(":memory:")
    ingest_paths(store, [alibaba_small / "exchanges.parquet"])
    con = ibis.duckdb.from_connection(store.con)

    def broken(*_args, **_kwargs):
        raise ArithmeticError("the tests failed")

    monkeypatch.setattr(scan.detect_verdicts, "evaluate", broken)
    with pytest.raises(ArithmeticError, match="the tests failed"):
        scan.scan(con.table("exchanges"), None, Policy(lookback_days=365))
    store.close()


def test_an_account_idle_through_the_lookback_is_allowed_and_one_seen_only_inside_it_is_left_as_judged():
    from distillguard.detect.policy import Policy
    from distillguard.store.verdicts import VERDICT_SCHEMA

    as_of = datetime(2026, 6, 1, tzinfo=timezone.utc)
    times = pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 5, 30, tzinfo=timezone.utc),
                      datetime(2026, 5, 31, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC"))
    exchanges = ibis.memtable(pa.table({"account_id": ["old", "new", "new"], "timestamp": times}))
    judged = pa.Table.from_pylist([{"account_id": "new", "action": "monitor", "score": 0.3, "campaign_id": None,
                                    "reasons": ["x"], "as_of": as_of}], schema=VERDICT_SCHEMA)
    policy = Policy().model_copy(update={"lookback_days": 30})
    out = scan._with_quiet_accounts(judged, exchanges, as_of, policy).to_pylist()
    assert [(r["account_id"], r["action"]) for r in out] == [("new", "monitor"), ("old", "allow")]
    assert out[1]["reasons"] == ["no exchanges in the last 30 days"]
    # a window back to the first exchange holds every account: the verdicts stay as they are
    wide = Policy().model_copy(update={"lookback_days": 200})
    assert scan._with_quiet_accounts(judged, exchanges.filter(exchanges.account_id == "new"), as_of, wide) is judged


@pytest.mark.slow  # the module's simulated and scanned scenario
def test_a_tested_group_no_linked_cell_overlaps_is_a_campaign_of_its_own_described_from_its_members(scanned):
    _, result, _, _ = scanned
    accounts = sorted(result.features.column("account_id").to_pylist())[:6]
    cparams = POLICY.clustering.model_copy(update={"min_members": POLICY.campaign.min_members})
    [campaign] = scan._campaigns([], result.edges, result.features, POLICY, cparams,
                                 [("throttle", frozenset(accounts))])
    exchanges = dict(zip(result.features.column("account_id").to_pylist(),
                         result.features.column("exchanges").to_pylist()))
    assert (campaign.accounts, campaign.members, campaign.tested, campaign.cells) == (accounts, 6, 6, 0)
    assert campaign.indicators == {} and campaign.structure == 0.0
    assert campaign.score == POLICY.campaign.throttle and campaign.action == "throttle"
    assert campaign.exchanges == sum(exchanges[a] for a in accounts)
