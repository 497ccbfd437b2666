"""Actors: campaigns tied to one operator because they share more than chance explains.

Two campaigns are linked when their members hold more of the same keys (address ranges, user
agents, cards, e-mail addresses as their fingerprints, system prompts, prompt framing n-grams,
imported indicators) than their sizes and the keys' popularity predict. Null: every other holder of a key the first campaign's members hold
is an account drawn at random from the rest of the population, so the key turns up among the
second campaign's ``n_B`` members with probability ``p_k = 1 - (1 - n_B / (N - n_A))^(d_k - a_k)``
(``d_k`` holders in the store, ``a_k`` of them in the first campaign). The count of shared keys is
then a sum of independent Bernoullis, whose Poisson-binomial upper tail is computed exactly (the
Poisson bound of detect/nulls.py holds for small p only, and a popular key's p is near 1). A
popular key (a cloud's range, an SDK's user agent) explains itself; a rare one shared is surprise. A pair is a
link when its p-value, corrected for every pair looked at (Bonferroni), is at most
``policy.intel.actor_alpha``; an actor is a connected group of linked campaigns. Members in both
campaigns are left out of the count (they are reported with the link): the test is whether
*different* accounts betray one operator.

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

from distillguard.detect import extract, nulls
from distillguard.ingest import enrich
from distillguard.store import has_table

#: the most a p-value alone lets an actor's confidence reach (as report/stix.py's campaigns)
CONFIDENCE_CAP = 95
#: the test behind every link, as reports state it
TEST = ("Two campaigns are linked when the keys (address ranges, user agents, cards, e-mail addresses, system "
        "prompts, prompt framing, imported indicators) that their different members share outnumber what chance explains: "
        "statistic, the count of shared keys against its expectation when every other holder of a key is an "
        "account drawn at random from the rest of the store; p-value, the exact Poisson-binomial upper tail of "
        "that count, Bonferroni-corrected over every pair of campaigns; linked at a corrected p at most the "
        "policy's intel.actor_alpha. An actor is a connected group of linked campaigns; its confidence is "
        "100 x (1 - its largest corrected p), at most 95.")
#: prompts per account read for framing n-grams (the first ones in time: a script's framing is in every one)
PROMPTS_PER_ACCOUNT = 20
_DDL = """
CREATE TABLE IF NOT EXISTS actors (actor_id VARCHAR PRIMARY KEY, campaigns VARCHAR[] NOT NULL,
    first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, members BIGINT, exchanges BIGINT, confidence INTEGER,
    links VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL)
"""


@dataclass(frozen=True)
class Link:
    """Why two campaigns are one actor's: shared keys against what the null expects."""

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
    """account -> its (kind, key) pairs over the whole store (kinds named for this test only)."""
    keys: dict[str, set[tuple[str, str]]] = {}

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


def links(campaigns: dict[str, dict], keys: dict[str, set[tuple[str, str]]]) -> list[Link]:
    """Every pair of campaigns with its test (see the module's docstring), in id order."""
    population = len(keys)
    degree: dict[tuple[str, str], int] = {}
    for held in keys.values():
        for k in held:
            degree[k] = degree.get(k, 0) + 1
    ids = sorted(campaigns)
    members = {c: set(campaigns[c].get("accounts") or []) for c in ids}
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
                held_a[k] = held_a.get(k, 0) + 1
        held_b = {k for account in mb for k in keys.get(account, ())}
        rest = max(population - len(ma), len(mb))
        outside = np.array([degree[k] - n for k, n in held_a.items()], dtype=float)
        expected = float(np.sum(1.0 - (1.0 - len(mb) / rest) ** outside))
        shared = [k for k in held_a if k in held_b]
        p = poisson_binomial_sf(1.0 - (1.0 - len(mb) / rest) ** outside, len(shared))
        by_kind: dict[str, int] = {}
        for kind, _ in shared:
            by_kind[kind] = by_kind.get(kind, 0) + 1
        out.append(Link(a, b, len(shared), round(expected, 4), p, float(nulls.bonferroni(p, len(pairs))),
                        dict(sorted(by_kind.items())), len(both)))
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
