"""The randomized strategy benchmark: the draw and its split, what each knob level does to the
traffic, the simulator's independence from the detector, the runner's statistics, and the
held-out protocol."""

from __future__ import annotations

import ast
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import binom

from distillguard.bench import strategies as bench
from distillguard.bench.prepare import prepare, withheld, withholdable
from distillguard.errors import UserError
from distillguard.schema import COLUMNS
from distillguard.simulate import simulate
from distillguard.simulate.scenario import validate_scenario
from distillguard.simulate.strategies import (
    HARD_PERSONAS,
    HELDOUT_SHARE,
    KNOBS,
    Strategy,
    all_strategies,
    draw_strategies,
    organic_scenario,
    split_of,
    strategy_scenario,
)
from tests.bench.tiny import TINY, shared_cache

SALT = "test-salt"
#: a strategy whose knobs the traffic tests change one at a time
REFERENCE = dict(infrastructure="dedicated_datacenter", payment="shared_card", timing="around_the_clock",
                 volume="medium", account_age="burst_created", prompts="templates", user_agents="one",
                 camouflage="none")


# --- the draw and the split -----------------------------------------------------------------------

def test_every_combination_of_knob_levels_is_one_strategy():
    expected = int(np.prod([len(k.levels) for k in KNOBS]))
    strategies = all_strategies()
    assert len(strategies) == expected == len(set(strategies))
    assert Strategy.parse(strategies[17].key) == strategies[17]


@pytest.mark.slow
def test_the_draw_is_deterministic_for_a_seed_and_differs_between_seeds():
    first = draw_strategies(5, 10, "dev", salt=SALT)
    assert first == draw_strategies(5, 10, "dev", salt=SALT)
    assert first != draw_strategies(6, 10, "dev", salt=SALT)
    assert len(set(first)) == 10


@pytest.mark.slow
def test_dev_and_heldout_are_disjoint_and_cover_every_combination():
    splits = {s: split_of(s, SALT) for s in all_strategies()}
    dev = {s for s, split in splits.items() if split == "dev"}
    heldout = {s for s, split in splits.items() if split == "heldout"}
    assert dev.isdisjoint(heldout) and len(dev) + len(heldout) == len(splits)
    assert abs(len(heldout) / len(splits) - HELDOUT_SHARE) < 0.02
    drawn_dev = draw_strategies(1, 40, "dev", salt=SALT)
    drawn_heldout = draw_strategies(1, 40, "heldout", salt=SALT)
    assert set(drawn_dev) <= dev and set(drawn_heldout) <= heldout


def test_dev_holds_every_knob_level_and_a_small_draw_reaches_them_all():
    dev = [s for s in all_strategies() if split_of(s, SALT) == "dev"]
    every = {(k.name, lv.name) for k in KNOBS for lv in k.levels}
    assert {pair for s in dev for pair in s.levels} == every
    widest = max(len(k.levels) for k in KNOBS)
    drawn = draw_strategies(3, widest, "dev", salt=SALT)
    assert {pair for s in drawn for pair in s.levels} == every


def test_a_larger_draw_spreads_its_repeats_over_the_levels():
    drawn = draw_strategies(3, 12, "dev", salt=SALT)
    for knob in KNOBS:
        counts = [sum(s.level(knob.name) == level.name for s in drawn) for level in knob.levels]
        assert max(counts) - min(counts) <= 1, (knob.name, counts)


def test_a_fresh_salt_is_a_fresh_heldout_set():
    first = {s for s in all_strategies() if split_of(s, "salt-one") == "heldout"}
    second = {s for s in all_strategies() if split_of(s, "salt-two") == "heldout"}
    overlap = len(first & second) / len(first)
    assert abs(overlap - HELDOUT_SHARE) < 0.05  # about as much as chance: an independent draw


def test_the_hard_personas_are_in_every_draw_with_jittered_sizes():
    strategy = Strategy.of(**REFERENCE)
    one, two = strategy_scenario(strategy, 1), strategy_scenario(strategy, 2)
    for scenario in (one, two):
        assert all(scenario.organic[p].accounts >= 1 for p in HARD_PERSONAS)
    assert [p.accounts for p in one.organic.values()] != [p.accounts for p in two.organic.values()]
    assert strategy_scenario(strategy, 1) == one


