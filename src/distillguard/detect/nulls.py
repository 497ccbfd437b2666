"""Null models and the tail probabilities evidence is measured by.

Every statistic the detector reports is a tail probability under a stated null:

* **BiCM** (bipartite configuration model; Saracco et al. 2015, "Randomizing bipartite networks:
  the case of the World Trade Web", and 2017, "Inferring monopartite projections of bipartite
  networks: an entropy-based approach"): the maximum-entropy random bipartite graph whose
  expected degrees equal the observed ones. An account-token link has probability
  ``x_a y_t / (1 + x_a y_t)``; the hidden variables depend only on the degrees, so the model is
  fitted over degree *classes* (a few hundred values), never over the full table.
* **Poisson tail** of an overlap count: the number of tokens two accounts share is a sum of
  independent Bernoullis under BiCM (Poisson-binomial), whose upper tail the Poisson tail with the
  same mean bounds from above for small link probabilities (Le Cam; slightly conservative). The
  normal approximation is not used: it is anti-conservative by orders of magnitude in the tail.
* **Binomial tail** for counts of extreme accounts in a window (a scan statistic, Kulldorff 1997).
* **Clopper-Pearson** exact interval for a rate measured on a finite sample.

Everything here is pure numpy/scipy over small arrays and deterministic.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats


@dataclass(frozen=True)
class Bicm:
    """A fitted BiCM over degree classes.

    ``row_degrees``/``x`` and ``col_degrees``/``y`` are the distinct degrees and their hidden
    variables; ``col_counts`` how many tokens have each degree. ``converged`` says whether the
    fixed point met its tolerance (the expected degrees then match the observed ones to ``tol``).
    """

    row_degrees: np.ndarray
    row_counts: np.ndarray
    x: np.ndarray
    col_degrees: np.ndarray
    col_counts: np.ndarray
    y: np.ndarray
    converged: bool
    iterations: int

    def link_probability(self, row_class: np.ndarray, col_class: np.ndarray) -> np.ndarray:
        xy = self.x[row_class][:, None] * self.y[col_class][None, :]
        return xy / (1.0 + xy)

    def expected_overlap(self, col_mask: np.ndarray | None = None) -> np.ndarray:
        """Matrix ``L[i, k]``: the expected number of tokens (restricted to the column classes in
        ``col_mask``, all by default) that an account of row class ``i`` and one of class ``k``
        both hold: ``sum_t p(i, t) p(k, t)``."""
        p = self.link_probability(np.arange(len(self.x)), np.arange(len(self.y)))
        weights = self.col_counts.astype(float) if col_mask is None else self.col_counts * col_mask
        return (p * weights[None, :]) @ p.T

    def row_class(self, degrees: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.row_degrees, degrees)


def fit_bicm(row_degrees: np.ndarray, col_degrees: np.ndarray, *, tol: float = 1e-6,
             max_iterations: int = 2000) -> Bicm:
    """Fit BiCM to the observed degree sequences by the fixed-point iteration (Newton does not
    converge at the sizes seen in practice; the fixed point does, and needs only the classes).

    Zero degrees are left out: an account or token with no link carries no information.
    """
    rows = np.asarray(row_degrees, dtype=np.int64)
    cols = np.asarray(col_degrees, dtype=np.int64)
    rows, cols = rows[rows > 0], cols[cols > 0]
    rd, rc = np.unique(rows, return_counts=True)
    cd, cc = np.unique(cols, return_counts=True)
    if rd.size == 0 or cd.size == 0:
        empty = np.zeros(0)
        return Bicm(rd, rc, empty, cd, cc, empty, True, 0)
    total = float(rows.sum())
    x = rd / np.sqrt(total)
    y = cd / np.sqrt(total)
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        xy = x[:, None] * y[None, :]
        x_new = rd / ((cc[None, :] * y[None, :] / (1.0 + xy)).sum(axis=1))
        xy = x_new[:, None] * y[None, :]
        y_new = cd / ((rc[:, None] * x_new[:, None] / (1.0 + xy)).sum(axis=0))
        change = max(np.max(np.abs(x_new - x) / x), np.max(np.abs(y_new - y) / y))
        x, y = x_new, y_new
        if change < tol:
            converged = True
            break
    return Bicm(rd, rc, x, cd, cc, y, converged, iteration)


def poisson_sf(observed: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """P(X >= observed) for X ~ Poisson(mean); 1 where ``observed`` <= 0."""
    observed = np.asarray(observed, dtype=float)
    mean = np.maximum(np.asarray(mean, dtype=float), 1e-300)
    out = np.ones(np.broadcast(observed, mean).shape)
    positive = np.broadcast_to(observed > 0, out.shape)
    out[positive] = special.gammainc(np.broadcast_to(observed, out.shape)[positive],
                                     np.broadcast_to(mean, out.shape)[positive])
    return out


def binomial_sf(observed: np.ndarray, trials: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """P(X >= observed) for X ~ Binomial(trials, rate)."""
    return stats.binom.sf(np.asarray(observed) - 1, np.asarray(trials), np.clip(rate, 0.0, 1.0))


def beta_binomial_sf(observed: np.ndarray, trials: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(X >= observed) for X ~ Beta-binomial(trials, a, b) with a, b >= 1, elementwise.

    At or below the mean the tail is 1 minus the few terms under ``observed`` (a log-concave
    distribution puts a good share of its mass at or above its mean, so nothing is lost). Above it the terms from ``observed`` up are summed in log space: a tail far below the floating-point range is 0, never a cancellation error (scipy's
    ``betabinom.sf`` subtracts there: 8e-12 for a tail of 2.2e-11), and since the distribution is
    log-concave for a, b >= 1 the ratio of successive terms only falls, so the sum stops once a
    geometric bound on what is left is below 1e-17 of it. scipy also loops over the elements in
    Python, which a scan of tens of thousands of windows cannot afford."""
    x, n, a, b = np.broadcast_arrays(np.asarray(observed, dtype=np.int64), np.asarray(trials, dtype=np.int64),
                                     np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    shape = x.shape
    x, n, a, b = (np.ravel(v) for v in (x, n, a, b))
    out = np.where(x <= 0, 1.0, 0.0)
    const = (special.gammaln(n + 1) - special.gammaln(n + a + b) + special.gammaln(a + b) - special.gammaln(a)
             - special.gammaln(b))

    def log_terms(idx: np.ndarray, j: np.ndarray) -> np.ndarray:
        nn, aa, bb = n[idx], a[idx], b[idx]
        return (const[idx] - special.gammaln(j + 1) - special.gammaln(nn - j + 1) + special.gammaln(j + aa)
                + special.gammaln(nn - j + bb))

    def log_sums(idx: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
        """log of the mass of j in [first, first + count) per element, in chunks of terms."""
        result = np.full(idx.size, -np.inf)
        ends = np.cumsum(count)
        start = 0
        while start < idx.size:
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] - count[start] + (1 << 22), side="right")))
            size = count[start:stop]
            seg = np.repeat(np.arange(stop - start), size)
            offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
            terms = log_terms(idx[start:stop][seg], first[start:stop][seg] + np.arange(seg.size) - offsets[seg])
            nonempty = size > 0
            top = np.full(stop - start, -np.inf)
            top[nonempty] = np.maximum.reduceat(terms, offsets[nonempty])
            sums = np.zeros(stop - start)
            sums[nonempty] = np.add.reduceat(np.exp(terms - top[seg]), offsets[nonempty])
            with np.errstate(divide="ignore"):
                result[start:stop] = top + np.log(sums)
            start = stop
        return result

    live = np.flatnonzero((x > 0) & (x <= n))
    at_most_mean = x[live] <= n[live] * a[live] / (a[live] + b[live])
    below, upper = live[at_most_mean], live[~at_most_mean]
    if below.size:
        out[below] = np.clip(1.0 - np.exp(log_sums(below, np.zeros(below.size, np.int64), x[below])), 0.0, 1.0)
    if not upper.size:
        return out.reshape(shape)
    head = np.minimum(n[upper] - x[upper] + 1, 64)
    total = log_sums(upper, x[upper], head)
    # what the head leaves: at most its last term times r / (1 - r), r the next ratio, when r < 1
    last = x[upper] + head - 1
    nn, aa, bb = n[upper], a[upper], b[upper]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (nn - last) * (last + aa) / ((last + 1) * (nn - last - 1 + bb))
        bound = log_terms(upper, last) + np.log(ratio / (1.0 - ratio))
    more = (last < nn) & ((ratio >= 1.0) | (bound > total + np.log(1e-17)))
    if more.any():
        rest = log_sums(upper[more], last[more] + 1, nn[more] - last[more])
        total[more] = np.logaddexp(total[more], rest)
    out[upper] = np.minimum(1.0, np.exp(total))
    return out.reshape(shape)


