"""Campaigns: clusters of the weighted account graph, scored as operations.

Clustering is Leiden (Traag, Waltman & van Eck, Sci. Rep. 2019) through graspologic-native
(MIT), on the collected edge table, with a fixed seed. Each cluster is then scored on what an
operation cannot hide and a community of real customers does not show together:

- ``structure``: how much linking evidence per member (a campaign's accounts share cards,
  proxies, sign-up bursts, scaffolds and session slots; a NAT only an address);
- ``automation``: the members' mean per-account suspicion (signals.py);
- ``collective``: the share of members tied to the rest by at least two independent families
  of evidence (account, network, client, timing; evidence.Kind.family): an operation's
  accounts share cards or sign-up waves *and* proxies *and* schedules or scaffolds, while a
  NAT's users share an address and a popular tool's users share its framing, nothing else;
- ``complementarity``: members send different prompts (a sweep of a capability corpus with
  few repeats), unlike benchmark researchers who all send the same public items.

Camouflage resistance: the score uses member *shares* and per-member weights, and members are
weighted by their own suspicion (FRAUDAR-style, Hooi et al. KDD 2016), so padding a cluster
with benign-looking accounts or benign prompts dilutes it little.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import graspologic_native as gn
import ibis
import ibis.expr.types as ir
import pyarrow as pa

from distillguard.detect.evidence import LINKED as EVIDENCE
from distillguard.detect.evidence import with_form
from distillguard.detect.policy import Clustering
from distillguard.store.engine import exact_sum

#: the clustering tunables: the policy's ``clustering`` section (policy.Clustering)
CampaignParams = Clustering


def cluster(edges: pa.Table, params: CampaignParams, tiebreak: dict[str, str] | None = None) -> dict[str, int]:
    """account -> cluster number, for accounts with at least one edge.

    Leiden numbers the nodes in the order it first meets them in the edge list, and its seeded
    random visiting order is a permutation of those numbers: the same graph listed in another
    order is partitioned differently. So the edges are listed in a canonical node order
    (:func:`node_order`) that follows from the graph and from what the accounts did
    (``tiebreak``: account -> a digest of its activity, features.activity_digest), not from
    their names: two scans of one store agree, and renaming the accounts renames the partition.
    Clusters are numbered by their first node in that order.
    """
    if edges.num_rows == 0:
        return {}
    a, b, w = (edges.column(n).to_pylist() for n in ("a", "b", "weight"))
    order = node_order(a, b, w, tiebreak or {})
    rank = {account: i for i, account in enumerate(order)}
    pairs = sorted((min(rank[x], rank[y]), max(rank[x], rank[y]), weight) for x, y, weight in zip(a, b, w))
    _, found = gn.leiden([(order[i], order[j], weight) for i, j, weight in pairs],
                         resolution=params.resolution, seed=params.seed, trials=1, iterations=2)
    first: dict[int, int] = {}
    for account, c in found.items():
        first[c] = min(first.get(c, len(order)), rank[account])
    number = {c: k for k, c in enumerate(sorted(first, key=first.__getitem__))}
    return {account: number[found[account]] for account in order if account in found}


def node_order(a: list[str], b: list[str], weight: list[float], tiebreak: dict[str, str]) -> list[str]:
    """The accounts of the edge list (a, b, weight) in a canonical order: by degree, weighted
    degree and a digest of their neighbours' (degree, weighted degree, edge weight), then by
    ``tiebreak``; the name decides only between accounts equal in all of these.

    Names only break ties, so a renaming of the accounts reorders nothing but accounts that the
    graph and the tiebreak cannot tell apart (the same edges to equivalent neighbours, the same
    activity digest): there the partition may differ by swapping them. Weighted degrees are
    correctly rounded sums (math.fsum), the same in any order of the edges.
    """
    adjacent: dict[str, list[tuple[str, float]]] = {}
    for x, y, w in zip(a, b, weight):
        adjacent.setdefault(x, []).append((y, w))
        adjacent.setdefault(y, []).append((x, w))
    degree = {v: len(n) for v, n in adjacent.items()}
    strength = {v: math.fsum(w for _, w in n) for v, n in adjacent.items()}
    signature = {v: hashlib.blake2b(repr(sorted((degree[u], strength[u], w) for u, w in n)).encode(),
                                    digest_size=8).hexdigest()
                 for v, n in adjacent.items()}
    return sorted(adjacent, key=lambda v: (degree[v], strength[v], signature[v], tiebreak.get(v, ""), v))


@dataclass(frozen=True)
class Tie:
    """What ties one clustered account to the rest of its cluster (member_evidence)."""

    evidence: float  # kind weight x idf, summed once per supported key
    families: int  # independent families of those keys
    reach: int  # other members it shares a supported key with (at least; capped, see member_evidence)
    account: bool = False  # whether one of those families is the account family (card, sign-up burst)
    burst: bool = False  # whether a sign-up burst key is among them (creation timing already counted)
    network_only: bool = False  # whether every one of those keys is an address or a subnet
    # members it reaches through keys other than client ones (software, templates): a popular
    # tool's user agent or system prompt reaches thousands, and says nothing of who runs it
    reach_beyond_client: int = 0


NO_TIE = Tie(0.0, 0, 0)


@dataclass(frozen=True)
class Linked:
    """How one evidence kind links the members of a cluster or campaign (its ``indicators``)."""

    shared_keys: int  # the kind's shared keys summed over the internal edges (a key counts once per edge)
    accounts: int  # members at an end of at least one of those edges


@dataclass(frozen=True)
class Cluster:
    """One scored cluster of the account graph (score_clusters): a campaign's cell, or a community."""

    # who: the cluster's number (cluster) and its admitted members, in name order
    cluster: int
    members: list[str]
    size: int  # len(members)
    # how much it looks like an operation: score = structure x operation x (0.5 + 0.5 x complementarity),
    # each in 0..1, rounded to 4 places
    score: float
    structure: float
    automation: float
    collective: float
    complementarity: float
    # the share of members in each collective act the cluster showed (acts)
    recruited: float
    pivoted: float
    # what links its members: the summed edge weight, and per evidence kind that links any
    internal_weight: float
    indicators: dict[str, Linked]


