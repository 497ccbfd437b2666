"""Scores of one detector against the simulator's ground truth: pure functions over tables.

Inputs are a verdict table (VERDICT_SCHEMA, verdicts.py), the simulator's labels (one row per
account: ``account_id``, ``role``, ``campaign_id``, ``persona``, ``exchanges``,
``campaign_exchanges``) and, for leakage, a campaign traffic table binned by replay step
(``account_id``, ``campaign_id``, ``as_of``, ``exchanges``, ``output_tokens``,
``first_timestamp``: the campaign's own exchanges in ``[previous as_of, as_of)``).

An account is *positive* when it belongs to a campaign (``campaign_id`` set: attackers and
hydra relays); *caught* at a level when its action is that level or stronger. Ratios with an
empty denominator are None, not 0: "flagged nobody" has no precision.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.store.verdicts import SEVERITY, severities

#: the action levels reported: "monitor" means monitor or stronger, "throttle" throttle or stronger
LEVELS: tuple[str, ...] = ("monitor", "throttle")

#: a campaign counts as found as one when at least this share of its caught accounts share one campaign_id
ONE_CAMPAIGN_SHARE = 0.95


def share(part: float, whole: float) -> float | None:
    return float(part) / float(whole) if whole else None


def judge(verdicts: pa.Table, labels: pa.Table) -> pa.Table:
    """The labels of every account that sent exchanges, with the detector's ``severity``
    (index in ACTIONS) and ``found_campaign`` (its campaign_id); an account without a verdict
    is allowed.

    Raises:
        ValueError: the verdicts repeat an account, or judge an account the labels do not know.
    """
    ids = verdicts["account_id"]
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ValueError("verdicts have more than one row for some account")
    unknown = pc.sum(pc.invert(pc.is_in(ids, value_set=labels["account_id"]))).as_py() or 0
    if unknown:
        raise ValueError(f"{unknown} verdicts are for accounts the labels do not know")
    labels = labels.filter(pc.greater(labels["exchanges"], 0))
    where = pc.index_in(labels["account_id"], value_set=ids)  # null: no verdict
    severity = severities(verdicts["action"])
    return labels.append_column("severity", pc.fill_null(pc.take(severity, where), SEVERITY["allow"])) \
                 .append_column("found_campaign", pc.take(verdicts["campaign_id"], where))


def _caught(judged: pa.Table, level: str) -> np.ndarray:
    return judged["severity"].to_numpy() >= SEVERITY[level]


def account_metrics(judged: pa.Table, level: str) -> dict[str, Any]:
    """Precision, recall and organic false-positive rate (overall and per persona) at a level."""
    caught = _caught(judged, level)
    positive = judged["campaign_id"].is_valid().to_numpy(zero_copy_only=False)
    organic = ~positive
    persona = np.array(judged["persona"].fill_null("(none)").to_pylist(), dtype=object)
    tp, fp = int((caught & positive).sum()), int((caught & organic).sum())
    personas = {}
    for name in sorted(set(persona[organic])):
        members = organic & (persona == name)
        flagged = int((caught & members).sum())
        personas[name] = {"accounts": int(members.sum()), "flagged": flagged, "fpr": share(flagged, members.sum())}
    harmed = [p for p in personas if personas[p]["flagged"]]
    worst = max(harmed, key=lambda p: (personas[p]["fpr"], p), default=None)  # None: no persona harmed
    return {
        "accounts": len(judged), "positives": int(positive.sum()), "organic": int(organic.sum()),
        "flagged": int(caught.sum()), "true_positives": tp, "false_positives": fp,
        "false_negatives": int((~caught & positive).sum()),
        "precision": share(tp, tp + fp), "recall": share(tp, positive.sum()),
        "organic_fpr": share(fp, organic.sum()),
        "worst_persona": worst, "worst_persona_fpr": personas[worst]["fpr"] if worst else (0.0 if personas else None),
        "personas": personas,
    }


def campaign_metrics(judged: pa.Table, level: str) -> dict[str, dict[str, Any]]:
    """Per true campaign: accounts and exchanges caught, and whether it was found as one campaign
    (``one_campaign_share``: share of its caught accounts carrying the detector's most common
    campaign_id; accounts without a campaign_id count against it)."""
    caught = _caught(judged, level)
    truth = np.array(judged["campaign_id"].to_pylist(), dtype=object)
    found = np.array(judged["found_campaign"].to_pylist(), dtype=object)
    exchanges = judged["campaign_exchanges"].to_numpy()
    out = {}
    for campaign in sorted(c for c in set(truth) if c is not None):
        members = truth == campaign
        hit = members & caught
        ids = Counter(c for c in found[hit] if c is not None)
        top = ids.most_common(1)[0][1] if ids else 0
        n_hit = int(hit.sum())
        one = share(top, n_hit)
        out[campaign] = {
            "accounts": int(members.sum()), "accounts_caught": n_hit,
            "accounts_caught_share": share(n_hit, members.sum()),
            "exchanges": int(exchanges[members].sum()), "exchanges_caught": int(exchanges[hit].sum()),
            "exchanges_caught_share": share(exchanges[hit].sum(), exchanges[members].sum()),
            "one_campaign_share": one, "found_as_one": bool(one is not None and one >= ONE_CAMPAIGN_SHARE),
            "detector_campaigns": len(ids),
        }
    return out


def first_flags(verdicts: pa.Table) -> pa.Table:
    """Per account, the first ``as_of`` at which it was at each level or stronger (null: never).

    ``verdicts`` are the rows of a replay (VERDICT_SCHEMA, ``as_of`` set); rows at allow may be
    left out.
    """
    out: dict[str, pa.Array] = {}
    ids = verdicts["account_id"]
    severity = severities(verdicts["action"])
    accounts = pc.unique(ids)
    out["account_id"] = accounts
    for level in LEVELS:
        rows = verdicts.filter(pc.greater_equal(severity, SEVERITY[level]))
        first = rows.group_by("account_id").aggregate([("as_of", "min")]) if rows.num_rows else None
        if first is None:
            out[f"first_{level}"] = pa.nulls(len(accounts), verdicts.schema.field("as_of").type)
            continue
        where = pc.index_in(accounts, value_set=first["account_id"])
        out[f"first_{level}"] = pc.take(first["as_of_min"], where)
    return pa.table(out)


def _flag_times(traffic: pa.Table, flags: pa.Table, level: str) -> pa.Array:
    where = pc.index_in(traffic["account_id"], value_set=flags["account_id"])
    return pc.take(flags[f"first_{level}"], where)


def _leaked(traffic: pa.Table, flags: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Exchanges and output tokens of each traffic bin that were obtained: sent before the
    account was stopped. Exact when the bins carry ``leaked_exchanges`` (replay.campaign_traffic
    with flags); otherwise a bin counts whole when its account was not yet throttled when it ended."""
    if "leaked_exchanges" in traffic.column_names:
        return traffic["leaked_exchanges"].to_numpy(), traffic["leaked_output_tokens"].to_numpy()
    stop = _flag_times(traffic, flags, "throttle")
    kept = pc.fill_null(pc.less_equal(traffic["as_of"], stop), True).to_numpy(zero_copy_only=False)
    return np.where(kept, traffic["exchanges"].to_numpy(), 0), np.where(kept, traffic["output_tokens"].to_numpy(), 0)