def beta_binomial_sf_one(observed: int, trials: int, a: float, b: float) -> float:
    """:func:`beta_binomial_sf` of one count, in plain floats: the budget's greedy asks for one
    window's residual at a time, where the array version's fixed cost per call (about 0.2 ms)
    made most of a full-scale scan's budget pass. The same terms and stopping bound; where the
    tail needs more than the first 64 terms (or a complement of more than 64) it is the array
    version's value."""
    x, n = int(observed), int(trials)
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    lgamma = math.lgamma
    const = lgamma(n + 1) - lgamma(n + a + b) + lgamma(a + b) - lgamma(a) - lgamma(b)

    def log_term(j: int) -> float:
        return const - lgamma(j + 1) - lgamma(n - j + 1) + lgamma(j + a) + lgamma(n - j + b)

    def log_sum(terms: list[float]) -> float:
        top = max(terms)
        return top + math.log(math.fsum(math.exp(t - top) for t in terms))

    if x <= n * a / (a + b):
        if x > 64:
            return float(beta_binomial_sf(np.asarray([x]), np.asarray([n]), a, b)[0])
        return min(1.0, max(0.0, 1.0 - math.exp(log_sum([log_term(j) for j in range(x)]))))
    head = min(n - x + 1, 64)
    total = log_sum([log_term(j) for j in range(x, x + head)])
    last = x + head - 1
    if last < n:
        ratio = (n - last) * (last + a) / ((last + 1) * (n - last - 1 + b))
        if ratio >= 1.0 or log_term(last) + math.log(ratio / (1.0 - ratio)) > total + math.log(1e-17):
            return float(beta_binomial_sf(np.asarray([x]), np.asarray([n]), a, b)[0])
    return min(1.0, math.exp(total))


