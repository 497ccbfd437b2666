"""The one-feature oracle: how far one per-account feature, or the simplest linkage rule, gets.

A benchmark can be won for the wrong reason: if one feature of each account (activity spread
over all 24 hours, a new IP per request) separates a simulated campaign from the organic users,
a detector that "works" may only have found a quirk of the simulator, which a real operator
fixes in an afternoon. So for every scenario the benchmark also asks, for each numeric feature
of the scan's account table, what the *best* single threshold achieves: tuned with the labels,
in either direction, under a ceiling on the share of organic accounts it flags. No deployable
rule on that one feature can do better. The two linkage rules an operator tries first are in
the same table: flag accounts that share a payment fingerprint, or a /24 (IPv4) or /48 (IPv6)
subnet, with at least K other accounts (best K).

A scenario where some single feature reaches EASY_RECALL at the benchmark's ceiling is marked
*easy*: catching it proves little about campaign-level detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: organic false-positive ceilings: the detection issue's throttle ceiling and the adaptive goal's
CEILINGS: tuple[float, ...] = (1e-4, 1e-3)
#: a scenario is easy when one feature alone reaches this recall at the first ceiling
EASY_RECALL = 0.5
#: the sharing rules, as columns next to the features
SHARING_RULES = {"payment_sharing": "accounts sharing a payment fingerprint with the account",
                 "subnet_sharing": "accounts sharing a /24 or /48 subnet with the account"}
_NOT_FEATURES = {"account_id", "organization_id", "email_domain", "first_seen", "last_seen", "created_at"}


@dataclass(frozen=True)
class Threshold:
    """The best rule on one feature under one ceiling: flag ``value > threshold`` (above) or
    ``value < threshold`` (below); ``recall`` of campaign accounts, ``organic_fpr`` actually reached."""

    feature: str
    direction: str
    threshold: float
    recall: float
    organic_fpr: float


def best_threshold(feature: str, organic: np.ndarray, campaign: np.ndarray, ceiling: float) -> Threshold | None:
    """The highest-recall threshold on one feature, in either direction, flagging at most
    ``floor(ceiling x organic accounts)`` organic accounts. Missing values (NaN) are never flagged.

    Strict comparisons make ties safe: every organic account with the threshold's value stays
    unflagged, so the organic count never exceeds what the ceiling allows.
    """
    if len(organic) == 0 or len(campaign) == 0:
        return None
    allowed = math.floor(ceiling * len(organic) + 1e-9)
    known = organic[~np.isnan(organic)]
    best: Threshold | None = None
    for direction in ("above", "below"):
        ordered = np.sort(known)[::-1] if direction == "above" else np.sort(known)
        if allowed < len(ordered):
            threshold = float(ordered[allowed])
        else:  # the ceiling allows flagging every organic account that has a value
            threshold = -math.inf if direction == "above" else math.inf
        flag_org = (known > threshold) if direction == "above" else (known < threshold)
        with np.errstate(invalid="ignore"):
            flag_camp = (campaign > threshold) if direction == "above" else (campaign < threshold)
        candidate = Threshold(feature, direction, threshold, float(flag_camp.mean()),
                              float(flag_org.sum()) / len(organic))
        if best is None or candidate.recall > best.recall:
            best = candidate
    return best


def sharing(feats: pa.Table, exchanges: pa.Table, addresses: pa.Table) -> pa.Table:
    """(account_id, payment_sharing, subnet_sharing): the most other accounts the account shares
    one payment fingerprint, or one subnet, with (0 when none). ``exchanges`` holds distinct
    (account_id, payment_fingerprint) rows; ``addresses`` is scan.account_table's second table."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("accounts", feats.select(["account_id"]))
        con.register("cards", exchanges)
        con.register("addresses", addresses)
        return con.execute("""
            WITH card AS (SELECT DISTINCT account_id, payment_fingerprint AS k FROM cards WHERE k IS NOT NULL),
                 net AS (SELECT DISTINCT account_id, subnet AS k FROM addresses WHERE k IS NOT NULL),
                 card_n AS (SELECT k, count(*) - 1 AS others FROM card GROUP BY k),
                 net_n AS (SELECT k, count(*) - 1 AS others FROM net GROUP BY k),
                 by_card AS (SELECT account_id, max(others) AS v FROM card JOIN card_n USING (k) GROUP BY account_id),
                 by_net AS (SELECT account_id, max(others) AS v FROM net JOIN net_n USING (k) GROUP BY account_id)
            SELECT a.account_id, coalesce(c.v, 0)::DOUBLE AS payment_sharing,
                   coalesce(n.v, 0)::DOUBLE AS subnet_sharing
            FROM accounts a LEFT JOIN by_card c USING (account_id) LEFT JOIN by_net n USING (account_id)
            ORDER BY a.account_id""").to_arrow_table()
    finally:
        con.close()


