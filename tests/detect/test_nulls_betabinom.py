"""The Beta-binomial tail the window and group tests use: the sum of the probability mass,
exact where scipy's subtraction is not."""

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
    x = int(round(share * n))
    a, b = float(rank), float(reference + 1)
    got = float(nulls.beta_binomial_sf(np.asarray([x]), np.asarray([n]), a, b)[0])
    want = exact(x, n, a, b)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-300)


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
