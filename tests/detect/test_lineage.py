"""Campaign ids across scans: the overlap rule (detect/lineage.py), its determinism and
relabelling invariance, the store's previous campaigns, and two scans of a growing store."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect import campaigns as camp
from distillguard.detect import scan as scanning
from distillguard.detect.lineage import Lineage, Previous, member_id, trace
from distillguard.store import Store
from distillguard.store.verdicts import VERDICT_SCHEMA

T0, T1, T2 = "2026-05-01T00:00:00+00:00", "2026-05-08T00:00:00+00:00", "2026-05-15T00:00:00+00:00"


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def _prev(campaign_id: str, members: list[str], first_scan: str = T0) -> Previous:
    return Previous(campaign_id, frozenset(members), first_scan)


# --- the rule ------------------------------------------------------------------------------------

def test_a_campaign_holding_most_of_a_previous_campaigns_members_keeps_its_id_and_first_scan():
    old = _names("a", 10)
    now = old[:6] + ["new1", "new2"]  # 6 of 10 persist
    [line] = trace([now], [_prev("campaign-old", old)], T2)
    assert line == Lineage(campaign_id="campaign-old", first_scan=T0, members_added=["new1", "new2"],
                           members_removed=old[6:], merged_from=[], split_from=None)


def test_holding_exactly_half_of_a_previous_campaign_is_not_enough_to_keep_its_id():
    old = _names("a", 10)
    now = old[:5] + _names("b", 20)
    [line] = trace([now], [_prev("campaign-old", old)], T2)
    assert line.campaign_id == member_id(now)
    assert line.first_scan == T2
    assert line.split_from == "campaign-old"  # half of it came from there
    assert line.members_added == sorted(now) and line.members_removed == []


def test_a_campaign_with_no_predecessor_is_named_by_its_members_as_before_lineage():
    now = _names("z", 7)
    [line] = trace([now], [], T1)
    assert line.campaign_id == member_id(now) == scanning._campaign_id(now)
    assert (line.first_scan, line.split_from, line.merged_from) == (T1, None, [])


def test_two_previous_campaigns_absorbed_by_one_leave_it_the_id_it_shares_more_with_and_the_other_merged_into_it():
    big, small = _names("a", 10), _names("b", 4)
    now = big[:8] + small[:3]  # 8 of 10 and 3 of 4: both pass
    [line] = trace([now], [_prev("campaign-small", small, T0), _prev("campaign-big", big, T1)], T2)
    assert line.campaign_id == "campaign-big"
    assert line.first_scan == T1
    assert line.merged_from == ["campaign-small"]
    assert line.members_added == sorted(small[:3])
    assert line.members_removed == big[8:]


def test_equal_overlaps_go_to_the_longest_tracked_then_the_smaller_then_the_lower_id():
    a, b = _names("a", 6), _names("b", 6)
    now = a[:4] + b[:4]
    # same overlap and size: the older lineage keeps its id
    [line] = trace([now], [_prev("campaign-2", a, T1), _prev("campaign-9", b, T0)], T2)
    assert (line.campaign_id, line.merged_from) == ("campaign-9", ["campaign-2"])
    # same overlap and age: the smaller previous campaign (more of it persists)
    c = _names("c", 7)
    [line] = trace([a[:4] + c[:4]], [_prev("campaign-2", c), _prev("campaign-9", a)], T2)
    assert line.campaign_id == "campaign-9"
    # same in everything the members show: the lower id
    [line] = trace([now], [_prev("campaign-9", b), _prev("campaign-2", a)], T2)
    assert (line.campaign_id, line.merged_from) == ("campaign-2", ["campaign-9"])


def test_a_previous_campaign_split_in_three_passes_its_id_to_the_part_holding_most_and_the_others_split_from_it():
    old = _names("a", 20)
    parts = [old[:11], old[11:16], old[16:] + ["x1"]]
    lines = trace(parts, [_prev("campaign-old", old)], T2)
    assert [l.campaign_id for l in lines] == ["campaign-old", member_id(parts[1]), member_id(parts[2])]
    assert [l.split_from for l in lines] == [None, "campaign-old", "campaign-old"]
    assert lines[0].members_removed == old[11:]


def test_a_previous_campaign_that_no_new_one_holds_most_of_ends_and_its_id_is_not_reused():
    old = _names("a", 10)
    parts = [old[:4], old[4:8]]
    lines = trace(parts, [_prev("campaign-old", old), _prev("campaign-gone", _names("g", 5))], T2)
    assert all(l.campaign_id not in ("campaign-old", "campaign-gone") for l in lines)
    assert [l.split_from for l in lines] == ["campaign-old", "campaign-old"]


def test_a_new_campaign_whose_member_digest_is_a_previous_id_gets_another():
    # P was first found with members S0 (its id is their digest), then grew; a part of it now holds
    # most of P, and another new campaign has exactly S0's members
    s0 = _names("a", 4)
    grown = _names("b", 12)
    previous = _prev(member_id(s0), s0 + grown)
    lines = trace([grown[:9], s0], [previous], T2)
    assert lines[0].campaign_id == member_id(s0)
    assert lines[1].campaign_id == member_id(s0, salt=1) != lines[0].campaign_id


# --- properties ----------------------------------------------------------------------------------

@st.composite
def _scans(draw):
    """(previous campaigns, current member lists) over a small population, so that overlaps,
    merges, splits and ties are all common."""
    accounts = _names("acct", draw(st.integers(2, 30)))
    times = [T0, T1]

    def partition(max_groups: int) -> list[list[str]]:
        label = draw(st.lists(st.integers(-1, max_groups - 1), min_size=len(accounts), max_size=len(accounts)))
        groups: dict[int, list[str]] = {}
        for a, g in zip(accounts, label):
            if g >= 0:
                groups.setdefault(g, []).append(a)
        return [groups[g] for g in sorted(groups)]

    previous = [_prev(f"campaign-p{i:02d}", members, draw(st.sampled_from(times)))
                for i, members in enumerate(partition(5))]
    return previous, partition(5)


@given(_scans(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_the_order_of_campaigns_and_members_does_not_change_the_lineage(case, rng):
    previous, current = case
    expected = trace(current, previous, T2)
    order = list(range(len(current)))
    rng.shuffle(order)
    shuffled_previous = [Previous(p.campaign_id, frozenset(rng.sample(sorted(p.accounts), len(p.accounts))),
                                  p.first_scan) for p in rng.sample(previous, len(previous))]
    got = trace([rng.sample(current[i], len(current[i])) for i in order], shuffled_previous, T2)
    assert [got[order.index(i)] for i in range(len(current))] == expected


@given(_scans(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_renaming_the_accounts_gives_the_same_lineage_up_to_the_ids(case, rng):
    previous, current = case
    names = sorted({a for p in previous for a in p.accounts} | {a for c in current for a in c})
    renamed = [f"user-{i}" for i in range(len(names))]
    rng.shuffle(renamed)
    to = dict(zip(names, renamed))
    # previous ids follow the renaming too (they were digests of the members); a prefix keeps
    # their order, the only tie-break that reads them
    old_id = {p.campaign_id: "renamed-" + p.campaign_id for p in previous}
    before = trace(current, previous, T2)
    after = trace([[to[a] for a in c] for c in current],
                  [Previous(old_id[p.campaign_id], frozenset(to[a] for a in p.accounts), p.first_scan)
                   for p in previous], T2)
    new_id = {b.campaign_id: a.campaign_id for b, a in zip(before, after)}
    for b, a in zip(before, after):
        assert a.campaign_id == old_id.get(b.campaign_id, new_id[b.campaign_id])
        assert a.first_scan == b.first_scan
        assert a.members_added == sorted(to[x] for x in b.members_added)
        assert a.members_removed == sorted(to[x] for x in b.members_removed)
        assert a.merged_from == [old_id[x] for x in b.merged_from]
        assert a.split_from == (None if b.split_from is None else old_id[b.split_from])


@given(_scans())
@settings(max_examples=200, deadline=None)
def test_no_two_campaigns_of_a_scan_share_an_id_and_an_inherited_id_is_held_by_most_of_its_predecessor(case):
    previous, current = case
    lines = trace(current, previous, T2)
    assert len({l.campaign_id for l in lines}) == len(lines)
    by_id = {p.campaign_id: p for p in previous}
    for members, line in zip(current, lines):
        p = by_id.get(line.campaign_id)
        if p is not None:
            assert 2 * len(p.accounts & set(members)) > len(p.accounts)
            assert line.first_scan == p.first_scan
        for merged in line.merged_from:
            assert 2 * len(by_id[merged].accounts & set(members)) > len(by_id[merged].accounts)
    # every previous campaign ends, continues once, or merged into exactly one campaign
    continued = [l.campaign_id for l in lines if l.campaign_id in by_id] + [m for l in lines for m in l.merged_from]
    assert len(continued) == len(set(continued))


# --- the store -----------------------------------------------------------------------------------

def _old_scan(con: duckdb.DuckDBPyConnection, scan_id: str, as_of: datetime, campaigns: dict[str, list[str]]) -> None:
    """A scan as a store written before lineage holds it: no first_scan anywhere."""
    con.execute("CREATE TABLE IF NOT EXISTS scans (scan_id VARCHAR, as_of TIMESTAMPTZ, scanned_at TIMESTAMPTZ)")
    con.execute("CREATE TABLE IF NOT EXISTS campaigns (scan_id VARCHAR, campaign_id VARCHAR, members BIGINT, "
                "exchanges BIGINT, score DOUBLE, action VARCHAR, detail VARCHAR)")
    con.execute("INSERT INTO scans VALUES (?, ?, ?)", [scan_id, as_of, as_of])
    for cid, members in campaigns.items():
        con.execute("INSERT INTO campaigns VALUES (?, ?, ?, 0, 0.9, 'block', ?)",
                    [scan_id, cid, len(members), json.dumps({"campaign_id": cid, "accounts": members})])


def test_previous_campaigns_are_those_of_the_latest_scan_strictly_before_the_scan_time(store):
    first, second = datetime(2026, 5, 1, tzinfo=timezone.utc), datetime(2026, 5, 8, tzinfo=timezone.utc)
    assert scanning.previous_campaigns(store, second) == []
    _old_scan(store.con, "s1", first, {"campaign-a": ["x", "y"]})
    _old_scan(store.con, "s2", second, {"campaign-b": ["z"]})
    # a rescan at the second scan's time reads the first, not itself
    assert scanning.previous_campaigns(store, second) == [Previous("campaign-a", frozenset({"x", "y"}),
                                                                   first.isoformat())]
    assert scanning.previous_campaigns(store, first) == []


def _campaign(campaign_id: str, accounts: list[str], **lineage) -> camp.Campaign:
    return camp.Campaign(campaign_id=campaign_id, members=len(accounts), cells=1, exchanges=10, output_tokens=100,
                         first_seen=T0, last_seen=T1, score=0.9, action="block", structure=1.0, automation=1.0,
                         collective=1.0, complementarity=1.0, recruited=0.0, pivoted=0.0, indicators={},
                         capability_mix={}, pivot_within_day_share=0.0, accounts=accounts, **lineage)


def test_a_store_written_before_lineage_gains_its_columns_and_its_campaigns_count_as_found_by_their_scan(store):
    first, second = datetime(2026, 5, 1, tzinfo=timezone.utc), datetime(2026, 5, 8, tzinfo=timezone.utc)
    _old_scan(store.con, "20260501T000000Z", first, {"campaign-a": ["x", "y", "z"]})
    previous = scanning.previous_campaigns(store, second)
    lines = trace([["x", "y", "w"]], previous, second.isoformat())
    assert lines[0].campaign_id == "campaign-a" and lines[0].first_scan == first.isoformat()
    line = lines[0]
    result = scanning.ScanResult(
        as_of=second, verdicts=VERDICT_SCHEMA.empty_table(),
        campaigns=[_campaign(line.campaign_id, ["w", "x", "y"], first_scan=line.first_scan,
                             last_scan=second.isoformat(), members_added=line.members_added,
                             members_removed=line.members_removed)],
        signals=pa.table({"account_id": pa.array([], pa.string())}),
        edges=pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())}),
        features=pa.table({}))
    scan_id = scanning.store_result(store, result)
    rows = store.con.execute("SELECT scan_id, first_scan, last_scan, members_added, members_removed, merged_from, "
                             "split_from FROM campaigns ORDER BY scan_id").fetchall()
    assert rows == [("20260501T000000Z", None, None, None, None, None, None), (scan_id, first, second, 1, 1, [], None)]


# --- end to end: two scans of a growing store ---------------------------------------------------

def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_a_campaign_keeps_its_id_across_two_scans_of_a_growing_store_and_its_verdicts_name_it(tmp_path: Path,
                                                                                              alibaba_small: Path):
    exchanges = pq.read_table(alibaba_small / "exchanges.parquet")
    cut = datetime(2026, 6, 1, tzinfo=timezone.utc)
    early = pc.less(exchanges.column("timestamp"), pa.scalar(cut, exchanges.schema.field("timestamp").type))
    pq.write_table(exchanges.filter(early), tmp_path / "early.parquet")
    pq.write_table(exchanges.filter(pc.invert(early)), tmp_path / "late.parquet")
    db = str(tmp_path / "store.duckdb")
    _cli("ingest", str(tmp_path / "early.parquet"), "--db", db)
    _cli("scan", "--db", db, "--as-of", cut.isoformat(), "--out", str(tmp_path / "one"), "--json")
    _cli("ingest", str(tmp_path / "late.parquet"), "--db", db)
    _cli("scan", "--db", db, "--out", str(tmp_path / "two"), "--json")

    one = json.loads((tmp_path / "one" / "campaigns.json").read_text())
    two = json.loads((tmp_path / "two" / "campaigns.json").read_text())
    assert one and two
    [(before, after)] = [(b, a) for b in one for a in two if a["campaign_id"] == b["campaign_id"]]
    # members joined and left, so the digest of its members is no longer its id
    assert after["campaign_id"] != scanning._campaign_id(after["accounts"])
    assert set(after["accounts"]) == (set(before["accounts"]) | set(after["members_added"])) - set(
        after["members_removed"])
    assert after["members_added"] or after["members_removed"]
    assert after["first_scan"] == before["first_scan"] == before["last_scan"] == cut.isoformat()
    assert after["last_scan"] > after["first_scan"]
    # the verdicts (what the gateway enforces) and the store name it by the same id
    verdicts = pq.read_table(tmp_path / "two" / "verdicts.parquet").to_pylist()
    assert {v["account_id"] for v in verdicts if v["campaign_id"] == after["campaign_id"]} == set(after["accounts"])
    with Store(db, read_only=True) as store:
        rows = store.con.execute("SELECT scan_id, first_scan, members_added, members_removed FROM campaigns "
                                 "WHERE campaign_id = ? ORDER BY scan_id", [after["campaign_id"]]).fetchall()
    assert [r[1] for r in rows] == [cut, cut]
    assert rows[1][2:] == (len(after["members_added"]), len(after["members_removed"]))