def feature_columns(table: pa.Table) -> list[str]:
    """The numeric per-account columns the oracle tries (identifiers and timestamps are not features)."""
    return [f.name for f in table.schema if f.name not in _NOT_FEATURES
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))]


def evaluate(table: pa.Table, labels: pa.Table, ceilings: tuple[float, ...] = CEILINGS) -> dict[str, Any]:
    """The oracle's section of a scenario's results.

    ``table``: one row per account (account_id and numeric columns); ``labels``: the simulator's
    (account_id, campaign_id). Campaign accounts are those with a campaign_id; organic the rest.
    Returns, per ceiling, every column's best threshold (sorted by recall), the best feature, the
    best sharing rule, and ``easy`` (some feature alone reaches EASY_RECALL at the first ceiling).
    """
    where = pc.index_in(table["account_id"], value_set=labels["account_id"])
    known = pc.is_valid(where)
    table, where = table.filter(known), pc.drop_null(where)
    positive = pc.is_valid(pc.take(labels["campaign_id"], where)).to_numpy(zero_copy_only=False)
    out: dict[str, Any] = {"ceilings": {}, "easy": None}
    for ceiling in ceilings:
        rows = []
        for name in feature_columns(table):
            values = np.asarray(pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
            best = best_threshold(name, values[~positive], values[positive], ceiling)
            if best is not None:
                rows.append(best)
        rows.sort(key=lambda t: (-t.recall, t.feature))
        features_only = [t for t in rows if t.feature not in SHARING_RULES]
        rules = [t for t in rows if t.feature in SHARING_RULES]
        out["ceilings"][f"{ceiling:g}"] = {
            "best_feature": _as_dict(features_only[0]) if features_only else None,
            "best_sharing_rule": _as_dict(rules[0]) if rules else None,
            "all": [_as_dict(t) for t in rows],
        }
    first = out["ceilings"][f"{ceilings[0]:g}"]["best_feature"]
    out["easy"] = None if first is None else first["recall"] >= EASY_RECALL
    return out


def _as_dict(t: Threshold) -> dict[str, Any]:
    return {"feature": t.feature, "direction": t.direction,
            "threshold": None if math.isinf(t.threshold) else round(t.threshold, 6),
            "recall": round(t.recall, 6), "organic_fpr": round(t.organic_fpr, 8)}


def scenario_table(store: Any) -> pa.Table:
    """The oracle's input for one benchmark store: the scan's account features plus the two
    sharing rules, over the whole scenario (as the benchmark's final verdicts are)."""
    from distillguard.store.engine import exchanges as engine_exchanges
    from distillguard.detect.policy import Policy
    from distillguard.detect.scan import account_table

    _, table, lookup = engine_exchanges(store, "duckdb")
    feats, addresses = account_table(table, None, Policy(lookback_days=3650), lookup)
    cards = store.con.execute("SELECT DISTINCT account_id, payment_fingerprint FROM exchanges").to_arrow_table()
    shared = sharing(feats, cards, addresses)
    return feats.join(shared, "account_id").sort_by("account_id")
