"""Pair tests: which two entities share more rare tokens than the null allows, with the FDR over all pairs.

Blocks and cohorts decide actions; pairs decide *who belongs together*. Two entities that hold
``s`` rare tokens of one kind in common are compared with what BiCM (nulls.py) expects two
entities of their degrees to share, ``mu = sum_t P(a holds t) P(b holds t)``: it depends only on
the two degree classes, so one matrix per kind (``Bicm.expected_overlap`` over the rare tokens)
gives every pair's mean. Under BiCM the shared count is a sum of independent Bernoullis, which a
Poisson of the same mean dominates in convex order (Hoeffding 1956), so the Poisson tail
``P(Poisson(mu) >= s)`` is a valid, slightly conservative p-value (the normal approximation is
anti-conservative by orders of magnitude in this tail).

Kinds of one family are not independent (an IP, its /24, its ASN are nested): a family's p-value
is its best kind's times the number of its kinds. A pair's p-value is its best family's times the
number of families (Bonferroni: valid under any dependence; the Cauchy combination would be
dominated by the many families a pair does not share, whose p-values are 1). The false discovery
rate is controlled by Benjamini-Hochberg over *all* ``N (N - 1) / 2`` pairs, untested pairs
counted at p = 1: counting only the candidates would validate chance edges by the thousand.

Candidates are the pairs that share at least one rare token (an inverted index: the sparse
product of the entity x token table with itself); rarity is set by the kind's pair budget
(blocks.rare_cut), so the candidates never exceed it. A validated edge says two entities are
co-located beyond chance, not that they are a campaign: a campus or an office is genuinely
surprising under this null. Edges therefore only group findings under one campaign id; they
never raise an action (verdicts.Evidence.by_account).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from distillguard.detect import nulls
from distillguard.detect.blocks import KindTable, class_means_of


@dataclass(frozen=True)
class PairEdge:
    """A validated pair: two entities (``a < b``) and the family that ties them."""

    a: int
    b: int
    family: str
    kind: str
    shared: int  # rare tokens of ``kind`` both hold
    expected: float  # what BiCM expects two entities of their degrees to share
    p_value: float  # the pair's p-value: best family's, x kinds of the family x families
    q_value: float  # Benjamini-Hochberg over all N (N - 1) / 2 pairs

    def reason(self) -> str:
        return (f"pair: shares {self.shared} rare {self.kind} tokens with another entity of the group, "
                f"{self.expected:.3g} expected under BiCM, p={self.p_value:.3g}, q={self.q_value:.3g} "
                f"(Benjamini-Hochberg over all pairs)")


def pair_tests(tables: list[KindTable], n_entities: int, q: float) -> tuple[list[PairEdge], int]:
    """The pairs whose q-value is at most ``q``, and the number of candidate (pair, kind) tests.

    Deterministic: pairs are visited in (a, b) order and ties between families go to the
    alphabetically first, so neither input order nor entity names matter beyond their indices."""
    total = n_entities * (n_entities - 1) // 2
    ordered = sorted((t for t in tables if t.incidence.shape[1]), key=lambda t: (t.family, t.kind))
    if total == 0 or not ordered:
        return [], 0
    families = sorted({t.family for t in tables})
    kinds_in = {f: sum(1 for t in tables if t.family == f) for f in families}
    # Benjamini-Hochberg over ``total`` pairs validates nothing above q x m / total (m: the pairs
    # tested, at most every kind's candidates), and q-values up to q depend only on the pairs
    # below that line: the rest are dropped before the pairs are ranked
    candidates = [_shared_counts(t.incidence) for t in ordered]
    tested = sum(c[0].size for c in candidates)
    line = q * tested / total
    parts = []
    for number, (table, (a, b, shared)) in enumerate(zip(ordered, candidates)):
        # BiCM's classes are degrees, so a class is rare or not as a whole: the rare tokens' overlap
        mu = table.model.expected_overlap(table.rare_class_counts > 0)[table.entity_class[a], table.entity_class[b]]
        p = np.minimum(1.0, nulls.poisson_sf(shared, mu) * kinds_in[table.family] * len(families))
        keep = p <= line
        parts.append((a[keep], b[keep], p[keep], np.full(int(keep.sum()), number), shared[keep], mu[keep]))
    if not parts:
        return [], tested
    a, b, p, which, shared, mu = (np.concatenate(c) for c in zip(*parts))
    # per pair its smallest p-value (ties: the first kind in family, kind order)
    order = np.lexsort((which, p, b, a))
    a, b, p, which, shared, mu = a[order], b[order], p[order], which[order], shared[order], mu[order]
    first = np.ones(a.size, dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, p, which, shared, mu = a[first], b[first], p[first], which[first], shared[first], mu[first]
    q_values = nulls.benjamini_hochberg(p, total)
    keep = np.flatnonzero(q_values <= q)
    return [PairEdge(int(a[i]), int(b[i]), ordered[which[i]].family, ordered[which[i]].kind, int(shared[i]),
                     float(mu[i]), float(p[i]), float(q_values[i])) for i in keep], tested


def _shared_counts(incidence: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, shared) for every pair a < b holding at least one common column."""
    m = incidence.astype(np.int32)
    product = sparse.triu(m @ m.T, k=1).tocoo()
    return product.row.astype(np.int64), product.col.astype(np.int64), product.data.astype(np.int64)