@dataclass(frozen=True)
class Campaign:
    """One campaign: linked cells merged (merge_cells), described and given an action.

    The field names and their order are those of campaigns.json, campaigns.parquet and the
    store's ``campaigns.detail`` (:meth:`to_row`), which reports read.
    """

    # who: its id (lineage.py: the id of the previous scan's campaign it continues, else a digest
    # of its member names), the member count, how many cells were merged
    campaign_id: str
    members: int
    cells: int
    # what it sent: exchanges, output tokens, and when (ISO 8601, UTC)
    exchanges: int
    output_tokens: int
    first_seen: str
    last_seen: str
    # the verdict: the cells' score weighted by their size, and the policy's action at that score
    score: float
    action: str
    # the cells' sub-scores (Cluster), weighted by their size
    structure: float
    automation: float
    collective: float
    complementarity: float
    recruited: float
    pivoted: float
    # what links it (per evidence kind, summed over the cells) and what it asked for
    indicators: dict[str, Linked]
    capability_mix: dict[str, float]  # capability -> share of the exchanges
    pivot_within_day_share: float  # share of members that used a newly released model within pivot_hours of it
    accounts: list[str]  # the members, in name order
    # its lineage across scans (lineage.py; docs/detection.md, "Campaign ids"): the as_of of the
    # first scan that found this id and of this scan (first_seen/last_seen above are exchange
    # times), members gained and lost since the previous scan's campaign of this id (all members
    # count as added for a new id), previous campaigns that merged into this one, and for a new
    # id the previous campaign most of its members came from
    first_scan: str = ""
    last_scan: str = ""
    members_added: list[str] = dataclasses.field(default_factory=list)
    members_removed: list[str] = dataclasses.field(default_factory=list)
    merged_from: list[str] = dataclasses.field(default_factory=list)
    split_from: str | None = None
    # members the calibrated tests (verdicts.py) put at throttle or stronger: a campaign holding
    # such a group is named and described as one (reconcile); 0 when the linkage alone found it
    tested: int = 0

    def to_row(self) -> dict:
        """The campaign as plain JSON-able data, keys in field order."""
        return dataclasses.asdict(self)