def test_an_organic_scale_multiplies_every_personas_accounts_and_leaves_the_campaign_alone():
    strategy = Strategy.of(**REFERENCE)
    one, five = strategy_scenario(strategy, 1), strategy_scenario(strategy, 1, organic_scale=5.0)
    assert {p: round(s.accounts * 5) for p, s in one.organic.items()} == {p: s.accounts for p, s in five.organic.items()}
    assert [s.group for s in one.organic.values()] == [s.group for s in five.organic.values()]
    assert one.campaigns == five.campaigns and one.name != five.name
    reference, larger = organic_scenario(1), organic_scenario(1, 5.0)
    assert {p: round(s.accounts * 5) for p, s in reference.organic.items()} == {
        p: s.accounts for p, s in larger.organic.items()}
    assert not larger.campaigns and larger.name != reference.name


# --- what each knob level does to the traffic ---------------------------------------------------

def _simulate(tmp_path: Path, seed: int = 3, **changes: str):
    """The reference strategy with ``changes``, its organic population cut to a few casual users
    (the personas decoys and relays copy), simulated; the campaign's exchanges and labels."""
    strategy = Strategy.of(**(REFERENCE | changes))
    raw = strategy_scenario(strategy, seed).model_dump(mode="json")
    raw["organic"] = {"casual": raw["organic"]["casual"] | {"accounts": 10}}
    raw["campaigns"]["strategy"] |= {"accounts": 40, "cells": {"size": 10}}
    out = tmp_path / "-".join(f"{k}={v}" for k, v in sorted(changes.items()))
    simulate(validate_scenario(raw), out_dir=out)
    labels = pq.read_table(out / "labels.parquet")
    campaign = labels.filter(labels["campaign_id"].is_valid())
    exchanges = pq.read_table(out / "exchanges.parquet")
    mine = exchanges.filter(pc.is_in(exchanges["account_id"], value_set=campaign["account_id"]))
    return mine.to_pandas(), campaign.to_pandas()


def _per_account(frame, column: str) -> float:
    return float(frame.groupby("account_id")[column].nunique().mean())


@pytest.mark.slow  # five simulations
def test_per_request_rotation_gives_more_addresses_per_account_than_per_session_or_dedicated(tmp_path):
    dedicated, _ = _simulate(tmp_path, infrastructure="dedicated_datacenter")
    per_session, _ = _simulate(tmp_path, infrastructure="residential_per_session")
    per_request, _ = _simulate(tmp_path, infrastructure="residential_per_request")
    mobile_session, _ = _simulate(tmp_path, infrastructure="mobile_per_session")
    mobile_request, _ = _simulate(tmp_path, infrastructure="mobile_per_request")
    assert _per_account(dedicated, "client_ip") == 1  # one address of its cell's few, per account
    assert dedicated["client_ip"].nunique() <= 4 * 4
    assert _per_account(per_request, "client_ip") > 2 * _per_account(per_session, "client_ip") > 2
    assert _per_account(mobile_request, "client_ip") > 2 * _per_account(mobile_session, "client_ip") > 2


@pytest.mark.slow
def test_mobile_exits_are_the_addresses_carrier_nat_subscribers_share(tmp_path):
    mobile, _ = _simulate(tmp_path, infrastructure="mobile_per_request")
    residential, _ = _simulate(tmp_path, infrastructure="residential_per_request")
    # carrier NAT: a few thousand addresses per region, so a fleet's exits repeat; home lines do not
    repeats = lambda frame: 1 - frame["client_ip"].nunique() / len(frame)  # noqa: E731
    assert repeats(mobile) > repeats(residential) + 0.05


@pytest.mark.slow  # simulates each level of the knob
def test_mixed_infrastructure_draws_from_datacenter_and_proxy_exits(tmp_path):
    mixed, _ = _simulate(tmp_path, infrastructure="mixed")
    dedicated, _ = _simulate(tmp_path, infrastructure="dedicated_datacenter")
    shared = set(mixed["client_asn"].dropna()) & set(dedicated["client_asn"].dropna())
    assert shared and mixed["client_asn"].nunique() > dedicated["client_asn"].nunique()


