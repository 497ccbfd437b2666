"""The detection floors a detector is held to, as data, evaluated on bench results.

Each floor reads one figure from a detector's result on one scenario and compares it with a
target. They are stated for scenarios simulated at scale >= ``MIN_SCALE``; at smaller scales a
rate like 0.01% cannot even be resolved, so the report shows the figures but marks the run.
Adding a floor (for the adaptive campaigns, say) is adding a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

MIN_SCALE = 0.05

EVASION_VARIANTS = ("residential-proxies", "low-and-slow", "paraphrased", "human-timing", "mixed")


@dataclass(frozen=True)
class Floor:
    name: str
    meaning: str
    target: float
    at_most: bool  # True: value <= target passes; False: value >= target passes
    scenarios: tuple[str, ...] | Literal["all", "with_campaigns"]
    value: Callable[[dict[str, Any]], float | None]  # from one detector's result on one scenario


def _throttle(result: dict, key: str) -> float | None:
    return result["accounts"]["throttle"][key]


def _worst_campaign(result: dict, key: str, worst: Callable) -> float | None:
    """The worst campaign's figure from the replay; None without a replay, and infinity for a
    campaign the replay never caught (its time to detection has no value but surely fails)."""
    values = [c[key] for c in (result.get("replay") or {}).get("campaigns", {}).values()]
    if not values:
        return None
    return worst(math.inf if v is None else v for v in values)


FLOORS: tuple[Floor, ...] = (
    Floor("recall", "campaign accounts throttled or stronger", 0.99, False, ("alibaba-2026",),
          lambda r: _throttle(r, "recall")),
    Floor("one_campaign", "caught accounts in the campaign's most common campaign_id", 0.95, False,
          ("alibaba-2026",),
          lambda r: min((c["throttle"]["one_campaign_share"] or 0.0 for c in r["campaigns"].values()),
                        default=None)),
    Floor("evasion_recall", "campaign accounts throttled or stronger", 0.95, False, EVASION_VARIANTS,
          lambda r: _throttle(r, "recall")),
    Floor("organic_fpr", "organic accounts throttled or stronger", 1e-4, True, "all",
          lambda r: _throttle(r, "organic_fpr")),
    Floor("persona_fpr", "worst organic persona throttled or stronger", 1e-3, True, "all",
          lambda r: _throttle(r, "worst_persona_fpr")),
    Floor("time_to_detection_hours", "hours from a campaign's start to its first throttled account (worst campaign)",
          24.0, True, "with_campaigns", lambda r: _worst_campaign(r, "ttd_throttle_hours", max)),
    Floor("leakage", "share of a campaign's exchanges obtained before throttling (worst campaign)", 0.03, True, "with_campaigns",
          lambda r: _worst_campaign(r, "leaked_exchanges_share", max)),
)


def evaluate(results: dict[str, Any], baselines: frozenset[str]) -> list[dict[str, Any]]:
    """One row per floor, scenario and detector, plus ``beats_baselines`` for non-baselines:
    throttle+ recall above, and worst-campaign leakage below, every baseline on the scenario."""
    rows = []
    scale_ok = results["run"]["scale"] >= MIN_SCALE
    for scenario, outcome in results["scenarios"].items():
        has_campaign = bool(outcome["campaigns"])
        for detector, result in outcome["detectors"].items():
            for floor in FLOORS:
                if not _applies(floor, scenario, has_campaign):
                    continue
                value = floor.value(result)
                passed = None if value is None else (value <= floor.target if floor.at_most else value >= floor.target)
                if value == math.inf:
                    value = None  # JSON has no infinity; "never" is what the report shows
                rows.append({"scenario": scenario, "detector": detector, "floor": floor.name,
                             "meaning": floor.meaning, "target": floor.target,
                             "comparison": "<=" if floor.at_most else ">=", "value": value,
                             "passed": passed, "scale_ok": scale_ok})
            others = [b for b in baselines if b in outcome["detectors"]]
            if detector not in baselines and others and has_campaign:
                mine = _throttle(result, "recall") or 0.0, _worst_campaign(result, "leaked_exchanges_share", max)
                # without a replay there is no leakage to compare: not measured, not failed
                beaten = None if mine[1] is None else all(
                    mine[0] > (_throttle(outcome["detectors"][b], "recall") or 0.0)
                    and mine[1] < (_worst_campaign(outcome["detectors"][b], "leaked_exchanges_share", max) or 1.0)
                    for b in others)
                rows.append({"scenario": scenario, "detector": detector, "floor": "beats_baselines",
                             "meaning": f"higher recall and lower leakage than {', '.join(sorted(others))}",
                             "target": None, "comparison": None, "value": None, "passed": beaten,
                             "scale_ok": scale_ok})
    return rows


def _applies(floor: Floor, scenario: str, has_campaign: bool) -> bool:
    if floor.scenarios == "all":
        return True
    if floor.scenarios == "with_campaigns":
        return has_campaign
    return scenario in floor.scenarios
