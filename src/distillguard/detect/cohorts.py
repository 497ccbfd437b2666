"""Cohorts: accounts that share nothing, each extreme the same way, arriving together.

A campaign built to look like ordinary users shares no card, address or template between its
accounts, so no block test sees it. What it cannot hide is that it is one operation: its accounts
are extreme on the same behaviour (they harvest: many addresses, single-turn prompts, long
answers, a steady volume) and they arrive together (created, or first seen, in the same window).

Extremeness is measured against the entities that arrived *before* the window, never against a
fixed threshold nor against a population that holds the campaign itself: a campaign that is 7%
of the accounts fills the top 7% of every feature it is extreme on, so shares of the whole
population would call its accounts merely "in the top 10%" and the test would drown in the
organic accounts that share that tail. The reference of a window is every entity that arrived
before it, less the entities that an accepted cohort finding of the same scan already holds (the
null is refitted without validated findings, detect.verdicts). An entity in the window is extreme at
rank ``k`` when its value exceeds the ``k``-th largest value of the ``r`` reference entities
(ties count against it): its conformal p-value (Vovk et al. 2005; Bates et al. 2023) is then
at most ``k / (r + 1)``.

The null: the window's entities are exchangeable with the reference (when an entity arrived says
nothing about how it behaves). Under it, the number ``X`` of the window's ``n`` entities above
the reference's ``k``-th largest value is exactly Beta-binomial(n, k, r + 1 - k): the
threshold is random, so the members' indicators are not independent and the plain binomial
would be anti-conservative far in the tail. First requests thin out after the data begins (the
accounts active before it are all first seen in its first days) while occasional users keep
their pace, so a window must also hold more extremes than the reference's organic ones arrived
at over the later half of its span (the rate null, :func:`rate_sf`); its p-value is the larger
of the two. Every (feature, rank, attribute, width, offset,
window) looked at is counted and the p-value is corrected for all of them (Bonferroni, valid
under any dependence). The ranks follow from the policy's tail levels (``k = level x (r + 1)``,
at least 1): they are shares of the reference, not values.

Declared organisations are one entity (a team is one customer), so a company that signs up
twenty accounts at once is one arrival, not twenty. Reference snapshots are taken at a fixed
number of points in arrival order (a window's reference is the latest snapshot before it: a
smaller, still exchangeable reference), so the test costs a fixed number of sorts per feature.

What a validated window accepts as false positives is computed, not assumed: ``n x k / (r + 1)``
of its extreme entities are expected by chance, and the verdicts hold that number against the
policy's error budget.
"""

from __future__ import annotations

import copy
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
from scipy import sparse, stats

from distillguard.detect import nulls
from distillguard.detect.arrays import distinct

#: reference snapshots per (feature, attribute): a window's reference is the latest one before it
SNAPSHOTS = 64
#: arrival snapshots of a group null (GroupNull): a group is tested against the groups as they stood
#: before its first member arrived
GROUP_SNAPSHOTS = 16
#: threads window_tests spreads its frames (feature x attribute x view) over
WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@dataclass(frozen=True)
class Cohort:
    feature: str
    direction: str  # "above" or "below": which tail is extreme
    level: float  # k / (r + 1): the conformal level defining an extreme entity
    attribute: str  # created_at or first_seen
    width_hours: float
    start: float  # window start, epoch seconds
    entities: int  # n: entities arriving in the window
    extreme: int  # X: extreme entities among them
    rate: float  # k / (r + 1): the chance an entity exchangeable with the reference is extreme
    p_value: float
    p_corrected: float
    members: tuple[int, ...]  # entity indices of the extreme entities in the window
    typical: float = 0.0  # the median number of entities arriving in a window of this width and attribute
    rank: int = 1  # k: an extreme entity exceeds all but k - 1 reference entities
    reference: int = 0  # r: entities that arrived before the window (less those already found)
    profile_level: float = 1.0  # members kept: as extreme as the cohort on its other features at this level
    profiled_out: int = 0  # extreme entities of the window left out by that check
    #: the share of the reference's extreme entities that would pass that check: a chance member
    #: survives it with about this probability (1: no check)
    survival: float = 1.0
    #: the observation view the window was tested in (seconds; 0: every judged entity): only the
    #: entities first seen at least this long before the scan and judged within this long of it
    horizon: float = 0.0
    looks: int = 1  # every window looked at in the scan: what p_corrected is corrected for
    #: seconds of the later half of the reference's span (the midpoint of its first and last
    #: arrivals to its last): with ``paced`` extremes in it, the pace at which extreme entities
    #: arrived before the window (0: no rate null, the rate p is 1)
    reference_span: float = 0.0
    #: the reference's extreme entities (the threshold's own counted) in that half that no
    #: accepted finding holds: the pace of the organic ones (a held campaign's earlier arrivals are not)
    paced: int = 0

    def residual(self, held: np.ndarray) -> float:
        """The window's corrected p-value without its extreme entities that ``held`` marks (those
        another accepted result holds): its count of extremes and its arrivals less them, against
        the same reference. A window made significant by a campaign that other evidence already
        holds is no evidence about the rest of its members."""
        gone = int(np.count_nonzero(held[self.member_ids])) if self.members else 0
        if gone == 0:
            return self.p_corrected
        if self.extreme - gone <= 0:
            return 1.0
        return _residual_p(self.extreme - gone, self.entities - gone, self.rank, self.reference, self.looks,
                           self.width_hours * 3600.0, self.reference_span, self.paced)

    @functools.cached_property
    def member_ids(self) -> np.ndarray:
        """``members`` as an array, made once: a window's residual is asked each time the budget
        reaches it."""
        return np.asarray(self.members, dtype=np.int64)

    @property
    def expected(self) -> float:
        """Extreme entities the window would hold by chance were it like the reference."""
        return self.entities * self.rate

    @property
    def chance_members(self) -> float:
        """Organic extremes expected among the members: the organic entities of the window (at least
        what its non-extreme ones imply, and at least a typical window's arrivals, since a window
        chosen for its extremes may show none of its organic ones as non-extreme) times ``rate``,
        times the share of such extremes that the member checks keep (``survival``)."""
        organic = max((self.entities - self.extreme) / max(1.0 - self.rate, 1e-12), self.typical)
        return self.rate * min(organic, float(self.entities)) * self.survival

    @property
    def expected_at_rate(self) -> float:
        """Extreme entities the window would hold by chance were they arriving at the reference's rate."""
        return rate_expected(self.paced, self.width_hours * 3600.0, self.reference_span)

    def reason(self) -> str:
        sign = "above" if self.direction == "above" else "below"
        profile = "" if self.profile_level >= 1.0 else (
            f"; {len(self.members)} of the {self.extreme} are members: each as extreme as the cohort's median "
            f"member on its other features, closer to it than all but {self.profile_level:.0%} of the other "
            f"entities ({self.profiled_out} left out), as {self.survival:.3g} of the reference's extreme entities "
            f"would be")
        return (f"cohort: {self.extreme} of {self.entities} entities {self.attribute.replace('_', ' ')} in one "
                f"{self.width_hours:g}-hour window are {sign} all but {self.rank - 1} of the {self.reference} "
                f"entities that arrived before it{self._view()} on {self.feature}, {self.expected:.3g} expected by chance "
                f"(beta-binomial, exchangeable with the earlier arrivals), and {self.expected_at_rate:.3g} at the pace "
                f"of the reference's {self.paced} as extreme that nothing holds in the later half of its span, the "
                f"last {self.reference_span / 3600:.4g} hours (binomial on the two counts, the pace never rising), "
                f"the larger p={self.p_value:.3g}, "
                f"corrected for "
                f"looks p={self.p_corrected:.3g}{profile}")


    def _view(self) -> str:
        if self.horizon <= 0:
            return ""
        return (f" (both counted among the entities first seen at least {self.horizon / 3600:g} hours before the "
                f"scan that reached the judging minimum of exchanges within {self.horizon / 3600:g} hours)")


