"""Account linkage: evidence edges between accounts that claim to be unrelated customers.

Each evidence type is a *shared key* (a card, a subnet, a rare IP or user agent, a sign-up
burst, a prompt scaffold n-gram, a session-start time slot). Accounts holding the same key are
linked, with a weight that falls with the number of accounts holding it (inverse document
frequency), so a university NAT shared by 300 students links each pair far more weakly than a
card shared by 12 accounts. Accounts in the same declared organization are one customer and are
never linked to each other: a campaign is precisely accounts that hide that they are one.

Pairs are generated without a quadratic blow-up: a key held by at most ``clique_max`` accounts
links all its pairs; a larger key links each holder to its next ``ring_degree`` holders in a
fixed pseudo-random order (a ring lattice), which keeps the group connected with O(n) edges.
Keys held by more than ``max_share`` of all accounts carry no information and are dropped.

References: SynchroTrap (Cao et al., CCS 2014) for synchronized-activity keys; shared-resource
linkage as in Fakebook/sybil detection literature; MinHash/LSH intuition (Broder 1997) for
scaffold n-grams.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from distillguard.detect import evidence
from distillguard.detect.evidence import LINKED as EVIDENCE
from distillguard.detect.policy import Linkage
from distillguard.store.engine import exact_sum

#: the linkage tunables: the policy's ``linkage`` section (policy.Linkage)
LinkageParams = Linkage


def account_keys(ex: ir.Table, ips: ir.Table, scaffold: ir.Table, params: LinkageParams,
                 events: ir.Table | None = None) -> ir.Table:
    """(account_id, kind, key) for every linked evidence kind (evidence.LINKED), distinct.

    ``ex`` is features.with_seconds; ``ips`` is features.label_ips (each account's addresses);
    ``scaffold`` (account_id, key) holds each account's habitual scaffold n-grams; ``events``
    the account events in the window (features.account_events), whose cards, sign-up addresses,
    user agents and bursts count as the exchanges' do.
    """
    src = evidence.Sources(ex, ips, scaffold, params, events=events)
    parts = [k.extractor(src) for name, k in EVIDENCE.items() if name not in params.exclude]
    return ibis.union(*parts, distinct=True)


def weighted_keys(keys: ir.Table) -> ir.Table:
    """Every key with its holder count and idf = 1 / log2(1 + holders)."""
    counts = keys.group_by(["kind", "key"]).aggregate(holders=keys.account_id.nunique())
    held = keys.join(counts, ["kind", "key"])
    return held.mutate(idf=1.0 / (1 + held.holders.cast("float64")).log2())


def informative_keys(weighted: ir.Table, n_accounts: int, params: LinkageParams) -> ir.Table:
    """Keys held by at least two accounts and not by (almost) everyone.

    Session-start slots are capped much lower (``sync_max_holders``): synchrony is evidence
    only in slots that are quiet for the population, as in SynchroTrap, where co-activity is
    counted per rare (action, time) bucket. In a large population most 5-minute slots are
    crowded, so this kind links fewer pairs as traffic grows; the other kinds carry the load.
    """
    limit = max(params.max_accounts_floor, int(params.max_share * n_accounts))
    habitual = max(params.max_accounts_floor, int(params.habitual_max_share * n_accounts))
    by_cap = {cap: [n for n, k in EVIDENCE.items() if k.cap == cap] for cap in ("habitual", "slot")}
    cap = ibis.cases((weighted.kind.isin(by_cap["habitual"]), habitual),
                     (weighted.kind.isin(by_cap["slot"]), params.sync_max_holders), else_=limit)
    return weighted.filter((weighted.holders >= 2) & (weighted.holders <= cap))


def ranked(held: ir.Table, organizations: ir.Table) -> ir.Table:
    """:func:`informative_keys` made ready for :func:`pair_edges`; materialise the result.

    Each row gets its holder's ``rank`` within the key, for the ring lattice (holders ordered
    by the account's ``order_key`` where ``organizations`` carries one, else by md5(account):
    the same on every engine, unrelated to how ids are assigned, and the same order in every
    key, so that accounts sharing many large keys (a cell on one proxy pool) are ring
    neighbours in each of them and their pair accumulates the evidence of all those keys, as a
    clique would; an order per key scatters it over pairs that each share one key and fall
    below ``min_pair_weight``. The scan's order key is a digest of each account's activity
    (features.activity_digest), so that renaming the accounts links the same pairs); the
    holder's idf-weighted ``norm`` over its keys of that kind (the cosine denominator); and
    its declared ``organization_id``. Carrying these on the rows keeps pair_edges free of
    joins against per-account tables, whose order a query planner can get badly wrong.
    """
    norms = held.group_by(["account_id", "kind"]).aggregate(norm=exact_sum(held.idf * held.idf).sqrt())
    rows = held.join(norms, ["account_id", "kind"]).left_join(organizations, "account_id")
    rows = rows.drop([c for c in rows.columns if c.endswith("_right")])
    order = rows.order_key if "order_key" in rows.columns else rows.account_id.hexdigest("md5")
    rows = rows.mutate(rank=ibis.row_number().over(ibis.window(
        group_by=[rows.kind, rows.key], order_by=[order, rows.account_id])))
    return rows.drop("order_key") if "order_key" in rows.columns else rows


def pair_edges(held: ir.Table, params: LinkageParams) -> ir.Table:
    """Account-pair edges: a < b, weight, and per kind the shared-key count and similarity.

    Per kind, similarity is the cosine of the two accounts' idf-weighted key sets: sharing a
    few rare keys out of few counts a lot, sharing some common keys out of many (two heavy
    users who happen to be active in the same slots) counts little. The pair weight is the
    evidence-weighted sum of the similarities. ``held`` is :func:`ranked`. Accounts of one
    declared organization are one customer and are not paired.
    """
    kinds = list(EVIDENCE)
    left = held.select("kind", "key", "holders", "idf", a="account_id", rank_a="rank", norm_a="norm",
                       org_a="organization_id")
    right = held.select("kind", "key", b="account_id", rank_b="rank", norm_b="norm", org_b="organization_id")
    # (rank_b - rank_a) > 0 rather than rank_a < rank_b: not a range predicate, so the planner
    # keeps the equality hash join instead of an inequality join over all holders
    clique = left.filter(left.holders <= params.clique_max).join(
        right, [left.kind == right.kind, left.key == right.key, (right.rank_b - left.rank_a) > 0])
    parts = [clique]
    big = left.filter(left.holders > params.clique_max)
    for d in range(1, params.ring_degree + 1):
        ring = big.mutate(target=((big.rank_a - 1 + d) % big.holders) + 1)
        parts.append(ring.join(right, [ring.kind == right.kind, ring.key == right.key,
                                       ring.target == right.rank_b]))
    columns = ["kind", "idf", "a", "b", "norm_a", "norm_b", "org_a", "org_b"]
    pairs = ibis.union(*(p.select(*columns) for p in parts), distinct=False)
    pairs = pairs.filter((pairs.a != pairs.b)
                         & (pairs.org_a.isnull() | pairs.org_b.isnull() | (pairs.org_a != pairs.org_b)))
    pairs = pairs.mutate(lo=ibis.least(pairs.a, pairs.b), hi=ibis.greatest(pairs.a, pairs.b),
                         part=pairs.idf * pairs.idf / (pairs.norm_a * pairs.norm_b))
    # every float sum exact (engine.exact_sum): in thread order the weights differed in the last
    # bits between scans of one store, and Leiden turned that into different partitions
    per_kind = pairs.group_by(["lo", "hi", "kind"]).aggregate(shared=pairs.count(), dot=exact_sum(pairs.part))
    per_kind = per_kind.mutate(sim=ibis.least(per_kind.dot, 1.0))
    min_shared = ibis.cases(*((per_kind.kind == k, e.min_shared) for k, e in EVIDENCE.items()), else_=1)
    per_kind = per_kind.filter(per_kind.shared >= min_shared)
    weight = sum(ibis.ifelse(per_kind.kind == k, per_kind.sim * EVIDENCE[k].weight, 0.0) for k in kinds)
    marked = per_kind.mutate(
        w=weight,
        **{f"c_{k}": ibis.ifelse(per_kind.kind == k, per_kind.shared, 0) for k in kinds},
        **{f"s_{k}": ibis.ifelse(per_kind.kind == k, per_kind.sim, 0.0) for k in kinds},
    )
    edges = marked.group_by([marked.lo.name("a"), marked.hi.name("b")]).aggregate(
        weight=exact_sum(marked.w),
        **{f"shared_{k}": marked[f"c_{k}"].sum() for k in kinds},
        **{f"sim_{k}": marked[f"s_{k}"].max() for k in kinds},
    )
    return edges.filter(edges.weight >= params.min_pair_weight)

