"""Actors: campaigns tied to one operator because they share more rare keys than chance explains.

Two campaigns A and B are linked when their members hold more of the same *rare* keys (address
ranges, user agents, cards, e-mail addresses as their fingerprints, system prompts, prompt framing
n-grams, imported indicators) than their sizes and the keys' popularity predict, kind by kind.

Keys: only members in one campaign count (members in both are reported with the link: the test
is whether *different* accounts betray one operator). A key of kind ``t`` is rare when its degree
``d`` (accounts holding it in the store) is at most ``cut_t``, the largest degree such that all keys
of ``t`` held by 2..d accounts make together at most ``RARE_PAIRS_PER_ACCOUNT x N`` holder pairs
(detect/blocks.py's rare_cut; ``N`` accounts in the store). Rarity is thus set per kind by a
budget, not by a fixed count: a framing phrase every script writes, a cloud's range or an SDK's
user agent is above its kind's cut and never counted, so it can neither link two campaigns nor
drown the few rare keys that do.

Null: every other holder of a rare key A's members hold is an account drawn at random, without
replacement, from the ``R = N - n_A`` accounts outside A, so the key turns up among B's ``n_B``
members with probability ``p_k = 1 - C(R - n_B, m_k) / C(R, m_k)`` (``m_k = d_k - a_k`` holders
outside A, ``a_k`` in it), independently of the other keys. Statistic, per kind ``t``: ``X_t``, the
number of A's rare keys of kind ``t`` that B's members also hold; under the null a sum of
independent Bernoullis, whose Poisson-binomial upper tail ``P(X_t >= x_t)`` is computed exactly
(the Poisson bound of detect/nulls.py holds for small p only). The pair's p-value is the smallest
kind's tail times the number of kinds with a positive expectation (Bonferroni over kinds: the
strongest kind speaks, and a kind with no expectation cannot reject). A pair is a link when that
p-value, corrected again for every pair looked at (Bonferroni), is at most
``policy.intel.actor_alpha``; an actor is a connected group of linked campaigns.

Assumptions: keys are assigned independently of campaign membership under the null (a key two
campaigns share because a third party's service hands it to everyone is common, hence above the
cut, or it breaks the null and can link); the p-value is conditional on the degrees and the cut.

An actor's id comes from its earliest campaign (first seen, then id), so it stays while that
campaign stays in it; its confidence is 100 x (1 - the largest corrected p of its links), at most
stix's TEST_CONFIDENCE_CAP (95): a p-value bounds coincidence, not intent.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime

import duckdb
import numpy as np
from scipy import special

from distillguard.detect import blocks, extract, nulls
from distillguard.ingest import enrich
from distillguard.store import has_table

#: the most a p-value alone lets an actor's confidence reach (as report/stix.py's campaigns)
CONFIDENCE_CAP = 95
#: the test behind every link, as reports state it
TEST = ("Two campaigns are linked when the rare keys (address ranges, user agents, cards, e-mail addresses, system "
        "prompts, prompt framing, imported indicators) that their different members share outnumber what chance "
        "explains, kind by kind: a key is rare when its kind's keys held by as few accounts or fewer make at most one "
        "holder pair per account in the store; statistic, per kind, the count of rare keys both hold against its "
        "expectation when every other holder of a key is an account drawn at random from the rest of the store; "
        "p-value, the smallest kind's exact Poisson-binomial upper tail, Bonferroni-corrected over the kinds with "
        "an expectation and over every pair of campaigns; linked at a corrected p at most the policy's "
        "intel.actor_alpha. An actor is a connected group of linked campaigns; its confidence is "
        "100 x (1 - its largest corrected p), at most 95.")
#: holder pairs per account in the store that a kind's rare keys may make together (the rarity budget)
RARE_PAIRS_PER_ACCOUNT = 1.0
#: prompts per account read for framing n-grams (the first ones in time: a script's framing is in every one)
PROMPTS_PER_ACCOUNT = 20
_DDL = """
CREATE TABLE IF NOT EXISTS actors (actor_id VARCHAR PRIMARY KEY, campaigns VARCHAR[] NOT NULL,
    first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, members BIGINT, exchanges BIGINT, confidence INTEGER,
    links VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL)
"""


@dataclass(frozen=True)
class Link:
    """Why two campaigns are one actor's: the rare keys their different members share (``shared_keys``,
    by kind) against what the null expects (``expected``), and the test's p-values."""

    a: str
    b: str
    shared_keys: int
    expected: float
    p_value: float
    p_corrected: float
    by_kind: dict[str, int]
    shared_members: int


@dataclass
class Actor:
    actor_id: str
    campaigns: list[str]
    first_seen: str | None
    last_seen: str | None
    members: int
    exchanges: int
    confidence: int
    links: list[Link] = field(default_factory=list)

    def to_row(self) -> dict:
        return asdict(self)