def _instant(seconds: float) -> str:
    """An epoch instant as a reason shows it: UTC, to the minute."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@functools.lru_cache(maxsize=1 << 16)
def _residual_p(extreme: int, entities: int, rank: int, reference: int, looks: int, span: float,
                reference_span: float, paced: int) -> float:
    """:meth:`Cohort.residual`'s corrected p-value of a count: the budget's greedy asks for the same
    window's residual each time it comes to the top, mostly with nothing new taken."""
    p = nulls.beta_binomial_sf_one(extreme, entities, float(rank), reference + 1.0 - rank)
    p = max(p, float(rate_sf(np.asarray([extreme]), np.asarray([paced]), span, np.asarray([reference_span]))[0]))
    return float(nulls.bonferroni(p, looks))


def rate_expected(paced: float, span: float, reference_span: float) -> float:
    """Extremes a window of ``span`` seconds holds at the pace of ``paced`` in ``reference_span``."""
    return float("inf") if reference_span <= 0 else paced * span / reference_span


def rate_sf(observed: np.ndarray, paced: np.ndarray, span: float, reference_span: np.ndarray) -> np.ndarray:
    """P(X >= observed) under the rate null: extreme entities arrive at a pace that never rises,
    ``paced`` of them in ``reference_span`` seconds before the window and ``X`` in the window's
    ``span``. The two counts are Poisson with means at most in the ratio of their spans, so given
    their total the window's is at most Binomial(total, span / (span + reference_span)) in tail:
    the conditional test of two Poisson rates (Przyborowski and Wilenski 1940). A reference with
    no span says nothing of a pace: p = 1."""
    observed = np.asarray(observed, dtype=float)
    tau = np.where(reference_span > 0, span / (span + np.maximum(reference_span, 1e-300)), 1.0)
    return np.where(tau >= 1.0, 1.0, stats.binom.sf(observed - 1, observed + np.asarray(paced, dtype=float), tau))


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


def beta_binomial_sf(observed: np.ndarray, trials: np.ndarray, rank: np.ndarray, reference: np.ndarray
                     ) -> np.ndarray:
    """P(X >= observed) for the number X of ``trials`` exchangeable draws above the ``rank``-th
    largest of ``reference`` values: Beta-binomial(trials, rank, reference + 1 - rank)."""
    rank = np.asarray(rank, dtype=float)
    return nulls.beta_binomial_sf(observed, trials, rank, np.asarray(reference, dtype=float) + 1.0 - rank)


