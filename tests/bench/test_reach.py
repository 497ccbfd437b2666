"""How far a campaign's decoys can be reached from its harvesters (bench/reach.py): a token is the
campaign's when its harvesters outnumber its organic holders, a sign-up instant when more
harvesters than organic accounts signed up near it; the ceiling of a strategy is every harvester
and the decoys tied in two families."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from distillguard.bench import reach as R
from distillguard.bench import strategies as bench
from distillguard.bench.prepare import prepare
from distillguard.simulate.scenario import validate_scenario
from distillguard.simulate.strategies import Strategy, strategy_scenario

HOUR = 3600.0


def _labels(harvesters: list[str], decoys: list[str], organic: list[str]) -> pa.Table:
    rows = ([(a, "attacker", "c1") for a in harvesters] + [(a, "decoy", "c1") for a in decoys]
            + [(a, "organic", None) for a in organic])
    return pa.table({"account_id": [r[0] for r in rows], "role": [r[1] for r in rows],
                     "campaign_id": pa.array([r[2] for r in rows], pa.string())})


def _tokens(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.table({"account_id": [r[0] for r in rows], "column": [r[1] for r in rows], "value": [r[2] for r in rows]})


def _created(at: dict[str, float | None]) -> pa.Table:
    return pa.table({"account_id": list(at), "created": pa.array(list(at.values()), pa.float64())})


def test_a_decoy_on_the_harvesters_card_and_sign_up_hour_is_tied_in_two_families():
    labels = _labels(["h1", "h2", "h3"], ["d1", "d2"], ["o1", "o2"])
    tokens = _tokens([("h1", "payment_fingerprint", "card"), ("h2", "payment_fingerprint", "card"),
                      ("d1", "payment_fingerprint", "card"), ("o1", "payment_fingerprint", "own")])
    created = _created({"h1": 0.0, "h2": 600.0, "h3": 1200.0, "d1": 900.0, "d2": 30 * 24 * HOUR,
                        "o1": 10 * 24 * HOUR, "o2": None})
    r = R.reach(tokens, created, labels)
    assert (r.harvesters, r.decoys, r.organic) == (3, 2, 2)
    assert r.decoys_by_family["card"] == 1 and r.decoys_by_family["time"] == 1
    assert (r.decoys_two, r.decoys_one) == (1, 1)
    assert (r.organic_one, r.organic_two) == (0, 0)


def test_a_token_held_by_more_organic_accounts_than_harvesters_ties_nobody():
    labels = _labels(["h1", "h2"], ["d1"], ["o1", "o2", "o3"])
    popular = [(a, "user_agent", "python-httpx/0.28.1") for a in ("h1", "h2", "d1", "o1", "o2", "o3")]
    r = R.reach(_tokens(popular), _created({}), labels)
    assert r.decoys_by_family["client"] == 0 and r.organic_by_family["client"] == 0
    # with one organic holder fewer than the harvesters, it is the campaign's, and ties its organic holder too
    r = R.reach(_tokens(popular[:4]), _created({}), labels)
    assert r.decoys_by_family["client"] == 1 and r.organic_by_family["client"] == 1


def test_a_sign_up_instant_where_organic_sign_ups_outnumber_the_harvesters_is_not_the_campaigns():
    labels = _labels(["h1", "h2"], ["d1"], ["o1", "o2", "o3"])
    busy = {"h1": 0.0, "d1": 60.0, "o1": 120.0, "o2": 180.0, "o3": 240.0, "h2": 100 * HOUR}
    r = R.reach(_tokens([]), _created(busy), labels)
    assert r.decoys_by_family["time"] == 0 and r.organic_by_family["time"] == 0
    quiet = busy | {"o2": 50 * HOUR, "o3": 60 * HOUR, "h2": 300.0}
    r = R.reach(_tokens([]), _created(quiet), labels)
    assert r.decoys_by_family["time"] == 1 and r.organic_by_family["time"] == 1


def test_an_address_and_its_subnet_are_one_family():
    labels = _labels(["h1", "h2"], ["d1"], [])
    tokens = _tokens([(a, "client_ip", "10.0.0.1") for a in ("h1", "h2", "d1")]
                     + [(a, "client_subnet", "10.0.0.0/24") for a in ("h1", "h2", "d1")])
    r = R.reach(tokens, _created({}), labels)
    assert r.decoys_by_family["network"] == 1 and r.decoys_two == 0


@pytest.mark.parametrize("address, expected", [("203.0.113.77", "203.0.113.0/24"),
                                               ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
                                               ("not an address", None), ("", None)])
def test_the_subnet_of_an_address_is_its_24_or_48(address, expected):
    assert R.subnet_of(address) == expected


def test_a_strategys_ceiling_is_every_harvester_and_the_decoys_tied_in_two_families():
    totals = {"accounts": 100, "caught": 60, "under_one_id": 60, "harvesters": 70, "harvesters_caught": 60,
              "reach": {"decoys_two": 5}}
    assert bench._shares(totals)["ceiling"] == pytest.approx(0.75)
    assert "ceiling" not in bench._shares({k: v for k, v in totals.items() if k != "reach"})


def _store(tmp_path: Path, **changes: str):
    """A small store of the reference strategy with ``changes`` and a few hundred casual and
    developer accounts, simulated and ingested."""
    base = dict(infrastructure="dedicated_datacenter", payment="shared_card", timing="around_the_clock",
                volume="medium", account_age="aged", prompts="templates", user_agents="one",
                camouflage="benign_accounts")
    raw = strategy_scenario(Strategy.of(**(base | changes)), 5).model_dump(mode="json")
    raw["organic"] = {name: raw["organic"][name] | {"accounts": 150} for name in ("casual", "developer")}
    raw["campaigns"]["strategy"] |= {"accounts": 60, "cells": {"size": 10}}
    path = tmp_path / ("-".join(sorted(changes.values())) or "base") / "scenario.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(validate_scenario(raw).model_dump(mode="json"), sort_keys=False))
    return prepare(str(path), 1.0, 5, tmp_path / "cache", lambda _m: None)


@pytest.mark.slow  # two simulations
def test_decoys_on_the_campaigns_cards_and_servers_are_within_reach_and_bought_ones_on_rotating_exits_are_not(
        tmp_path):
    shared = _store(tmp_path)
    with shared.open(read_only=True) as store:
        near = R.store_reach(store, shared.labels)
    assert near.decoys > 5
    assert near.decoys_two >= 0.9 * near.decoys and near.organic_two == 0
    apart = _store(tmp_path, infrastructure="mobile_per_session", payment="free_tier", account_age="bought",
                   user_agents="many")
    with apart.open(read_only=True) as store:
        far = R.store_reach(store, apart.labels)
    assert far.decoys > 5
    assert far.decoys_two <= 0.2 * far.decoys
    assert far.decoys_by_family["card"] == 0


def test_the_report_names_each_strategy_with_decoys_by_its_ceiling_beside_its_recall():
    within = R.Reach(harvesters=70, decoys=30, organic=1000, decoys_by_family={"network": 2, "client": 0,
                     "card": 0, "time": 25}, organic_by_family={"network": 1, "client": 4, "card": 0,
                     "time": 3}, decoys_one=25, organic_one=8, decoys_two=2, organic_two=0)
    totals = {"accounts": 100, "caught": 60, "under_one_id": 60, "harvesters": 70, "harvesters_caught": 60,
              "reach": within.as_dict()}
    plain = {"accounts": 100, "caught": 100, "under_one_id": 100, "harvesters": 100, "harvesters_caught": 100}
    strategies = {"decoyed": {**totals, **bench._shares(totals)}, "plain": {**plain, **bench._shares(plain)}}
    (line, _), = [bench._reach_line(strategies)]
    assert "2 of 30" in line and "time 25 and 3" in line and "decoyed 72.0% (recall 60.0%)" in line
    assert "plain" not in line
    table = bench._reach_table(strategies)
    assert table[-1].startswith("| decoyed | 30 | 2 | 0 |") and table[-1].endswith("| 72.0% | 60.0% |")
    assert bench._reach_line({"plain": strategies["plain"]}) == []