def member_evidence(held: ir.Table, members: ir.Table, min_support: int, reach_cap: int = 16) -> ir.Table:
    """(account_id, evidence, families, reach): what ties each clustered account to its cluster.

    ``held`` is linkage.ranked (kind, key, account_id, idf); ``members`` is (account_id, cluster).
    Each key counts once, at its kind's weight times its rarity (idf), and only if at least
    ``min_support`` *other* members of the account's cluster hold it too. Leiden puts every
    node somewhere, and summing edge weights counts one coincidence once per neighbour: a
    customer who signed up with gmail.com in the same hour as ten campaign accounts got ten
    edges from one fact. Counted per key, that is one weak fact. And a key shared with a
    single other member (a household's card and router) ties the account to that account,
    not to an operation.

    ``families`` counts the independent families of those keys (evidence.Kind.family): the
    users of one popular tool share its framing, system prompt and user agent (one family,
    client) and nothing else. ``reach`` counts the distinct members those keys tie the account
    to: a small team sharing a card and an office address holds strong keys, but only with
    each other. Counted exactly up to ``reach_cap`` (a key held by more members than that
    reaches at least that many; the exact count would be a quadratic self-join).
    """
    # a key held by fewer accounts than that cannot have the support, in any cluster
    rows = held.filter(held.holders > min_support).select("kind", "key", "account_id", "idf")
    rows = rows.join(members, "account_id")
    support = rows.group_by(["cluster", "kind", "key"]).aggregate(holders_in=rows.count())
    support = support.filter(support.holders_in > min_support)
    tied = rows.join(support, ["cluster", "kind", "key"])
    kind_weight = ibis.cases(*((tied.kind == k, e.weight) for k, e in EVIDENCE.items()), else_=0.0)
    family = ibis.cases(*((tied.kind == k, e.family) for k, e in EVIDENCE.items()), else_="other")
    per_account = tied.group_by("account_id").aggregate(
        evidence=exact_sum(kind_weight * tied.idf), families=family.nunique(),
        account=ibis.cases((family == "account", 1), else_=0).max(),
        burst=ibis.cases((tied.kind.isin(list(with_form("signup_hour"))), 1), else_=0).max(),
        network_only=ibis.cases((family == "network", 1), else_=0).min(),
        wide=ibis.least(tied.holders_in.max() - 1, reach_cap),
        wide_beyond=ibis.least(ibis.cases((family != "client", tied.holders_in - 1), else_=0).max(), reach_cap))
    small = tied.filter(tied.holders_in <= reach_cap).select("cluster", "kind", "key", "account_id")
    beyond = small.filter(small.kind.isin([k for k, e in EVIDENCE.items() if e.family != "client"]))
    # only accounts that no large key already takes to the cap need their peers counted
    narrow = _peers(small, per_account.filter(per_account.wide < reach_cap), "narrow")
    narrow_beyond = _peers(beyond, per_account.filter(per_account.wide_beyond < reach_cap), "narrow_beyond")
    joined = per_account.left_join(narrow, "account_id").drop("account_id_right")
    joined = joined.left_join(narrow_beyond, "account_id").drop("account_id_right")
    return joined.select("account_id", "evidence", "families", "account", "burst", "network_only",
                         reach=ibis.greatest(joined.wide, joined.narrow.fill_null(0)),
                         reach_beyond_client=ibis.greatest(joined.wide_beyond, joined.narrow_beyond.fill_null(0)))


def _peers(small: ir.Table, needy: ir.Table, name: str) -> ir.Table:
    """(account_id, name): distinct other members sharing a key of ``small`` with each needy account."""
    other = small.select("cluster", "kind", "key", peer="account_id")
    peers = small.semi_join(needy.select("account_id"), "account_id").join(other, ["cluster", "kind", "key"])
    peers = peers.filter(peers.account_id != peers.peer)
    return peers.group_by("account_id").aggregate(**{name: peers.peer.nunique()})


