"""Resellers: keys that front many end users, recognised so that their end users are judged, not the key.

A reseller (an API relay, a chat product on a provider's key) sends many unrelated people's
requests through one key, naming each person in the request (OpenAI's ``user`` field, canonical
``end_user``). Judged as one account it looks like a harvester: huge volume, every kind of prompt,
many addresses and clients. Judged per end user it is what it is: many ordinary customers, among
whom a campaign may still hide.

The statistic (per key: ``api_key_id``, else the account): how many distinct end users and
distinct clients (address and user agent pairs) the key shows in the window, each as an
upper-tail probability against the population of keys, ``p = (1 + |{keys of other accounts with
a count >= this key's}|) / |keys|``: ties count against the key, and an account's other keys are
left out (one operator's keys are one draw, as a declared organisation is one entity elsewhere),
so the smallest possible p is 1 / |keys|. A key is a reseller when its end users lie in the tail
(``p_end_users <= alpha``) and its clients are at least as diverse as a typical key's
(``p_clients <= diversity``): one script behind one address that invents user names shows one
client, not many people. No count is a fixed threshold: each is a share of the population the
scan sees. The two conditions are an intersection-union test (a key must pass each), so the
reseller's p-value is the larger of the two at its own level.

What follows from a recognised reseller (:func:`end_user_entities`): its requests that name an
end user are judged under the entity ``<account>::<end user>``, so the reseller itself is not a
campaign, while end users that form one are found like any accounts and reported with the
reseller named (:func:`named`). Its requests that name no end user stay with its account.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from distillguard.detect import features
from distillguard.store.verdicts import SEVERITY

#: joins a reseller's account and an end user into the entity the scan judges
ENTITY_SEPARATOR = "::"

#: one row per recognised reseller key (what :func:`recognise` returns)
RESELLER_SCHEMA = pa.schema([
    ("key", pa.string()), ("account_id", pa.string()), ("exchanges", pa.int64()),
    ("end_users", pa.int64()), ("clients", pa.int64()), ("addresses", pa.int64()), ("agents", pa.int64()),
    ("p_end_users", pa.float64()), ("p_clients", pa.float64()),
])


@dataclass(frozen=True)
class ResellerParams:
    """``alpha``: the upper-tail probability of distinct end users at which a key is a reseller
    (against the population of keys); ``diversity``: the tail probability its distinct clients
    (address and user agent pairs) must reach (0.5: at least as diverse as the median key)."""

    alpha: float = 0.05
    diversity: float = 0.5

    def __post_init__(self) -> None:
        for name in ("alpha", "diversity"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def key_counts(ex: ir.Table) -> ir.Table:
    """Per key (``api_key_id``, else the account): its account, exchanges and distinct end users,
    clients (address and user agent pairs), addresses and user agents. ``ex`` holds the canonical
    exchanges of the window."""
    keyed = ex.mutate(_key=ex.api_key_id.fill_null(ex.account_id),
                      _client=ex.client_ip.fill_null("") + "|" + ex.user_agent.fill_null(""))
    return keyed.group_by("_key").aggregate(
        account_id=keyed.account_id.min(), exchanges=keyed.count(), end_users=keyed.end_user.nunique(),
        clients=keyed._client.nunique(), addresses=keyed.client_ip.nunique(),
        agents=keyed.user_agent.nunique()).rename(key="_key")


def upper_tail(values: list[int], groups: list[str] | None = None) -> list[float]:
    """For each value, (1 + how many values of other groups are at least as large) / how many
    values there are; without ``groups`` every value is its own group."""
    n = len(values)
    ranked = sorted(values)
    by_group: dict[str, list[int]] = {}
    for g, v in zip(groups or range(n), values):
        by_group.setdefault(g, []).append(v)
    for held in by_group.values():
        held.sort()
    out = []
    for g, v in zip(groups or range(n), values):
        own = by_group[g]
        others = (n - bisect.bisect_left(ranked, v)) - (len(own) - bisect.bisect_left(own, v))
        out.append((1 + others) / n)
    return out


def recognise(counts: pa.Table, params: ResellerParams = ResellerParams()) -> pa.Table:
    """The reseller keys among ``counts`` (:func:`key_counts`, collected), as RESELLER_SCHEMA, by key."""
    if not counts.num_rows:
        return RESELLER_SCHEMA.empty_table()
    rows = counts.to_pylist()
    accounts = [r["account_id"] for r in rows]
    tails = {name: upper_tail([r[name] for r in rows], accounts) for name in ("end_users", "clients")}
    found = []
    for i, r in enumerate(rows):
        p = {name: tails[name][i] for name in tails}
        if r["end_users"] >= 2 and p["end_users"] <= params.alpha and p["clients"] <= params.diversity:
            found.append({**{k: r[k] for k in ("key", "account_id", "exchanges", "end_users", "clients", "addresses",
                                               "agents")}, **{f"p_{name}": p[name] for name in p}})
    found.sort(key=lambda r: r["key"])
    return pa.Table.from_pylist(found, schema=RESELLER_SCHEMA)


#: what an exchange says of the account that sent it rather than of the request: for a reseller's
#: request these are the reseller's (its card, its sign-up, its declared organisation), not the end
#: user's, and would tie every end user to every other, or (one organisation) none to any
ACCOUNT_COLUMNS = ("organization_id", "payment_fingerprint", "account_created_at", "email_domain",
                   "email_fingerprint")


def end_user_entities(exchanges: ir.Table, resellers: pa.Table) -> ir.Table:
    """``exchanges`` with each request of a reseller key that names an end user moved to the entity
    ``<account>::<end user>``, without the reseller's own account attributes (ACCOUNT_COLUMNS);
    every other request as it was."""
    if not resellers.num_rows:
        return exchanges
    keys = resellers.column("key").to_pylist()
    key = exchanges.api_key_id.fill_null(exchanges.account_id)
    relayed = key.isin(keys) & exchanges.end_user.notnull()
    cleared = {c: ibis.ifelse(relayed, ibis.null().cast(exchanges[c].type()), exchanges[c])
               for c in ACCOUNT_COLUMNS if c in exchanges.columns}
    return exchanges.mutate(account_id=ibis.ifelse(
        relayed, exchanges.account_id + ENTITY_SEPARATOR + exchanges.end_user, exchanges.account_id), **cleared)


def split(exchanges: ir.Table, as_of: datetime, lookback_days: float | None,
          params: ResellerParams = ResellerParams()) -> tuple[ir.Table, pa.Table]:
    """The entities a scan judges: ``exchanges`` with the end users of the reseller keys
    recognised in the scan's window (``as_of``, ``lookback_days``) moved to their own entities
    (:func:`end_user_entities`), and those keys (RESELLER_SCHEMA)."""
    window = features.window(exchanges, as_of, lookback_days)
    if not fronts_end_users(window):
        # no key names two end users: none is a reseller (recognise), and the per-key counts,
        # four distinct counts over every exchange, are not needed
        return exchanges, RESELLER_SCHEMA.empty_table()
    found = recognise(key_counts(window).to_pyarrow(), params)
    return end_user_entities(exchanges, found), found


def fronts_end_users(ex: ir.Table) -> bool:
    """Whether some key (``api_key_id``, else the account) names at least two end users in ``ex``:
    read from the requests that name one only."""
    named = ex.filter(ex.end_user.notnull())
    named = named.mutate(_key=named.api_key_id.fill_null(named.account_id))
    many = named.group_by("_key").aggregate(end_users=named.end_user.nunique())
    return bool(many.filter(many.end_users >= 2).limit(1).count().to_pyarrow().as_py())


def by_account(verdicts: pa.Table) -> pa.Table:
    """One verdict per account: of an account and its end users' entities, the verdict of the
    strongest action (its own entity's where that is as strong), named by the account. What a
    per-account label judges: an organic reseller one of whose end users is throttled counts as
    a throttled organic account."""
    if not verdicts.num_rows:
        return verdicts
    ids = verdicts.column("account_id").to_pylist()
    actions = verdicts.column("action").to_pylist()
    # per account, the smallest (weaker action, an end user's, the end user's name): its strongest
    # entity, its own on a tie, then the first end user by name
    best: dict[str, tuple[tuple[int, bool, str], int]] = {}
    for i, (entity, action) in enumerate(zip(ids, actions)):
        owner, _, end_user = (entity or "").partition(ENTITY_SEPARATOR)
        key = (-SEVERITY.get(action, 0), bool(end_user), end_user)
        if owner not in best or key < best[owner][0]:
            best[owner] = (key, i)
    rows = sorted(best.items())
    index = verdicts.column_names.index("account_id")
    out = verdicts.take(pa.array([i for _, (_, i) in rows], pa.int64()))
    return out.set_column(index, verdicts.schema.field(index), pa.array([o for o, _ in rows], pa.string()))


def named(verdicts: pa.Table, resellers: pa.Table) -> pa.Table:
    """``verdicts`` (store.verdicts.VERDICT_SCHEMA) with the reseller named in the reasons of each of
    its end users' verdicts: first where the end user is flagged, last where it is allowed."""
    if not resellers.num_rows:
        return verdicts
    about: dict[str, list[dict]] = {}
    for r in resellers.to_pylist():
        about.setdefault(r["account_id"], []).append(r)
    reasons = verdicts.column("reasons").to_pylist()
    out = []
    for account, action, held in zip(verdicts.column("account_id").to_pylist(),
                                     verdicts.column("action").to_pylist(), reasons):
        owner, _, end_user = (account or "").partition(ENTITY_SEPARATOR)
        keys = about.get(owner) if end_user else None
        if not keys:
            out.append(held)
            continue
        line = (f"end user {end_user} of reseller account {owner} (" + "; ".join(
            f"key {k['key']}: {k['end_users']} end users, {k['clients']} clients, "
            f"upper-tail p {max(k['p_end_users'], k['p_clients']):.3g}" for k in keys) + ")")
        held = list(held or [])
        out.append([line] + held if action != "allow" else held + [line])
    index = verdicts.column_names.index("reasons")
    return verdicts.set_column(index, verdicts.schema.field(index), pa.array(out, verdicts.schema.field(index).type))