@functools.lru_cache(maxsize=1 << 16)
def beta_binomial_tail(observed: int, trials: int, a: float, b: float) -> float:
    """P(X >= observed) for X ~ Beta-binomial(trials, a, b), any a, b > 0 (an overdispersed group
    has a < 1: :func:`beta_binomial_sf` needs log-concavity). Every term from ``observed`` to
    ``trials`` is summed in log space: exact, and a group's trials are at most its holders."""
    if observed <= 0:
        return 1.0
    if observed > trials:
        return 0.0
    j = np.arange(observed, trials + 1, dtype=float)
    log_terms = (special.gammaln(trials + 1) - special.gammaln(j + 1) - special.gammaln(trials - j + 1)
                 + special.betaln(j + a, trials - j + b) - special.betaln(a, b))
    top = log_terms.max()  # the log-sum-exp, without scipy's per-call overhead
    return float(min(1.0, np.exp(top + np.log(np.exp(log_terms - top).sum()))))


@dataclass(frozen=True)
class GroupRates:
    """How often the members of a population of groups are extreme, and how much a group's members
    are so together: a Beta-binomial fitted by moments to the groups' counts."""

    groups: int  # groups fitted (at least two judged members each)
    mean: float  # the pooled share of the groups' judged members that are extreme
    icc: float  # intra-group correlation of being extreme, in [0, 1)
    #: the groups as they stood before this instant (epoch seconds): their members that arrived
    #: earlier only (inf: every member)
    before: float = math.inf

    def tail(self, observed: int, trials: int, at_least: float) -> float:
        """P(X >= observed) for a group of ``trials`` drawn from this population: Beta-binomial
        with the fitted correlation and a mean no lower than ``at_least`` (the individual null's
        rate), binomial when the members are uncorrelated."""
        mean = min(max(self.mean, at_least), 1.0 - 1e-12)
        if self.icc <= 1e-9:
            return float(binomial_sf(observed, trials, mean))
        scale = (1.0 - self.icc) / self.icc
        return beta_binomial_tail(observed, trials, mean * scale, (1.0 - mean) * scale)