def _references(arrival: np.ndarray, oriented: np.ndarray, excluded: np.ndarray, levels: tuple[float, ...],
                count: int, held: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference snapshots of one (feature, attribute), entities in arrival order.

    Returns ``points`` (prefix lengths, never splitting entities that arrived at the same
    instant), ``sizes`` (r: usable entities in each prefix, ``excluded`` left out), ``ranks``
    (snapshot x level: k = max(1, floor(level x (r + 1))), 0 where an earlier level already gave
    that rank or the prefix is empty), ``thresholds`` (snapshot x level: the prefix's k-th
    largest value; an entity above it is extreme at that rank), ``spans`` (seconds of the later
    half of the prefix's span: the midpoint of its first and last arrivals to its last) and
    ``paced`` (snapshot x level: the entities of that half at or above the threshold that neither
    ``excluded`` nor ``held`` marks)."""
    size = oriented.size
    points = np.linspace(0, size, min(count, size) + 1).astype(np.int64)
    points = distinct(np.searchsorted(arrival, np.append(arrival, np.inf)[points], side="left"))
    usable = ~excluded
    sizes = np.concatenate([[0], np.cumsum(usable)])[points]
    level = np.asarray(levels, dtype=float)
    ranks = np.maximum(1, np.floor(level[None, :] * (sizes[:, None] + 1)).astype(np.int64))
    for j in range(1, level.size):
        ranks[:, j] = np.where((ranks[:, :j] == ranks[:, j:j + 1]).any(axis=1), 0, ranks[:, j])
    ranks[sizes == 0] = 0
    # values from the largest down, ties by arrival; per snapshot the running count of its usable
    # entities along that order finds each rank's value
    desc = np.lexsort((np.arange(size), -oriented))
    use = usable[desc]
    free = use & ~held[desc] if held is not None else use
    when = arrival[desc]
    thresholds = np.full(ranks.shape, np.inf)
    paced = np.zeros(ranks.shape, dtype=np.int64)
    spans = np.zeros(points.size)
    for s, prefix in enumerate(points):
        if sizes[s] == 0:
            continue
        inside = desc < prefix
        seen = np.cumsum(use & inside)
        valid = ranks[s] > 0
        at = np.searchsorted(seen, ranks[s, valid], side="left")
        thresholds[s, valid] = oriented[desc[at]]
        # the pace over the later half of the prefix's span
        middle = (arrival[0] + arrival[prefix - 1]) / 2.0
        spans[s] = arrival[prefix - 1] - middle
        paced[s, valid] = np.cumsum(free & inside & (when >= middle))[at]
    return points, sizes, ranks, thresholds, spans, paced


@dataclass(frozen=True)
class Observation:
    """When each entity was first seen and judged, and the scan's clock (epoch seconds).

    An entity's features are judged once it has sent the judging minimum of exchanges, so among
    the entities that arrived shortly before a scan only the fast ones are judged: a window near
    the scan holds the population's heavy users and nobody else, and testing it against earlier
    arrivals (judged however slowly) finds heaviness, not a cohort. In one view (a horizon ``H``)
    every entity, whenever it arrived, is judged alike: first seen at least ``H`` before the scan
    and judged within ``H`` of its first request, so the null's exchangeability holds for what
    the judging selects."""

    first_seen: np.ndarray
    judged_at: np.ndarray  # NaN: never judged
    as_of: float
    #: the views' horizons, hours, ascending (policy.Statistics.cohort_horizons_hours)
    horizons_hours: tuple[float, ...] = (3.0, 6.0, 12.0, 24.0, 48.0, 96.0, 192.0, 384.0, 768.0, 1536.0, 3072.0)
    #: the arrival attribute that ``first_seen`` is (window_tests' attributes)
    attribute: str = "first_seen"

    def views(self) -> list[tuple[float, float, np.ndarray]]:
        """(horizon, the next horizon (inf for the last), per entity: in the view), seconds, for
        each horizon whose view holds an entity. A window of first requests is tested in one
        view, the largest horizon at most the time from the window's end to the scan: all its
        entities are then old enough for the view, and choosing the view looks at nothing but the
        clock. A window of another attribute (sign-up) is tested in every view: accounts signed
        up long before their first request are old enough for no view its end would pick."""
        out = []
        bounds = [h * 3600.0 for h in sorted(self.horizons_hours)] + [np.inf]
        for h, upper in zip(bounds, bounds[1:]):
            inside = self.view(h)
            if inside.any():
                out.append((h, upper, inside))
        return out

    def view(self, horizon: float) -> np.ndarray:
        """Per entity: in the view of ``horizon`` seconds (every entity for 0)."""
        if horizon <= 0:
            return np.ones(self.first_seen.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return (self.first_seen <= self.as_of - horizon) & (self.judged_at - self.first_seen <= horizon)


def window_tests(features: dict[str, tuple[np.ndarray, str]], attributes: dict[str, np.ndarray],
                 levels: tuple[float, ...], widths_hours: tuple[float, ...], min_extreme: int = 3,
                 excluded: frozenset[int] = frozenset(), alpha: float = 1.0,
                 observation: Observation | None = None, held: frozenset[int] = frozenset()) -> list[Cohort]:
    """Every (feature, rank, attribute, width, offset, window) tested against the entities that
    arrived before the window (less ``excluded``; the rate null's pace counts neither them nor
    those ``held`` by accepted findings); returns the windows with at least
    ``min_extreme`` extreme entities whose p-value, corrected for all the looks, is at most
    ``alpha``. With ``observation``, each window is tested in the one view its end's distance
    from the scan picks (:meth:`Observation.views`), on the entities that view holds; a window
    ending less than the shortest horizon before the scan is not tested yet."""
    gone_ids = np.fromiter(excluded, dtype=np.int64, count=len(excluded))
    held_ids = np.fromiter(held, dtype=np.int64, count=len(held))
    views = observation.views() if observation is not None else [(0.0, np.inf, None)]
    frames = [(feature, attribute, view) for feature in sorted(features) for attribute in sorted(attributes)
              for view in views]

    def run(frame: tuple[str, str, tuple[float, float, np.ndarray | None]]) -> _FrameWindows | None:
        feature, attribute, (horizon, upper, inside) = frame
        values, direction = features[feature]
        # a window of first requests is tested in the one view its end's distance from the scan
        # picks; windows of another attribute (sign-up) in every view
        ages = (observation.as_of, horizon, upper) if inside is not None and attribute == observation.attribute \
            else None
        return _frame_windows(values, direction, attributes[attribute], inside, ages, gone_ids, held_ids, levels,
                              widths_hours, min_extreme, alpha)

    # the frames are independent and numpy releases the GIL in their array work
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(frames) or 1)) as pool:
        done = list(pool.map(run, frames))
    looks = sum(d.looks for d in done if d is not None)
    out = []
    for (f, a, (h, _, _)), d in zip(frames, done):
        if d is None:
            continue
        direction = features[f][1]
        for width, offset, span, typical, uniq, first, n, x, k, r, snap, j, p, ref_span, pace in d.found:
            for i in range(p.size):
                corrected = float(nulls.bonferroni(float(p[i]), looks))
                if corrected > alpha:
                    continue
                inside = slice(int(first[i]), int(first[i] + n[i]))
                above = d.oriented[inside] > d.thresholds[snap[i], j[i]]
                members = tuple(np.sort(d.order[inside][above]).tolist())
                level = int(k[i]) / (int(r[i]) + 1)
                out.append(Cohort(f, direction, level, a, width, float((uniq[i] + offset) * span), int(n[i]),
                                  int(x[i]), level, float(p[i]), corrected, members, typical, int(k[i]), int(r[i]),
                                  horizon=h, looks=looks, reference_span=float(ref_span[i]), paced=int(pace[i])))
    return sorted(out, key=lambda c: (c.p_value, c.feature, c.attribute, c.width_hours, c.start, c.rank, c.horizon))


@dataclass(frozen=True)
class _FrameWindows:
    """One frame's windows at or below alpha before correction, with what builds their members."""

    looks: int
    order: np.ndarray  # the frame's entities in arrival order
    oriented: np.ndarray  # their values, larger = more extreme
    thresholds: np.ndarray  # snapshot x level
    #: per (width, offset) with windows kept: width, offset, span (seconds), typical arrivals, then
    #: per kept window its bin, first arrival, arrivals n, extremes x, rank k, reference size r,
    #: snapshot, level index, p-value, reference span and its paced extremes (arrays)
    found: list[tuple]


def _frame_windows(values: np.ndarray, direction: str, seconds: np.ndarray, inside: np.ndarray | None,
                   ages: tuple[float, float, float] | None, gone_ids: np.ndarray, held_ids: np.ndarray,
                   levels: tuple[float, ...],
                   widths_hours: tuple[float, ...], min_extreme: int, alpha: float) -> _FrameWindows | None:
    """window_tests over one (feature, attribute, view). ``ages``: (scan time, view horizon, next
    horizon) when only the windows whose end is that far from the scan are tested in this view."""
    usable = ~np.isnan(values) & ~np.isnan(seconds)
    if inside is not None:
        usable &= inside
    ok = np.flatnonzero(usable)
    if ok.size == 0:
        return None
    # arrival order, ties by entity index (entities are numbered by a name-free key)
    order = ok[np.lexsort((ok, seconds[ok]))]
    arrival = seconds[order]
    oriented = (1.0 if direction == "above" else -1.0) * values[order]
    points, sizes, ranks, thresholds, spans, paced = _references(
        arrival, oriented, np.isin(order, gone_ids), levels, SNAPSHOTS, np.isin(order, held_ids))
    distinct = (ranks > 0).sum(axis=1)
    looks = 0
    found = []
    for width in widths_hours:
        span = width * 3600.0
        for offset in (0.0, 0.5):
            bins = np.floor(arrival / span - offset).astype(np.int64)
            uniq, first, inverse, n = np.unique(bins, return_index=True, return_inverse=True, return_counts=True)
            typical = float(np.median(n))
            # the latest snapshot at or before each window's first arrival
            snap = np.searchsorted(points, first, side="right") - 1
            if ages is not None:
                as_of, horizon, upper = ages
                age = as_of - (uniq + offset + 1) * span
                tested = (age >= horizon) & (age < upper)
            else:
                tested = np.ones(uniq.size, dtype=bool)
            looks += int(distinct[snap[tested]].sum())
            # window x level: the rank tested (0: not tested) and the entities above the level's
            # threshold in the window's reference (windows are runs of consecutive arrivals, so one
            # sum per run counts them)
            k = np.where(tested[:, None], ranks[snap], 0)
            above = oriented[:, None] > thresholds[snap][inverse]
            x = np.add.reduceat(above, first, axis=0, dtype=np.int64)
            b, j = np.nonzero((k > 0) & (n[:, None] >= min_extreme) & (x >= min_extreme))
            if b.size == 0:
                continue
            # the union null: exchangeable with the earlier arrivals, or extremes arriving no faster
            # than over the later half of the reference's span; the larger p rejects both (an
            # intersection-union test)
            p = np.maximum(np.atleast_1d(beta_binomial_sf(x[b, j], n[b], k[b, j], sizes[snap[b]])),
                           rate_sf(x[b, j], paced[snap[b], j], span, spans[snap[b]]))
            # a window above alpha before correction is above it after
            keep = p <= alpha
            b, j = b[keep], j[keep]
            if b.size:
                found.append((width, offset, span, typical, uniq[b], first[b], n[b], x[b, j], k[b, j],
                              sizes[snap[b]], snap[b], j, p[keep], spans[snap[b]], paced[snap[b], j]))
    return _FrameWindows(looks, order, oriented, thresholds, found)


def profile_members(found: list[Cohort], features: dict[str, tuple[np.ndarray, str]], level: float,
                    min_members: int = 3, excluded: frozenset[int] = frozenset()) -> list[Cohort]:
    """The cohorts with their members checked against the cohort's profile on the *other* features.

    A window is chosen for how many of its entities are extreme on one feature, so an organic
    entity that happens to be extreme on it and arrives with a campaign makes that window more
    likely to be chosen: the winner's curse. The window's other features were not used to choose
    it. The cohort's profile is its extreme members' median log tail share on each other feature
    (how extreme its typical member is there); an entity's shortfall is the sum, over those
    features, of how much less extreme than the profile it is (never how much more: a stronger
    tell never counts against it). A member is kept when its shortfall is at most the ``level``
    quantile of the shortfalls of the other entities judged on the window's feature (less the
    excluded ones): a conformal p-value, so an entity exchangeable with them passes with
    probability at most ``level``. The check applies only when more members pass than
    Binomial(X, ``level``) gives (at ``level`` over the cohorts checked); otherwise the cohort keeps
    every member. The check only removes
    members: the window's p-value and its cost are those of all its extreme entities. A cohort
    left with fewer than ``min_members`` is dropped.
    """
    if level >= 1.0 or not found:
        return found
    check = ProfileCheck(features, level, excluded, checks=len(found), min_members=min_members)
    return [kept for kept in map(check, found) if kept is not None]


#: reference entities a member's closeness is ranked against at most: a sample in arrival order
#: (exchangeable with the member under the null as the whole reference is) keeps each check's cost
#: fixed however many entities the scan judges
PROFILE_REFERENCE = 4_096
#: extreme entities the survival share is estimated on at most (evenly spread over their extremeness)
SURVIVAL_SAMPLE = 4_096
#: reference snapshots a check keeps ranked, and samples of their extremes' log tail shares (a
#: ranking holds up to the loosest rank's entities, a sample up to SURVIVAL_SAMPLE rows)
CACHED_REFERENCES = 256


class ProfileCheck:
    """:func:`profile_members` one cohort at a time: the log tail shares are computed once and
    each (members, feature) is checked once, so that a scan checks only the cohorts the budget
    reaches. ``checks``: the cohorts the check is corrected for (all those validated).
    ``arrival``: per entity, the time the reference sample is spread over (with more judged
    entities than :data:`PROFILE_REFERENCE`; without it, every judged entity is the reference).
    ``attributes``: per arrival attribute, each entity's arrival (window_tests' ``attributes``):
    with them, the survival share is estimated on the window's own reference (see ``__call__``),
    in the window's observation view (``observation``, as window_tests was given)."""

    def __init__(self, features: dict[str, tuple[np.ndarray, str]], level: float,
                 excluded: frozenset[int] = frozenset(), checks: int = 1, min_members: int = 3,
                 arrival: np.ndarray | None = None, attributes: dict[str, np.ndarray] | None = None,
                 observation: Observation | None = None) -> None:
        self.features, self.level, self.checks, self.min_members = features, level, max(checks, 1), min_members
        self.observation = observation
        self.arrival = arrival
        self.attributes = attributes
        # per (feature, attribute): the usable entities (judged, arrived, not excluded) in arrival
        # order, ties by entity index, as window_tests orders them, and their oriented values
        self.arrived: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray]] = {}
        self.top: dict[tuple[tuple[str, str, float], int], np.ndarray] = {}  # reference_extremes, computed
        self.sampled: dict[tuple[str, str, float, int, int], np.ndarray] = {}  # their log tail shares
        self.names = sorted(features)
        self.column = {f: i for i, f in enumerate(self.names)}
        self.logs = np.log(np.clip(np.vstack([tail_shares(features[f][0], features[f][1]) for f in self.names]).T,
                                   1e-12, 1.0)) if self.names else np.zeros((0, 0))
        self.gone = np.zeros(self.logs.shape[0], dtype=bool)
        self.gone[list(excluded)] = True
        # per feature: the entities it judges (less the excluded), the reference sample of them and
        # the sample's log tail shares
        self.judged: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # per (members, feature): which members are close, the distance that is close and the
        # profile; None when the check says nothing
        self.close: dict[tuple[tuple[int, ...], str], tuple[np.ndarray, float, np.ndarray] | None] = {}
        self.extremes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per feature: rows, log tail share, ascending

    def _judged(self, feature: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if feature not in self.judged:
            rows = np.flatnonzero(~np.isnan(self.features[feature][0]) & ~self.gone)
            sample = rows
            if self.arrival is not None and rows.size > PROFILE_REFERENCE:
                when = np.nan_to_num(self.arrival[rows], nan=np.inf)
                order = rows[np.lexsort((rows, when))]
                sample = np.sort(order[np.linspace(0, rows.size - 1, PROFILE_REFERENCE).astype(np.int64)])
            self.judged[feature] = (rows, sample, self.logs[sample])
            # the judged entities from the most extreme on the feature down: those at tail share <=
            # rate are a prefix
            column = self.logs[rows, self.column[feature]]
            order = np.lexsort((rows, column))
            self.extremes[feature] = (rows[order], column[order])
        return self.judged[feature]

    def extreme_count(self, feature: str, rate: float) -> int:
        """Judged entities (less the excluded) with tail share at most ``rate`` on ``feature``."""
        self._judged(feature)
        return int(np.searchsorted(self.extremes[feature][1], np.log(max(rate, 1e-12)), side="right"))

    def least_survival(self, c: Cohort) -> float:
        """A lower bound on the survival share :meth:`__call__` gives ``c`` (1 without the check)."""
        if self.level >= 1.0 or len(self.names) < 2:
            return 1.0
        if self._by_reference(c):
            return 1.0 / (1.0 + c.rank)
        return 1.0 / (1.0 + self.extreme_count(c.feature, c.rate))

    def _by_reference(self, c: Cohort) -> bool:
        return self.attributes is not None and c.attribute in self.attributes and c.reference > 0

    def reference_extremes(self, c: Cohort) -> np.ndarray:
        """The ``k`` most extreme entities of ``c``'s reference (its first ``r`` usable entities in
        arrival order) on its feature, most extreme first, ties by arrival: each is above the
        ``k``-th largest of the others, so extreme at the window's rank as the reference sees it."""
        key = (c.feature, c.attribute, c.horizon)
        if key not in self.arrived:
            values, direction = self.features[c.feature]
            seconds = self.attributes[c.attribute]
            usable = ~np.isnan(values) & ~np.isnan(seconds) & ~self.gone
            if c.horizon > 0 and self.observation is not None:
                usable &= self.observation.view(c.horizon)
            ok = np.flatnonzero(usable)
            order = ok[np.lexsort((ok, seconds[ok]))]
            self.arrived[key] = (order, values[order] * (1.0 if direction == "above" else -1.0))
        order, oriented = self.arrived[key]
        r = min(c.reference, order.size)
        k = min(c.rank, r)
        if k <= 0:
            return order[:0]
        # windows share their reference snapshot, and a stricter rank's extremes are a prefix of a
        # looser one's: each snapshot is ranked once, as deep as the loosest rank asked for
        ranked = self.top.get((key, r))
        if ranked is None or ranked.size < k:
            if len(self.top) >= CACHED_REFERENCES:
                self.top.clear()
            ranked = self.top[(key, r)] = order[:r][_top(oriented[:r], k)]
        return ranked[:k]

    def _reference_sample(self, c: Cohort) -> np.ndarray:
        """The log tail shares of (a sample of) :meth:`reference_extremes`, kept per reference
        snapshot and rank, which many windows share."""
        key = (c.feature, c.attribute, c.horizon, c.reference, c.rank)
        if key not in self.sampled:
            if len(self.sampled) >= CACHED_REFERENCES:
                self.sampled.clear()
            self.sampled[key] = self.logs[_sampled(self.reference_extremes(c))]
        return self.sampled[key]

    def __call__(self, c: Cohort) -> Cohort | None:
        if self.level >= 1.0 or len(self.names) < 2:
            return replace(c, profile_level=self.level)
        _, sample, sample_logs = self._judged(c.feature)
        own = self.column[c.feature]
        if (c.members, c.feature) not in self.close:
            self.close[(c.members, c.feature)] = _close_to_profile(self.logs, sample, sample_logs, c.members, own,
                                                                   self.level, self.checks)
        checked = self.close[(c.members, c.feature)]
        if checked is None:
            return replace(c, profile_level=self.level)
        close, threshold, profile = checked
        members = np.asarray(c.members, dtype=np.int64)
        keep = tuple(int(m) for m in members[close])
        if len(keep) < self.min_members:
            return None
        # chance members are the window's organic arrivals extreme on its feature; the share of the
        # entities they are exchangeable with under the null that are as extreme there and as close
        # to the profile estimates how many of them the check keeps: (1 + close) / (1 + extreme).
        # Those entities are the window's reference, extreme at its rank: the population would
        # hold the campaign's later arrivals, which are close to its profile by construction (at
        # full scale most of the population's extremes are the campaign's). Without arrivals, the
        # judged entities extreme at the rate (tail share <= rate), the cohort's own left out.
        if self._by_reference(c):
            extreme_logs = self._reference_sample(c)
        else:
            extreme = self.extremes[c.feature][0][:self.extreme_count(c.feature, c.rate)]
            mine = np.zeros(self.logs.shape[0], dtype=bool)
            mine[members] = True
            extreme_logs = self.logs[_sampled(extreme[~mine[extreme]])]
        distance = np.maximum(0.0, extreme_logs - profile).sum(axis=1)
        survival = (1.0 + float((distance < threshold).sum())) / (1.0 + float(distance.size))
        return replace(c, members=keep, profile_level=self.level, profiled_out=len(members) - len(keep),
                       survival=min(1.0, survival))


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values``, largest first, ties by position."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= values.size:
        top = np.arange(values.size)
    else:
        kth = -np.partition(-values, k - 1)[k - 1]
        above = np.flatnonzero(values > kth)
        top = np.concatenate([above, np.flatnonzero(values == kth)[:k - above.size]])
    return top[np.lexsort((top, -values[top]))]


def _sampled(rows: np.ndarray) -> np.ndarray:
    """At most :data:`SURVIVAL_SAMPLE` of ``rows``, evenly spaced in their order."""
    if rows.size <= SURVIVAL_SAMPLE:
        return rows
    return rows[np.linspace(0, rows.size - 1, SURVIVAL_SAMPLE).astype(np.int64)]


def _close_to_profile(logs: np.ndarray, rows: np.ndarray, reference_logs: np.ndarray, members: tuple[int, ...],
                      own: int, level: float, checks: int) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Which members are within ``level`` of the cohort's profile on the features other than
    column ``own`` (profile_members), the distance below which an entity is close, and the
    profile; None when no more members are close than chance gives.

    A member's conformal p-value is ``(1 + c) / (r + 1)``, ``c`` the reference entities (``rows``,
    less the members) at most as far from the profile; it is at most ``level`` exactly when ``c``
    is at most the largest ``K`` with ``(1 + K) / (r + 1) <= level``, that is when the member is
    strictly closer than the reference's ``(K + 1)``-th closest entity."""
    ids = np.asarray(members, dtype=np.int64)
    profile = np.median(logs[ids], axis=0)
    profile[own] = np.inf  # the window's own feature chose the members: not part of the profile
    shortfall = np.maximum(0.0, logs[ids] - profile).sum(axis=1)
    at = np.searchsorted(rows, ids)
    mine = at[(at < rows.size) & (rows[np.minimum(at, rows.size - 1)] == ids)]
    reference = np.delete(np.maximum(0.0, reference_logs - profile).sum(axis=1), mine)
    r = reference.size
    k = int(np.floor(level * (r + 1))) - 1
    while (2.0 + k) / (r + 1.0) <= level:
        k += 1
    while k >= 0 and (1.0 + k) / (r + 1.0) > level:
        k -= 1
    threshold = -np.inf if k < 0 else np.inf if k >= r else float(np.partition(reference, k)[k])
    close = shortfall < threshold
    # the check means something only where the members are closer to their profile than entities
    # like the reference would be: more of them within the level than Binomial(X, level) gives, at
    # the level corrected for the cohorts checked
    if stats.binom.sf(int(close.sum()) - 1, ids.size, level) > level / checks:
        return None
    return close, threshold, profile