def leakage(traffic: pa.Table, flags: pa.Table, scale: float) -> dict[str, dict[str, Any]]:
    """Per campaign: time to first detection and what it obtained before being stopped.

    An account throttled (or stronger) at a replay step, or by inheritance at a request between
    steps, is stopped from then on: the exchanges it sent before leaked, later ones did not. ``*_full_scale`` divides
    by the scenario's scale (the real Alibaba campaign obtained 28.8M exchanges).
    """
    leaked_x, leaked_t = _leaked(traffic, flags)
    campaign = np.array(traffic["campaign_id"].to_pylist(), dtype=object)
    exchanges = traffic["exchanges"].to_numpy()
    tokens = traffic["output_tokens"].to_numpy()
    out = {}
    for cid in sorted(set(campaign)):
        mine = campaign == cid
        part = traffic.filter(pa.array(mine))
        start = pc.min(part["first_timestamp"]).as_py()
        result: dict[str, Any] = {"start": _iso(start)}
        for level in LEVELS:
            times = _flag_times(part, flags, level)
            first = pc.min(times).as_py()
            result[f"first_{level}"] = _iso(first)
            result[f"ttd_{level}_hours"] = None if first is None else (first - start).total_seconds() / 3600
        total_x, total_t = int(exchanges[mine].sum()), int(tokens[mine].sum())
        got_x, got_t = int(leaked_x[mine].sum()), int(leaked_t[mine].sum())
        result.update({
            "exchanges": total_x, "output_tokens": total_t,
            "leaked_exchanges": got_x, "leaked_output_tokens": got_t,
            "leaked_exchanges_share": share(got_x, total_x), "leaked_output_tokens_share": share(got_t, total_t),
            "leaked_exchanges_full_scale": got_x / scale,
        })
        out[cid] = result
    return out


