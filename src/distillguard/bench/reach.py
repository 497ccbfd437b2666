"""How far a campaign's decoys can be reached from its harvesters, knowing which they are.

A campaign's decoys (``role`` ``decoy`` in the labels) send only the traffic of the organic
persona they copy, so their behaviour says nothing; what can tie them to the campaign is what
they share with its harvesters: an address or /24 (network), a client string or system prompt
(client), a card, a sign-up near a harvester's (time). This is a label-aware oracle,
independent of any detector: given the true harvesters, which decoys and which organic
accounts hold a token that is the campaign's, per family, and how many are tied in two
families or more.

A token is the campaign's when its harvesters outnumber its organic holders (an office's
address, a popular client or a public system prompt is held mostly by people, and a harvester
among them makes its colleagues nobody's decoys); a harvester's sign-up instant is the
campaign's when more harvesters than organic accounts signed up within ``SIGNUP_HOURS`` of it.

One family alone ties organic accounts too (a sign-up the same hour, a carrier's address, a
common client string), so a detector bound to a false-positive budget associates an account with
a campaign on two independent families (detection.md, "Associates"). The decoys tied in two
families or more, added to every harvester, are the strategy's *ceiling*: what such ties reach
where a token is the campaign's only when its harvesters outnumber its organic holders. It is
not a bound: a detector that reads a token's holders more loosely (the scan counts only the
holders active enough to be judged) can pass it, at the risk of the organic holders it then
ties. The organic accounts tied in one family show what accepting a single tie would cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.ingest.enrich import subnet_of

#: the families a decoy can be tied in, each with the exchange columns whose values are its tokens
FAMILIES: dict[str, tuple[str, ...]] = {
    "network": ("client_ip", "client_subnet"),
    "client": ("user_agent", "system_prompt"),
    "card": ("payment_fingerprint",),
}
#: how close to a harvester's sign-up a sign-up ties an account (the time family)
SIGNUP_HOURS = 1.0
TIME = "time"


@dataclass(frozen=True)
class Reach:
    """One store's decoys and organic accounts tied to its harvesters: per family, in one family
    or more, in two or more."""

    harvesters: int
    decoys: int
    organic: int
    decoys_by_family: dict[str, int]
    organic_by_family: dict[str, int]
    decoys_one: int
    organic_one: int
    decoys_two: int
    organic_two: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _campaign_tokens(holders: dict[str, set[str]], harvesters: set[str], organic: set[str]) -> set[str]:
    return {t for t, who in holders.items() if len(who & harvesters) > len(who & organic)}


def _near(instants: np.ndarray, at: np.ndarray, width: float) -> np.ndarray:
    """Per value of ``at`` (NaN never): within ``width`` of one of the sorted ``instants``."""
    if instants.size == 0:
        return np.zeros(at.size, dtype=bool)
    lo = np.searchsorted(instants, at - width, "left")
    hi = np.searchsorted(instants, at + width, "right")
    return ~np.isnan(at) & (hi > lo)


def reach(tokens: pa.Table, created: pa.Table, labels: pa.Table) -> Reach:
    """The decoys and organic accounts tied to the harvesters of ``labels`` (account_id, role,
    campaign_id; harvesters: a campaign id and any role but ``decoy``).

    ``tokens``: distinct (account_id, column, value) of the columns in FAMILIES (``client_subnet``
    derived from ``client_ip``); ``created``: (account_id, created: epoch seconds or null)."""
    rows = labels.select(["account_id", "role", "campaign_id"]).to_pylist()
    harvesters = {r["account_id"] for r in rows if r["campaign_id"] is not None and r["role"] != "decoy"}
    decoys = {r["account_id"] for r in rows if r["campaign_id"] is not None and r["role"] == "decoy"}
    organic = {r["account_id"] for r in rows if r["campaign_id"] is None}
    family_of = {column: family for family, columns in FAMILIES.items() for column in columns}
    holders: dict[str, dict[str, set[str]]] = {family: {} for family in FAMILIES}
    for account, column, value in zip(*(tokens.column(c).to_pylist() for c in ("account_id", "column", "value"))):
        if column in family_of and value is not None:
            holders[family_of[column]].setdefault(f"{column}\x00{value}", set()).add(account)
    tied = {family: set().union(*(held[t] for t in _campaign_tokens(held, harvesters, organic))) - harvesters
            for family, held in holders.items()}
    accounts = created.column("account_id").to_pylist()
    at = np.array([np.nan if v is None else float(v) for v in created.column("created").to_pylist()])
    is_h = np.array([a in harvesters for a in accounts], dtype=bool)
    is_o = np.array([a in organic for a in accounts], dtype=bool)
    width = SIGNUP_HOURS * 3600.0
    signups = np.sort(at[is_h & ~np.isnan(at)])
    organic_at = np.sort(at[is_o & ~np.isnan(at)])
    inside = np.searchsorted(signups, signups + width, "right") - np.searchsorted(signups, signups - width)
    outside = np.searchsorted(organic_at, signups + width, "right") - np.searchsorted(organic_at, signups - width)
    near = _near(signups[inside > outside], at, width)
    tied[TIME] = {a for a, hit, h in zip(accounts, near.tolist(), is_h.tolist()) if hit and not h}
    count = {a: sum(a in t for t in tied.values()) for a in decoys | organic}
    return Reach(
        harvesters=len(harvesters), decoys=len(decoys), organic=len(organic),
        decoys_by_family={f: len(t & decoys) for f, t in tied.items()},
        organic_by_family={f: len(t & organic) for f, t in tied.items()},
        decoys_one=sum(count[a] >= 1 for a in decoys), organic_one=sum(count[a] >= 1 for a in organic),
        decoys_two=sum(count[a] >= 2 for a in decoys), organic_two=sum(count[a] >= 2 for a in organic))


def store_reach(store: Any, labels: pa.Table) -> Reach:
    """:func:`reach` over one benchmark store (its DuckDB connection ``store.con``)."""
    con = store.con
    raw = con.execute(
        "SELECT DISTINCT account_id, 'client_ip' AS column, client_ip AS value FROM exchanges WHERE client_ip IS NOT NULL "
        "UNION ALL SELECT DISTINCT account_id, 'user_agent', user_agent FROM exchanges WHERE user_agent IS NOT NULL "
        "UNION ALL SELECT DISTINCT account_id, 'system_prompt', system_prompt FROM exchanges "
        "WHERE system_prompt IS NOT NULL "
        "UNION ALL SELECT DISTINCT account_id, 'payment_fingerprint', payment_fingerprint FROM exchanges "
        "WHERE payment_fingerprint IS NOT NULL").to_arrow_table()
    ips = raw.filter(pc.equal(raw.column("column"), "client_ip"))
    subnets = pa.table({"account_id": ips.column("account_id"),
                        "column": pa.array(["client_subnet"] * ips.num_rows, pa.string()),
                        "value": pa.array([subnet_of(v) for v in ips.column("value").to_pylist()], pa.string())})
    tokens = pa.concat_tables([raw.cast(subnets.schema), subnets])
    created = con.execute("SELECT account_id, epoch(min(account_created_at)) AS created FROM exchanges "
                          "GROUP BY account_id").to_arrow_table()
    return reach(tokens, created, labels)


def total(reaches: list[Reach]) -> dict[str, Any]:
    """Several stores' reaches summed (a strategy over its seeds)."""
    out: dict[str, Any] = {}
    for r in reaches:
        for key, value in r.as_dict().items():
            if isinstance(value, dict):
                acc = out.setdefault(key, {})
                for k, v in value.items():
                    acc[k] = acc.get(k, 0) + v
            else:
                out[key] = out.get(key, 0) + value
    return out
