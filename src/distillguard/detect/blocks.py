"""Block tests: groups of accounts that share far more than the null allows, across independent kinds.

A campaign is visible as a group, rarely as a pair: two of its accounts share a card, or an IP,
or a sign-up hour, and each such coincidence alone is what a population of customers produces
by chance. The test here asks a group question with a selection that cannot bias it:

1. **Seed** a block with one rare token of one kind (a card held by 40 entities, a /24 held by
   12, a sign-up hour at one e-mail domain): its holders ``H``.
2. **Test** ``H`` on the *other* families of evidence only (the seed's own family is not looked at
   again: the selection and the test use disjoint data, the held-out principle). For each other
   family, ``S`` = the excess holders of that family's rare tokens inside ``H`` (per token, its
   holders in ``H`` minus one, when positive). Under BiCM (nulls.py) tokens are independent and a
   token's holders in ``H`` are independent Bernoullis, which a Poisson count of the same mean
   dominates in convex order (Hoeffding 1956); the Chernoff bound of that sum is the p-value. The
   block must be surprising in *two* families beyond the seed: co-location makes one family
   depend on the seed (an office's schedule, a campus's software), never two. A campus NAT seeds
   a block of students who share nothing else beyond chance; a campaign's card seeds a block whose
   members also share addresses, sign-up hours or prompt framing.
3. **Correct** for the looks: the family's p-value times the number of families tested, times
   the number of seeds (Bonferroni: valid under any dependence between seeds).

Tokens are *rare* when they fall under the kind's pair budget (a fixed number of holder pairs;
cutting by a fixed degree would let a campaign lift its own tokens over the cut). Accounts of one
declared organisation are one entity: a customer's team is one customer.

Reference: Saracco et al. 2017 (BiCM projections); the block view as in FRAUDAR (Hooi et al.,
KDD 2016) and CopyCatch (Beutel et al., WWW 2013), here with a calibrated test in place of a
density threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from distillguard.detect import nulls
from distillguard.detect.arrays import distinct
from distillguard.detect.evidence import FAMILY_OF, POPULATIONS


@dataclass(frozen=True)
class KindTable:
    """One evidence kind as a bipartite table of entities x tokens, with its fitted null."""

    kind: str
    family: str
    incidence: sparse.csr_matrix  # entities x rare tokens (0/1)
    tokens: list[str]  # the rare tokens, in column order
    model: nulls.Bicm
    entity_class: np.ndarray  # each entity's BiCM row class (-1 with no token of this kind)
    rare_class_counts: np.ndarray  # per BiCM column class, how many of its tokens are rare
    rare_max_degree: int
    column_class: np.ndarray  # each rare token's BiCM column class
    seeds_above_cut: sparse.csc_matrix  # entities x tokens over the rare cut held by at most half the entities
    seed_tokens_above_cut: list[str]
    token_degree: np.ndarray  # each rare token's holders (the incidence's column sums)


@dataclass(frozen=True)
class Block:
    """A validated block: seeded by one token, tested on another family."""

    seed_kind: str
    seed_token: str
    holders: int
    family: str  # the family whose overlap inside the block is surprising
    shared_tokens: int  # S: excess holders of that family's rare tokens inside the block
    expected: float  # E[S] under BiCM (Poisson-bounded token counts)
    p_value: float  # Chernoff bound of P(S >= observed): the second family's, see block_tests
    p_corrected: float  # x families tested x seeds looked at
    #: entities holding a token of either family that another holder of the seed holds too
    tied: tuple[int, ...]
    kinds: tuple[str, ...] = field(default=())  # the kind that carried each of the two families
    #: per tied entity: the smaller of its two ties' p-values (member_ties), times the two and the
    #: pairs of families they were chosen among
    member_p: tuple[float, ...] = field(default=())
    seeded: tuple[int, ...] = field(default=())  # the seed token's holders: the block itself
    examples: tuple[str, ...] = field(default=())  # the tested families' tokens most held inside it
    #: families beyond the seed the statistic needs surprising: 2 (the second smallest p-value),
    #: or 1 (the smallest: co-location in one family, which an office shows too; see block_tests)
    beyond_seed: int = 2

    def reason(self) -> str:
        shared = f" (most held: {', '.join(self.examples)})" if self.examples else ""
        which = "" if self.beyond_seed == 2 else ", the one family beyond the seed tested here"
        return (f"block seeded by {self.seed_kind} {self.seed_token!r} shared by {self.holders} entities: "
                f"{self.shared_tokens} "
                f"excess holders of {self.family} tokens inside it{shared} (expected {self.expected:.3g} under "
                f"BiCM{which}), p={self.p_value:.3g}, corrected for looks p={self.p_corrected:.3g}")


def kind_tables(keys: pa.Table, entity_of: dict[str, int], n_entities: int, pair_budget: int) -> list[KindTable]:
    """One :class:`KindTable` per evidence kind present in ``keys`` (account_id, kind, key).

    Columnar: accounts are mapped to entities and tokens to codes in Arrow and numpy, with the
    token dictionary sorted so nothing depends on row order."""
    names = pa.array(list(entity_of), pa.string())
    ids = np.fromiter(entity_of.values(), dtype=np.int64, count=len(entity_of))
    keys = keys.filter(pc.and_(pc.is_valid(keys.column("key")), pc.is_in(keys.column("kind"),
                                                                         value_set=pa.array(list(FAMILY_OF)))))
    position = pc.index_in(keys.column("account_id").cast(pa.string()), value_set=names)
    keys = keys.filter(pc.is_valid(position))
    position = pc.drop_null(position).to_numpy()
    kinds = keys.column("kind").to_numpy(zero_copy_only=False)
    out = []
    for kind in sorted(set(kinds.tolist())):
        mask = kinds == kind
        values = pc.filter(keys.column("key"), pa.array(mask)).cast(pa.string())
        dictionary = pc.unique(values)
        order = pc.sort_indices(dictionary).to_numpy().astype(np.int64)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        codes = rank[pc.index_in(values, value_set=dictionary).to_numpy().astype(np.int64)]
        entities = ids[position[mask].astype(np.int64)]
        pairs = distinct(entities * np.int64(order.size) + codes)
        tokens = dictionary.take(pa.array(order)).to_pylist()
        out.append(_kind_table(kind, pairs // order.size, pairs % order.size, tokens, n_entities, pair_budget))
    return out


def _kind_table(kind: str, entities: np.ndarray, token_idx: np.ndarray, names: list[str], n_entities: int,
                pair_budget: int) -> KindTable:
    col_deg = np.bincount(token_idx, minlength=len(names))
    row_deg = np.bincount(entities, minlength=n_entities)
    model = nulls.fit_bicm(row_deg, col_deg)
    cut = rare_cut(col_deg, pair_budget)
    rare = (col_deg >= 2) & (col_deg <= cut)
    rare_ids = np.flatnonzero(rare)
    remap = -np.ones(len(names), dtype=np.int64)
    remap[rare_ids] = np.arange(len(rare_ids))
    keep = remap[token_idx] >= 0
    incidence = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.int8), (entities[keep], remap[token_idx][keep])),
                                  shape=(n_entities, len(rare_ids)))
    # tokens above the rare cut but held by at most half the entities still seed blocks (a campaign's
    # card held by thousands must not escape the test by being common); they are never counted in S
    big_ids = np.flatnonzero((col_deg > cut) & (col_deg <= n_entities // 2))
    remap_big = -np.ones(len(names), dtype=np.int64)
    remap_big[big_ids] = np.arange(len(big_ids))
    held_big = remap_big[token_idx] >= 0
    big = sparse.csc_matrix((np.ones(int(held_big.sum()), dtype=np.int8),
                             (entities[held_big], remap_big[token_idx][held_big])), shape=(n_entities, len(big_ids)))
    entity_class = np.full(n_entities, -1, dtype=np.int64)
    has = row_deg > 0
    entity_class[has] = model.row_class(row_deg[has])
    rare_counts = np.zeros(len(model.col_degrees))
    classes = np.searchsorted(model.col_degrees, col_deg[rare_ids])
    if len(rare_ids):
        rare_counts = np.bincount(classes, minlength=len(model.col_degrees)).astype(float)
    return KindTable(kind, FAMILY_OF[kind], incidence, [str(names[i]) for i in rare_ids], model, entity_class,
                     rare_counts, int(cut), classes, big, [str(names[i]) for i in big_ids],
                     np.asarray(col_deg[rare_ids], dtype=np.int64))


def rare_cut(col_degrees: np.ndarray, pair_budget: int) -> int:
    """The largest token degree such that all tokens held by 2..degree entities together make at
    most ``pair_budget`` holder pairs: rarity set by what the test can afford, not by a fixed cut."""
    degrees, counts = np.unique(col_degrees[col_degrees >= 2], return_counts=True)
    if degrees.size == 0:
        return 1
    cumulative = np.cumsum(counts * degrees * (degrees - 1) / 2.0)
    within = np.flatnonzero(cumulative <= pair_budget)
    return int(degrees[within[-1]]) if within.size else 1


def holder_groups(table: KindTable, min_holders: int) -> list[tuple[str, np.ndarray]]:
    """(token, its holders) of every token of ``table`` that seeds blocks (the rare ones and those
    above the rare cut held by at most half the entities) with at least ``min_holders`` holders. A
    holder set that several tokens share (the n-grams of one template) is listed once, under the
    token that sorts first: it is one group, tested once."""
    groups: dict[tuple[int, ...], str] = {}
    for matrix, names in ((table.incidence.tocsc(), table.tokens),
                          (table.seeds_above_cut, table.seed_tokens_above_cut)):
        degrees = np.diff(matrix.indptr)
        for column in np.flatnonzero(degrees >= min_holders):
            members = tuple(np.sort(matrix.indices[matrix.indptr[column]:matrix.indptr[column + 1]]).tolist())
            if members not in groups or names[column] < groups[members]:
                groups[members] = names[column]
    return sorted(((token, np.asarray(members, dtype=np.int64)) for members, token in groups.items()),
                  key=lambda g: g[0])


def shared_inside(table: KindTable, members: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(S, mu, columns shared) for the rare tokens of ``table`` inside the block ``members``.

    ``S`` = sum over tokens of (holders inside the block - 1)+, the *excess holders*: it grows
    whenever sharing gets denser (more members on a token, or the same members on fewer tokens),
    so a stronger tell never lowers it. ``mu`` holds, per BiCM column class, the expected number
    of the block's members holding one token of that class (the Poisson mean that bounds each
    token's count, Hoeffding 1956)."""
    rows, cols = held_by(table.incidence, members)
    if cols.size == 0:
        return 0, _class_means(table, members), np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(cols, return_counts=True)
    shared = uniq[counts >= 2]
    excess = int((counts[counts >= 2] - 1).sum())
    return excess, _class_means(table, members), shared