def share_of(membership: dict[str, int], accounts: set[str] | dict[str, object]) -> dict[int, float]:
    """cluster -> the share of its members that are in ``accounts``."""
    sizes: dict[int, int] = {}
    count: dict[int, int] = {}
    for account, c in membership.items():
        sizes[c] = sizes.get(c, 0) + 1
        count[c] = count.get(c, 0) + (account in accounts)
    return {c: count[c] / sizes[c] for c in sizes}


@dataclass(frozen=True)
class Pivot:
    """The fleet-pivot tell measured on every cluster (pivoted_together)."""

    share: dict[int, float]  # cluster -> share of its members that moved within pivot_hours
    base: float  # the same share over the whole population
    coordinated: set[str]  # the members that moved, in clusters where that was a collective act
    together: frozenset[int] = frozenset()  # those clusters

    def reason(self, account: str, cluster: int, hours: float, params: CampaignParams) -> str:
        """The verdict line of a coordinated member: its value, its cluster's and the thresholds."""
        return (f"coordination: first used a newly released model {hours:.1f} h after its release "
                f"(< {params.pivot_hours:g} h) with {self.share[cluster]:.0%} of its cluster "
                f"(>= {params.pivot_min_share:.0%} and >= {params.pivot_lift:g} x the population's "
                f"{self.base:.1%})")


def pivoted_together(membership: dict[str, int], pivot_hours: dict[str, float | None],
                     params: CampaignParams) -> Pivot:
    """Each cluster's share of members that moved to a new model within ``pivot_hours`` of its
    release, and the members of clusters where that share is a coordinated act.

    Launch-day adopters are common among developers, so moving early says little about one
    account (it is no signal on its own at a campaign's false-positive ceiling). What a
    community of customers does not do is move *together*: an operation re-points its whole
    fleet within hours of a release (Anthropic 2026), so a cluster whose members moved on
    the first day far more often than the population (``pivot_lift``) acted as one. Those
    members are tied to their cluster by that shared act, an independent family of evidence
    (``coordination``) next to what their keys show.
    """
    early = {a for a, h in pivot_hours.items() if h is not None and h < params.pivot_hours}
    base = len(early) / max(len(pivot_hours), 1)
    share = share_of(membership, early)
    together = {c for c, v in share.items() if v >= params.pivot_min_share and v >= params.pivot_lift * base}
    return Pivot(share, base, {a for a, c in membership.items() if c in together and a in early}, frozenset(together))


def with_coordination(tie: dict[str, Tie], coordinated: set[str]) -> dict[str, Tie]:
    """:func:`ties` with one more family for members that acted with their cluster (pivoted_together).

    No evidence mass: one customer in ten tries a new model on its first day, so moving early
    says little of one member; the act is the cluster's (its score counts it, see acts)."""
    return {a: (dataclasses.replace(t, families=t.families + 1) if a in coordinated else t)
            for a, t in tie.items()}


@dataclass(frozen=True)
class Recruitment:
    """The recruitment tell measured on every cluster (recruited_together)."""

    share: dict[int, float]  # cluster -> share of its members recruited together
    mates: dict[str, int]  # recruited member -> fresh members of its cluster, of other domains, in its wave
    lead_days: dict[str, float]  # recruited member -> days from its creation to its first request

    def reason(self, account: str, params: CampaignParams) -> str:
        """The verdict line of a recruited member: its values and the thresholds."""
        return (f"recruited together: created within {params.recruit_wave_hours:g} h of {self.mates[account]} "
                f"other fresh members of its cluster with other e-mail domains (>= {params.recruit_min_mates}), first used "
                f"{self.lead_days[account]:.1f} days after its creation (<= {params.recruit_fresh_days:g})")


