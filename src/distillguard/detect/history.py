"""Evidence that accumulates: what an earlier scan found is not dropped while the evidence stays.

A scan over a longer window looks at more entities and more windows, so its corrections for the
looks grow and a finding that was within budget yesterday can fall just outside it today, although
the accounts did nothing different. An account that an earlier scan put at throttle or stronger
therefore keeps that action while the current scan still finds *some* evidence against it (a
monitor-level verdict or any statistical result), and while that scan lies within the lookback. It
is lifted when its evidence is gone (its behaviour changed, or it stopped) or by an operator.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from distillguard.store.verdicts import SEVERITY

STRONG = ("throttle", "fallback", "block")


HELD = "held from the scan as of "


def found_at(row: dict) -> datetime:
    """When the action of an earlier verdict was found: its scan, or for a verdict that was itself
    held, the scan it was held from (so a hold never outlives the lookback of its finding)."""
    first = (row.get("reasons") or [""])[0]
    if first.startswith(HELD):
        try:
            return datetime.fromisoformat(first[len(HELD):].split(" ", 1)[0])
        except ValueError:
            pass
    return row["as_of"]


def carried(verdicts: pa.Table, previous: pa.Table | None, evidenced: set[str], as_of: datetime,
            lookback_days: float, capped: frozenset[str] = frozenset()) -> pa.Table:
    """``verdicts`` with earlier throttle+ actions kept where the evidence stays (module docstring).

    ``previous`` holds an earlier scan's verdicts (account_id, action, campaign_id, reasons, as_of);
    ``evidenced`` the accounts the current scan still finds evidence against; ``capped`` accounts
    (allowlisted organisations) are never held.
    """
    if previous is None or previous.num_rows == 0:
        return verdicts
    oldest = as_of - timedelta(days=lookback_days)
    earlier: dict[str, dict] = {}
    for row in previous.select(["account_id", "action", "campaign_id", "reasons", "as_of"]).to_pylist():
        if row["action"] in STRONG and row["as_of"] is not None and row["as_of"] < as_of \
                and found_at(row) >= oldest:
            earlier[row["account_id"]] = row
    if not earlier:
        return verdicts
    rows = verdicts.to_pylist()
    for row in rows:
        before = earlier.get(row["account_id"])
        if before is None or row["account_id"] not in evidenced or row["account_id"] in capped:
            continue
        if SEVERITY[before["action"]] <= SEVERITY.get(row["action"], 0):
            continue
        first = (before["reasons"] or ["(no reason kept)"])[0]
        if first.startswith(HELD):
            line = first
        else:
            line = f"{HELD}{before['as_of'].isoformat()} ({before['action']}), while evidence stays: {first}"
        row["reasons"] = [line] + list(row["reasons"] or [])
        row["action"] = before["action"]
        row["campaign_id"] = row["campaign_id"] or before["campaign_id"]
    return pa.Table.from_pylist(rows, schema=verdicts.schema)
