"""Daily and weekly rhythm: when, in UTC, a session starts.

A profile is the relative activity in each local hour of the day; the weekend factor scales
Saturdays and Sundays. Session starts are drawn from that intensity inside each account's own
active window, by inverting the cumulative intensity over the hours of the period.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

#: relative activity per local hour, 00:00-01:00 first
PROFILES: dict[str, tuple[float, ...]] = {
    "office": (0.6, 0.35, 0.2, 0.15, 0.15, 0.2, 0.5, 1.4, 3.2, 5.0, 5.6, 5.4, 4.2, 4.8, 5.4, 5.2,
               4.6, 3.6, 2.4, 2.0, 2.1, 2.0, 1.6, 1.0),
    "evening": (1.6, 0.8, 0.4, 0.2, 0.15, 0.2, 0.4, 0.9, 1.3, 1.5, 1.6, 1.8, 2.2, 2.0, 1.8, 1.9,
                2.2, 2.7, 3.3, 4.2, 4.8, 4.9, 4.2, 2.8),
    "student": (2.6, 1.8, 1.0, 0.5, 0.25, 0.2, 0.3, 0.6, 1.4, 2.6, 3.4, 3.6, 3.0, 3.4, 3.8, 3.9,
                3.6, 3.0, 2.8, 3.2, 3.8, 4.0, 3.8, 3.2),
    "flat": (1.0,) * 24,
    "night_owl": (4.0, 4.2, 3.6, 2.6, 1.5, 0.8, 0.4, 0.3, 0.4, 0.6, 0.9, 1.2, 1.5, 1.6, 1.7, 1.8,
                  1.9, 2.0, 2.2, 2.5, 2.9, 3.3, 3.7, 3.9),
    "nightly_batch": (2.0, 6.0, 8.0, 6.0, 2.5, 0.8, 0.5, 0.5, 0.8, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0,
                      1.0, 0.9, 0.8, 0.6, 0.5, 0.5, 0.5, 0.6, 1.0),
    "global_users": (0.8, 0.7, 0.65, 0.6, 0.6, 0.65, 0.75, 0.9, 1.05, 1.2, 1.3, 1.35, 1.35, 1.35,
                     1.35, 1.3, 1.25, 1.2, 1.15, 1.1, 1.05, 1.0, 0.95, 0.9),
}


@lru_cache(maxsize=512)
def _cumulative(profile: str, weekend_factor: float, offset_minutes: int,
                first_hour_us: int, hours: int) -> np.ndarray:
    """Normalised cumulative intensity at each hour boundary of the period (length hours+1)."""
    utc_hours = first_hour_us // HOUR_US + np.arange(hours, dtype=np.int64)
    local_minutes = utc_hours * 60 + offset_minutes
    local_hour = (local_minutes // 60) % 24
    # 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0)
    local_weekday = ((local_minutes // (24 * 60)) + 3) % 7
    weight = np.asarray(PROFILES[profile])[local_hour]
    weight = np.where(local_weekday >= 5, weight * weekend_factor, weight)
    cumulative = np.concatenate([[0.0], np.cumsum(weight)])
    total = cumulative[-1]
    return cumulative / total if total > 0 else np.linspace(0.0, 1.0, hours + 1)


class Calendar:
    """Draws session start times for a period with hourly resolution."""

    def __init__(self, start_us: int, end_us: int) -> None:
        self.first_hour_us = (start_us // HOUR_US) * HOUR_US
        self.hours = int(-(-(end_us - self.first_hour_us) // HOUR_US))

    def sample(self, profile: str, weekend_factor: float, offset_minutes: np.ndarray,
               lo_us: np.ndarray, hi_us: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One start per row in [lo, hi), following the profile in the row's local time."""
        out = np.empty(len(u), dtype=np.int64)
        for offset in np.unique(offset_minutes):
            rows = np.flatnonzero(offset_minutes == offset)
            cum = _cumulative(profile, float(weekend_factor), int(offset), self.first_hour_us, self.hours)
            out[rows] = self._invert(cum, lo_us[rows], hi_us[rows], u[rows])
        return out

    def _invert(self, cum: np.ndarray, lo_us: np.ndarray, hi_us: np.ndarray, u: np.ndarray) -> np.ndarray:
        def at(t_us: np.ndarray) -> np.ndarray:
            x = np.clip((t_us - self.first_hour_us) / HOUR_US, 0, self.hours)
            i = np.minimum(x.astype(np.int64), self.hours - 1)
            return cum[i] + (x - i) * (cum[i + 1] - cum[i])

        f_lo, f_hi = at(lo_us), at(hi_us)
        target = f_lo + u * (f_hi - f_lo)
        i = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, self.hours - 1)
        width = cum[i + 1] - cum[i]
        frac = np.where(width > 0, (target - cum[i]) / np.where(width > 0, width, 1.0), 0.5)
        t = self.first_hour_us + ((i + frac) * HOUR_US).astype(np.int64)
        flat = lo_us + (u * (hi_us - lo_us)).astype(np.int64)
        t = np.where(f_hi - f_lo > 1e-12, t, flat)
        return np.clip(t, lo_us, np.maximum(hi_us - 1, lo_us))
