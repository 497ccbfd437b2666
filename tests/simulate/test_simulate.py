"""The traffic simulator: what it writes, and the properties the benchmark relies on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from distillguard.schema import ARROW_SCHEMA
from distillguard.simulate import ScenarioError, load_scenario, shipped_scenarios, simulate

TINY = 0.002


@pytest.fixture(scope="module")
def alibaba(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alibaba")
    simulate("alibaba-2026", scale=TINY, seed=11, out_dir=out)
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    simulate("baseline", scale=TINY, seed=8, out_dir=out)
    return out


@pytest.fixture(scope="module")
def minimax(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minimax")
    simulate("minimax", scale=0.004, seed=5, out_dir=out)
    return out


def exchanges_with_labels(out: Path, columns: list[str] | None = None) -> pa.Table:
    if columns is not None and "account_id" not in columns:
        columns = ["account_id", *columns]
    exchanges = pq.read_table(out / "exchanges.parquet", columns=columns)
    labels = pq.read_table(out / "labels.parquet")
    return exchanges.join(labels, "account_id")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# --- output format ----------------------------------------------------------------------------

def test_exchanges_have_exactly_the_canonical_arrow_schema(alibaba):
    assert pq.read_schema(alibaba / "exchanges.parquet").equals(ARROW_SCHEMA)
    assert pq.read_table(alibaba / "exchanges.parquet").schema.equals(ARROW_SCHEMA)


def test_exchanges_are_streamed_in_several_row_groups(tmp_path, monkeypatch):
    from distillguard.simulate import run

    monkeypatch.setattr(run, "TARGET_BLOCK_ROWS", 2_000)
    simulate("baseline", scale=0.001, seed=1, out_dir=tmp_path)
    assert pq.ParquetFile(tmp_path / "exchanges.parquet").metadata.num_row_groups > 5


def test_required_columns_are_never_null_and_exchange_ids_are_unique(alibaba):
    table = pq.read_table(alibaba / "exchanges.parquet")
    for field in ARROW_SCHEMA:
        if not field.nullable:
            assert table.column(field.name).null_count == 0, field.name
    assert pc.count_distinct(table["exchange_id"]).as_py() == table.num_rows
    assert pc.min(table["input_tokens"]).as_py() > 0


def test_labels_cover_every_account_exactly_once(alibaba):
    exchanges = pq.read_table(alibaba / "exchanges.parquet", columns=["account_id"])
    labels = pq.read_table(alibaba / "labels.parquet")
    labelled = set(labels["account_id"].to_pylist())
    assert len(labelled) == labels.num_rows
    assert set(pc.unique(exchanges["account_id"]).to_pylist()) <= labelled
    assert set(labels["role"].to_pylist()) == {"organic", "attacker"}
    attackers = labels.filter(pc.equal(labels["role"], "attacker"))
    assert set(attackers["campaign_id"].to_pylist()) == {"alibaba-2026"}
    assert attackers["persona"].null_count == attackers.num_rows
    organic = labels.filter(pc.equal(labels["role"], "organic"))
    assert organic["persona"].null_count == 0 and organic["campaign_id"].null_count == organic.num_rows


def test_label_counts_match_the_exchanges_written(alibaba):
    exchanges = pq.read_table(alibaba / "exchanges.parquet", columns=["account_id"])
    labels = pq.read_table(alibaba / "labels.parquet")
    assert pc.sum(labels["exchanges"]).as_py() == exchanges.num_rows
    attackers = labels.filter(pc.equal(labels["role"], "attacker"))
    assert attackers["campaign_exchanges"].to_pylist() == attackers["exchanges"].to_pylist()


def test_scenario_json_records_the_resolved_parameters_seed_and_scale(alibaba):
    resolved = json.loads((alibaba / "scenario.json").read_text())
    assert resolved["seed"] == 11 and resolved["scale"] == TINY
    assert resolved["scenario"]["campaigns"]["alibaba-2026"]["accounts"] == 25000
    assert resolved["scenario"]["organic"]["casual"]["activity"]["rhythm"]["profile"] == "evening"


# --- determinism and scale --------------------------------------------------------------------

def test_same_seed_gives_identical_exchanges(tmp_path):
    first = simulate("minimax", scale=0.001, seed=7, out_dir=tmp_path / "a")
    second = simulate("minimax", scale=0.001, seed=7, out_dir=tmp_path / "b")
    assert first.exchanges == second.exchanges > 0
    for name in ("exchanges.parquet", "labels.parquet", "relayed.parquet", "scenario.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow  # simulates a scenario of its own
def test_different_seeds_give_different_exchanges(tmp_path):
    simulate("baseline", scale=0.001, seed=1, out_dir=tmp_path / "a")
    simulate("baseline", scale=0.001, seed=2, out_dir=tmp_path / "b")
    a = pq.read_table(tmp_path / "a" / "exchanges.parquet", columns=["exchange_id"])
    b = pq.read_table(tmp_path / "b" / "exchanges.parquet", columns=["exchange_id"])
    assert not set(a["exchange_id"].to_pylist()) & set(b["exchange_id"].to_pylist())


@pytest.mark.slow  # simulates several populations
def test_scale_multiplies_accounts_not_behaviour(tmp_path):
    steady = tmp_path / "steady.yaml"
    steady.write_text("name: steady\nbase: alibaba-2026\ncampaigns:\n  alibaba-2026:\n"
                      "    activity:\n      exchanges_per_account: {mean: 300, sigma: 0}\n")
    small = simulate(steady, scale=0.002, seed=3, out_dir=tmp_path / "small")
    large = simulate(steady, scale=0.008, seed=3, out_dir=tmp_path / "large")
    assert small.accounts["campaign:alibaba-2026"] == 50
    assert large.accounts["campaign:alibaba-2026"] == 200
    assert large.accounts["organic:casual"] == 4 * small.accounts["organic:casual"]
    assert small.campaign_exchanges / 50 == pytest.approx(300, rel=0.1)
    assert large.campaign_exchanges / 200 == pytest.approx(300, rel=0.1)


# --- scenarios --------------------------------------------------------------------------------

# one scenario in make test-fast, every one in make test: about 1 s each
@pytest.mark.parametrize("name", [n if n == "alibaba-2026" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in shipped_scenarios()])
def test_each_shipped_scenario_loads_and_runs_at_tiny_scale(name, tmp_path):
    summary = simulate(name, scale=0.001, seed=2, out_dir=tmp_path)
    assert summary.exchanges > 0
    assert pq.read_schema(tmp_path / "exchanges.parquet").equals(ARROW_SCHEMA)
    if name != "baseline":
        assert summary.campaign_exchanges > 0


def test_the_issue_scenarios_are_shipped():
    assert {"baseline", "alibaba-2026", "minimax", "moonshot", "deepseek", "residential-proxies",
            "low-and-slow", "paraphrased", "human-timing", "mixed"} <= set(shipped_scenarios())


@pytest.mark.parametrize("name, accounts, exchanges", [
    ("alibaba-2026", 25_000, 28.8e6), ("minimax", 9_000, 13e6), ("moonshot", 1_200, 3.4e6),
    ("deepseek", 300, 150e3),
])
def test_campaign_volumes_at_scale_one_match_the_reported_campaigns(name, accounts, exchanges):
    campaign = load_scenario(name).campaigns[name]
    assert campaign.accounts == accounts
    expected = campaign.accounts * campaign.activity.exchanges_per_account.mean
    # a few percent are lost where sessions run past the end of the campaign window
    assert exchanges <= expected <= 1.12 * exchanges


@pytest.mark.slow  # simulates a scenario of its own
def test_campaign_traffic_falls_inside_its_declared_window(alibaba):
    table = exchanges_with_labels(alibaba, ["timestamp"])
    attack = table.filter(pc.equal(table["role"], "attacker"))
    window = load_scenario("alibaba-2026").campaigns["alibaba-2026"].window
    assert pc.min(attack["timestamp"]).as_py() >= window.start
    assert pc.max(attack["timestamp"]).as_py() < window.end
    period = load_scenario("alibaba-2026").period
    assert pc.min(table["timestamp"]).as_py() >= period.start
    assert pc.max(table["timestamp"]).as_py() < period.end


@pytest.mark.slow  # simulates a scenario of its own
def test_attack_accounts_are_created_in_waves_before_first_use(alibaba):
    table = exchanges_with_labels(alibaba, ["timestamp", "account_created_at"])
    attack = table.filter(pc.equal(table["role"], "attacker"))
    first_use = pc.min(attack["timestamp"]).as_py()
    created = attack["account_created_at"].to_pylist()
    assert all(c <= first_use + timedelta(days=60) for c in created)
    per_account = {}
    for account, c, t in zip(attack["account_id"].to_pylist(), created, attack["timestamp"].to_pylist()):
        per_account.setdefault(account, (c, t))
        assert c <= t
    # waves: most accounts are created within a few hours of several others
    hours = np.sort([c.timestamp() / 3600 for c, _ in per_account.values()])
    neighbours = np.minimum(np.diff(hours, prepend=-1e9), np.diff(hours, append=1e9))
    assert np.mean(neighbours < 6) > 0.7


def test_campaign_moves_about_half_its_traffic_to_a_new_model_within_a_day(minimax):
    released = load_scenario("minimax").models["atlas-3.5"].released
    table = exchanges_with_labels(minimax, ["exchange_id", "timestamp", "model"])
    attack = table.filter(pc.and_(pc.equal(table["role"], "hydra_relay"),
                                  pc.invert(pc.is_in(table["exchange_id"], value_set=relayed_ids(minimax)))))
    before = attack.filter(pc.less(attack["timestamp"], released))
    after = attack.filter(pc.greater_equal(attack["timestamp"], released + timedelta(hours=24)))
    assert pc.sum(pc.equal(before["model"], "atlas-3.5")).as_py() == 0
    share = pc.mean(pc.cast(pc.equal(after["model"], "atlas-3.5"), pa.float64())).as_py()
    assert 0.4 <= share <= 0.6


def test_organic_customers_adopt_a_new_model_gradually(minimax):
    released = load_scenario("minimax").models["atlas-3.5"].released
    table = exchanges_with_labels(minimax, ["timestamp", "model"])
    organic = table.filter(pc.equal(table["role"], "organic"))

    def share(start: datetime, end: datetime) -> float:
        rows = organic.filter(pc.and_(pc.greater_equal(organic["timestamp"], start),
                                      pc.less(organic["timestamp"], end)))
        return pc.mean(pc.cast(pc.equal(rows["model"], "atlas-3.5"), pa.float64())).as_py()

    first_day = share(released, released + timedelta(days=1))
    last_week = share(released + timedelta(days=21), released + timedelta(days=28))
    assert first_day < 0.2
    assert last_week > first_day + 0.15


def relayed_ids(out: Path) -> pa.Array:
    return pq.read_table(out / "relayed.parquet")["exchange_id"].combine_chunks()


def test_hydra_accounts_relay_genuine_customer_requests_through_the_same_addresses(minimax):
    labels = pq.read_table(minimax / "labels.parquet")
    hydra = labels.filter(pc.equal(labels["role"], "hydra_relay"))
    relayed = pc.sum(hydra["relayed_exchanges"]).as_py()
    own = pc.sum(hydra["campaign_exchanges"]).as_py()
    assert relayed == len(relayed_ids(minimax))
    assert relayed / (relayed + own) == pytest.approx(0.3, abs=0.06)
    table = exchanges_with_labels(minimax, ["exchange_id", "client_ip"])
    hydra_rows = table.filter(pc.equal(table["role"], "hydra_relay"))
    is_relayed = pc.is_in(hydra_rows["exchange_id"], value_set=relayed_ids(minimax))
    own_ips = pc.unique(hydra_rows.filter(pc.invert(is_relayed))["client_ip"])
    relay_rows_on_own_ips = pc.is_in(hydra_rows.filter(is_relayed)["client_ip"], value_set=own_ips)
    # the datacenter part of the proxy pool is shared; residential exits are fresh either way
    assert pc.mean(pc.cast(relay_rows_on_own_ips, pa.float64())).as_py() > 0.4


@pytest.mark.slow  # simulates a scenario of its own
def test_paraphrased_accounts_never_share_exact_prompt_text(tmp_path):
    simulate("paraphrased", scale=0.002, seed=4, out_dir=tmp_path)
    table = exchanges_with_labels(tmp_path, ["prompt"])
    attack = table.filter(pc.equal(table["role"], "attacker")).select(["account_id", "prompt"])
    owners = attack.group_by("prompt").aggregate([("account_id", "count_distinct")])
    assert pc.max(owners["account_id_count_distinct"]).as_py() == 1


def test_every_organic_persona_is_present(baseline):
    table = exchanges_with_labels(baseline, [])
    personas = set(pc.unique(table["persona"]).to_pylist())
    assert personas == set(load_scenario("baseline").organic)


def test_campus_accounts_share_a_few_nat_addresses(baseline):
    table = exchanges_with_labels(baseline, ["client_ip"])
    campus = table.filter(pc.equal(table["persona"], "university")).select(["client_ip", "account_id"])
    per_ip = campus.group_by("client_ip").aggregate([("account_id", "count_distinct")])
    assert pc.max(per_ip["account_id_count_distinct"]).as_py() >= 0.5 * pc.count_distinct(campus["account_id"]).as_py()


# --- user errors ------------------------------------------------------------------------------

def test_unknown_scenario_name_is_a_scenario_error_listing_the_shipped_ones():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'.*alibaba-2026"):
        load_scenario("nope")


def test_a_bad_yaml_field_is_a_scenario_error_naming_the_file_and_field(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbase: alibaba-2026\ncampaigns:\n  alibaba-2026:\n"
                    "    tells:\n      coverage_complementarity: 1.5\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message
    assert "campaigns.alibaba-2026.tells.coverage_complementarity" in message


def test_a_misspelt_field_is_a_scenario_error(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nbase: baseline\norganic:\n  casual:\n    acounts: 5\n")
    with pytest.raises(ScenarioError, match=r"organic\.casual\.acounts"):
        load_scenario(path)


def test_an_unknown_weight_name_is_a_scenario_error(tmp_path):
    path = tmp_path / "modes.yaml"
    path.write_text("name: m\nbase: baseline\norganic:\n  casual:\n    network:\n      modes: {satellite: 1}\n")
    with pytest.raises(ScenarioError, match=r"organic\.casual\.network\.modes.*satellite"):
        load_scenario(path)


def test_invalid_yaml_and_bad_scale_are_scenario_errors(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="scale"):
        simulate("baseline", scale=0, out_dir=tmp_path / "out")


def test_an_override_replaces_weight_maps_and_merges_sections(tmp_path):
    path = tmp_path / "resi.yaml"
    path.write_text("name: resi\nbase: alibaba-2026\ncampaigns:\n  alibaba-2026:\n"
                    "    network:\n      modes: {residential_proxy: 1.0}\n")
    campaign = load_scenario(path).campaigns["alibaba-2026"]
    assert campaign.network.modes == {"residential_proxy": 1.0}
    assert campaign.network.pool_size == 12  # untouched sibling field kept from the base


# --- prompt corpora from the user ----------------------------------------------------------------

@pytest.mark.slow  # simulates a scenario of its own
def test_user_prompt_files_replace_the_shipped_corpora(tmp_path):
    organic = tmp_path / "organic.jsonl"
    organic.write_text('{"prompt": "ORGANIC-ONLY question about tea"}\n'
                       '{"prompt": "ORGANIC-ONLY first", "turns": ["ORGANIC-ONLY first", "ORGANIC-ONLY second"]}\n')
    distill = tmp_path / "distill.jsonl"
    distill.write_text('{"prompt": "DISTILL-ONLY task"}\n')
    simulate("alibaba-2026", scale=0.001, seed=1, organic_prompts=[organic], distill_prompts=[distill],
             out_dir=tmp_path / "out")
    table = exchanges_with_labels(tmp_path / "out")
    attack = table.filter(pc.and_(pc.equal(table["role"], "attacker"), pc.equal(table["turn_index"], 0)))
    assert pc.all(pc.match_substring(attack["prompt"], "DISTILL-ONLY")).as_py()
    chat = table.filter(pc.and_(pc.equal(table["persona"], "casual"), pc.equal(table["turn_index"], 0)))
    assert pc.any(pc.match_substring(chat["prompt"], "ORGANIC-ONLY")).as_py()


def test_an_unusable_prompt_file_is_a_scenario_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ScenarioError, match="bad.jsonl.*'prompt'"):
        simulate("baseline", scale=0.001, organic_prompts=[bad], out_dir=tmp_path / "out")


def test_conversation_turns_are_numbered_in_time_order_and_wait_for_the_previous_answer(minimax):
    table = pq.read_table(minimax / "exchanges.parquet",
                          columns=["conversation_id", "account_id", "turn_index", "timestamp", "latency_ms"])
    table = table.sort_by([("conversation_id", "ascending"), ("turn_index", "ascending")])
    conv = table["conversation_id"].to_numpy(zero_copy_only=False)
    turn = table["turn_index"].to_numpy()
    start = pc.cast(table["timestamp"], pa.int64()).to_numpy()
    latency_us = table["latency_ms"].to_numpy() * 1000
    same = conv[1:] == conv[:-1]
    assert np.all(turn[1:][same] == turn[:-1][same] + 1)
    assert np.all(start[1:][same] >= start[:-1][same] + latency_us[:-1][same])
    owners = table.group_by("conversation_id").aggregate([("account_id", "count_distinct")])
    assert pc.max(owners["account_id_count_distinct"]).as_py() == 1


def test_organic_hard_negatives_share_cards_and_addresses_like_a_campaign_cell(baseline):
    table = exchanges_with_labels(baseline, ["payment_fingerprint", "client_ip"])
    developers = table.filter(pc.equal(table["persona"], "developer"))
    pairs = developers.select(["account_id", "payment_fingerprint", "client_ip"]).drop_null()
    shared = pairs.group_by(["payment_fingerprint", "client_ip"]).aggregate([("account_id", "count_distinct")])
    assert pc.max(shared["account_id_count_distinct"]).as_py() >= 2  # siblings in one household
    office = table.filter(pc.equal(table["persona"], "office")).select(["account_id", "payment_fingerprint"])
    cards = office.drop_null().group_by("payment_fingerprint").aggregate([("account_id", "count_distinct")])
    assert pc.max(cards["account_id_count_distinct"]).as_py() >= 5  # a corporate card


def _busiest_eight_hours_share(out) -> float:
    ex = pq.read_table(out / "exchanges.parquet", columns=["account_id", "timestamp"])
    labels = pq.read_table(out / "labels.parquet", columns=["account_id", "role"]).to_pylist()
    campaign = {r["account_id"] for r in labels if r["role"] != "organic"}
    hours = [t.hour for a, t in zip(ex.column("account_id").to_pylist(), ex.column("timestamp").to_pylist())
             if a in campaign]
    counts = [hours.count(h) for h in range(24)]
    return max(sum(counts[(h + i) % 24] for i in range(8)) for h in range(24)) / len(hours)


@pytest.mark.slow  # simulates several populations
def test_adaptive_accounts_keep_the_local_time_of_their_region_not_the_operators_clock(tmp_path):
    simulate("adaptive-2026", scale=0.004, seed=3, out_dir=tmp_path / "local")
    one_clock = tmp_path / "one-clock.yaml"
    one_clock.write_text("name: one-clock\nbase: adaptive-2026\n"
                         "campaigns:\n  adaptive-2026:\n    account_local_time: false\n")
    simulate(str(one_clock), scale=0.004, seed=3, out_dir=tmp_path / "operator")
    # an office rhythm on one clock crowds the working hours of one time zone; spread over the
    # regions' zones, the same rhythm covers the UTC day far more evenly
    assert _busiest_eight_hours_share(tmp_path / "local") < _busiest_eight_hours_share(tmp_path / "operator") - 0.1


@pytest.mark.slow  # simulates a scenario of its own
def test_the_benchmarks_full_account_count_scenarios_change_only_the_account_count():
    # benchmarks/scenarios: a shipped campaign with its real account count, used to show that a
    # replay's first detection at scale 0.05 waits on how few accounts the scale leaves
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
    cases = {"deepseek": {"deepseek": 6000}, "moonshot": {"moonshot": 24000},
             "mixed": {"moonshot": 24000, "deepseek": 6000, "adaptive-2026": 25000}}
    for name, counts in cases.items():
        shipped = load_scenario(name).model_dump()
        fullsize = load_scenario(here / f"{name}-fullsize.yaml").model_dump()
        for campaign, accounts in counts.items():
            assert fullsize["campaigns"][campaign]["accounts"] == accounts
            assert shipped["campaigns"][campaign]["accounts"] < accounts
        for section in (shipped, fullsize):
            section.pop("name"), section.pop("description", None)
            for campaign in counts:
                section["campaigns"][campaign].pop("accounts")
        assert fullsize == shipped
