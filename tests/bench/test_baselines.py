"""The two baselines, specified: what a rate limiter and an isolation forest decide, and why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.compute as pc
import pytest

from distillguard.bench.baselines import IsolationForestBaseline, RateLimits
from distillguard.bench.prepare import prepare
from distillguard.errors import UserError
from distillguard.ingest import ingest_paths
from distillguard.store import Store
from distillguard.store.verdicts import VERDICT_SCHEMA
from tests.bench.tiny import TINY, shared_cache
from tests.records import good_record, write_jsonl

pytestmark = pytest.mark.slow  # each test fits a baseline on a simulated reference population

NOON = datetime(2026, 4, 22, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    with prepare("baseline", TINY, 12, shared_cache(tmp_path_factory)).open() as store:
        yield store


@pytest.fixture(scope="module")
def alibaba(tmp_path_factory):
    with prepare("alibaba-2026", TINY, 11, shared_cache(tmp_path_factory)).open() as store:
        yield store


def store_of(tmp_path: Path, name: str, requests: dict[str, list[datetime]]) -> Store:
    """A store where each account sends one exchange at each of its times."""
    records = [good_record(i, exchange_id=f"{name}-{account}-{i}", account_id=account, timestamp=t.isoformat(),
                           output_tokens=100)
               for account, times in requests.items() for i, t in enumerate(times)]
    store = Store(tmp_path / f"{name}.duckdb")
    ingest_paths(store, [write_jsonl(tmp_path / f"{name}.jsonl", records)])
    return store


def burst(n: int, start: datetime = NOON, every_seconds: float = 10) -> list[datetime]:
    return [start + timedelta(seconds=every_seconds * i) for i in range(n)]


# --- rate limits ------------------------------------------------------------------------------

def test_an_account_over_a_rate_limit_is_throttled_with_a_reason_naming_the_cap_and_its_value(tmp_path):
    reference = store_of(tmp_path, "reference", {"steady": burst(3), "calm": burst(2)})
    limiter = RateLimits().fit(reference)
    assert limiter.caps_["requests_per_minute"] == 3  # the highest organic account
    scenario = store_of(tmp_path, "scenario", {"steady": burst(3), "greedy": burst(5)})
    verdicts = {v["account_id"]: v for v in limiter.detect(scenario).to_pylist()}
    assert verdicts["steady"]["action"] == "allow" and verdicts["steady"]["reasons"] == []
    assert verdicts["greedy"]["action"] == "throttle" and verdicts["greedy"]["score"] == 1.0
    assert "requests_per_minute 5 > cap 3" in verdicts["greedy"]["reasons"]


def test_a_rate_limit_counts_only_the_exchanges_before_as_of(tmp_path):
    reference = store_of(tmp_path, "reference", {"steady": burst(3)})
    scenario = store_of(tmp_path, "scenario", {"greedy": burst(5)})  # 12:00:00 .. 12:00:40
    limiter = RateLimits().fit(reference)
    assert limiter.detect(scenario, NOON + timedelta(seconds=25))["action"].to_pylist() == ["allow"]
    assert limiter.detect(scenario, NOON + timedelta(seconds=35))["action"].to_pylist() == ["throttle"]
    assert limiter.detect(scenario, NOON).num_rows == 0  # nothing seen yet


def test_the_rate_limit_caps_spare_every_organic_reference_account(reference):
    limiter = RateLimits().fit(reference)
    actions = limiter.detect(reference)["action"]
    assert pc.sum(pc.equal(actions, "throttle")).as_py() == 0


def test_a_parameter_outside_its_domain_is_a_user_error_naming_it(reference):
    with pytest.raises(UserError, match="throttle_fpr"):
        RateLimits(throttle_fpr=2.0).fit(reference)
    with pytest.raises(UserError, match="n_estimators"):
        IsolationForestBaseline(n_estimators=0).fit(reference)


# --- isolation forest -------------------------------------------------------------------------

def test_account_features_count_subnets_as_ipv4_slash_24_and_ipv6_slash_48(tmp_path):
    from distillguard.bench.baselines.account_features import account_features
    from distillguard.bench.baselines.history import cutoffs

    ips = ["10.0.0.1", "10.0.0.2", "10.0.1.1", "2001:db8::1", "2001:db8:0:1::1"]
    records = [good_record(i, account_id="roamer", client_ip=ip, timestamp=(NOON + timedelta(days=i // 3)).isoformat())
               for i, ip in enumerate(ips)]
    with Store(tmp_path / "s.duckdb") as store:
        ingest_paths(store, [write_jsonl(tmp_path / "s.jsonl", records)])
        (row,) = account_features(store.con, cutoffs(None)).to_pylist()
    assert (row["distinct_ips"], row["distinct_subnets"]) == (5, 3)
    assert (row["active_days"], row["exchanges_per_active_day"]) == (2, 2.5)


def test_the_isolation_forest_returns_one_verdict_per_account_with_the_verdict_schema(reference, alibaba):
    verdicts = IsolationForestBaseline().fit(reference).detect(alibaba)
    assert verdicts.schema.equals(VERDICT_SCHEMA)
    seen = alibaba.con.execute("SELECT count(DISTINCT account_id) FROM exchanges").fetchone()[0]
    assert verdicts.num_rows == pc.count_distinct(verdicts["account_id"]).as_py() == seen
    assert 0 < pc.min(verdicts["score"]).as_py() <= pc.max(verdicts["score"]).as_py() <= 1


def test_the_isolation_forest_threshold_keeps_the_organic_reference_under_the_ceiling(reference):
    forest = IsolationForestBaseline().fit(reference)
    assert pc.sum(pc.equal(forest.detect(reference)["action"], "throttle")).as_py() == 0


def test_an_isolation_forest_verdict_names_its_score_threshold_and_the_unusual_features(reference, alibaba):
    forest = IsolationForestBaseline().fit(reference)
    flagged = [v for v in forest.detect(alibaba).to_pylist() if v["action"] != "allow"]
    assert flagged, "the tiny campaign should stand out somewhere"
    for verdict in flagged:
        assert verdict["reasons"][0].startswith("isolation_forest score ")
        assert "threshold" in verdict["reasons"][0]
