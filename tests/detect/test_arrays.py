"""The array helpers give what numpy's own functions give."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distillguard.detect.arrays import distinct


@given(hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-50, 50) | st.integers(-2**62, 2**62)))
def test_distinct_is_numpys_sorted_unique(values):
    got = distinct(values)
    assert got.dtype == values.dtype
    assert np.array_equal(got, np.unique(values))


def test_distinct_of_nothing_is_empty():
    assert distinct(np.zeros(0, dtype=np.int64)).size == 0