def held_by(incidence: sparse.csr_matrix, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, column) of every link of ``members`` in a CSR table, without building a sub-matrix."""
    starts = incidence.indptr[members]
    lengths = incidence.indptr[members + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.repeat(members, lengths), incidence.indices[offsets + np.arange(total)]


def co_holders(table: KindTable, by_column: sparse.csc_matrix, members: np.ndarray) -> np.ndarray:
    """The entities (ascending, ``members`` among them) holding a rare token of ``table`` that one
    of ``members`` holds; ``by_column`` is the table's incidence as CSC, converted once by the
    caller."""
    columns = distinct(held_by(table.incidence, members)[1])
    return distinct(held_by(by_column, columns)[1]).astype(np.int64)


def _class_means(table: KindTable, members: np.ndarray) -> np.ndarray:
    """Per BiCM column class, the expected number of ``members`` holding one token of the class."""
    classes = table.entity_class[members]
    classes = classes[classes >= 0]
    if classes.size == 0:
        return np.zeros(len(table.model.y))
    cls, mult = np.unique(classes, return_counts=True)
    p = table.model.link_probability(cls, np.arange(len(table.model.y)))
    return (mult[:, None] * p).sum(axis=0)


#: the Chernoff parameters tried (any one gives a valid bound; the grid takes the best of them)
_CHERNOFF_S = np.geomspace(1e-3, 60.0, 80)
#: a coarse subset of the grid, both ends included: where the exponent is smallest on it brackets
#: where it is smallest on the whole grid, and its values bound that minimum from below
_COARSE = np.unique(np.r_[np.arange(0, _CHERNOFF_S.size, 8), _CHERNOFF_S.size - 1])
#: the grid points between two coarse points two apart
_BRACKET = int(np.diff(_COARSE).max()) * 2 + 1
#: working size of one batch of tail bounds (blocks x grid points x classes)
_BATCH_CELLS = 4_000_000


def excess_tail(observed: int, mu: np.ndarray, weights: np.ndarray) -> float:
    """Upper bound of P(S >= observed) for S = sum of independent (N_t - 1)+, N_t ~ Poisson(mu_t),
    with ``weights[j]`` tokens of mean ``mu[j]``: the Chernoff bound
    ``min_s exp(sum_t K_t(s) - s * observed)`` over a fixed grid of ``s``, with the closed-form
    log-MGF ``K(s) = log(e^-mu (1 + mu) + e^(-s-mu) (e^(mu e^s) - 1 - mu e^s))``."""
    log_bound = excess_log_tails(np.asarray([observed]), np.asarray(mu, dtype=float)[None, :],
                                 np.asarray(weights, dtype=float))
    return float(min(1.0, np.exp(log_bound[0])))


def excess_log_tails(observed: np.ndarray, mu: np.ndarray, weights: np.ndarray, at_most: float = 0.0
                     ) -> np.ndarray:
    """:func:`excess_tail`'s log bound for many blocks at once (``mu`` one row per block); 0 (p = 1)
    where nothing was observed or the null allows nothing, and where the bound is shown to stay
    above ``at_most`` (then it is not computed).

    The exponent ``f(s) = sum_t w_t K_t(s) - s * observed`` is convex in ``s`` (a log-MGF). It is
    evaluated on a coarse subset of the grid first: its smallest value there lies two coarse points
    from the grid's minimum at most, so the minimum is found on that bracket alone; and the coarse
    values bound the minimum from below (:func:`convex_floor`), so a block that cannot reach
    ``at_most`` costs only the coarse points."""
    out = np.zeros(observed.size)
    mu, weights = mu[:, weights > 0], weights[weights > 0]  # classes without tokens add nothing
    counted = mu > 0
    live = np.flatnonzero((observed > 0) & counted.any(axis=1))
    coarse_s = _CHERNOFF_S[_COARSE]
    step = max(1, _BATCH_CELLS // max(1, _BRACKET * mu.shape[1]))
    for lo in range(0, live.size, step):
        rows = live[lo:lo + step]
        o, m, c = observed[rows], mu[rows], counted[rows]
        coarse = _log_bound_curve(o, m, weights, c, np.broadcast_to(coarse_s, (rows.size, coarse_s.size)))
        go = np.ones(rows.size, dtype=bool)
        if at_most < 0:
            go = convex_floor(coarse, coarse_s) <= at_most + 1e-6
        blind = np.isnan(coarse).all(axis=1)  # nothing to bracket by: the whole grid
        best = np.zeros(rows.size)
        near = go & ~blind
        if near.any():
            j = np.nanargmin(coarse[near], axis=1)
            first = np.minimum(_COARSE[np.maximum(j - 1, 0)], _CHERNOFF_S.size - _BRACKET)
            grid = _CHERNOFF_S[first[:, None] + np.arange(_BRACKET)[None, :]]
            fine = _log_bound_curve(o[near], m[near], weights, c[near], grid)
            best[near] = np.fmin(np.nanmin(fine, axis=1), np.nanmin(coarse[near], axis=1))
        whole = go & blind
        if whole.any():
            grid = np.broadcast_to(_CHERNOFF_S, (int(whole.sum()), _CHERNOFF_S.size))
            best[whole] = np.nanmin(_log_bound_curve(o[whole], m[whole], weights, c[whole], grid), axis=1)
        out[rows] = np.minimum(0.0, np.nan_to_num(best, nan=0.0))
    return out


def _log_bound_curve(observed: np.ndarray, mu: np.ndarray, weights: np.ndarray, counted: np.ndarray,
                     grid: np.ndarray) -> np.ndarray:
    """``sum_t w_t K_t(s) - s * observed`` per block (rows) at each ``s`` of its row of ``grid``.

    ``K(s) = -mu + log1p(mu + e^-s (e^z - 1 - z))`` with ``z = mu e^s``; for large ``z``, where
    ``e^z`` overflows, the same as ``-mu + z - s + log1p((e^s - 1) e^-z)``. A class with ``mu`` = 0
    adds exactly 0 (``counted`` only says which do not)."""
    del counted  # K(s) = 0 at mu = 0: no mask needed
    s = grid[:, :, None]
    m = mu[:, None, :]
    es = np.exp(s)
    z = m * es
    big = z > 30.0
    with np.errstate(over="ignore", invalid="ignore"):
        clipped = np.minimum(z, 30.0)
        # e^z - 1 - z, by its series where the difference would cancel
        excess = np.where(z < 1e-4, z * z * (0.5 + z / 6.0), np.expm1(clipped) - clipped)
        k = np.log1p(m + excess / es) - m
    if big.any():
        zb, sb = z[big], np.broadcast_to(s, z.shape)[big]
        k[big] = np.broadcast_to(-m, z.shape)[big] + zb - sb + np.log1p(np.expm1(sb) * np.exp(-zb))
    return k @ weights - grid * observed[:, None]


def convex_floor(values: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per row, a lower bound of a convex function's minimum over ``[s[0], s[-1]]`` from its
    ``values`` at the points ``s``: on each interval between two points the function lies above
    the secant lines of the neighbouring intervals, extended, and the smallest value those lines
    allow on the interval bounds it there. -inf where a value is NaN or with fewer than 3 points."""
    floor = np.full(values.shape[0], np.inf)
    if s.size < 3:
        return np.full(values.shape[0], -np.inf)
    slope = np.diff(values, axis=1) / np.diff(s)[None, :]
    for j in range(s.size - 1):
        a, b = s[j], s[j + 1]
        lines = []
        if j >= 1:  # the secant of the interval to the left, extended rightwards
            lines.append((values[:, j], slope[:, j - 1], a))
        if j + 2 <= s.size - 1:  # the secant of the interval to the right, extended leftwards
            lines.append((values[:, j + 1], slope[:, j + 1], b))
        at = [np.maximum.reduce([v + d * (x - x0) for v, d, x0 in lines]) for x in (a, b)]
        low = np.minimum(at[0], at[1])
        if len(lines) == 2:
            # where the lines cross inside the interval their maximum is smallest there
            (v1, d1, x1), (v2, d2, x2) = lines
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                cross = (v2 - v1 + d1 * x1 - d2 * x2) / (d1 - d2)
                slack = 1e-9 * (b - a)
                inside = np.isfinite(cross) & (cross >= a - slack) & (cross <= b + slack)
                cross = np.clip(np.where(inside, cross, a), a, b)
                # their common value there, read off the shallower line (a rounding error in the
                # crossing moves it by that line's slope only)
                shallow = np.where(np.abs(d1) <= np.abs(d2), v1 + d1 * (cross - x1), v2 + d2 * (cross - x2))
            low = np.where(inside, np.minimum(low, shallow), low)
        floor = np.minimum(floor, low)
    return np.where(np.isnan(floor) | np.isnan(values).any(axis=1), -np.inf, floor)