@dataclass(frozen=True)
class GroupBehaviour:
    """How many of a group's entities are extreme on one feature against the entities outside it."""

    feature: str
    direction: str
    level: float  # k / (r + 1)
    rank: int
    reference: int  # r: judged entities outside the group (less the excluded ones)
    entities: int  # n: judged entities of the group
    extreme: int  # X
    p_value: float  # beta-binomial tail, for this (feature, level)
    p_corrected: float  # x the (feature, level) pairs looked at
    members: tuple[int, ...] = ()  # the group's extreme entities
    #: against the population of groups (GroupNull): its fit at this feature and level, and the tail
    group: nulls.GroupRates | None = None
    group_p: float = 1.0
    group_of: str = ""  # what the population of groups is
    individual_p: float = 1.0  # the tail under the individual null (exchangeable with those outside)

    def reason(self) -> str:
        sign = "above" if self.direction == "above" else "below"
        exchangeable = (f"{self.entities * self.level:.3g} expected were they exchangeable with them "
                        f"(beta-binomial)")
        grouped = ""
        if self.group is not None:
            exchangeable += f" p={self.individual_p:.3g}"
            formed = ("" if not np.isfinite(self.group.before) else
                      f" as they stood before {_instant(self.group.before)} (members that arrived earlier)")
            grouped = (f"; against the {self.group.groups} groups of {self.group_of}{formed} ({self.group.mean:.3g} of their "
                       f"entities that far out, intra-group correlation {self.group.icc:.3g}: beta-binomial) "
                       f"p={self.group_p:.3g}; the larger")
        return (f"{self.extreme} of its {self.entities} judged entities are {sign} all but {self.rank - 1} of the "
                f"{self.reference} entities outside it on {self.feature}, {exchangeable}{grouped} "
                f"p={self.p_value:.3g}, corrected for the features and levels looked at p={self.p_corrected:.3g}")


