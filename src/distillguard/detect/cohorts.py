"""Cohorts: accounts that share nothing, each extreme the same way, arriving together.

A campaign built to look like ordinary users shares no card, address or template between its
accounts, so no block test sees it. What it cannot hide is that it is one operation: its accounts
are extreme on the same behaviour (they harvest: datacenter exits, single-turn prompts, long
answers) and they arrive together (created, or first seen, in the same window). Under the null
that an entity's extremeness is independent of when it arrived, the number of extreme entities in
a window of ``n`` entities is Binomial(n, pi), with ``pi`` the population's share of extreme
entities: a scan statistic (Kulldorff 1997) over windows of several widths and offsets, corrected
for every window, feature and level looked at (Bonferroni).

Extremeness is measured against the population, never against a fixed threshold: an entity's
tail probability ``u`` is the share of entities at least as extreme (ties counted against it), and
the levels are shares (``u <= 1%``, ``u <= 5%``). Declared organisations are one entity (a team is
one customer), so a company that signs up twenty accounts at once is one arrival, not twenty.

What a validated window accepts as false positives is computed, not assumed: ``n * pi`` of its
extreme entities are expected by chance, and the verdicts hold that number against the policy's
error budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distillguard.detect import nulls


@dataclass(frozen=True)
class Cohort:
    feature: str
    direction: str  # "above" or "below": which tail is extreme
    level: float  # the tail share defining an extreme entity
    attribute: str  # created_at or first_seen
    width_hours: float
    start: float  # window start, epoch seconds
    entities: int  # n: entities arriving in the window
    extreme: int  # X: extreme entities among them
    rate: float  # pi: the population's share of extreme entities
    p_value: float
    p_corrected: float
    members: tuple[int, ...]  # entity indices of the extreme entities in the window
    typical: float = 0.0  # the median number of entities arriving in a window of this width and attribute

    @property
    def expected(self) -> float:
        """Extreme entities the window would hold by chance were it like the population."""
        return self.entities * self.rate

    @property
    def chance_members(self) -> float:
        """Organic extremes expected among the members: the organic entities of the window (at least
        what its non-extreme ones imply, and at least a typical window's arrivals, since a window
        chosen for its extremes may show none of its organic ones as non-extreme) times ``rate``."""
        organic = max((self.entities - self.extreme) / max(1.0 - self.rate, 1e-12), self.typical)
        return self.rate * min(organic, float(self.entities))

    def reason(self) -> str:
        sign = ">=" if self.direction == "above" else "<="
        return (f"cohort: {self.extreme} of {self.entities} entities {self.attribute.replace('_', ' ')} in one "
                f"{self.width_hours:g}-hour window are in the population's {self.level:.0%} tail of {self.feature} "
                f"({sign}), {self.expected:.3g} expected by chance, p={self.p_value:.3g}, corrected for looks "
                f"p={self.p_corrected:.3g}")


def tail_shares(values: np.ndarray, direction: str) -> np.ndarray:
    """Each value's empirical tail probability: the share of values at least as extreme (NaN -> 1)."""
    valid = ~np.isnan(values)
    out = np.ones(values.shape)
    v = values[valid] if direction == "above" else -values[valid]
    if v.size == 0:
        return out
    order = np.sort(v)
    # entities with value >= v: n - (number strictly below v)
    out[valid] = (v.size - np.searchsorted(order, v, side="left")) / v.size
    return out


def window_tests(features: dict[str, tuple[np.ndarray, str]], attributes: dict[str, np.ndarray],
                 levels: tuple[float, ...], widths_hours: tuple[float, ...], min_extreme: int = 3) -> list[Cohort]:
    """Every (feature, level, attribute, width, offset, window) tested; returns the windows with at
    least ``min_extreme`` extreme entities, each with its p-value corrected for all the looks."""
    raw: list[tuple] = []
    looks = 0
    for feature, (values, direction) in sorted(features.items()):
        shares = tail_shares(values, direction)
        for level in levels:
            extreme = shares <= level
            judged = ~np.isnan(values)
            rate = extreme[judged].mean() if judged.any() else 0.0
            if rate <= 0.0:
                continue
            for attribute, seconds in sorted(attributes.items()):
                ok = judged & ~np.isnan(seconds)
                for width in widths_hours:
                    span = width * 3600.0
                    for offset in (0.0, 0.5):
                        bins = np.floor(seconds[ok] / span - offset).astype(np.int64)
                        uniq, inverse, n = np.unique(bins, return_inverse=True, return_counts=True)
                        x = np.bincount(inverse, weights=extreme[ok].astype(float), minlength=uniq.size)
                        looks += int(uniq.size)
                        typical = float(np.median(n)) if n.size else 0.0
                        hit = np.flatnonzero(x >= min_extreme)
                        if hit.size == 0:
                            continue
                        p = nulls.binomial_sf(x[hit], n[hit], rate)
                        index = np.flatnonzero(ok)
                        for h, ph in zip(hit, p):
                            members = index[(inverse == h) & extreme[ok]]
                            raw.append((feature, direction, level, attribute, width,
                                        (uniq[h] + offset) * span, int(n[h]), int(x[h]), float(rate), float(ph),
                                        tuple(int(m) for m in members), typical))
    return sorted((Cohort(f, d, lv, a, w, s, n, x, r, p, float(nulls.bonferroni(p, looks)), m, t)
                   for f, d, lv, a, w, s, n, x, r, p, m, t in raw), key=lambda c: (c.p_value, c.feature, c.start))
