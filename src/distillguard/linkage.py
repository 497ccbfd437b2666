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

from dataclasses import dataclass, field

import ibis
import ibis.expr.types as ir


@dataclass(frozen=True)
class Evidence:
    """One kind of shared key: how strongly sharing it links two accounts."""

    name: str
    weight: float
    meaning: str
    min_shared: int = 1  # fewer shared keys than this is coincidence, not evidence


EVIDENCE: dict[str, Evidence] = {e.name: e for e in (
    Evidence("payment", 3.0, "same payment method fingerprint"),
    Evidence("ip", 1.5, "same client IP addresses"),
    Evidence("subnet", 1.0, "same /24 (IPv4) or /48 (IPv6) subnets"),
    Evidence("user_agent", 0.5, "same user agent strings"),
    Evidence("signup_burst", 1.5, "created in the same hour with the same e-mail domain"),
    Evidence("scaffold", 2.0, "same prompt framing n-grams (opening or closing words)", min_shared=3),
    # below min_pair_weight on its own: apps and SDK defaults share system prompts too
    Evidence("system_prompt", 0.8, "same system prompts, used habitually"),
    # SynchroTrap's point: synchrony counts only when sustained, never for one shared moment
    Evidence("sync", 2.0, "sessions started in the same 5-minute slots", min_shared=3),
)}


@dataclass(frozen=True)
class LinkageParams:
    clique_max: int = 40
    ring_degree: int = 4
    max_share: float = 0.05  # keys held by more than this share of accounts are ignored...
    habitual_max_share: float = 0.5  # ...except habitual framing, which only operations share widely
    scaffold_min_uses: int = 3
    scaffold_min_share: float = 0.1
    max_accounts_floor: int = 50  # ...but never ignore a key held by fewer accounts than this
    min_pair_weight: float = 1.0  # weaker pairs are noise: one weak coincidence links nobody
    session_gap_s: int = 1800
    slot_s: int = 300
    exclude: tuple[str, ...] = field(default=())