@dataclass(frozen=True)
class GroupSums:
    """The sums Fleiss' estimator needs over a population of groups (:func:`group_rates`), kept so
    that leaving one group out costs nothing: groups, trials, successes, squared trials and
    squared successes per trial."""

    groups: int
    trials: float
    successes: float
    squared_trials: float
    spread: float

    @classmethod
    def of(cls, trials: np.ndarray, successes: np.ndarray) -> GroupSums:
        """The sums over groups with these (trials, successes), to the last bit as :meth:`of_columns`
        sums a table of one column, without building one (a group null's fit asks this for every
        group it tests)."""
        n = np.asarray(trials, dtype=float)
        x = np.asarray(successes, dtype=float)
        keep = n >= 2
        n, x = np.where(keep, n, 0.0), np.where(keep, x, 0.0)
        return cls(int(np.count_nonzero(keep)), float(n.sum()), float(x.sum()), float((n * n).sum()),
                   float((x * x / np.maximum(n, 1.0)).sum()))

    @classmethod
    def of_columns(cls, trials: np.ndarray, successes: np.ndarray) -> list[GroupSums]:
        """:meth:`of` for each column of groups x columns tables, in one pass."""
        return TrialSums.of(trials).with_successes(successes)

    def rates(self, leave_out: GroupSums | None = None) -> GroupRates:
        """Fleiss' analysis-of-variance estimator of the intra-class correlation of a binary
        outcome over groups of unequal size (Fleiss, Levin & Paik 2003, ch. 15; Ridout et al. 1999
        compare it with the alternatives): ``rho = (MSB - MSW) / (MSB + (n0 - 1) MSW)``, clipped
        to [0, 1). ``leave_out`` is the sums of some of the groups, left out: the group under
        test must not make its own null (one with all its members extreme would raise the fitted
        correlation itself)."""
        g, total, hits, squares, spread = self.groups, self.trials, self.successes, self.squared_trials, self.spread
        if leave_out is not None and leave_out.groups:
            g, total, hits = g - leave_out.groups, total - leave_out.trials, hits - leave_out.successes
            squares, spread = squares - leave_out.squared_trials, spread - leave_out.spread
        if g <= 0 or total <= 0:
            return GroupRates(0, 0.0, 0.0)
        mean = float(hits / total)
        if g < 2 or total <= g:
            return GroupRates(int(g), mean, 0.0)
        between = (spread - 2 * mean * hits + mean * mean * total) / (g - 1)
        within = (hits - spread) / (total - g)
        n0 = (total - squares / total) / (g - 1)
        denominator = between + (n0 - 1.0) * within
        icc = (between - within) / denominator if denominator > 0 else (1.0 if between > 0 else 0.0)
        return GroupRates(int(g), mean, float(min(max(icc, 0.0), 0.999)))


@dataclass(frozen=True)
class TrialSums:
    """The part of :meth:`GroupSums.of_columns` that depends on the trials only (groups x columns),
    computed once for the many success counts of one population: a group null counts its groups'
    judged members once per ranking and their extreme ones once per level. Only the divisor is
    kept per cell (a group null keeps one per ranking it is fitted on)."""

    floor: np.ndarray  # the trials where at least 2, else 1: a group of one carries no correlation
    groups: np.ndarray
    totals: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, trials: np.ndarray) -> TrialSums:
        """The trials' part of the sums, for a groups x columns table of trials."""
        n = np.asarray(trials, dtype=float)
        keep = n >= 2
        n = np.where(keep, n, 0.0)
        return cls(np.maximum(n, 1.0), keep.sum(axis=0), n.sum(axis=0), (n * n).sum(axis=0))

    def with_successes(self, successes: np.ndarray) -> list[GroupSums]:
        """Each column's GroupSums with these successes (groups x columns, as the trials)."""
        x = np.where(self.floor >= 2.0, np.asarray(successes, dtype=float), 0.0)
        hits, spread = x.sum(axis=0), (x * x / self.floor).sum(axis=0)
        return [GroupSums(int(self.groups[j]), float(self.totals[j]), float(hits[j]), float(self.squares[j]),
                          float(spread[j])) for j in range(x.shape[1])]