@dataclass(frozen=True)
class Ranked:
    """One feature's usable entities (judged, not excluded) in descending order of their oriented
    value, and each entity's position in that order (-1 if not usable): sorted once per scan and
    refit, so that testing a group costs its own size only."""

    direction: str
    oriented: np.ndarray  # per entity, the value with the extreme direction up (NaN unjudged)
    descending: np.ndarray  # the usable entities' oriented values, largest first
    position: np.ndarray


def ranked(features: dict[str, tuple[np.ndarray, str]], excluded: frozenset[int] = frozenset()
           ) -> dict[str, Ranked]:
    """:class:`Ranked` of every feature, ``excluded`` entities left out of the order."""
    out = {}
    for feature, (values, direction) in sorted(features.items()):
        oriented = values if direction == "above" else -values
        usable = ~np.isnan(values)
        usable[list(excluded)] = False
        ids = np.flatnonzero(usable)
        order = ids[np.lexsort((ids, -oriented[ids]))]
        position = np.full(values.size, -1, dtype=np.int64)
        position[order] = np.arange(order.size)
        out[feature] = Ranked(direction, oriented, oriented[order], position)
    return out


def level_ranks(r: int, levels: tuple[float, ...]) -> list[int]:
    """The distinct ranks ``k`` = max(1, floor(level (r + 1))) of the levels that a reference of
    ``r`` values can give (``k`` <= ``r``), in the levels' order: an entity above the ``k``-th
    largest of ``r`` exchangeable values is that far out with chance ``k / (r + 1)``."""
    out: list[int] = []
    for level in levels:
        k = max(1, int(np.floor(level * (r + 1))))
        if k <= r and k not in out:
            out.append(k)
    return out