def recruited_together(membership: dict[str, int], created: dict[str, datetime | None],
                       first_seen: dict[str, datetime | None], domain: dict[str, str | None],
                       params: CampaignParams) -> Recruitment:
    """Members of a cluster that were created as a batch of unrelated identities and put to work.

    Operations open accounts in sign-up waves, shortly before they use them, spread over e-mail
    domains so that no sign-up burst key (same domain, same hour) ties them (Anthropic 2026:
    ~25,000 accounts opened for one campaign). A customer's account is usually old by the time
    it shares a cluster with others; a class or a team that onboards together signs up with its
    school's or company's domain (an identity it shows, which signup_burst already links). So a
    member counts when it is fresh (first request within ``recruit_fresh_days`` of its
    creation), at least ``recruit_min_mates`` other fresh members of its own cluster were created
    within ``recruit_wave_hours`` of it with *another* e-mail domain, in a wave (the fresh
    members created within that span of it, itself included) where no one domain holds more
    than half the accounts; and only in clusters where at least ``recruit_min_share`` of
    the members were recruited so (a few new customers joining a community are not its act).
    This reads only clusters the linkage already formed: it adds evidence to a tie, never an edge.
    """
    fresh: dict[int, list[tuple[datetime, str]]] = {}
    lead: dict[str, float] = {}
    for account, c in membership.items():
        made, first = created.get(account), first_seen.get(account)
        if made is None or first is None:
            continue
        days = (first - made).total_seconds() / 86400.0
        # a first request before the creation time is a bad creation time, not a fresh account
        if 0.0 <= days <= params.recruit_fresh_days:
            lead[account] = days
            fresh.setdefault(c, []).append((made, account))
    wave = timedelta(hours=params.recruit_wave_hours)
    mates: dict[str, int] = {}
    for c, batch in fresh.items():
        batch.sort()
        times = [t for t, _ in batch]
        for t, account in batch:
            lo, hi = bisect.bisect_left(times, t - wave), bisect.bisect_right(times, t + wave)
            # an unknown domain shows no unrelatedness: all unknown ones count as one domain
            domains = Counter((domain.get(b) or "").lower() for _, b in batch[lo:hi])
            other = (hi - lo) - domains[(domain.get(account) or "").lower()]
            # the wave itself must mix domains: a class or a team is most of its own wave
            if other >= params.recruit_min_mates and max(domains.values()) <= 0.5 * (hi - lo):
                mates[account] = other
    # a handful of new customers joining a community is not the community's act
    share = {c: (v if v >= params.recruit_min_share else 0.0) for c, v in share_of(membership, mates).items()}
    mates = {a: n for a, n in mates.items() if share[membership[a]] > 0}
    return Recruitment(share, mates, {a: lead[a] for a in mates})


def credited(tie: Tie) -> bool:
    """Whether being recruited in a wave adds to this tie (with_recruitment)."""
    return not (tie.burst or tie.network_only)


def with_recruitment(tie: dict[str, Tie], recruitment: Recruitment, params: CampaignParams) -> dict[str, Tie]:
    """:func:`ties` with the evidence of being recruited in a wave with other members: the
    weight of a sign-up burst key and the account family (unless already held). Not the reach:
    that counts the members the account's own keys tie it to (the firm rule asks for it).

    A member that already holds a sign-up burst key of its cluster gets nothing more: its
    creation time is counted once (a customer who signed up with gmail in the hour of a
    campaign's wave holds that key by chance, and the wave says the same). Nor
    does a member tied by addresses alone: a residential neighbour of a campaign's proxy exits
    who signed up during a wave is a bystander twice over, and coincidences do not add up to
    a second family (the same reason inheritance never acts on network keys alone)."""
    out = dict(tie)
    for account in recruitment.mates:
        t = out.get(account, NO_TIE)
        if not credited(t):
            continue
        out[account] = dataclasses.replace(t, evidence=t.evidence + params.act_weight,
                                           families=t.families + (not t.account), account=True)
    return out


def ties(evidence: pa.Table) -> dict[str, Tie]:
    """:func:`member_evidence`, collected, as account -> Tie."""
    columns = ("account_id", "evidence", "families", "reach", "account", "burst", "network_only",
               "reach_beyond_client")
    return {a: Tie(e, f, r, bool(k), bool(b), bool(n), x)
            for a, e, f, r, k, b, n, x in zip(*(evidence.column(c).to_pylist() for c in columns))}


