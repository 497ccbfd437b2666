"""Block tests: the seeds tested together give what testing each seed alone gives, and skipping
the full Chernoff grid where its lower bound cannot reach the level loses no block."""

from __future__ import annotations

from decimal import MAX_EMAX, Decimal, localcontext

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from distillguard.detect import blocks, nulls

KINDS = ("ip", "subnet", "payment", "user_agent", "scaffold", "signup_window", "sync")


def _population(seed: int, n: int = 400, group: int = 25) -> tuple[pa.Table, dict[str, int]]:
    """``n`` accounts drawing tokens of several kinds from pools of different sizes, the first ``group`` of them
    also sharing one token of every kind (a planted campaign); offices share an IP."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str]] = []
    for a in range(n):
        account = f"a{a:04d}"
        for kind in KINDS:
            pool = {"ip": 3000, "subnet": 400, "payment": 2000, "user_agent": 40, "scaffold": 300,
                    "signup_window": 150, "sync": 800}[kind]
            for _ in range(int(rng.integers(1, 4))):
                rows.append((account, kind, f"{kind}-{int(rng.integers(0, pool))}"))
            if a < group and rng.random() < 0.8:
                rows.append((account, kind, f"{kind}-camp"))
        if group <= a < group + 12:
            rows.append((account, "ip", "ip-office"))
    keys = pa.table({"account_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "key": [r[2] for r in rows]})
    return keys, {f"a{a:04d}": a for a in range(n)}


def _one_seed_at_a_time(tables: list[blocks.KindTable], min_holders: int, inflation: float, rank: int = 1) -> dict:
    """The block statistic as stated: per seed, per other family, the best kind's p-value (twice the
    smaller of the excess holders' Chernoff bound and the most shared token's, times the kind's
    tokens) times the family's kinds; the block's p is the second smallest family's (``rank`` 1; the
    smallest with ``rank`` 0), corrected for looks."""
    families = sorted({t.family for t in tables})
    seeds: dict[tuple[str, tuple[int, ...]], tuple[str, str]] = {}
    for t in tables:
        for matrix, names in ((t.incidence.tocsc(), t.tokens), (t.seeds_above_cut, t.seed_tokens_above_cut)):
            for c in np.flatnonzero(np.diff(matrix.indptr) >= min_holders):
                members = tuple(np.sort(matrix.indices[matrix.indptr[c]:matrix.indptr[c + 1]]).tolist())
                seeds.setdefault((t.family, members), (t.kind, names[c]))
    out = {}
    for (_, members), (kind, token) in seeds.items():
        family = next(t.family for t in tables if t.kind == kind)
        others = [f for f in families if f != family]
        tested = []
        for f in others:
            kinds = [t for t in tables if t.family == f]
            ps = []
            for t in kinds:
                excess, mu, _ = blocks.shared_inside(t, np.asarray(members))
                if excess:
                    held = np.asarray(t.incidence[list(members)].sum(axis=0)).ravel()
                    top = min(float(blocks.poisson_chernoff(c, mu[t.column_class[j]] * inflation))
                              for j, c in enumerate(held) if c >= 2) * t.incidence.shape[1]
                    summed = blocks.excess_tail(excess, mu * inflation, t.rare_class_counts)
                    ps.append((min(1.0, 2 * min(summed, top)), t.kind))
            if ps:
                tested.append((float(nulls.bonferroni(min(ps)[0], len(kinds))), f))
        if len(tested) > rank:
            tested.sort()
            out[(kind, token)] = (tested[rank][0], float(nulls.bonferroni(tested[rank][0], len(others) * len(seeds))))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeds_tested_together_give_each_seed_its_own_p_value(seed):
    keys, entity_of = _population(seed)
    tables = blocks.kind_tables(keys, entity_of, len(entity_of), pair_budget=2_000)
    found, looks = blocks.block_tests(tables, min_holders=3, inflation=1.5)
    expected = _one_seed_at_a_time(tables, 3, 1.5)
    assert looks >= len(expected) > 10
    assert {(b.seed_kind, b.seed_token) for b in found} == set(expected)
    for b in found:
        p, corrected = expected[(b.seed_kind, b.seed_token)]
        assert b.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert b.p_corrected == pytest.approx(corrected, rel=1e-9, abs=1e-300)
    assert found[0].seed_token.endswith("-camp")  # the planted group is the most surprising block


@pytest.mark.parametrize("alpha", [0.5, 0.01, 1e-6])
def test_a_level_returns_exactly_the_blocks_that_reach_it(alpha):
    keys, entity_of = _population(4)
    tables = blocks.kind_tables(keys, entity_of, len(entity_of), pair_budget=2_000)
    everything, looks = blocks.block_tests(tables, 3, 1.0)
    reached, looks_at_level = blocks.block_tests(tables, 3, 1.0, alpha=alpha)
    assert looks_at_level == looks
    assert reached == [b for b in everything if b.p_corrected <= alpha]


@pytest.mark.parametrize("seed, alpha", [(4, 1e-2), (6, 1e-3), (1, 1e-6)])
def test_a_seed_surprising_in_one_family_beyond_it_gives_a_one_family_block_only_when_asked(seed, alpha):
    keys, entity_of = _population(seed)
    tables = blocks.kind_tables(keys, entity_of, len(entity_of), pair_budget=2_000)
    two, looks = blocks.block_tests(tables, 3, 1.0, alpha=alpha)
    both, _ = blocks.block_tests(tables, 3, 1.0, alpha=alpha, single=True)
    assert [b for b in both if b.beyond_seed == 2] == two
    ones = {(b.seed_kind, b.seed_token): b for b in both if b.beyond_seed == 1}
    smallest = _one_seed_at_a_time(tables, 3, 1.0, rank=0)
    second = _one_seed_at_a_time(tables, 3, 1.0)
    # a seed gives one block: two families where the second smallest reaches alpha, else one
    # where the smallest does
    assert set(ones) == {s for s, (_, c) in smallest.items() if c <= alpha and second.get(s, (1, 2))[1] > alpha}
    assert ones
    for seed, b in ones.items():
        assert "+" not in b.family and len(b.kinds) == 1 and "the one family beyond the seed" in b.reason()
        assert b.p_value == pytest.approx(smallest[seed][0], rel=1e-9, abs=1e-300)
        assert b.p_corrected == pytest.approx(smallest[seed][1], rel=1e-9, abs=1e-300)
        assert set(b.tied) <= set(b.seeded) and all(0 < q <= 1 for q in b.member_p)


def test_exclusive_ties_count_only_tokens_most_of_whose_holders_are_in_the_block():
    """The block's own infrastructure, not a campus's network: a token ties a member only when more
    than half of its holders are in the block (a campaign card with one holder outside the block
    is still the campaign's)."""
    keys, entity_of = _population(6)
    # the planted group's address, also held by 24 accounts outside it; one that ten of its members
    # hold with one account outside; one that five of them hold with five outside (half: not most)
    outside = [f"a{a:04d}" for a in range(300, 324)]
    rows = ([(a, "ip-camp") for a in outside] + [(f"a{a:04d}", "ip-private") for a in range(10)] + [("a0350", "ip-private")]
            + [(f"a{a:04d}", "ip-half") for a in range(10, 15)] + [(f"a{a:04d}", "ip-half") for a in range(360, 365)])
    extra = pa.table({"account_id": [r[0] for r in rows], "kind": ["ip"] * len(rows), "key": [r[1] for r in rows]})
    tables = blocks.kind_tables(pa.concat_tables([keys, extra]), entity_of, len(entity_of), pair_budget=2_000)
    table = next(t for t in tables if t.kind == "ip")
    members = np.arange(25)
    _, mu, _ = blocks.shared_inside(table, members)
    every = blocks.member_ties(table, members, mu)
    private = blocks.member_ties(table, members, mu, exclusive=True)
    holders = np.diff(table.incidence.tocsc().indptr)
    assert np.array_equal(table.token_degree, holders)
    inside = np.asarray(table.incidence[members].sum(axis=0)).ravel()
    for e in private:  # tied by a token mostly held inside the block, as strongly as by all its tokens
        assert any(2 * inside[c] > holders[c] and inside[c] >= 2 for c in table.incidence[e].indices)
        assert private[e] == every[e]
    assert set(range(10)) <= set(private) < set(every)  # the shared address ties no one on its own


@pytest.mark.parametrize("seed, count", [(1, 3), (2, 1), (6, 5)])
def test_the_most_shared_tokens_are_those_most_members_hold_ties_by_name(seed, count):
    """What a reader checks first: every token two or more members hold, ranked by how many hold it,
    then by name, the first ``count`` of them (the ranking of all of them, cut)."""
    keys, entity_of = _population(seed)
    tables = blocks.kind_tables(keys, entity_of, len(entity_of), pair_budget=2_000)
    for table in tables:
        for members in (np.arange(25), np.arange(0, 400, 3), np.arange(390, 400)):
            inside = np.asarray(table.incidence[members].sum(axis=0)).ravel()
            ranked = sorted((-int(h), table.tokens[c]) for c, h in enumerate(inside) if h >= 2)
            assert blocks.most_shared(table, members, count) == tuple(
                f"{table.kind} {name!r} ({-h})" for h, name in ranked[:count])


def _exponent_on_the_whole_grid(observed: int, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    grid = blocks._CHERNOFF_S
    return blocks._log_bound_curve(np.asarray([observed]), mu[None, :], weights, (mu > 0)[None, :],
                                   grid[None, :])[0]


_CLASSES = st.lists(st.tuples(st.floats(1e-6, 20.0), st.integers(1, 500)), min_size=1, max_size=12)
_STEEP = ([(6.103515625e-05, 3), (6.103515625e-05, 22), (6.103515625e-05, 9)], 1)  # a crossing next to a steep line


@settings(max_examples=200, deadline=None)
@given(_CLASSES, st.integers(1, 400))
@example(*_STEEP)
def test_the_bound_is_the_smallest_exponent_on_the_whole_grid(classes, observed):
    mu, weights = np.asarray([m for m, _ in classes]), np.asarray([float(w) for _, w in classes])
    whole = _exponent_on_the_whole_grid(observed, mu, weights)
    bound = blocks.excess_log_tails(np.asarray([observed]), mu[None, :], weights)[0]
    assert bound == pytest.approx(min(0.0, np.nanmin(whole)), rel=1e-12, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(_CLASSES, st.integers(1, 400))
@example(*_STEEP)
def test_the_coarse_floor_never_exceeds_the_smallest_exponent_on_the_whole_grid(classes, observed):
    mu, weights = np.asarray([m for m, _ in classes]), np.asarray([float(w) for _, w in classes])
    whole = _exponent_on_the_whole_grid(observed, mu, weights)
    coarse = blocks._CHERNOFF_S[blocks._COARSE]
    floor = blocks.convex_floor(whole[None, blocks._COARSE], coarse)[0]
    assert floor <= np.nanmin(whole) + 1e-9


@settings(max_examples=200, deadline=None)
@given(_CLASSES, st.integers(1, 400), st.floats(-200.0, -0.01))
def test_a_bound_left_out_for_its_level_could_not_have_reached_it(classes, observed, at_most):
    mu, weights = np.asarray([m for m, _ in classes]), np.asarray([float(w) for _, w in classes])
    exact = blocks.excess_log_tails(np.asarray([observed]), mu[None, :], weights)[0]
    pruned = blocks.excess_log_tails(np.asarray([observed]), mu[None, :], weights, at_most=at_most)[0]
    assert pruned == exact or (pruned == 0.0 and exact > at_most)


def _log_mgf_exactly(mu: float, s: float) -> float:
    """K(s) of (N - 1)+, N ~ Poisson(mu), in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec, ctx.Emax = 60, MAX_EMAX
        m, u = Decimal(mu), Decimal(s)
        z = m * u.exp()
        return float(((-m).exp() * (1 + m) + (-u - m).exp() * (z.exp() - 1 - z)).ln())


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 50.0), st.sampled_from(list(blocks._CHERNOFF_S)))
def test_the_log_mgf_is_accurate_from_tiny_to_huge_means(mu, s):
    assume(mu * np.exp(s) < 1e12)  # e^z stays within decimal's range
    k = blocks._log_bound_curve(np.zeros(1), np.asarray([[mu]]), np.ones(1), np.ones((1, 1), bool),
                                np.asarray([[s]]))[0, 0]
    assert k == pytest.approx(_log_mgf_exactly(mu, s), rel=1e-7, abs=1e-15)


def test_the_tail_bound_is_one_with_nothing_observed_or_nothing_allowed():
    assert blocks.excess_tail(0, np.asarray([0.5]), np.asarray([3.0])) == 1.0
    assert blocks.excess_tail(5, np.asarray([0.0]), np.asarray([3.0])) == 1.0
    assert blocks.excess_tail(5, np.asarray([0.5]), np.asarray([0.0])) == 1.0
    assert blocks.excess_tail(40, np.asarray([0.05]), np.asarray([10.0])) < 1e-20