@pytest.mark.slow  # simulates each level of the knob
def test_a_shared_card_gives_fewer_fingerprints_than_one_per_account_and_free_tier_none(tmp_path):
    shared, _ = _simulate(tmp_path, payment="shared_card")
    own, _ = _simulate(tmp_path, payment="card_per_account")
    free, _ = _simulate(tmp_path, payment="free_tier")
    assert shared["payment_fingerprint"].nunique() == 4  # one per cell
    assert own["payment_fingerprint"].nunique() == own["account_id"].nunique()
    assert free["payment_fingerprint"].isna().all()


def _utc_hour_entropy(frame) -> float:
    share = frame["timestamp"].dt.hour.value_counts(normalize=True)
    return float(-(share * np.log2(share)).sum())


@pytest.mark.slow  # simulates each level of the knob
def test_timing_levels_shape_the_hours_and_days_of_use(tmp_path):
    clock, _ = _simulate(tmp_path, timing="around_the_clock")
    shifts, _ = _simulate(tmp_path, timing="human_shifts")
    organic, _ = _simulate(tmp_path, timing="organic_profile")
    assert _utc_hour_entropy(clock) > _utc_hour_entropy(shifts) + 0.3
    weekend = lambda frame: float((frame["timestamp"].dt.day_of_week >= 5).mean())  # noqa: E731
    assert weekend(shifts) < 0.2 < weekend(organic)
    # organic-profile accounts keep their claimed regions' clocks, not the operators' (UTC+8)
    operator_hour = (organic["timestamp"].dt.hour + 8) % 24
    shifts_hour = (shifts["timestamp"].dt.hour + 8) % 24
    assert shifts_hour.between(7, 19).mean() > 0.85 > operator_hour.between(7, 19).mean()


@pytest.mark.slow
def test_volume_levels_order_exchanges_per_account(tmp_path):
    means = [len(frame) / frame["account_id"].nunique()
             for frame, _ in (_simulate(tmp_path, volume=v) for v in ("low", "medium", "high"))]
    assert means[0] * 2 < means[1] and means[1] * 2 < means[2]


def _created(frame):
    return frame.groupby("account_id").agg(created=("account_created_at", "first"), first=("timestamp", "min"))


