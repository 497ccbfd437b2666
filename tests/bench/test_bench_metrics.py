"""Benchmark scoring, specified on hand-made verdicts and labels.

The cast: campaign ``red`` (r1, r2, r3; 100 exchanges each), campaign ``blue`` (b1, b2; 50
each), and six organic accounts: four ``casual`` (c1..c4) and two ``university`` (u1, u2).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from distillguard.bench import metrics
from distillguard.bench.replay import grid
from distillguard.store.verdicts import VERDICT_SCHEMA

CAMPAIGN = {"r1": "red", "r2": "red", "r3": "red", "b1": "blue", "b2": "blue"}
ORGANIC = {"c1": "casual", "c2": "casual", "c3": "casual", "c4": "casual", "u1": "university", "u2": "university"}
EVERYONE = [*CAMPAIGN, *ORGANIC]
DAY = datetime(2026, 4, 22, tzinfo=timezone.utc)


def labels() -> pa.Table:
    exchanges = {a: (100 if CAMPAIGN.get(a) == "red" else 50 if a in CAMPAIGN else 20) for a in EVERYONE}
    return pa.table({
        "account_id": EVERYONE,
        "role": ["attacker" if a in CAMPAIGN else "organic" for a in EVERYONE],
        "campaign_id": pa.array([CAMPAIGN.get(a) for a in EVERYONE], pa.string()),
        "persona": pa.array([ORGANIC.get(a) for a in EVERYONE], pa.string()),
        "exchanges": [exchanges[a] for a in EVERYONE],
        "campaign_exchanges": [exchanges[a] if a in CAMPAIGN else 0 for a in EVERYONE],
    })


def verdicts(actions: dict[str, str], campaigns: dict[str, str] | None = None,
             as_of: dict[str, datetime] | None = None) -> pa.Table:
    ids = list(actions)
    return pa.table({
        "account_id": ids, "action": [actions[a] for a in ids], "score": [0.5] * len(ids),
        "campaign_id": pa.array([(campaigns or {}).get(a) for a in ids], pa.string()),
        "reasons": pa.array([[] for _ in ids], pa.list_(pa.string())),
        "as_of": pa.array([(as_of or {}).get(a) for a in ids], pa.timestamp("us", tz="UTC")),
    }, schema=VERDICT_SCHEMA)


def scored(actions: dict[str, str], campaigns: dict[str, str] | None = None) -> pa.Table:
    return metrics.judge(verdicts(actions, campaigns), labels())


# --- account level ----------------------------------------------------------------------------

def test_a_perfect_detector_has_full_precision_and_recall_and_no_false_positive():
    judged = scored({a: "block" if a in CAMPAIGN else "allow" for a in EVERYONE})
    for level in metrics.LEVELS:
        m = metrics.account_metrics(judged, level)
        assert (m["precision"], m["recall"], m["organic_fpr"]) == (1.0, 1.0, 0.0)
        assert m["true_positives"] == 5 and m["false_positives"] == 0 and m["false_negatives"] == 0
        assert {p: v["fpr"] for p, v in m["personas"].items()} == {"casual": 0.0, "university": 0.0}
        assert (m["worst_persona"], m["worst_persona_fpr"]) == (None, 0.0)


def test_a_detector_flagging_everyone_has_full_recall_and_every_organic_account_is_a_false_positive():
    m = metrics.account_metrics(scored({a: "throttle" for a in EVERYONE}), "throttle")
    assert m["recall"] == 1.0
    assert m["precision"] == pytest.approx(5 / 11)
    assert m["organic_fpr"] == 1.0
    assert m["personas"] == {"casual": {"accounts": 4, "flagged": 4, "fpr": 1.0},
                             "university": {"accounts": 2, "flagged": 2, "fpr": 1.0}}


def test_the_worst_persona_is_the_one_with_the_highest_false_positive_rate():
    m = metrics.account_metrics(scored({"c1": "throttle", "u1": "throttle"}), "throttle")
    assert m["organic_fpr"] == pytest.approx(2 / 6)
    assert (m["worst_persona"], m["worst_persona_fpr"]) == ("university", 0.5)


def test_monitor_counts_at_the_monitor_level_but_not_at_the_throttle_level():
    judged = scored({"r1": "monitor", "r2": "fallback", "c1": "monitor"})
    monitor, throttle = (metrics.account_metrics(judged, level) for level in ("monitor", "throttle"))
    assert (monitor["true_positives"], monitor["false_positives"]) == (2, 1)
    assert (throttle["true_positives"], throttle["false_positives"]) == (1, 0)


def test_an_account_without_a_verdict_is_allowed():
    m = metrics.account_metrics(scored({"r1": "block"}), "monitor")
    assert m["flagged"] == 1 and m["recall"] == pytest.approx(1 / 5)


def test_precision_is_undefined_not_zero_when_nothing_is_flagged():
    m = metrics.account_metrics(scored({}), "monitor")
    assert m["precision"] is None and m["recall"] == 0.0 and m["organic_fpr"] == 0.0


def test_verdicts_repeating_an_account_or_judging_an_unknown_one_are_rejected():
    twice = pa.concat_tables([verdicts({"r1": "block"}), verdicts({"r1": "allow"})])
    with pytest.raises(ValueError, match="more than one row"):
        metrics.judge(twice, labels())
    with pytest.raises(ValueError, match="do not know"):
        metrics.judge(verdicts({"stranger": "block"}), labels())


# --- campaign level ---------------------------------------------------------------------------

def test_a_detector_missing_one_campaign_catches_none_of_its_accounts_or_exchanges():
    judged = scored({"r1": "block", "r2": "block", "r3": "block"})
    campaigns = metrics.campaign_metrics(judged, "throttle")
    assert campaigns["red"]["accounts_caught_share"] == 1.0 and campaigns["red"]["exchanges_caught"] == 300
    assert campaigns["blue"]["accounts_caught"] == 0 and campaigns["blue"]["exchanges_caught_share"] == 0.0
    assert campaigns["blue"]["one_campaign_share"] is None and not campaigns["blue"]["found_as_one"]
    assert metrics.account_metrics(judged, "throttle")["recall"] == pytest.approx(3 / 5)


def test_a_campaign_is_found_as_one_when_its_caught_accounts_share_one_campaign_id():
    judged = scored({a: "block" for a in CAMPAIGN}, {"r1": "k1", "r2": "k1", "r3": "k2", "b1": "k9", "b2": "k9"})
    campaigns = metrics.campaign_metrics(judged, "throttle")
    assert campaigns["red"]["one_campaign_share"] == pytest.approx(2 / 3) and not campaigns["red"]["found_as_one"]
    assert campaigns["red"]["detector_campaigns"] == 2
    assert campaigns["blue"]["one_campaign_share"] == 1.0 and campaigns["blue"]["found_as_one"]


def test_caught_accounts_without_a_campaign_id_count_against_finding_the_campaign_as_one():
    campaigns = metrics.campaign_metrics(scored({a: "block" for a in CAMPAIGN}), "throttle")
    assert campaigns["red"]["one_campaign_share"] == 0.0 and campaigns["red"]["accounts_caught_share"] == 1.0


# --- replay: first flags, time to detection, leakage ------------------------------------------

def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def test_the_replay_grid_is_every_six_hours_on_the_utc_clock_around_the_campaign():
    assert grid(at(1.5), at(13), timedelta(hours=6)) == [at(6), at(12), at(18)]
    assert grid(at(6), at(6), timedelta(hours=6)) == [at(12)]


def test_first_flags_keep_the_earliest_step_at_each_level_even_if_a_later_step_relents():
    rows = pa.concat_tables([
        verdicts({"r1": "monitor"}, as_of={"r1": at(6)}),
        verdicts({"r1": "throttle", "c1": "monitor"}, as_of={"r1": at(12), "c1": at(12)}),
        verdicts({"r1": "allow"}, as_of={"r1": at(18)}),
    ])
    flags = {r["account_id"]: r for r in metrics.first_flags(rows).to_pylist()}
    assert (flags["r1"]["first_monitor"], flags["r1"]["first_throttle"]) == (at(6), at(12))
    assert (flags["c1"]["first_monitor"], flags["c1"]["first_throttle"]) == (at(12), None)


def traffic() -> pa.Table:
    """Campaign exchanges per step: (account, campaign, step end, exchanges, output tokens, first time)."""
    rows = [("r1", "red", at(6), 10, 1000, at(1)), ("r1", "red", at(12), 10, 1000, at(7)),
            ("r1", "red", at(18), 10, 1000, at(13)), ("r2", "red", at(6), 5, 500, at(2)),
            ("r2", "red", at(18), 5, 500, at(14)), ("b1", "blue", at(18), 7, 700, at(15))]
    names = ["account_id", "campaign_id", "as_of", "exchanges", "output_tokens", "first_timestamp"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def flags(throttled: dict[str, datetime], monitored: dict[str, datetime] | None = None) -> pa.Table:
    accounts = sorted(set(throttled) | set(monitored or {}))
    kind = pa.timestamp("us", tz="UTC")
    return pa.table({"account_id": accounts,
                     "first_monitor": pa.array([(monitored or throttled).get(a) for a in accounts], kind),
                     "first_throttle": pa.array([throttled.get(a) for a in accounts], kind)})


def test_leakage_is_what_a_campaign_sent_until_each_account_was_throttled():
    # r1 throttled at 12:00: its exchanges up to 12:00 leaked, the 10 after did not.
    # r2 never throttled: all 10 leaked. b1 throttled at 18:00 after sending 7: all leaked.
    result = metrics.leakage(traffic(), flags({"r1": at(12), "b1": at(18)}), scale=0.5)
    red, blue = result["red"], result["blue"]
    assert (red["exchanges"], red["leaked_exchanges"], red["leaked_output_tokens"]) == (40, 30, 3000)
    assert red["leaked_exchanges_share"] == 0.75 and red["leaked_output_tokens_share"] == 0.75
    assert red["leaked_exchanges_full_scale"] == 60  # 30 at scale 0.5
    assert (blue["leaked_exchanges"], blue["leaked_exchanges_share"]) == (7, 1.0)


def test_time_to_detection_runs_from_the_campaigns_first_exchange_to_its_first_flag():
    result = metrics.leakage(traffic(), flags({"r2": at(18)}, monitored={"r1": at(6), "r2": at(12)}), scale=1)
    assert result["red"]["ttd_monitor_hours"] == 5.0  # first exchange 01:00, first flag 06:00
    assert result["red"]["ttd_throttle_hours"] == 17.0
    assert result["blue"]["ttd_throttle_hours"] is None and result["blue"]["leaked_exchanges_share"] == 1.0


def test_the_leakage_curve_accumulates_what_was_obtained_by_the_end_of_each_step():
    assert metrics.leakage_curve(traffic(), None) == [
        (at(6).isoformat(), 15), (at(12).isoformat(), 25), (at(18).isoformat(), 47)]
    assert metrics.leakage_curve(traffic(), flags({"r1": at(6), "r2": at(6), "b1": at(6)})) == [
        (at(6).isoformat(), 15), (at(12).isoformat(), 15), (at(18).isoformat(), 15)]


def test_organic_accounts_flagged_at_any_replay_step_count_as_harmed():
    harmed = metrics.organic_flagged(flags({"c1": at(6), "r1": at(6)}, monitored={"c1": at(6), "u1": at(12)}),
                                     labels())
    assert harmed["throttle"] == {"accounts": 1, "fpr": pytest.approx(1 / 6)}
    assert harmed["monitor"] == {"accounts": 2, "fpr": pytest.approx(2 / 6)}
