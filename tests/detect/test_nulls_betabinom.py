"""The Beta-binomial tail the window and group tests use: the sum of the probability mass,
exact where scipy's subtraction is not."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from distillguard.detect import nulls


def exact(x: int, n: int, a: float, b: float) -> float:
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    j = np.arange(x, n + 1)
    return float(min(1.0, np.exp(logsumexp(stats.betabinom.logpmf(j, n, a, b)))))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 3000), share=st.floats(-0.01, 1.01), rank=st.integers(1, 400), reference=st.integers(0, 50_000))
def test_the_tail_is_the_summed_mass_from_the_observed_count_up(n, share, rank, reference):
    """In arrays, and for one count in plain floats (nulls.beta_binomial_sf_one: the budget's
    greedy prices one window's residual at a time), which is the array version's value."""
    x = int(round(share * n))
    a, b = float(rank), float(reference + 1)
    got = float(nulls.beta_binomial_sf(np.asarray([x]), np.asarray([n]), a, b)[0])
    want = exact(x, n, a, b)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-300)
    assert nulls.beta_binomial_sf_one(x, n, a, b) == pytest.approx(got, rel=1e-9, abs=1e-300)


def test_a_tail_far_below_what_subtraction_resolves_is_still_exact():
    """scipy gives 8.0e-12 for this tail; its mass sums to 2.2e-11."""
    got = float(nulls.beta_binomial_sf(np.asarray([533]), np.asarray([2459]), 1014.0, 5464.0)[0])
    assert got == pytest.approx(exact(533, 2459, 1014.0, 5464.0), rel=1e-9)
    assert got == pytest.approx(2.2191798488e-11, rel=1e-6)


def test_the_tail_never_rises_with_the_count():
    n, a, b = 500, 3.0, 2000.0
    tails = nulls.beta_binomial_sf(np.arange(-1, n + 3), np.full(n + 4, n), a, b)
    assert tails[0] == tails[1] == 1.0 and tails[-1] == 0.0
    assert np.all(np.diff(tails) <= 1e-15)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 400), share=st.floats(-0.01, 1.01), a=st.floats(0.01, 50.0), b=st.floats(0.01, 50.0))
def test_an_overdispersed_groups_tail_is_the_summed_mass_for_any_shape(n, share, a, b):
    """A group's Beta-binomial has shapes below 1 when its members are strongly correlated."""
    x = int(round(share * n))
    assert nulls.beta_binomial_tail(x, n, a, b) == pytest.approx(exact(x, n, a, b), rel=1e-7, abs=1e-300)


@pytest.mark.parametrize("icc", [0.0, 0.1, 0.4])
def test_the_groups_correlation_is_recovered_from_their_counts(icc):
    """Counts drawn from a Beta-binomial with a known intra-group correlation over groups of
    unequal size: the moment fit recovers the mean and the correlation."""
    rng = np.random.default_rng(7)
    n = rng.integers(3, 40, 4000)
    mean = 0.2
    rate = rng.beta(mean * (1 - icc) / icc, (1 - mean) * (1 - icc) / icc, n.size) if icc else np.full(n.size, mean)
    fit = nulls.group_rates(n, rng.binomial(n, rate))
    assert fit.groups == n.size and fit.mean == pytest.approx(mean, abs=0.01)
    assert fit.icc == pytest.approx(icc, abs=0.03)


def test_the_group_under_test_is_left_out_of_its_own_null():
    rng = np.random.default_rng(3)
    n = rng.integers(2, 20, 50)
    x = rng.binomial(n, 0.1)
    n[0], x[0] = 30, 30  # a group whose every member is extreme
    first = np.arange(n.size) == 0
    left_out, rest = nulls.group_rates(n, x, first), nulls.group_rates(n[1:], x[1:])
    assert left_out.groups == rest.groups
    assert (left_out.mean, left_out.icc) == (pytest.approx(rest.mean), pytest.approx(rest.icc))
    assert nulls.group_rates(n, x).icc > rest.icc


def test_the_sums_of_every_column_of_a_table_are_each_columns_own():
    """GroupSums.of_columns, one pass over groups x snapshots, gives each column the sums Fleiss'
    estimator needs over its groups of at least two trials (a group of one, or of none, counts
    in no sum), as GroupSums.of gives them for that column alone."""
    rng = np.random.default_rng(4)
    n = rng.integers(0, 12, (300, 5))
    x = rng.binomial(n, 0.3)
    for j, sums in enumerate(nulls.GroupSums.of_columns(n, x)):
        keep = n[:, j] >= 2
        nj, xj = n[keep, j].astype(float), x[keep, j].astype(float)
        assert sums.groups == int(keep.sum())
        assert (sums.trials, sums.successes, sums.squared_trials, sums.spread) == (
            pytest.approx(nj.sum()), pytest.approx(xj.sum()), pytest.approx((nj * nj).sum()),
            pytest.approx((xj * xj / nj).sum()))
        assert dataclasses.astuple(nulls.GroupSums.of(n[:, j], x[:, j])) == pytest.approx(dataclasses.astuple(sums))


@given(x=st.integers(0, 30), icc=st.floats(0.0, 0.9), mean=st.floats(0.0, 1.0), floor=st.floats(0.001, 0.5))
def test_a_groups_tail_never_rises_with_its_count_and_is_never_laxer_than_its_floor_rate(x, icc, mean, floor):
    fit = nulls.GroupRates(10, mean, icc)
    assert fit.tail(x + 1, 30, floor) <= fit.tail(x, 30, floor) + 1e-12
    if icc == 0.0:
        assert fit.tail(x, 30, floor) == pytest.approx(float(stats.binom.sf(x - 1, 30, max(mean, floor))))


@pytest.mark.parametrize("total", range(2, 12))
def test_the_rank_sum_bound_is_never_below_the_exact_permutation_tail(total):
    """Every subset of every size of N distinct values: the bound on P(R >= r) is at least the
    exact share of same-size subsets whose rank sum reaches r, in every tail."""
    import itertools

    values = np.arange(total, dtype=float)
    for size in range(1, total):
        subsets = list(itertools.combinations(range(total), size))
        sums = np.array([sum(c) + size for c in subsets])  # ranks are 1-based
        for subset, observed in zip(subsets, sums):
            inside = np.zeros(total, dtype=bool)
            inside[list(subset)] = True
            found = nulls.rank_sum(values[inside], values[~inside])
            assert found.statistic == observed
            assert found.p_value >= float((sums >= observed).mean()) - 1e-12


def test_tied_values_take_midranks_and_no_group_is_no_evidence():
    found = nulls.rank_sum(np.array([5.0, 5.0]), np.array([5.0, 1.0]))
    assert found.statistic == 6.0 and found.expected == 5.0
    assert nulls.rank_sum(np.zeros(0), np.ones(3)).p_value == 1.0


@given(later=st.lists(st.floats(0, 100), min_size=1, max_size=20), reference=st.lists(st.floats(0, 100), min_size=1, max_size=40),
       shift=st.floats(0, 50))
def test_a_group_arriving_later_never_gets_a_larger_rank_sum_p_value(later, reference, shift):
    base = nulls.rank_sum(np.array(later), np.array(reference))
    moved = nulls.rank_sum(np.array(later) + shift, np.array(reference))
    assert moved.p_value <= base.p_value + 1e-12
    assert 0.0 <= moved.p_value <= 1.0


def test_the_sums_of_one_column_are_its_tables_to_the_last_bit():
    """GroupSums.of, the fit's sums over the groups left out, is exactly what GroupSums.of_columns
    gives a table of that one column (the same findings whichever builds them)."""
    rng = np.random.default_rng(5)
    for size in (0, 1, 7, 8, 9, 130, 1_000):
        n = rng.integers(0, 40, size)
        x = rng.binomial(n, 0.4)
        assert nulls.GroupSums.of(n, x) == nulls.GroupSums.of_columns(n[:, None], x[:, None])[0]


def test_the_trial_sums_serve_every_level_of_successes():
    """TrialSums made once from the trials give, for any successes, the sums over the groups of
    two trials or more computed directly over the whole table, to the last bit."""
    rng = np.random.default_rng(6)
    n = rng.integers(0, 30, (500, 4)).cumsum(axis=1)
    n[:50] = rng.integers(0, 2, (50, 4))  # groups of one or none count in no sum
    sums = nulls.TrialSums.of(n)
    for p in (0.05, 0.2, 0.6):
        x = rng.binomial(n, p)
        keep = n >= 2
        nk, xk = np.where(keep, n, 0).astype(float), np.where(keep, x, 0).astype(float)
        spread = np.where(keep, xk * xk / np.maximum(nk, 1.0), 0.0).sum(axis=0)
        assert sums.with_successes(x) == [
            nulls.GroupSums(int(keep[:, j].sum()), float(nk.sum(axis=0)[j]), float(xk.sum(axis=0)[j]),
                            float((nk * nk).sum(axis=0)[j]), float(spread[j])) for j in range(n.shape[1])]


@settings(max_examples=300, deadline=None)
@given(x=st.integers(0, 400), paced=st.integers(0, 400), span=st.floats(60.0, 1e7), ratio=st.floats(0.01, 100.0))
def test_the_rate_nulls_tail_never_rises_with_the_count_nor_falls_with_the_earlier_pace(x, paced, span, ratio):
    """The rate null (cohorts.rate_sf): one more extreme in the window never raises its p-value,
    one more earlier extreme or a shorter earlier span never lowers it, and the tail is the
    binomial's of the two counts' total at the spans' ratio."""
    from distillguard.detect import cohorts

    def p(x, paced, reference_span):
        return float(cohorts.rate_sf(np.asarray([x]), np.asarray([paced]), span, np.asarray([reference_span]))[0])

    reference_span = span * ratio
    base = p(x, paced, reference_span)
    assert p(x + 1, paced, reference_span) <= base + 1e-12
    assert p(x, paced + 1, reference_span) >= base - 1e-12
    assert p(x, paced, reference_span / 2) >= base - 1e-12
    tau = span / (span + reference_span)
    assert base == pytest.approx(float(stats.binom.sf(x - 1, x + paced, tau)), rel=1e-9, abs=1e-300)


def test_a_reference_without_a_span_says_nothing_of_a_pace():
    from distillguard.detect import cohorts

    assert cohorts.rate_sf(np.asarray([50]), np.asarray([0]), 3600.0, np.asarray([0.0]))[0] == 1.0