def extremes(rank: Ranked, group: np.ndarray, levels: tuple[float, ...]
             ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Per distinct rank ``k`` = floor(level (r + 1)) of the levels: (``k``, ``r``, the group's
    judged entities, which of them are above the ``k``-th largest value of the ``r`` usable
    entities outside the group). The ``k``-th largest outside the group is read off the one sorted
    order: the smallest position ``i`` with ``i`` - (group members up to ``i``) = ``k`` - 1."""
    values = rank.oriented[group]
    judged = ~np.isnan(values)
    mine = values[judged]
    taken = np.sort(rank.position[group][rank.position[group] >= 0])
    r = rank.descending.size - taken.size
    if r == 0 or mine.size == 0:
        return []
    out = []
    for k in level_ranks(r, levels):
        at = k - 1
        while True:
            moved = k - 1 + int(np.searchsorted(taken, at, side="right"))
            if moved == at:
                break
            at = moved
        out.append((k, r, group[judged], mine > rank.descending[at]))
    return out


class GroupNull:
    """The groups a group of holders is one of: the holder sets of one evidence kind's tokens.

    Against the entities outside it, a group's members are not exchangeable draws: an office's
    staff share a workload, a team's developers one VPN exit, and are extreme together far more
    often than one by one (in a development store, the holders of one /24 were extreme on volume
    per active day with intra-group correlation 0.38; the staff of one office, 15 of 19 in the
    population's top fifth, were a group test's p = 6e-8 under individual exchangeability). So a
    group is also tested against the population of groups like it: each group's judged members
    above the population's level-``L`` value are counted, and a Beta-binomial is fitted to the
    counts by moments (:func:`nulls.group_rates`), per (feature, level). The groups most of whose
    holders are the tested group's own are left out of its fit (:meth:`overlapping`): they are
    its entities counted again, not other groups like it. A campaign's other groups (other
    cells, other infrastructure) stay in: they raise the fitted mean and correlation, so the null
    only gets stricter, until the scan has found their entities (:meth:`without`).

    Where the campaign forms most of the groups (a small population beside a campaign active
    around the clock: at organic scale 1 on a development store, 1,455 of 3,705 groups held a
    campaign account and 316 were mostly the campaign's, and the fitted share of extreme members
    was 0.44 where the population's is 0.2), that strictness is the campaign hiding itself. So a
    group is tested against the groups as they stood before its first judged member arrived
    (``before``): each group counted over its members that arrived earlier, as the arrival
    windows count the entities that arrived before them. The null is the same exchangeability
    (when a group formed says nothing about how its members behave); a campaign's accounts that
    arrived after the tested group's first one are in none of its reference's groups. The
    instants are ``GROUP_SNAPSHOTS`` quantiles of arrival (a group's reference is the latest
    snapshot before its first member), so each fit costs one count over the groups' links and a
    running sum over the snapshots; a snapshot with fewer than ``least`` groups (after the overlapping ones are left out)
    falls back to every member of every group."""

    def __init__(self, incidence: sparse.spmatrix, label: str, arrival: np.ndarray | None = None,
                 least: int = 2) -> None:
        """``incidence``: entities x groups; ``arrival``: per entity, when it was first seen (epoch
        seconds, NaN unknown: counted in the last snapshot only); ``least``: groups a snapshot
        must fit on."""
        self.incidence = sparse.csc_matrix(incidence, dtype=np.float64)
        self.label = label
        #: the broader population of groups (its family's, then every place kind's) a group is
        #: tested against where too few of these had formed before its first member arrived
        self.broader: GroupNull | None = None
        self.groups = self.incidence.shape[1]
        self.sizes = np.diff(self.incidence.indptr)
        self.least = least
        self._by_entity = self.incidence.tocsr()  # each entity's groups: overlaps cost a group's links only
        rows = self.incidence.shape[0]
        arrival = np.full(rows, np.nan) if arrival is None else np.asarray(arrival, dtype=np.float64)
        known = arrival[np.isfinite(arrival)]
        cuts = (np.unique(np.quantile(known, np.linspace(0.0, 1.0, GROUP_SNAPSHOTS + 1)[1:-1]))
                if known.size else np.zeros(0))
        #: the snapshots' instants, ascending, the last one infinite (every member)
        self.cuts = np.append(cuts, np.inf)
        #: per entity, the first snapshot it is counted in (arrived strictly before its instant)
        self._first = np.searchsorted(cuts, arrival, side="right").astype(np.int64)  # NaN: the last
        #: per link (entity, group) of the incidence: its entity, and its group's and entity's first
        #: snapshot's cell in a groups x snapshots table, so that each snapshot's counts are one
        #: bincount and a running sum over the snapshots
        self._link_rows = self.incidence.indices
        self._link_cells = (np.repeat(np.arange(self.groups, dtype=np.int64), self.sizes) * self.cuts.size
                            + self._first[self._link_rows])
        #: entities the scan has validated, counted in no group (:meth:`without`)
        self._validated: np.ndarray | None = None
        #: per (ranking, feature, rank): the ranking itself (so that its id is never reused while
        #: cached), who is judged and who is above (validated ones left out), and each snapshot's
        #: sums over every group (the last: every member)
        self._counts: dict[tuple[int, str, int], tuple[Ranked, np.ndarray, np.ndarray, list[nulls.GroupSums]]] = {}
        #: per ranking (its id): the ranking, who is judged (validated ones left out) and each
        #: group's judged members per snapshot, which every rank ``k`` of :meth:`rates` shares
        self._trials: dict[int, tuple[Ranked, np.ndarray, nulls.TrialSums]] = {}
        #: per group (its ids' bytes), :meth:`overlapping`: shared with the refitted copies, since
        #: which groups overlap does not depend on what is validated
        self._overlaps: dict[bytes, np.ndarray] = {}
        #: per set of groups (their columns' bytes), :meth:`_links_of`; shared like ``_overlaps``
        self._slices: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def overlapping(self, group: np.ndarray) -> np.ndarray:
        """The groups (ascending column indices) that have more than half of their holders in
        ``group`` (entity ids): its own holder set, and the sets of its other tokens that its
        members mostly hold (a campaign's system prompt beside its scaffold n-grams; an office's
        address beside its card)."""
        ids = distinct(np.asarray(group, dtype=np.int64))
        key = ids.tobytes()
        if key not in self._overlaps:
            columns, inside = np.unique(self._by_entity[ids].indices, return_counts=True)
            self._overlaps[key] = columns[2 * inside > self.sizes[columns]].astype(np.int64)
        return self._overlaps[key]

    def _links_of(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The links of some groups (column indices): each link's entity, and its group's position
        in ``columns``; kept per set of columns, shared with the refitted copies."""
        key = columns.tobytes()
        if key not in self._slices:
            part = self.incidence[:, columns]
            self._slices[key] = (part.indices, np.repeat(np.arange(columns.size), np.diff(part.indptr)))
        return self._slices[key]

    def without(self, validated: np.ndarray) -> GroupNull:
        """The same groups with the ``validated`` entities (ids: those the scan's findings at
        throttle or stronger hold) counted in none of them: a null fitted on contaminated data
        absorbs the campaign. A campaign's other cells (its paraphrases' n-grams, its other
        prompts) are groups like the one tested, each rotating or harvesting as it does; fitted
        with them, the groups' extreme share and correlation are the campaign's own. Its
        members already found are evidence, not the population of groups; an organic group
        wrongly found is within the budget's expected false positives."""
        other = copy.copy(self)
        other._validated = np.zeros(self.incidence.shape[0], dtype=bool)
        other._validated[np.asarray(validated, dtype=np.int64)] = True
        other._counts, other._trials = {}, {}
        if self.broader is not None:
            other.broader = self.broader.without(validated)
        return other

    def rates(self, feature: str, rank: Ranked, level: float, leave_out: np.ndarray | None = None,
              before: float = np.inf, fallback: bool = True) -> nulls.GroupRates:
        """The groups' fit on ``rank``'s feature, members counted above the ``k``-th largest value
        of every usable entity, ``k = max(1, floor(level (R + 1)))``, less the groups
        ``leave_out`` (column indices, :meth:`overlapping`) and the validated entities
        (:meth:`without`), each group over its members that arrived before the latest snapshot
        at or before ``before`` (every member where none is, or where it leaves fewer than
        ``least`` groups, unless ``fallback`` is false: then the early fit however few)."""
        usable = rank.descending.size
        k = max(1, int(np.floor(level * (usable + 1))))
        key = (id(rank), feature, k)
        if key not in self._counts or self._counts[key][0] is not rank:
            shape, cells = (self.groups, self.cuts.size), self.groups * self.cuts.size
            # who is judged, and each group's judged members per snapshot, do not depend on k
            if id(rank) not in self._trials or self._trials[id(rank)][0] is not rank:
                judged = rank.position >= 0
                if self._validated is not None:
                    judged = judged & ~self._validated
                trials = np.bincount(self._link_cells, judged[self._link_rows], cells).reshape(shape).cumsum(axis=1)
                self._trials[id(rank)] = (rank, judged, nulls.TrialSums.of(trials))
            _, judged, sums = self._trials[id(rank)]
            above = judged & (rank.position < k)
            successes = np.bincount(self._link_cells, above[self._link_rows], cells).reshape(shape).cumsum(axis=1)
            every = sums.with_successes(successes)
            self._counts[key] = (rank, judged, above, every)
        _, judged, above, every = self._counts[key]

        def fit(s: int) -> nulls.GroupRates:
            left = None
            if leave_out is not None and leave_out.size:
                # the left-out groups' counts at this snapshot, over their own links only
                rows, group = self._links_of(leave_out)
                counted = judged[rows] & (self._first[rows] <= s)
                left = nulls.GroupSums.of(np.bincount(group, counted, leave_out.size),
                                          np.bincount(group, counted & above[rows], leave_out.size))
            return replace(every[s].rates(left), before=float(self.cuts[s]))

        last = len(every) - 1
        at = int(np.searchsorted(self.cuts, before, side="right")) - 1
        if 0 <= at < last:
            early = fit(at)
            if early.groups >= self.least or not fallback:
                return early
        return fit(last)

    def fitted_for(self, group: np.ndarray, feature: str, rank: Ranked, level: float, before: float = np.inf
                   ) -> tuple[nulls.GroupRates, str]:
        """The fit a group (entity ids, first judged member arrived at ``before``) is tested
        against, and what its population of groups is: these groups as they stood before it
        (:meth:`rates`, less :meth:`overlapping`); where fewer than ``least`` had formed by then,
        the broader populations' (:attr:`broader`, in turn) as they stood then; only where none
        had, every member of these groups. A campaign that arrived after the group's first member
        is in none of the early groups, but every member of every group counts its other cells
        (on a development store 60 of a client family's 78 groups were mostly one campaign's
        paraphrased n-grams, none of them formed when its system prompt's first holder arrived)."""
        null: GroupNull | None = self
        if np.isfinite(before):
            while null is not None:
                early = null.rates(feature, rank, level, null.overlapping(group), before, fallback=False)
                if np.isfinite(early.before) and early.groups >= null.least:
                    return early, null.label
                null = null.broader
        return self.rates(feature, rank, level, self.overlapping(group)), self.label


def group_behaviour(features: dict[str, Ranked], group: np.ndarray, levels: tuple[float, ...],
                    groups: GroupNull | None = None, before: float = np.inf,
                    memo: dict | None = None) -> GroupBehaviour | None:
    """The group's most surprising count of extremes over every (feature, level), against the
    usable entities outside the group (``features`` from :func:`ranked`): under the null that
    the group's entities are exchangeable with them, the count above the reference's ``k``-th
    largest value is Beta-binomial (as for the arrival windows); with ``groups``, each count's
    p-value is the larger of that and its tail against the population of groups
    (:class:`GroupNull`: both nulls must fail). Corrected for every (feature, rank) looked at
    (:func:`extremes`). ``before``: the group null's groups as they stood then (GroupNull.rates);
    ``memo``: as for :func:`group_behaviours`."""
    found = group_behaviours(features, group, levels, groups, memo=memo, before=before)
    return found[0] if found else None


def group_behaviours(features: dict[str, Ranked], group: np.ndarray, levels: tuple[float, ...],
                     groups: GroupNull | None = None, within: float | None = None,
                     memo: dict | None = None, before: float = np.inf) -> list[GroupBehaviour]:
    """:func:`group_behaviour`'s looks, the best level of each feature, most surprising first:
    the best of all only without ``within``, else every feature whose best corrected p-value is
    at most ``within`` (each corrected for every look, so each is a valid test on its own: a
    group extreme on two features is found on both, and its members on each are the ones
    extreme on it). ``memo`` keeps each (rankings, group)'s looks and individual p-values, which
    the group null does not change: a scan that refits only the group nulls reuses them."""
    key = (tuple((f, id(r)) for f, r in features.items()), group.tobytes(), levels)
    if memo is not None and key in memo:
        _, looks, counted, individual = memo[key]
    else:
        looks = []  # (feature, direction, k, r, n, x, the extreme entities)
        for feature, rank in features.items():
            for k, r, judged, above in extremes(rank, group, levels):
                looks.append((feature, rank.direction, k, r, judged.size, int(above.sum()), judged[above]))
        counted = [look for look in looks if look[5] > 0]
        individual = np.zeros(0)
        if counted:
            k, r, n, x = (np.asarray([look[i] for look in counted]) for i in (2, 3, 4, 5))
            individual = beta_binomial_sf(x, n, k, r)
        if memo is not None:
            # the rankings are kept with their looks, so that their ids are never reused while cached
            memo[key] = (tuple(features.values()), looks, counted, individual)
    if not counted:
        return []
    p = individual.copy()
    fits: list[nulls.GroupRates | None] = [None] * len(counted)
    group_p = np.ones(len(counted))
    bound = np.inf if within is None else within / len(looks)  # what a returned look's p must reach
    labels = [groups.label if groups is not None else ""] * len(counted)
    if groups is not None:
        # a look's p-value is at least its individual one, so the looks are visited from the
        # smallest individual p-value up until it exceeds the best found (or the bound asked
        # for): the rest cannot be returned
        best = np.inf
        p[:] = np.inf
        for i in np.argsort(individual, kind="stable"):
            if individual[i] > (best if within is None else bound):
                break
            feature, _, k_i, r_i, n_i, x_i, _ = counted[i]
            fits[i], labels[i] = groups.fitted_for(group, feature, features[feature], k_i / (r_i + 1), before)
            group_p[i] = fits[i].tail(x_i, n_i, k_i / (r_i + 1))
            p[i] = max(individual[i], group_p[i])
            best = min(best, p[i])
    # the best look of each feature; of equal p-values the first in (feature, level) order
    chosen: list[int] = []
    seen: set[str] = set()
    for i in np.argsort(p, kind="stable"):
        if chosen and (within is None or p[i] > bound):
            break
        if counted[i][0] not in seen:
            seen.add(counted[i][0])
            chosen.append(int(i))
    out = []
    for i in chosen:
        feature, direction, k_i, r_i, n_i, x_i, extreme = counted[i]
        out.append(GroupBehaviour(feature, direction, k_i / (r_i + 1), k_i, r_i, n_i, x_i, float(p[i]),
                                  float(nulls.bonferroni(float(p[i]), len(looks))),
                                  tuple(int(e) for e in np.sort(extreme)), fits[i], float(group_p[i]),
                                  labels[i], float(individual[i])))
    return out