@pytest.mark.slow
def test_burst_created_accounts_have_tighter_creation_times_than_bought_and_aged_are_old(tmp_path):
    burst = _created(_simulate(tmp_path, account_age="burst_created")[0])
    aged = _created(_simulate(tmp_path, account_age="aged")[0])
    bought = _created(_simulate(tmp_path, account_age="bought")[0])
    days = lambda t: (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 86_400  # noqa: E731
    iqr = lambda t: float(np.subtract(*np.percentile(days(t), [75, 25])))  # noqa: E731
    assert iqr(burst["created"]) * 3 < iqr(bought["created"])
    age = lambda table: float(np.median(days(table["first"]) - days(table["created"])))  # noqa: E731
    assert age(burst) < 10 and age(aged) > 60 and age(bought) > 60
    # aged accounts were still made in waves: as tight as fresh ones, only older
    assert iqr(aged["created"]) < iqr(bought["created"])


def _openings(frame, length: int = 40):
    first = frame[frame["turn_index"] == 0]
    return first["prompt"].str.slice(0, length), first["account_id"]


@pytest.mark.slow  # simulates each level of the knob
def test_templated_prompts_share_scaffolds_paraphrases_and_disguised_prompts_do_not(tmp_path):
    templates, _ = _simulate(tmp_path, prompts="templates")
    paraphrases, _ = _simulate(tmp_path, prompts="paraphrases")
    disguised, _ = _simulate(tmp_path, prompts="organic_hidden_target")
    opening, account = _openings(templates)
    holders = account.groupby(opening).nunique()
    scaffolds = set(holders[holders >= 3].index)  # the campaign's shared heads (and the stock ones)
    in_scaffold = lambda frame: float(_openings(frame)[0].isin(scaffolds).mean())  # noqa: E731
    assert in_scaffold(templates) > 0.8
    # disguised first turns open with the task itself or an organic opener, as customers do
    assert in_scaffold(paraphrases) < 0.05 and in_scaffold(disguised) < in_scaffold(templates) / 3
    # every paraphrasing account opens in words of its own
    opening, account = _openings(paraphrases)
    assert account.groupby(opening).nunique().max() == 1
    # the disguised campaign sends no scaffold system prompt: only its accounts' own ones
    scaffold_systems = set(templates["system_prompt"].dropna()) - set(disguised["system_prompt"].dropna())
    assert scaffold_systems and not set(disguised["system_prompt"].dropna()) & scaffold_systems


def test_user_agent_levels_set_how_many_clients_the_campaign_claims(tmp_path):
    one, _ = _simulate(tmp_path, user_agents="one")
    many, _ = _simulate(tmp_path, user_agents="many")
    population, _ = _simulate(tmp_path, user_agents="population")
    assert one["user_agent"].nunique() == 1
    assert many["user_agent"].nunique() > 10
    browser = lambda frame: float(frame["user_agent"].str.startswith("Mozilla/").mean())  # noqa: E731
    assert browser(many) < 0.02 < 0.1 < browser(population)


@pytest.mark.slow
def test_camouflage_levels_mix_in_benign_accounts_or_benign_traffic(tmp_path):
    none, none_labels = _simulate(tmp_path, camouflage="none")
    decoyed, decoy_labels = _simulate(tmp_path, camouflage="benign_accounts")
    relayed, relay_labels = _simulate(tmp_path, camouflage="benign_traffic")
    # decoys use casual users' token budgets (none, 1024, 2048), which the harvest never sets
    casual_budget = lambda frame: frame.groupby("account_id")["max_tokens"].apply(  # noqa: E731
        lambda s: bool(s.isna().any() or s.isin([1024, 2048]).any()))
    assert casual_budget(none).mean() == 0
    assert 0.1 < casual_budget(decoyed).mean() < 0.5
    assert (none_labels["relayed_exchanges"] == 0).all()
    relayed_share = relay_labels["relayed_exchanges"].sum() / relay_labels["exchanges"].sum()
    assert 0.2 < relayed_share < 0.4
    assert set(relay_labels["role"]) == {"hydra_relay"} and set(none_labels["role"]) == {"attacker"}
    # the decoys are labelled: every account sending the persona's traffic is one
    decoys = set(decoy_labels.loc[decoy_labels["role"] == "decoy", "account_id"])
    assert set(decoy_labels["role"]) == {"attacker", "decoy"}
    assert set(casual_budget(decoyed)[lambda s: s].index) <= decoys
    assert 0.1 < len(decoys) / len(decoy_labels) < 0.5


# --- the simulator knows nothing of the detector --------------------------------------------------

DETECTOR_MODULES = ("distillguard.detect", "distillguard.bench", "distillguard.store.verdicts", "distillguard.store.engine",
                    "distillguard.store.stats")


def test_the_simulator_imports_nothing_of_the_detector():
    import distillguard.simulate as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(DETECTOR_MODULES), f"{path.name} imports {name}"


# --- the runner's statistics on hand-made tables ------------------------------------------------

@pytest.mark.parametrize("flagged,accounts", [(0, 10), (1, 10), (3, 50), (0, 3000), (7, 7000)])
def test_the_clopper_pearson_bound_is_where_seeing_so_few_becomes_unlikely(flagged, accounts):
    upper = bench.clopper_pearson_upper(flagged, accounts)
    assert binom.cdf(flagged, accounts, upper) == pytest.approx(0.05, abs=1e-9)
    assert upper > flagged / accounts


def test_the_clopper_pearson_bound_of_nothing_flagged_and_its_edges():
    assert bench.clopper_pearson_upper(0, 10) == pytest.approx(1 - 0.05 ** (1 / 10))
    assert bench.clopper_pearson_upper(1, 10) == pytest.approx(0.3942, abs=1e-4)
    assert bench.clopper_pearson_upper(5, 5) == 1.0
    assert bench.clopper_pearson_upper(0, 0) is None
    with pytest.raises(ValueError):
        bench.clopper_pearson_upper(3, 2)


def test_the_recall_distribution_names_the_worst_strategy():
    recalls = {"a": 1.0, "b": 0.9, "c": 0.5, "d": 0.95, "e": 0.8, "f": 0.5}
    dist = bench.recall_distribution(recalls)
    assert dist["median"] == pytest.approx(0.85)
    assert dist["p10"] == pytest.approx(0.5)  # numpy linear: 0.5 + 0.5 * (0.5 - 0.5)
    assert dist["worst"] == 0.5 and dist["worst_strategy"] == "c" and dist["strategies"] == 6
    assert bench.recall_distribution({"x": 0.2, "y": 0.4, "z": 1.0})["p10"] == pytest.approx(0.24)
    assert bench.recall_distribution({})["median"] is None


def _row(recall_caught: tuple[int, int], **levels: str) -> dict:
    caught, accounts = recall_caught
    return {"levels": REFERENCE | levels, "accounts": accounts, "caught": caught, "recall": caught / accounts}


def test_decoys_count_among_the_campaign_accounts_and_are_left_out_of_the_harvesting_ones():
    """Recall is over every campaign account, decoys included; the harvesting accounts' recall
    leaves the decoys out, and the report shows it only where the two differ."""
    import pyarrow as pa

    from distillguard.bench import metrics
    from distillguard.simulate.run import LABELS_SCHEMA

    roles = ["attacker"] * 6 + ["decoy"] * 4 + ["organic"] * 5
    labels = pa.table({
        "account_id": [f"a{i}" for i in range(len(roles))], "role": roles,
        "campaign_id": ["c"] * 10 + [None] * 5, "persona": [None] * 10 + ["casual"] * 5,
        "group_id": [None] * 15, "exchanges": [30] * 15, "campaign_exchanges": [30] * 10 + [0] * 5,
        "relayed_exchanges": [0] * 15}, schema=LABELS_SCHEMA)
    actions = ["throttle"] * 5 + ["allow"] + ["allow"] * 4 + ["allow"] * 5
    verdicts = pa.table({"account_id": labels["account_id"], "action": actions,
                         "campaign_id": ["found"] * 5 + [None] * 10})
    scored = bench.score_strategy(metrics.judge(verdicts, labels))
    assert (scored["accounts"], scored["caught"]) == (10, 5)
    assert (scored["harvesters"], scored["harvesters_caught"]) == (6, 5)
    totals = {"accounts": 10, "caught": 5, "under_one_id": 5, "harvesters": 6, "harvesters_caught": 5}
    row = {**totals, **bench._shares(totals)}
    assert row["recall"] == 0.5 and row["harvest_recall"] == pytest.approx(5 / 6)
    levels = dict(Strategy.of(**REFERENCE).levels)
    summary = bench.summarize({"s": {**row, "levels": levels, "personas": {}}})
    assert summary["harvest_recall"]["worst"] == pytest.approx(5 / 6)
    assert "harvesting accounts alone" in bench._harvest_line(summary)[0]
    same = bench.summarize({"s": {**row, "harvest_recall": 0.5, "levels": levels, "personas": {}}})
    assert bench._harvest_line(same) == []


def test_recall_per_knob_level_is_the_mean_and_the_pooled_share_of_its_strategies():
    rows = [_row((9, 10), payment="shared_card"), _row((10, 40), payment="shared_card"),
            _row((0, 10), payment="free_tier")]
    knob = bench.per_knob(rows)["payment"]
    assert knob["shared_card"] == {"strategies": 2, "mean_recall": pytest.approx(0.575),
                                   "pooled_recall": pytest.approx(19 / 50)}
    assert knob["free_tier"]["mean_recall"] == 0.0
    assert knob["card_per_account"] == {"strategies": 0, "mean_recall": None, "pooled_recall": None}


def test_organic_false_positives_are_pooled_per_persona_with_upper_bounds():
    per_strategy = {
        "s1": {**_row((5, 10)), "under_one_id": 5, "campaign_under_one_id": 0.5,
               "personas": {"casual": [100, 0], "university": [50, 1]}},
        "s2": {**_row((10, 10)), "under_one_id": 8, "campaign_under_one_id": 0.8,
               "personas": {"casual": [200, 0], "university": [150, 0]}},
    }
    summary = bench.summarize(per_strategy)
    fps = summary["organic_false_positives"]
    assert fps["casual"]["accounts"] == 300 and fps["casual"]["flagged"] == 0
    assert fps["casual"]["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 300))
    assert fps["university"]["rate"] == pytest.approx(1 / 200)
    assert fps["(all)"]["accounts"] == 500 and fps["(all)"]["flagged"] == 1
    assert summary["pooled_recall"] == pytest.approx(15 / 20)
    assert summary["one_campaign_share"] == pytest.approx(13 / 15)
    assert summary["campaign_under_one_id"] == {"median": pytest.approx(0.65), "worst": 0.5}
    assert summary["recall"]["worst_strategy"] == "s1"


def test_the_operating_curve_gives_each_budget_its_recall_and_organic_bound_in_budget_order():
    def strategy(caught: int, flagged: int) -> dict:
        return {**_row((caught, 10)), "under_one_id": caught, "campaign_under_one_id": caught / 10,
                "personas": {"casual": [1000, flagged], "reseller": [3, 0]}}
    curve = bench.operating_curve({1e-3: {"s1": strategy(9, 2), "s2": strategy(7, 0)},
                                   1e-4: {"s1": strategy(4, 0), "s2": strategy(2, 0)}}, default=1e-4)
    assert [row["throttle"] for row in curve] == [1e-4, 1e-3]
    assert [row["default"] for row in curve] == [True, False]
    low, high = curve
    assert low["recall"]["median"] == pytest.approx(0.3) and low["recall"]["worst"] == pytest.approx(0.2)
    assert high["pooled_recall"] == pytest.approx(16 / 20)
    assert high["organic"]["flagged"] == 2 and high["organic"]["accounts"] == 2006
    assert high["organic"]["upper_bound"] == pytest.approx(bench.clopper_pearson_upper(2, 2006))
    # three accounts seen, none flagged, still bound the rate loosest
    assert high["highest_persona"]["persona"] == "reseller"
    text = bench.curve_markdown({"run": {"confidence": 0.95, "level": "throttle"}, "operating_curve": curve})
    assert "| 0.0001 (policy) | 30.0% |" in text and "| 0.001 | 80.0% |" in text


def test_throttle_budgets_outside_the_unit_interval_or_for_another_detector_are_refused(tmp_path):
    with pytest.raises(UserError, match="throttle budget"):
        bench.run_strategies("dev", 1, 1, tmp_path / "out", throttle_budgets=(0.0,))
    with pytest.raises(UserError, match="has none"):
        bench.run_strategies("dev", 1, 1, tmp_path / "out", detector="rate_limits", throttle_budgets=(1e-3,))


# --- the held-out protocol ----------------------------------------------------------------------

def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src/distillguard/detect").mkdir(parents=True)
    (root / "src/distillguard/detect/scan.py").write_text("# the detector\n")
    (root / "benchmarks").mkdir()
    (root / "benchmarks/heldout.salt").write_text("salt\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "detector")
    return root


def test_a_heldout_run_refuses_an_untagged_detector(repo):
    with pytest.raises(UserError, match="detector-"):
        bench.run_strategies("heldout", 1, 1, repo / "out", repo=repo)
    assert not (repo / bench.HELDOUT_LOG).exists()


def test_a_heldout_run_refuses_a_detector_changed_since_its_tag(repo):
    _git(repo, "tag", "detector-v1")
    (repo / "src/distillguard/detect/scan.py").write_text("# tuned after the tag\n")
    with pytest.raises(UserError, match="changes"):
        bench.detector_tag(repo)
    (repo / "src/distillguard/detect/scan.py").write_text("# the detector\n")
    assert bench.detector_tag(repo)[0] == "detector-v1"


def test_a_second_heldout_run_at_one_tag_warns_and_needs_force(repo):
    _git(repo, "tag", "detector-v1")
    log = repo / bench.HELDOUT_LOG
    bench.record_heldout_run(log, {"tag": "detector-v1", "date": "2026-01-01"})
    bench.record_heldout_run(log, {"tag": "detector-v0", "date": "2025-12-01"})
    assert len(bench.heldout_runs(log, "detector-v1")) == 1
    warnings: list[str] = []
    with pytest.raises(UserError, match="--force"):
        bench.run_strategies("heldout", 1, 1, repo / "out", repo=repo, progress=warnings.append)
    assert warnings and warnings[0].startswith("warning:") and "detector-v1" in warnings[0]
    assert len(log.read_text().splitlines()) == 2  # a refused run records nothing
    # the same detector on a larger organic population is another benchmark of the set: one run each
    assert not bench.heldout_runs(log, "detector-v1", organic_scale=5.0)
    bench.record_heldout_run(log, {"tag": "detector-v1", "date": "2026-01-02", "organic_scale": 5.0})
    assert len(bench.heldout_runs(log, "detector-v1", organic_scale=5.0)) == 1
    assert len(bench.heldout_runs(log, "detector-v1")) == 1
    assert bench.docs_block("heldout", 5.0) == "strategies-heldout-organic5" and bench.docs_block("dev") == "strategies-dev"
    # and so is the same detector scored without some fields: one run per set of withheld columns
    assert not bench.heldout_runs(log, "detector-v1", withhold=("system_prompt",))
    bench.record_heldout_run(log, {"tag": "detector-v1", "date": "2026-01-03", "withheld": ["system_prompt"]})
    assert len(bench.heldout_runs(log, "detector-v1", withhold=("system_prompt",))) == 1
    assert len(bench.heldout_runs(log, "detector-v1")) == 1
    assert bench.docs_block("heldout", 1.0, ("user_agent", "system_prompt")) == \
        "strategies-heldout-without-system_prompt+user_agent"


def test_only_optional_exchange_columns_can_be_withheld(tmp_path):
    assert withholdable(("user_agent", "system_prompt", "user_agent")) == ("system_prompt", "user_agent")
    with pytest.raises(UserError, match="'prompt' is required"):
        bench.run_strategies("dev", 1, 1, tmp_path / "out", withhold=("prompt",))
    with pytest.raises(UserError, match="'ua' is no column"):
        bench.run_strategies("dev", 1, 1, tmp_path / "out", withhold=("ua",))
    assert not (tmp_path / "out").exists()


def test_a_store_with_columns_withheld_keeps_every_exchange_and_its_truth_and_nulls_only_those(tmp_path_factory):
    prepared = prepare("baseline", TINY, 12, shared_cache(tmp_path_factory))
    without = withheld(prepared, ("user_agent", "system_prompt"))
    assert without.directory != prepared.directory and without.labels.equals(prepared.labels)
    with prepared.open(read_only=True) as full, without.open(read_only=True) as thin:
        query = "SELECT exchange_id, account_id, client_ip, prompt, user_agent, system_prompt FROM exchanges ORDER BY 1"
        before, after = full.con.execute(query).fetchall(), thin.con.execute(query).fetchall()
    assert len(after) == len(before) > 0
    assert [r[:4] for r in after] == [r[:4] for r in before]
    assert any(r[4] for r in before) and any(r[5] for r in before) and not any(r[4] or r[5] for r in after)
    assert withheld(prepared, ()) is prepared
    again: list[str] = []
    assert withheld(prepared, ("system_prompt", "user_agent"), again.append).directory == without.directory
    assert not again  # the copy is cached, not made again
    every = withholdable(tuple(c.name for c in COLUMNS if not c.required))
    assert len(withheld(prepared, every).directory.name) < 30  # a digest names a long list


# --- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_dev_run_writes_the_report_and_the_docs_block(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept\n")
    results = bench.run_strategies("dev", 1, 11, tmp_path / "out", docs=docs)
    (name, figures), = results["strategies"].items()
    assert figures["accounts"] > 0 and 0 <= figures["recall"] <= 1
    assert set(results["summary"]["organic_false_positives"]) >= set(HARD_PERSONAS)
    written = json.loads((tmp_path / "out/results.json").read_text())
    assert written["summary"]["recall"]["worst_strategy"] == name
    text = docs.read_text()
    assert "kept" in text and "<!-- strategies-dev:begin -->" in text and name in text
    assert datetime.now(timezone.utc).strftime("%Y-%m-%d") in text
    # each seed names its store, and the organic accounts flagged there add up to the persona table
    for persona, (_, flagged) in figures["personas"].items():
        assert sum(fig["organic_flagged"].get(persona, 0) for fig in figures["seeds"].values()) == flagged
    assert all((Path(fig["store"]) / "store.duckdb").is_file() for fig in figures["seeds"].values())
    seed, fig = next(iter(written["strategies"][name]["seeds"].items()))
    fig["organic_flagged"] = {"office": 3}
    assert f"- {name}, seed {seed}: office 3 (`{fig['store']}`)" in bench.markdown(written)