def campaign_sized(membership: dict[str, int], min_members: int) -> dict[str, int]:
    """The accounts of clusters with at least ``min_members`` accounts (the only ones that can be campaigns)."""
    sizes: dict[int, int] = {}
    for c in membership.values():
        sizes[c] = sizes.get(c, 0) + 1
    return {a: c for a, c in membership.items() if sizes[c] >= min_members}


def admitted(membership: dict[str, int], tie: dict[str, Tie], params: CampaignParams) -> dict[str, int]:
    """Members tied to their cluster by at least ``min_member_evidence``, reaching a campaign-sized group."""
    return {a: c for a, c in membership.items()
            if tie.get(a, NO_TIE).evidence >= params.min_member_evidence
            and tie.get(a, NO_TIE).reach >= params.min_members - 1}


def acts(pivot: Pivot, recruited: set[str], membership: dict[str, int],
         clusters: set[int]) -> dict[int, dict[str, float]]:
    """cluster -> {act: share of members}: the collective acts a cluster showed, for score_clusters.

    ``pivoted`` counts only where the pivot was a coordinated act (pivoted_together: share and
    lift over the population), since launch-day adoption is common among customers;
    ``recruited`` is the share of members credited with recruitment (``recruited``: those
    with_recruitment credits, so fresh students behind one NAT, tied by addresses alone, do
    not raise their cluster either).
    """
    share = share_of(membership, recruited)
    return {c: {"recruited": share.get(c, 0.0), "pivoted": pivot.share.get(c, 0.0) if c in pivot.together else 0.0}
            for c in clusters}


@dataclass
class _InternalEdges:
    """The edges between members of one cluster, as score_clusters sums them."""

    weights: list[float] = dataclasses.field(default_factory=list)
    shared_keys: Counter[str] = dataclasses.field(default_factory=Counter)  # kind -> keys summed over the edges
    linked: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # kind -> members at an end of its edges


def score_clusters(edges: pa.Table, membership: dict[str, int], tie: dict[str, Tie],
                   suspicion: dict[str, float], prompt_stats: dict[int, tuple[int, int]],
                   params: CampaignParams, collective_acts: dict[int, dict[str, float]] | None = None) -> list[Cluster]:
    """One Cluster per cluster with at least ``min_members`` members: members, sub-scores, score.

    ``membership`` holds the admitted members only (:func:`admitted`); ``tie`` is :func:`ties`;
    ``collective_acts`` is :func:`acts`. Operation evidence is what the members do (automation)
    and what ties them (collective), raised by each act the cluster performed as one: an
    independent tell each, combined as independent evidence (1 - the product of what each
    leaves unexplained), so that a cell of human-looking accounts that was recruited in one
    wave and re-pointed at a new model in one day scores as an operation, while a community of
    customers (no such acts) scores exactly as before.
    """
    collective_acts = collective_acts or {}
    kinds = list(EVIDENCE)
    members: dict[int, list[str]] = {}
    for account, c in membership.items():
        members.setdefault(c, []).append(account)
    internal: dict[int, _InternalEdges] = {}
    # weights are summed with math.fsum (correctly rounded, so in any order): the edges come
    # sorted by account name, and a renaming must not change a score in its last bits
    a_col, b_col, w_col = (edges.column(n).to_pylist() for n in ("a", "b", "weight"))
    shared = {k: edges.column(f"shared_{k}").to_pylist() for k in kinds}
    for i, (a, b, w) in enumerate(zip(a_col, b_col, w_col)):
        ca, cb = membership.get(a), membership.get(b)
        if ca is None or ca != cb:
            continue
        info = internal.setdefault(ca, _InternalEdges())
        info.weights.append(w)
        for k in kinds:
            if shared[k][i]:
                info.shared_keys[k] += shared[k][i]
                info.linked.setdefault(k, set()).update((a, b))
    out = []
    for c, accounts in members.items():
        if len(accounts) < params.min_members or c not in internal:
            continue
        info = internal[c]
        n = len(accounts)
        weight = math.fsum(info.weights)
        structure = 1.0 - math.exp(-weight / n / params.structure_scale)
        automation = math.fsum(suspicion.get(a, 0.0) for a in accounts) / n
        collective = sum(1 for a in accounts if tie[a].families >= 2) / n
        exchanges, distinct = prompt_stats.get(c, (0, 0))
        complementarity = distinct / exchanges if exchanges else 0.0
        operation = max(automation, 0.5 * automation + 0.5 * collective)
        shown = collective_acts.get(c, {})
        for share in shown.values():
            operation = 1.0 - (1.0 - operation) * (1.0 - share)
        score = structure * operation * (0.5 + 0.5 * complementarity)
        out.append(Cluster(
            cluster=c, members=sorted(accounts), size=n, score=round(score, 4),
            structure=round(structure, 4), automation=round(automation, 4),
            collective=round(collective, 4), complementarity=round(complementarity, 4),
            recruited=round(shown.get("recruited", 0.0), 4), pivoted=round(shown.get("pivoted", 0.0), 4),
            internal_weight=round(weight, 3),
            indicators={k: Linked(shared_keys=info.shared_keys[k], accounts=len(info.linked[k]))
                        for k in kinds if info.shared_keys[k]},
        ))
    out.sort(key=lambda c: (-c.score, c.members[0]))
    return out