def _campaigns(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """campaign id -> its latest stored description (campaigns.Campaign.to_row)."""
    if not has_table(con, "campaigns"):
        return {}
    rows = con.execute("SELECT campaign_id, detail FROM campaigns QUALIFY row_number() OVER "
                       "(PARTITION BY campaign_id ORDER BY scan_id DESC) = 1 ORDER BY campaign_id").fetchall()
    return {cid: json.loads(detail) for cid, detail in rows}


def account_keys(con: duckdb.DuckDBPyConnection) -> dict[str, set[tuple[str, str]]]:
    """account -> its (kind, key) pairs over the whole store (kinds named for this test only); every
    account is there, one without keys with an empty set: it counts in the population all the same."""
    keys: dict[str, set[tuple[str, str]]] = {a: set() for (a,) in con.execute(
        "SELECT DISTINCT account_id FROM exchanges").fetchall()}

    def add(kind: str, rows) -> None:
        for account, key in rows:
            if key:
                keys.setdefault(account, set()).add((kind, key))

    add("user-agent", con.execute("SELECT DISTINCT account_id, user_agent FROM exchanges").fetchall())
    add("card", con.execute("SELECT DISTINCT account_id, payment_fingerprint FROM exchanges").fetchall())
    add("e-mail address", con.execute("SELECT DISTINCT account_id, email_fingerprint FROM exchanges").fetchall())
    add("address range", ((a, enrich.subnet_of(ip)) for a, ip in con.execute(
        "SELECT DISTINCT account_id, client_ip FROM exchanges WHERE client_ip IS NOT NULL").fetchall()))
    add("system prompt", ((a, extract.system_prompt_key(sp)) for a, sp in con.execute(
        "SELECT DISTINCT account_id, system_prompt FROM exchanges WHERE system_prompt IS NOT NULL").fetchall()))
    sample = con.execute("SELECT account_id, prompt FROM exchanges QUALIFY row_number() OVER (PARTITION BY "
                         "account_id ORDER BY timestamp, exchange_id) <= ?", [PROMPTS_PER_ACCOUNT]).fetchall()
    add("framing", ((a, k) for a, prompt in sample for k in enrich.scaffold_keys(prompt or "")))
    if has_table(con, "verdicts"):
        # imported indicators an account matched, as the latest scan's reasons name them
        latest = con.execute("SELECT account_id, reasons FROM verdicts WHERE as_of = (SELECT max(as_of) FROM "
                             "verdicts)").fetchall()
        add("imported indicator", ((a, r.split()[2]) for a, reasons in latest for r in reasons or []
                                   if r.startswith("imported indicator ind-")))
    return keys


def poisson_binomial_sf(probabilities: np.ndarray, observed: int) -> float:
    """P(X >= observed) for X a sum of independent Bernoullis with these probabilities (exact, by
    the convolution over counts below ``observed``)."""
    if observed <= 0:
        return 1.0
    below = np.zeros(observed)
    below[0] = 1.0
    for p in np.clip(probabilities, 0.0, 1.0):
        below[1:] = below[1:] * (1.0 - p) + below[:-1] * p
        below[0] *= 1.0 - p
    return float(min(1.0, max(0.0, 1.0 - below.sum())))


def rare_degrees(keys: dict[str, set[tuple[str, str]]], pairs_per_account: float = RARE_PAIRS_PER_ACCOUNT
                 ) -> dict[tuple[str, str], int]:
    """(kind, key) -> its degree (holders in the store), for the keys rare in their kind (see the
    module's docstring); common keys are left out."""
    degree: dict[tuple[str, str], int] = {}
    for held in keys.values():
        for k in held:
            degree[k] = degree.get(k, 0) + 1
    by_kind: dict[str, list[int]] = {}
    for (kind, _), d in degree.items():
        by_kind.setdefault(kind, []).append(d)
    budget = max(1, int(pairs_per_account * len(keys)))
    cut = {kind: max(1, blocks.rare_cut(np.asarray(ds), budget)) for kind, ds in by_kind.items()}
    return {k: d for k, d in degree.items() if d <= cut[k[0]]}


def shared_probabilities(outside: np.ndarray, rest: int, drawn: int) -> np.ndarray:
    """P(at least one of ``outside`` holders, drawn without replacement from ``rest`` accounts, is
    among ``drawn`` given ones): ``1 - C(rest - drawn, m) / C(rest, m)`` for each ``m`` in ``outside``."""
    m = np.asarray(outside, dtype=float)
    none = np.zeros_like(m)
    possible = m <= rest - drawn
    mm = m[possible]
    none[possible] = np.exp(special.gammaln(rest - drawn + 1) - special.gammaln(rest - drawn - mm + 1)
                            - special.gammaln(rest + 1) + special.gammaln(rest - mm + 1))
    return np.clip(1.0 - none, 0.0, 1.0)


def links(campaigns: dict[str, dict], keys: dict[str, set[tuple[str, str]]],
          pairs_per_account: float = RARE_PAIRS_PER_ACCOUNT) -> list[Link]:
    """Every pair of campaigns with its test (see the module's docstring), in id order."""
    ids = sorted(campaigns)
    members = {c: set(campaigns[c].get("accounts") or []) for c in ids}
    population = len(set(keys).union(*members.values()))
    degree = rare_degrees(keys, pairs_per_account)
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    out = []
    for a, b in pairs:
        both = members[a] & members[b]
        ma, mb = members[a] - both, members[b] - both
        if not ma or not mb:
            continue
        held_a: dict[tuple[str, str], int] = {}
        for account in ma:
            for k in keys.get(account, ()):
                if k in degree:
                    held_a[k] = held_a.get(k, 0) + 1
        held_b = {k for account in mb for k in keys.get(account, ()) if k in degree}
        rest = max(population - len(ma), len(mb))
        kinds: dict[str, tuple[list[float], int]] = {}
        for k, n in held_a.items():
            outside, shared = kinds.setdefault(k[0], ([], 0))
            outside.append(degree[k] - n)
            kinds[k[0]] = (outside, shared + (k in held_b))
        tails, expected, by_kind = [], 0.0, {}
        for kind, (outside, shared) in sorted(kinds.items()):
            probabilities = shared_probabilities(np.asarray(outside), rest, len(mb))
            probabilities = probabilities[probabilities > 0]
            if probabilities.size:
                tails.append(poisson_binomial_sf(probabilities, shared))
                expected += float(probabilities.sum())
            if shared:
                by_kind[kind] = shared
        p = min(1.0, len(tails) * min(tails)) if tails else 1.0
        out.append(Link(a, b, sum(by_kind.values()), round(expected, 4), p,
                        float(nulls.bonferroni(p, len(pairs))), by_kind, len(both)))
    return out


def actors(campaigns: dict[str, dict], tested: list[Link], alpha: float) -> list[Actor]:
    """The connected groups of campaigns linked at corrected level ``alpha``, two campaigns or more."""
    parent = {c: c for c in campaigns}

    def root(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    kept = [link for link in tested if link.p_corrected <= alpha]
    for link in kept:
        parent[root(link.a)] = root(link.b)
    groups: dict[str, list[str]] = {}
    for c in sorted(campaigns):
        groups.setdefault(root(c), []).append(c)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        found = [campaigns[c] for c in group]
        first = [f["first_seen"] for f in found if f.get("first_seen")]
        last = [f["last_seen"] for f in found if f.get("last_seen")]
        founder = min(group, key=lambda c: (campaigns[c].get("first_seen") or "", c))
        own = [link for link in kept if link.a in group]
        worst = max(link.p_corrected for link in own)
        out.append(Actor(
            actor_id="actor-" + hashlib.sha256(founder.encode()).hexdigest()[:12], campaigns=group,
            first_seen=min(first) if first else None, last_seen=max(last) if last else None,
            members=len({a for f in found for a in f.get("accounts") or []}),
            exchanges=sum(int(f.get("exchanges") or 0) for f in found),
            confidence=min(CONFIDENCE_CAP, math.floor(100 * (1.0 - worst))), links=own))
    return sorted(out, key=lambda actor: (actor.first_seen or "", actor.actor_id))


def link(con: duckdb.DuckDBPyConnection, alpha: float, now: datetime) -> list[Actor]:
    """Link the store's campaigns into actors and keep them in ``actors`` (replacing the previous set)."""
    campaigns = _campaigns(con)
    found = actors(campaigns, links(campaigns, account_keys(con)), alpha) if len(campaigns) > 1 else []
    con.execute(_DDL)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM actors")
        for actor in found:
            con.execute("INSERT INTO actors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                actor.actor_id, actor.campaigns, actor.first_seen, actor.last_seen, actor.members, actor.exchanges,
                actor.confidence, json.dumps([asdict(k) for k in actor.links]), now])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found


def stored(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """The actors kept in the store, as plain data (links parsed), earliest first; [] when none."""
    if not has_table(con, "actors"):
        return []
    rows = con.execute("SELECT actor_id, campaigns, first_seen, last_seen, members, exchanges, confidence, links "
                       "FROM actors ORDER BY first_seen, actor_id").fetchall()
    names = ("actor_id", "campaigns", "first_seen", "last_seen", "members", "exchanges", "confidence", "links")
    out = []
    for row in rows:
        actor = dict(zip(names, row))
        actor["links"] = json.loads(actor["links"])
        for k in ("first_seen", "last_seen"):
            actor[k] = actor[k].isoformat() if actor[k] is not None else None
        out.append(actor)
    return out