def group_rates(trials: np.ndarray, successes: np.ndarray, leave_out: np.ndarray | None = None) -> GroupRates:
    """:meth:`GroupSums.rates` of the groups' (trials, successes), less the groups ``leave_out``
    (a boolean mask) marks."""
    if leave_out is None:
        return GroupSums.of(trials, successes).rates()
    mask = np.asarray(leave_out, dtype=bool)
    return GroupSums.of(trials, successes).rates(GroupSums.of(np.asarray(trials)[mask], np.asarray(successes)[mask]))


@dataclass(frozen=True)
class RankSum:
    """Wilcoxon's rank sum of a group among a reference (midranks over both), with a tail bound
    that holds in any tail, however far."""

    statistic: float  # R: the group's summed midranks, 1 = smallest value
    expected: float  # n (N + 1) / 2 under exchangeability
    group: int  # n
    total: int  # N: the group and the reference
    p_value: float  # P(R >= statistic) <= exp(-6 t^2 / (n (N^2 - 1))), t = R - expected

    def reason(self) -> str:
        return (f"rank sum {self.statistic:.6g} of its {self.group} among {self.total}, {self.expected:.6g} expected were "
                f"they exchangeable (sub-Gaussian bound) p={self.p_value:.3g}")


def rank_sum(group: np.ndarray, reference: np.ndarray) -> RankSum:
    """How much larger the ``group``'s values are than the ``reference``'s, as Wilcoxon's rank sum
    (Mann-Whitney), with an upper bound on its tail under the null that the group is a random
    subset of the pooled values.

    The normal approximation is no bound in a far tail, and the exact permutation tail is too
    costly for the groups and references a scan tests. The bound: a rank drawn uniformly from
    {1..N} is strictly sub-Gaussian (its log-MGF is at most ``lambda^2 Var / 2``, ``Var = (N^2 -
    1) / 12``: ``log(sinh(x) / x)`` is concave in ``x^2`` with slope 1/6 at 0); the sum of ``n``
    ranks drawn without replacement has an MGF no larger than with replacement (Hoeffding 1963,
    theorem 4); midranks are the average over tie orders, which by Jensen only lowers the MGF.
    So ``P(R - n (N + 1) / 2 >= t) <= exp(-6 t^2 / (n (N^2 - 1)))``: conservative by the factor
    ``(N - 1) / m`` in the exponent's variance (``m`` the reference's size) against the exact
    variance without replacement, in exchange for holding at any p-value."""
    group = np.asarray(group, dtype=float)
    reference = np.asarray(reference, dtype=float)
    n, total = int(group.size), int(group.size + reference.size)
    if n == 0 or total < 2:
        return RankSum(0.0, 0.0, n, total, 1.0)
    ranks = stats.rankdata(np.concatenate([group, reference]))
    statistic = float(ranks[:n].sum())
    expected = n * (total + 1) / 2.0
    excess = statistic - expected
    p = 1.0 if excess <= 0 else float(np.exp(-6.0 * excess * excess / (n * (total * total - 1.0))))
    return RankSum(statistic, expected, n, total, min(p, 1.0))


def bonferroni(p: np.ndarray | float, looks: int | float) -> np.ndarray | float:
    """A p-value corrected for the number of looks taken to find it (valid under any dependence)."""
    return np.minimum(1.0, np.asarray(p) * max(float(looks), 1.0))


def benjamini_hochberg(p: np.ndarray, total: int) -> np.ndarray:
    """q-values of ``p`` by Benjamini-Hochberg over ``total`` hypotheses, of which the ones not in
    ``p`` were not tested (p = 1): counting them is what keeps the FDR at its level when only
    candidates are tested."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return p
    total = max(int(total), p.size)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * total / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(q, 1.0)
    return out


def cauchy_combination(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Liu & Xie (2020) Cauchy combination of p-values: valid under arbitrary dependence for
    small p, and dominated by the strongest evidence."""
    p = np.clip(np.asarray(p, dtype=float), 1e-300, 1.0 - 1e-16)
    t = np.tan((0.5 - p) * np.pi).mean(axis=axis)
    return np.clip(0.5 - np.arctan(t) / np.pi, 0.0, 1.0)


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of a binomial rate (exact)."""
    if trials <= 0:
        return 1.0
    if successes >= trials:
        return 1.0
    return float(stats.beta.ppf(confidence, successes + 1, trials - successes))


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval of a binomial rate."""
    if trials <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(a / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - a / 2, successes + 1, trials - successes))
    return lo, hi
