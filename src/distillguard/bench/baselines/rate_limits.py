"""Baseline 1: per-account rate limits, the defence an LLM gateway offers out of the box.

Gateways such as LiteLLM, Kong or an API-management product let an operator cap each account's
requests per minute, requests per day and tokens per day. That is what most providers would try
first against distillation, so the benchmark measures it honestly: the caps are learned from
organic reference traffic as the lowest values that (almost) no real customer exceeds, so the
limiter respects the same false-positive ceiling as any other detector, and an account that
goes over a cap is throttled with a reason that names the cap, the account's value and the cap.

Windows are calendar windows in UTC (a minute, a day), as in LiteLLM's rpm and budget windows.
A distillation campaign that spreads its volume over many accounts stays under every cap that
spares heavy organic users; the benchmark shows by how much.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np
import pyarrow as pa

from distillguard.bench.baselines.history import US_PER, cutoffs, running_aggregates
from distillguard.bench.baselines.parameters import check_parameters
from distillguard.bench.baselines.verdict_table import verdict_table
from distillguard.errors import UserError
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY

#: cap -> what it counts; an account's value is its peak over all windows before as_of
CAPS: dict[str, str] = {
    "requests_per_minute": "most requests in one calendar minute (UTC)",
    "requests_per_day": "most requests in one calendar day (UTC)",
    "output_tokens_per_day": "most output tokens in one calendar day (UTC)",
}

# Requests are counted per window and bin, then accumulated within each window over bins: the
# count of a window before as_of is exact even when as_of cuts the window, and a window without
# requests in a bin cannot raise the peak there.
_EVENTS = f"""
    WITH minutes AS (
      SELECT account_id, as_of, us // {US_PER["minute"]} AS minute, count(*) AS n,
        sum(coalesce(output_tokens, 0)) AS tokens
      FROM scoped GROUP BY account_id, as_of, us // {US_PER["minute"]}),
    days AS (
      SELECT account_id, as_of, minute // 1440 AS day, sum(n) AS n, sum(tokens) AS tokens
      FROM minutes GROUP BY account_id, as_of, minute // 1440),
    per_minute AS (
      SELECT account_id, as_of, max(running) AS requests_per_minute FROM (
        SELECT account_id, as_of, sum(n) OVER (PARTITION BY account_id, minute ORDER BY as_of) AS running
        FROM minutes) GROUP BY account_id, as_of),
    per_day AS (
      SELECT account_id, as_of, max(running_n) AS requests_per_day, max(running_tokens) AS output_tokens_per_day
      FROM (SELECT account_id, as_of,
              sum(n) OVER (PARTITION BY account_id, day ORDER BY as_of) AS running_n,
              sum(tokens) OVER (PARTITION BY account_id, day ORDER BY as_of) AS running_tokens
            FROM days) GROUP BY account_id, as_of)
    SELECT account_id, as_of, requests_per_minute::DOUBLE AS requests_per_minute,
      requests_per_day::DOUBLE AS requests_per_day, output_tokens_per_day::DOUBLE AS output_tokens_per_day
    FROM per_minute JOIN per_day USING (account_id, as_of)
"""

#: parameter -> (lowest, highest) allowed, checked in one place when fitting
PARAMETERS: dict[str, tuple[float, float]] = {
    "throttle_fpr": (0.0, 1.0),
    "monitor_fpr": (0.0, 1.0),
    "headroom": (1.0, float("inf")),
}


class RateLimits:
    """Per-account caps on requests per minute, requests per day and output tokens per day.

    Args:
        throttle_fpr: share of reference organic accounts allowed over a cap, split evenly over
            the three caps (each cap is the organic ``1 - throttle_fpr / 3`` quantile, which on
            a reference of fewer than ``3 / throttle_fpr`` accounts is simply the highest value).
        monitor_fpr: the same for the alert levels that only ``monitor`` an account.
        headroom: multiplies every cap (1.0 = exactly at the organic quantile).

    ``score`` is the largest share of a cap the account has used, clipped to 1 (1 = at or over).
    Fitted state: ``caps_`` and ``alert_levels_`` (cap -> value).
    """

    name = "rate_limits"

    def __init__(self, throttle_fpr: float = 1e-4, monitor_fpr: float = 1e-2, headroom: float = 1.0) -> None:
        self.throttle_fpr = throttle_fpr
        self.monitor_fpr = monitor_fpr
        self.headroom = headroom

    def fit(self, reference: Store) -> "RateLimits":
        check_parameters(vars(self), PARAMETERS)
        peaks = self._peaks(reference, cutoffs(None))
        if peaks.num_rows == 0:
            raise UserError("the reference store has no exchanges to learn rate limits from")
        self.caps_ = {cap: self.headroom * _quantile(peaks[cap], 1 - self.throttle_fpr / len(CAPS))
                      for cap in CAPS}
        self.alert_levels_ = {cap: min(self.caps_[cap], _quantile(peaks[cap], 1 - self.monitor_fpr / len(CAPS)))
                              for cap in CAPS}
        return self

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table:
        peaks = self._peaks(store, cutoffs(as_of))
        return self._judge(peaks, as_of)

    def replay(self, store: Store, as_ofs: Sequence[datetime]) -> pa.Table:
        """Verdicts at every as-of time, as ``detect`` would give them (see bench.replay)."""
        peaks = self._peaks(store, as_ofs)
        return self._judge(peaks, peaks["as_of"].combine_chunks())

    def _peaks(self, store: Store, as_ofs: Sequence[datetime]) -> pa.Table:
        return running_aggregates(store.con, _EVENTS, {cap: "max" for cap in CAPS}, as_ofs)

    def _judge(self, peaks: pa.Table, as_of) -> pa.Table:
        values = (np.column_stack([peaks[cap].to_numpy() for cap in CAPS]) if peaks.num_rows
                  else np.zeros((0, len(CAPS))))
        caps = np.array([self.caps_[cap] for cap in CAPS])
        alerts = np.array([self.alert_levels_[cap] for cap in CAPS])
        over_cap, over_alert = values > caps, values > alerts
        severity = np.where(over_cap.any(axis=1), SEVERITY["throttle"],
                            np.where(over_alert.any(axis=1), SEVERITY["monitor"], SEVERITY["allow"]))
        score = (values / np.maximum(caps, 1.0)).max(axis=1, initial=0.0)
        reasons: list[list[str]] = [[] for _ in range(len(values))]
        for i in np.flatnonzero(severity):
            for j, cap in enumerate(CAPS):
                if over_cap[i, j]:
                    reasons[i].append(f"{cap} {values[i, j]:,.0f} > cap {caps[j]:,.0f}")
                elif over_alert[i, j]:
                    reasons[i].append(f"{cap} {values[i, j]:,.0f} > alert level {alerts[j]:,.0f}")
        return verdict_table(peaks["account_id"], severity, score, reasons, as_of)


def _quantile(column: pa.ChunkedArray, q: float) -> float:
    """A value some reference account actually reached, so nobody below it is flagged."""
    return float(np.quantile(column.to_numpy(), q, method="higher"))