@dataclass(frozen=True)
class GroupTie:
    """Two groups of findings that share more rare tokens than independent groups would: one
    operation, one campaign id. ``a`` and ``b`` are each group's first entity."""

    a: int
    b: int
    family: str
    kind: str
    shared: int  # rare tokens of ``kind`` held by a member of each group
    expected: float  # under BiCM, the groups drawn independently
    p_value: float  # the best kind's Poisson tail x kinds of its family x families
    p_corrected: float  # x the pairs of groups looked at

    def reason(self) -> str:
        return (f"group tie: members of this group and of another share {self.shared} rare {self.kind} tokens, "
                f"{self.expected:.3g} expected under BiCM for independent groups of their sizes, "
                f"p={self.p_value:.3g}, corrected for the pairs of groups p={self.p_corrected:.3g}")


def group_ties(tables: list[KindTable], groups: list[list[int]], alpha: float) -> list[GroupTie]:
    """Pairs of disjoint entity groups (the findings' groups) tied at corrected level ``alpha``.

    Per kind, ``S`` = the rare tokens held by some member of each group. Under BiCM the groups'
    links are independent, a token is held in group ``g`` with probability at most
    ``1 - exp(-mu_gt)`` (``mu_gt`` its expected holders there: a Poisson bound), so ``S`` is a sum
    of independent Bernoullis with mean at most ``sum_t q_at q_bt``, whose Poisson tail bounds its
    tail (Hoeffding 1956). Families and looks as for pairs: the best kind x its family's kinds x
    families, then x the pairs of groups (Bonferroni). Groups tie when campaigns split into cells
    (one card each) still share their proxies or prompts; nothing here raises an action."""
    if len(groups) < 2 or not tables:
        return []
    families = sorted({t.family for t in tables})
    kinds_in = {f: sum(1 for t in tables if t.family == f) for f in families}
    n = tables[0].incidence.shape[0]
    sizes = [len(g) for g in groups]
    membership = sparse.csr_matrix((np.ones(sum(sizes)), np.concatenate([np.asarray(g) for g in groups]),
                                    np.r_[0, np.cumsum(sizes)]), shape=(len(groups), n))
    looks = len(groups) * (len(groups) - 1) / 2
    best: dict[tuple[int, int], tuple[float, str, str, int, float]] = {}
    for table in sorted((t for t in tables if t.incidence.shape[1]), key=lambda t: (t.family, t.kind)):
        held = (membership @ table.incidence.astype(np.float64)) > 0
        shared = (held.astype(np.float64) @ held.T.astype(np.float64)).toarray()
        q = -np.expm1(-class_means_of(table, membership))  # groups x column classes
        expected = (q * table.rare_class_counts[None, :]) @ q.T
        i, j = np.triu_indices(len(groups), k=1)
        s, mu = shared[i, j], expected[i, j]
        p = np.minimum(1.0, nulls.poisson_sf(s, mu) * kinds_in[table.family] * len(families))
        for k in np.flatnonzero(s > 0):
            key = (int(i[k]), int(j[k]))
            candidate = (float(p[k]), table.family, table.kind, int(s[k]), float(mu[k]))
            if key not in best or candidate[:3] < best[key][:3]:
                best[key] = candidate
    out = []
    for (gi, gj), (p, family, kind, s, mu) in sorted(best.items()):
        corrected = float(nulls.bonferroni(p, looks))
        if corrected <= alpha:
            out.append(GroupTie(min(groups[gi]), min(groups[gj]), family, kind, s, mu, p, corrected))
    return out