def leakage_curve(traffic: pa.Table, flags: pa.Table | None) -> list[tuple[str, int]]:
    """Cumulative campaign exchanges obtained by the end of each step, all campaigns together
    (``flags`` None: with no defence at all)."""
    if traffic.num_rows == 0:
        return []
    kept = _leaked(traffic, flags)[0] if flags is not None else traffic["exchanges"].to_numpy()
    steps = pc.unique(traffic["as_of"])
    steps = pc.take(steps, pc.array_sort_indices(steps))
    per_step = np.zeros(len(steps), dtype=np.int64)
    np.add.at(per_step, pc.index_in(traffic["as_of"], value_set=steps).to_numpy(),
              kept)
    return [(_iso(t), int(v)) for t, v in zip(steps.to_pylist(), np.cumsum(per_step))]


def organic_flagged(flags: pa.Table, labels: pa.Table) -> dict[str, dict[str, Any]]:
    """Organic accounts flagged at some replay step (harm done even if a later step relents)."""
    organic = labels.filter(pc.invert(labels["campaign_id"].is_valid()))
    organic = organic.filter(pc.greater(organic["exchanges"], 0))
    where = pc.index_in(organic["account_id"], value_set=flags["account_id"])
    out = {}
    for level in LEVELS:
        ever = pc.take(flags[f"first_{level}"], where).is_valid().to_numpy(zero_copy_only=False)
        n = int(ever.sum())
        out[level] = {"accounts": n, "fpr": share(n, organic.num_rows)}
    return out


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def account_stops(traffic: pa.Table, flags: pa.Table, inherited: pa.Table | None, labels: pa.Table) -> pa.Table:
    """One row per campaign account, and per organic account throttled at some step: when it
    was first seen and stopped, by what (``scan``, ``inheritance`` or ``never``), and what it
    sent before. The replay's leakage, account by account, so that a figure like "4.3% leaked"
    can be traced to the accounts that leaked it without re-running anything.

    ``traffic`` is replay.campaign_traffic with ``flags`` (leaked_* per bin); ``inherited``
    the replay's rows of accounts stopped between steps (None: no inheritance).
    """
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("traffic", traffic)
    con.register("flags", flags.select(["account_id", "first_throttle"]))
    con.register("labels", labels.select(["account_id", "campaign_id", "persona"]))
    empty = pa.table({"account_id": pa.array([], pa.string()),
                      "inherited_at": pa.array([], flags.schema.field("first_throttle").type)})
    con.register("inherited", empty if inherited is None else
                  inherited.group_by("account_id").aggregate([("as_of", "min")])
                  .rename_columns(["account_id", "inherited_at"]))
    try:
        return con.execute("""
            WITH sent AS (
                SELECT account_id, min(first_timestamp) AS first_seen, sum(exchanges)::BIGINT AS exchanges,
                       sum(leaked_exchanges)::BIGINT AS leaked_exchanges FROM traffic GROUP BY account_id),
            accounts AS (
                SELECT account_id FROM sent
                UNION SELECT account_id FROM flags WHERE first_throttle IS NOT NULL)
            SELECT a.account_id, l.campaign_id, l.persona, s.first_seen, f.first_throttle,
                   CASE WHEN f.first_throttle IS NULL THEN 'never'
                        WHEN i.inherited_at IS NOT NULL AND i.inherited_at <= f.first_throttle THEN 'inheritance'
                        ELSE 'scan' END AS stopped_by,
                   s.exchanges, s.leaked_exchanges
            FROM accounts a LEFT JOIN sent s USING (account_id) LEFT JOIN flags f USING (account_id)
            LEFT JOIN inherited i USING (account_id) LEFT JOIN labels l USING (account_id)
            ORDER BY l.campaign_id NULLS LAST, s.first_seen, a.account_id""").to_arrow_table()
    finally:
        con.close()