def account_keys(ex: ir.Table, prompt_keys: ir.Table, params: LinkageParams) -> ir.Table:
    """(account_id, kind, key) for every evidence kind, distinct. ``ex`` is features.enriched."""
    parts = []
    parts.append(ex.filter(ex.payment_fingerprint.notnull()).select(
        "account_id", kind=ibis.literal("payment"), key=ex.payment_fingerprint))
    parts.append(ex.filter(ex.client_ip.notnull()).select("account_id", kind=ibis.literal("ip"), key=ex.client_ip))
    parts.append(ex.filter(ex.subnet.notnull()).select("account_id", kind=ibis.literal("subnet"), key=ex.subnet))
    parts.append(ex.filter(ex.user_agent.notnull()).select(
        "account_id", kind=ibis.literal("user_agent"), key=ex.user_agent))
    signup = ex.filter(ex.account_created_at.notnull() & ex.email_domain.notnull())
    parts.append(signup.select("account_id", kind=ibis.literal("signup_burst"),
                               key=signup.email_domain.lower() + "@"
                               + signup.account_created_at.truncate("h").cast("string")))
    # habitual scaffold n-grams: framing an account uses in a good share of its distinct prompts
    # (a harvest script's wrapper), not a phrase it happened to type once
    prompts = ex.select("account_id", "prompt_id").distinct()
    per_account = prompts.group_by("account_id").aggregate(n_prompts=prompts.count())
    scaffold = prompts.join(prompt_keys, prompts.prompt_id == prompt_keys.prompt_id)
    scaffold = scaffold.group_by(["account_id", "scaffold_key"]).aggregate(uses=scaffold.count())
    scaffold = scaffold.join(per_account, "account_id")
    scaffold = scaffold.filter((scaffold.uses >= params.scaffold_min_uses)
                               & (scaffold.uses >= params.scaffold_min_share * scaffold.n_prompts))
    parts.append(scaffold.select("account_id", kind=ibis.literal("scaffold"), key=scaffold.scaffold_key))
    # habitual system prompts (normalised text): an operation's scripts carry its own
    system = ex.filter(ex.system_prompt.notnull()).mutate(
        sp=ex.system_prompt.lower().re_replace(r"[^a-z0-9]+", " ").strip())
    totals = ex.group_by("account_id").aggregate(n_requests=ex.count())
    system = system.group_by(["account_id", "sp"]).aggregate(uses=system.count()).join(totals, "account_id")
    system = system.filter((system.uses >= params.scaffold_min_uses)
                           & (system.uses >= params.scaffold_min_share * system.n_requests))
    parts.append(system.select("account_id", kind=ibis.literal("system_prompt"), key=system.sp))
    # session starts (first request after a quiet gap), bucketed in slots
    w = ibis.window(group_by=ex.account_id, order_by=[ex.ts_s, ex.exchange_id])
    lagged = ex.select("account_id", "ts_s", "exchange_id").mutate(prev=ex.ts_s.lag().over(w))
    starts = lagged.filter(lagged.prev.isnull() | ((lagged.ts_s - lagged.prev) > params.session_gap_s))
    parts.append(starts.select("account_id", kind=ibis.literal("sync"),
                               key=(starts.ts_s // params.slot_s).cast("string")))
    keys = ibis.union(*parts, distinct=True)
    if params.exclude:
        keys = keys.filter(~keys.kind.isin(list(params.exclude)))
    return keys


def weighted_keys(keys: ir.Table) -> ir.Table:
    """Every key with its holder count and idf = 1 / log2(1 + holders)."""
    counts = keys.group_by(["kind", "key"]).aggregate(holders=keys.account_id.nunique())
    held = keys.join(counts, ["kind", "key"])
    return held.mutate(idf=1.0 / (1 + held.holders.cast("float64")).log2())


def key_norms(weighted: ir.Table) -> ir.Table:
    """Per account and kind, the idf-weighted norm of its key set (the cosine denominator).

    Computed over informative keys only: keys no one else holds (the payload words of a
    prompt, a home IP) say nothing about links and would only dilute every similarity.
    """
    return weighted.group_by(["account_id", "kind"]).aggregate(norm=(weighted.idf * weighted.idf).sum().sqrt())


def informative_keys(weighted: ir.Table, n_accounts: int, params: LinkageParams) -> ir.Table:
    """Keys held by at least two accounts and not by (almost) everyone."""
    limit = max(params.max_accounts_floor, int(params.max_share * n_accounts))
    habitual = max(params.max_accounts_floor, int(params.habitual_max_share * n_accounts))
    cap = ibis.ifelse(weighted.kind.isin(["scaffold", "system_prompt"]), habitual, limit)
    return weighted.filter((weighted.holders >= 2) & (weighted.holders <= cap))


def pair_edges(held: ir.Table, norms: ir.Table, organizations: ir.Table, params: LinkageParams) -> ir.Table:
    """Account-pair edges: a < b, weight, and per kind the shared-key count and similarity.

    Per kind, similarity is the cosine of the two accounts' idf-weighted key sets: sharing a
    few rare keys out of few counts a lot, sharing some common keys out of many (two heavy
    users who happen to be active in the same slots) counts little. The pair weight is the
    evidence-weighted sum of the similarities. ``held`` is :func:`informative_keys`.

    Holders of a large key are ordered by md5(key, account) (the same on every engine and
    unrelated to how ids are assigned) for its ring lattice.
    """
    kinds = list(EVIDENCE)
    ranked = held.mutate(rank=ibis.row_number().over(ibis.window(
        group_by=[held.kind, held.key], order_by=(held.key + "|" + held.account_id).hexdigest("md5"))))
    left = ranked.select("kind", "key", "holders", "idf", a="account_id", rank_a="rank")
    right = ranked.select("kind", "key", b="account_id", rank_b="rank")
    clique = left.filter(left.holders <= params.clique_max).join(
        right, [left.kind == right.kind, left.key == right.key, left.rank_a < right.rank_b])
    parts = [clique.select("kind", "idf", "a", "b")]
    big = left.filter(left.holders > params.clique_max)
    for d in range(1, params.ring_degree + 1):
        ring = big.mutate(target=((big.rank_a - 1 + d) % big.holders) + 1)
        ring = ring.join(right, [ring.kind == right.kind, ring.key == right.key, ring.target == right.rank_b])
        parts.append(ring.select("kind", "idf", "a", "b"))
    pairs = ibis.union(*parts, distinct=False)
    pairs = pairs.mutate(lo=ibis.least(pairs.a, pairs.b), hi=ibis.greatest(pairs.a, pairs.b))
    pairs = pairs.filter(pairs.lo != pairs.hi)
    per_kind = pairs.group_by(["lo", "hi", "kind"]).aggregate(shared=pairs.count(), dot=(pairs.idf * pairs.idf).sum())
    na = norms.select(lo="account_id", kind="kind", norm_a="norm")
    nb = norms.select(hi="account_id", kind="kind", norm_b="norm")
    per_kind = per_kind.join(na, ["lo", "kind"]).join(nb, ["hi", "kind"])
    per_kind = per_kind.mutate(sim=ibis.least(per_kind.dot / (per_kind.norm_a * per_kind.norm_b), 1.0))
    min_shared = ibis.cases(*((per_kind.kind == k, e.min_shared) for k, e in EVIDENCE.items()), else_=1)
    per_kind = per_kind.filter(per_kind.shared >= min_shared)
    orgs_a = organizations.select(lo="account_id", org_a="organization_id")
    orgs_b = organizations.select(hi="account_id", org_b="organization_id")
    per_kind = per_kind.left_join(orgs_a, "lo").drop("lo_right").left_join(orgs_b, "hi").drop("hi_right")
    per_kind = per_kind.filter(per_kind.org_a.isnull() | per_kind.org_b.isnull() | (per_kind.org_a != per_kind.org_b))
    weight = sum(ibis.ifelse(per_kind.kind == k, per_kind.sim * EVIDENCE[k].weight, 0.0) for k in kinds)
    marked = per_kind.mutate(
        w=weight,
        **{f"c_{k}": ibis.ifelse(per_kind.kind == k, per_kind.shared, 0) for k in kinds},
        **{f"s_{k}": ibis.ifelse(per_kind.kind == k, per_kind.sim, 0.0) for k in kinds},
    )
    edges = marked.group_by([marked.lo.name("a"), marked.hi.name("b")]).aggregate(
        weight=marked.w.sum(),
        **{f"shared_{k}": marked[f"c_{k}"].sum() for k in kinds},
        **{f"sim_{k}": marked[f"s_{k}"].max() for k in kinds},
    )
    return edges.filter(edges.weight >= params.min_pair_weight)


def markdown() -> str:
    lines = ["| evidence | weight | minimum shared keys | meaning |", "|---|---|---|---|"]
    for e in EVIDENCE.values():
        lines.append(f"| `{e.name}` | {e.weight:g} | {e.min_shared} | {e.meaning} |")
    return "\n".join(lines) + "\n"
