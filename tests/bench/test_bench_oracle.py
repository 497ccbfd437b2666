"""The one-feature oracle: the best single threshold under an organic false-positive ceiling."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.bench import oracle


def test_a_feature_that_separates_the_campaign_is_found_in_either_direction():
    organic = np.arange(1000, dtype=float) + 100.0  # 100 .. 1099
    campaign = np.full(50, 3.0)  # far below every customer
    best = oracle.best_threshold("gap_cv", organic, campaign, 1e-3)
    assert (best.direction, best.recall, best.organic_fpr) == ("below", 1.0, 0.001)
    assert best.threshold == 101.0  # the one customer below it is what the ceiling allows


def test_the_ceiling_is_never_exceeded_even_with_ties():
    organic = np.full(10_000, 5.0)
    campaign = np.full(10, 5.0)
    best = oracle.best_threshold("flat", organic, campaign, 1e-4)
    assert best.recall == 0.0 and best.organic_fpr == 0.0


def test_missing_values_are_never_flagged():
    organic = np.array([1.0, 2.0, 3.0, np.nan])
    campaign = np.array([np.nan, np.nan, 10.0, 10.0])
    best = oracle.best_threshold("pivot_hours", organic, campaign, 0.0)
    assert (best.direction, best.recall) == ("above", 0.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=300),
       st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=50),
       st.sampled_from([0.0, 1e-4, 1e-3, 0.01, 0.1, 0.5]))
def test_the_best_threshold_flags_no_more_customers_than_the_ceiling_allows(organic, campaign, ceiling):
    organic, campaign = np.array(organic), np.array(campaign)
    best = oracle.best_threshold("x", organic, campaign, ceiling)
    threshold = best.threshold
    flagged = organic > threshold if best.direction == "above" else organic < threshold
    assert flagged.sum() <= math.floor(ceiling * len(organic) + 1e-9)
    assert flagged.sum() / len(organic) == best.organic_fpr
    caught = campaign > threshold if best.direction == "above" else campaign < threshold
    assert caught.mean() == best.recall


def test_a_scenario_is_easy_when_one_feature_alone_catches_half_the_campaign():
    accounts = [f"a{i:04d}" for i in range(2000)]
    campaign = set(accounts[:100])
    hours = [0.5 if a in campaign else 3.0 + (i % 7) for i, a in enumerate(accounts)]
    table = pa.table({"account_id": accounts, "hour_entropy": hours,
                      "payment_sharing": [0.0] * 2000, "subnet_sharing": [1.0] * 2000})
    labels = pa.table({"account_id": accounts,
                       "campaign_id": pa.array(["c" if a in campaign else None for a in accounts], pa.string())})
    result = oracle.evaluate(table, labels)
    assert result["easy"] is True
    assert result["ceilings"]["0.0001"]["best_feature"]["feature"] == "hour_entropy"
    assert result["ceilings"]["0.0001"]["best_sharing_rule"]["recall"] == 0.0
    table = table.set_column(1, "hour_entropy", pa.array([3.0] * 2000))
    assert oracle.evaluate(table, labels)["easy"] is False


def test_sharing_counts_the_most_other_accounts_on_one_card_or_subnet():
    feats = pa.table({"account_id": ["a", "b", "c", "d"]})
    cards = pa.table({"account_id": ["a", "b", "c", "d"], "payment_fingerprint": ["k1", "k1", "k1", None]})
    addresses = pa.table({"account_id": ["a", "a", "d"], "client_ip": ["1.1.1.1", "2.2.2.2", "2.2.2.3"],
                          "subnet": ["1.1.1.0/24", "2.2.2.0/24", "2.2.2.0/24"], "n": [1, 1, 1]})
    got = oracle.sharing(feats, cards, addresses).to_pylist()
    assert got == [{"account_id": "a", "payment_sharing": 2.0, "subnet_sharing": 1.0},
                   {"account_id": "b", "payment_sharing": 2.0, "subnet_sharing": 0.0},
                   {"account_id": "c", "payment_sharing": 2.0, "subnet_sharing": 0.0},
                   {"account_id": "d", "payment_sharing": 0.0, "subnet_sharing": 1.0}]