def poisson_chernoff(observed: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Chernoff bound of P(X >= observed) for X dominated in convex order by a Poisson(mean):
    ``e^-mean (e mean / observed)^observed`` above the mean, 1 below (the Poisson tail itself is
    not a bound for a sum of Bernoullis below the mean; this is)."""
    observed = np.asarray(observed, dtype=float)
    mean = np.maximum(np.asarray(mean, dtype=float), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_bound = observed - mean - observed * np.log(np.maximum(observed, 1e-300) / mean)
    return np.where(observed > mean, np.minimum(1.0, np.exp(np.minimum(log_bound, 0.0))), 1.0)


def block_tests(tables: list[KindTable], min_holders: int = 3, inflation: float = 1.0, alpha: float = 1.0,
                single: bool = False) -> tuple[list[Block], int]:
    """Every seed token's block tested on every other family; returns (blocks, looks).

    With ``single``, a seed whose block is not surprising in two families beyond the seed but is
    in one also gives a block (``beyond_seed`` = 1): its statistic is the smallest family p-value,
    corrected as the second smallest is (families x seeds). That is co-location (an office's staff
    share its address and its software), never evidence alone; the verdicts test such a block on
    the behaviour neither family sets, and only where its seed is a place: a population's token
    (POPULATIONS) or a seed over its kind's rare cut gives none (its holders differ from everyone
    else in composition, so their behaviour is no evidence about a group).

    The blocks whose corrected p-value reaches ``alpha`` are returned (all of them with
    ``alpha`` = 1); the verdicts decide which are significant at the level the policy's error
    budget sets. ``inflation`` multiplies every token's null mean: the tests then ask for more
    co-holding than ``inflation`` times what BiCM expects, a margin for structure the null does not
    model (daily rhythm, time zones, regions).

    The seeds are tested together, kind by kind: the blocks' overlaps are one sparse product and
    their null means one matrix product. A kind's bound is computed on the full Chernoff grid only
    where a lower bound of it (:func:`excess_log_tail_floor`) can still reach the level a kind
    must reach for its block to reach ``alpha``; elsewhere the block cannot be returned, so the
    result equals testing every seed on every kind one by one.
    """
    families = sorted({t.family for t in tables})
    # a holder set seeded twice in one family (an IP and its /24 held by the same accounts) is one
    # test, kept under the seed that sorts first; seeded from two families it is two tests, since
    # each tests the families beyond its own
    unique: dict[tuple[str, tuple[int, ...]], tuple[str, str]] = {}
    for table in tables:
        for matrix, names in ((table.incidence.tocsc(), table.tokens),
                              (table.seeds_above_cut, table.seed_tokens_above_cut)):
            degrees = np.diff(matrix.indptr)
            for column in np.flatnonzero(degrees >= min_holders):
                members = tuple(np.sort(matrix.indices[matrix.indptr[column]:matrix.indptr[column + 1]]).tolist())
                unique.setdefault((table.family, members), (table.kind, names[column]))
    looks = len(unique)
    if not looks:
        return [], 0
    seeds = sorted(unique)
    by_kind = {t.kind: t for t in tables}
    seed_family = np.asarray([by_kind[unique[k][0]].family for k in seeds])
    sizes = np.fromiter((len(k[1]) for k in seeds), dtype=np.int64, count=looks)
    membership = sparse.csr_matrix((np.ones(int(sizes.sum())), np.concatenate([np.asarray(k[1]) for k in seeds]),
                                    np.r_[0, np.cumsum(sizes)]), shape=(looks, tables[0].incidence.shape[0]))
    kinds_of = {f: sorted(t.kind for t in tables if t.family == f) for f in families}
    # per family, per seed: (p corrected for the family's kinds, the kind that gave it)
    family_p = {f: np.full(looks, np.nan) for f in families}
    family_kind = {f: np.full(looks, "", dtype=object) for f in families}
    for family in families:
        # the level a kind's p must reach for its block to reach alpha (no pruning at alpha = 1)
        level = alpha / (len(kinds_of[family]) * max(1, len(families) - 1) * looks) if alpha < 1 else np.inf
        for kind in kinds_of[family]:
            p = _kind_p_values(by_kind[kind], membership, np.flatnonzero(seed_family != family), inflation, level)
            # kinds in name order: a tie keeps the first
            better = ~np.isnan(p) & (np.isnan(family_p[family]) | (p < family_p[family]))
            family_p[family] = np.where(better, p, family_p[family])
            family_kind[family] = np.where(better, kind, family_kind[family])
    out: list[Block] = []
    for i, key in enumerate(seeds):
        seed_kind, seed_token = unique[key]
        others = [f for f in families if f != seed_family[i]]
        tested = sorted((float(nulls.bonferroni(family_p[f][i], len(kinds_of[f]))), f) for f in others
                        if family_kind[f][i])
        if not tested:
            continue
        members = np.asarray(key[1], dtype=np.int64)
        # co-location makes one family depend on the seed (an office's schedule, a campus's
        # software): the block must be surprising in two families beyond the seed, so its
        # statistic is the second smallest p-value, which one dependent family cannot move
        corrected = float(nulls.bonferroni(tested[1][0], len(others) * looks)) if len(tested) > 1 else np.inf
        if corrected > alpha:
            p1, f1 = tested[0]
            once = float(nulls.bonferroni(p1, len(others) * looks))
            if single and once <= alpha and seed_kind not in POPULATIONS \
                    and members.size <= by_kind[seed_kind].rare_max_degree:
                w1, e1, ties1 = _family_detail([by_kind[k] for k in kinds_of[f1]], family_kind[f1][i], members,
                                               inflation, exclusive=True)
                tied = sorted(ties1)
                # a member's tie, times the families the one was chosen among
                member_p = tuple(min(1.0, ties1[e] * len(others)) for e in tied)
                out.append(Block(seed_kind, seed_token, int(members.size), f1, w1, e1, p1, once, tuple(tied),
                                 (family_kind[f1][i],), member_p, tuple(int(m) for m in members),
                                 most_shared(by_kind[family_kind[f1][i]], members), beyond_seed=1))
            continue
        (p1, f1), (p2, f2) = tested[0], tested[1]
        (w1, e1, ties1), (w2, e2, ties2) = (_family_detail([by_kind[k] for k in kinds_of[f]], family_kind[f][i],
                                                           members, inflation) for f in (f1, f2))
        # a member is tied in one of the two families: the smaller of its two p-values, times the
        # two and the pairs of families the two were chosen among
        pairs = len(others) * (len(others) - 1) / 2
        tied = sorted(set(ties1) | set(ties2))
        member_p = tuple(min(1.0, min(ties1.get(e, 1.0), ties2.get(e, 1.0)) * 2 * pairs) for e in tied)
        out.append(Block(seed_kind, seed_token, int(members.size), f"{f1}+{f2}", w1 + w2, e1 + e2, p2, corrected,
                         tuple(tied), (family_kind[f1][i], family_kind[f2][i]), member_p,
                         tuple(int(m) for m in members),
                         tuple(x for f in (f1, f2) for x in most_shared(by_kind[family_kind[f][i]], members))))
    out.sort(key=lambda b: (b.p_value, b.seed_kind, b.seed_token))
    return out, looks


def _kind_p_values(table: KindTable, membership: sparse.csr_matrix, rows: np.ndarray, inflation: float,
                   level: float) -> np.ndarray:
    """Per seed (rows of ``membership``), the kind's p-value inside its block: twice the smaller of
    the Chernoff bound of the excess holders of the kind's rare tokens and the most shared single
    token's tail (:func:`top_token_tails`); NaN (not tested) for the seeds not in ``rows`` and
    where nothing is in excess; 1 where a lower bound shows the p-value cannot reach ``level``.

    Kinds of one family are nested or dependent (an IP lies in its /24; a prompt scaffold comes with
    its system prompt), so their counts are never summed into one statistic that assumes them
    independent: each kind is tested alone and the family keeps the smallest p-value times the
    number of its kinds (valid under any dependence)."""
    p = np.full(membership.shape[0], np.nan)
    if not rows.size or not table.incidence.nnz:
        return p
    sub = membership[rows]
    counts = (sub @ table.incidence.astype(np.float64)).tocsr()
    excess = np.asarray(counts.sum(axis=1)).ravel() - np.diff(counts.indptr)
    keep = excess > 0
    rows, sub, excess, counts = rows[keep], sub[keep], excess[keep], counts[keep]
    if not rows.size:
        return p
    mu = class_means_of(table, sub) * inflation
    # two statistics, each its own bound, the kind's p-value twice the smaller: the sum bound is
    # needed only where it can reach half the level
    at_most = float(np.log(level / 2)) if level < 1 else 0.0
    summed = np.exp(excess_log_tails(excess, mu, table.rare_class_counts, at_most))
    p[rows] = np.minimum(1.0, 2 * np.minimum(summed, top_token_tails(table, counts, mu)))
    return p


def top_token_tails(table: KindTable, counts: sparse.csr_matrix, mu: np.ndarray) -> np.ndarray:
    """Per block (row of ``counts``: its holders of each rare token; ``mu``: its class means), the
    tail of its most surprising single token, ``min_t P(N_t >= c_t)`` bounded by the Poisson
    Chernoff bound of each token's count, times the kind's rare tokens (Bonferroni over every token
    the block could have shared). The excess-holder sum adds every token's chance sharing: in a
    kind with a few widely held tokens (an SDK's client string held by a third of the entities)
    their expected excess hides one string that all of a block's members hold and few others do."""
    out = np.ones(counts.shape[0])
    counts = counts.tocoo()
    shared = counts.data >= 2
    if not shared.any():
        return out
    rows, cols, held = counts.row[shared], counts.col[shared], counts.data[shared]
    tails = poisson_chernoff(held, mu[rows, table.column_class[cols]])
    np.minimum.at(out, rows, tails)
    return np.minimum(1.0, out * table.incidence.shape[1])


def class_means_of(table: KindTable, membership: sparse.csr_matrix) -> np.ndarray:
    """:func:`_class_means` for every block (row of ``membership``) at once."""
    has = np.flatnonzero(table.entity_class >= 0)
    n_rows = len(table.model.x)
    if not has.size or not n_rows:
        return np.zeros((membership.shape[0], len(table.model.y)))
    onehot = sparse.csr_matrix((np.ones(has.size), (has, table.entity_class[has])),
                               shape=(membership.shape[1], n_rows))
    per_class = (membership @ onehot).toarray()
    p = table.model.link_probability(np.arange(n_rows), np.arange(len(table.model.y)))
    return per_class @ p


def _family_detail(tables: list[KindTable], kind: str, members: np.ndarray, inflation: float,
                   exclusive: bool = False) -> tuple[int, float, dict[int, float]]:
    """:func:`_kind_detail` of the family's kind ``kind`` (the one that gave the family its p-value),
    with each member's tie the smallest over every kind of the family (each corrected for the
    family's kinds, populations left out unless theirs is ``kind``): a member tied by its address
    is tied in the network family, whichever of the family's kinds made the block surprising."""
    excess, expected, ties = _kind_detail(next(t for t in tables if t.kind == kind), members, inflation,
                                          len(tables), exclusive)
    for table in tables:
        # a population's token (an autonomous system, a client string) ties its many unrelated
        # holders: it ties members only where it made the block surprising itself
        if table.kind != kind and table.kind not in POPULATIONS:
            for e, q in _kind_detail(table, members, inflation, len(tables), exclusive)[2].items():
                ties[e] = min(q, ties.get(e, 1.0))
    return excess, expected, ties


def _kind_detail(table: KindTable, members: np.ndarray, inflation: float, n_kinds: int, exclusive: bool = False
                 ) -> tuple[int, float, dict[int, float]]:
    """(excess holders S, E[S] under BiCM, each tied member's p-value corrected for the family's
    kinds) of one kind inside a block, for the report of a block that reached its level. With
    ``exclusive``, a member is tied only by tokens more than half of whose holders are in the block."""
    excess, mu, _ = shared_inside(table, members)
    expected = float((table.rare_class_counts * (mu - 1 + np.exp(-mu))).sum())
    ties = {e: min(1.0, q * n_kinds) for e, q in member_ties(table, members, mu * inflation, exclusive).items()}
    return excess, expected, ties


def most_shared(table: KindTable, members: np.ndarray, count: int = 3) -> tuple[str, ...]:
    """The ``count`` rare tokens of ``table`` held by the most of ``members`` (ties by name): what a
    reader checks first."""
    _, cols = held_by(table.incidence, members)
    if cols.size == 0:
        return ()
    uniq, held = np.unique(cols, return_counts=True)
    # only tokens at least two members hold, and of those only the ones whose count could rank
    # among the first ``count``, are sorted by (count, name): a campaign's block holds millions
    keep = held >= 2
    uniq, held = uniq[keep], held[keep]
    if held.size > count:
        near_top = held >= np.partition(held, held.size - count)[held.size - count]
        uniq, held = uniq[near_top], held[near_top]
    order = sorted(zip((-held).tolist(), (table.tokens[c] for c in uniq.tolist())))
    return tuple(f"{table.kind} {name!r} ({-h})" for h, name in order[:count])


def ties_to(table: KindTable, entities: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per entity of ``entities`` holding a rare token that another entity of ``core`` holds: the
    p-value of its tie to ``core``, as :func:`member_ties` (co-holders in ``core`` summed over its
    tokens, bounded by a Poisson of the summed class means over ``core``). Returns the entities
    (ascending) and their p-values."""
    rows, cols = held_by(table.incidence, entities)
    if cols.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # over the links of ``entities`` and ``core`` only (no array of all entities or tokens): it
    # runs once per cohort and kind
    same = entities.shape == core.shape and bool(np.array_equal(entities, core))
    core_cols = cols if same else held_by(table.incidence, core)[1]
    tokens, counts = np.unique(core_cols, return_counts=True)
    at = np.minimum(np.searchsorted(tokens, cols), max(tokens.size - 1, 0))
    holders = np.where(tokens[at] == cols, counts[at], 0) if tokens.size else np.zeros_like(cols)
    others = holders - (1 if same else np.isin(rows, core))
    mu = _class_means(table, core)
    entity, at = np.unique(rows, return_inverse=True)
    ties = np.bincount(at, weights=others.astype(float), minlength=entity.size)
    expected = np.bincount(at, weights=mu[table.column_class[cols]], minlength=entity.size)
    p = poisson_chernoff(ties, expected)
    tied = ties > 0
    return entity[tied].astype(np.int64), p[tied]


def member_ties(table: KindTable, members: np.ndarray, mu: np.ndarray, exclusive: bool = False) -> dict[int, float]:
    """Per member holding a token shared inside the block: the p-value of its own tie.

    ``T_a`` = the co-holders inside the block summed over the member's rare tokens. Given the
    member's tokens, the other members' count on each is bounded (in convex order) by a Poisson of
    the token class's mean over the block (``mu``, which counts the member too: only conservative),
    so ``T_a`` is bounded by a Poisson of the summed means, whose tail is the p-value. A block
    mixing a campaign with bystanders (a cloud ASN, a campus) flags only the members each tied on
    their own; more co-holders on a member's tokens never raise its p-value.

    With ``exclusive``, only the members holding a token that another member holds and more than
    half of whose holders are in the block (what the block holds: its own infrastructure, not a
    campus's network or a public tool's prompt; a campaign's card that one of its accounts outside
    the block also pays with is still its own) are returned, each with the same p-value: it only
    removes members."""
    rows, cols = held_by(table.incidence, members)
    if cols.size == 0:
        return {}
    private_holders = None
    if exclusive:
        degree = table.token_degree
        uniq, counts = np.unique(cols, return_counts=True)
        private = uniq[(2 * counts > degree[uniq]) & (counts >= 2)]
        private_holders = set(distinct(rows[np.isin(cols, private)]).tolist())
    uniq, inverse, counts = np.unique(cols, return_inverse=True, return_counts=True)
    others = counts[inverse] - 1
    entity, at = np.unique(rows, return_inverse=True)
    ties = np.bincount(at, weights=others.astype(float), minlength=entity.size)
    expected = np.bincount(at, weights=mu[table.column_class[cols]], minlength=entity.size)
    p = poisson_chernoff(ties, expected)
    return {int(e): float(q) for e, q, t in zip(entity, p, ties)
            if t > 0 and (private_holders is None or int(e) in private_holders)}