def merge_cells(edges: pa.Table, clusters: list[Cluster], min_link: float) -> list[list[Cluster]]:
    """Group scored clusters that are linked to each other into one campaign.

    Operations run in cells (a card, a proxy pool and a controller per few dozen accounts);
    Leiden rightly separates the cells, but cells of one operation still share scaffolds,
    sign-up waves and schedules across their borders. Two clusters join when the summed
    weight of edges between their members reaches ``min_link`` (union-find, deterministic).
    """
    owner = {a: i for i, c in enumerate(clusters) for a in c.members}
    links: dict[tuple[int, int], list[float]] = {}
    for a, b, w in zip(*(edges.column(n).to_pylist() for n in ("a", "b", "weight"))):
        ca, cb = owner.get(a), owner.get(b)
        if ca is None or cb is None or ca == cb:
            continue
        links.setdefault((min(ca, cb), max(ca, cb)), []).append(w)
    parent = list(range(len(clusters)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (i, j), weights in sorted(links.items()):
        if math.fsum(weights) >= min_link:  # correctly rounded: the same in any order of the edges
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[Cluster]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(find(i), []).append(c)
    return [groups[k] for k in sorted(groups)]


@dataclass(frozen=True)
class Reconciled:
    """One campaign of a scan as member sets: its members, the linkage campaigns it takes in
    (indexes into reconcile's ``linked``), and the action and size of the calibrated tests'
    group it holds (None and 0 when the linkage alone found it)."""

    members: frozenset[str]
    linked: tuple[int, ...]
    action: str | None = None
    tested: int = 0


def reconcile(linked: list[frozenset[str]], tested: list[tuple[str, frozenset[str]]],
              min_members: int) -> list[Reconciled]:
    """The scan's campaigns from the linkage's campaigns and the calibrated tests' groups.

    The tests' groups (verdicts.Evidence.groups) decide what is one operation: Leiden cuts an
    operation into its cells, and a group the tests validated as a whole must be reported, named
    and tracked under one id. Each group is a campaign, and takes in every linkage campaign most
    of whose members it holds (``|L & G| > |L| / 2``: at most one group can), except for members
    of other groups. A linkage campaign no group takes in loses the members groups hold and stays
    a campaign of its own while at least ``min_members`` remain. Campaigns share no member; the
    result is a pure function of the member sets (groups in order of their sorted members, then
    the linkage campaigns in their order).
    """
    held = set().union(*(g for _, g in tested))
    out: list[Reconciled] = []
    taken: set[int] = set()
    for action, group in sorted(tested, key=lambda t: sorted(t[1])):
        absorbed = tuple(i for i, members in enumerate(linked) if 2 * len(members & group) > len(members))
        taken.update(absorbed)
        extra = frozenset().union(*(linked[i] for i in absorbed)) - held
        held |= extra
        out.append(Reconciled(group | extra, absorbed, action, len(group)))
    for i, members in enumerate(linked):
        rest = members - held
        if i not in taken and len(rest) >= min_members:
            held |= rest
            out.append(Reconciled(rest, (i,)))
    return out
